//! Deterministic subsetting: each client talks to a stable few instances, not to all.
//!
//! With a thousand clients and a thousand servers, full meshes cost a million connections.
//! kratos and go-zero give each client a subset; this one uses rendezvous (highest random
//! weight) hashing: each instance gets a score from the client id and the instance id, and a
//! client keeps the `size` highest. The choice depends on nothing else, so it is stable: an
//! instance that leaves frees one place, taken by the next best; one that arrives displaces at
//! most one. Different clients score differently, so load spreads.

use crate::instance::ServiceInstance;

/// Keep `size` instances chosen by rendezvous hashing of `client_id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subset {
    size: usize,
    client_id: String,
}

impl Subset {
    /// A subset of `size` instances for the client `client_id` (its instance id or host name:
    /// anything stable and unique per client).
    pub fn new(size: usize, client_id: impl Into<String>) -> Self {
        Subset {
            size,
            client_id: client_id.into(),
        }
    }

    /// How many instances it keeps (fewer when fewer exist).
    pub fn size(&self) -> usize {
        self.size
    }

    /// This client's score of an instance: higher wins.
    pub fn score(&self, instance_id: &str) -> u64 {
        // The workspace's seed mixer over both ids, NUL-separated: FNV-1a, then a SplitMix64
        // step so that near-identical ids score far apart. Stable across builds and platforms,
        // like every seed of this crate.
        let mut name = Vec::with_capacity(self.client_id.len() + 1 + instance_id.len());
        name.extend_from_slice(self.client_id.as_bytes());
        name.push(0);
        name.extend_from_slice(instance_id.as_bytes());
        crate::seed::SplitMix64::derive(0, name)
    }

    /// The chosen instances among `candidates`, in their original order.
    pub fn choose<'a>(
        &self,
        candidates: impl IntoIterator<Item = &'a ServiceInstance>,
    ) -> Vec<&'a ServiceInstance> {
        let mut scored: Vec<(u64, usize, &ServiceInstance)> = candidates
            .into_iter()
            .enumerate()
            .map(|(index, instance)| (self.score(&instance.id), index, instance))
            .collect();
        if scored.len() > self.size {
            // Highest score first; ties (same score) broken by id for determinism.
            scored.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.2.id.cmp(&b.2.id)));
            scored.truncate(self.size);
            scored.sort_unstable_by_key(|(_, index, _)| *index);
        }
        scored
            .into_iter()
            .map(|(_, _, instance)| instance)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instances(ids: impl IntoIterator<Item = usize>) -> Vec<ServiceInstance> {
        ids.into_iter()
            .map(|i| ServiceInstance::new("s", format!("i{i:03}"), "addr"))
            .collect()
    }

    fn ids(chosen: &[&ServiceInstance]) -> Vec<String> {
        chosen.iter().map(|i| i.id.clone()).collect()
    }

    #[test]
    fn a_departure_frees_one_place_and_an_arrival_displaces_at_most_one() {
        let subset = Subset::new(5, "client-7");
        let all = instances(0..50);
        let before = ids(&subset.choose(&all));
        assert_eq!(before.len(), 5);

        let gone = before[2].clone();
        let fewer: Vec<_> = all.iter().filter(|i| i.id != gone).cloned().collect();
        let after = ids(&subset.choose(&fewer));
        let kept = before.iter().filter(|id| after.contains(id)).count();
        assert_eq!(kept, 4, "only the departed place changes");

        // Arrivals one at a time: each displaces at most one of the chosen.
        let mut current = before.clone();
        for n in 51..60 {
            let grown = ids(&subset.choose(&instances(0..n)));
            assert_eq!(grown.len(), 5);
            let kept = current.iter().filter(|id| grown.contains(id)).count();
            assert!(kept >= 4, "one arrival displaced {} places", 5 - kept);
            current = grown;
        }
    }

    #[test]
    fn clients_spread_over_instances() {
        let all = instances(0..20);
        let mut hits = vec![0usize; 20];
        for client in 0..200 {
            let subset = Subset::new(3, format!("c{client}"));
            for chosen in subset.choose(&all) {
                let index: usize = chosen.id[1..].parse().unwrap();
                hits[index] += 1;
            }
        }
        // 600 picks over 20 instances: 30 on average; none starved, none doubled.
        assert!(hits.iter().all(|&h| (10..=60).contains(&h)), "{hits:?}");
    }
}
