//! Choosing a node per request from a live instance list.
//!
//! A [`Picker`] reads the current snapshot of its [`InstanceSource`] (a [`Discovery`], or a
//! fixed list) on every pick, so it follows the service as instances come and go. Strategies:
//! round-robin in id order, uniform random, random weighted by [`Metadata::weight`], and
//! power-of-two-choices (two random candidates, the less loaded wins: fewer calls in flight,
//! then fewer recent failures).
//!
//! Report each call's outcome with [`report_success`](Picker::report_success) or
//! [`report_failure`](Picker::report_failure): that ends the call's in-flight count, and a node
//! failing `failure_threshold` times in a row is left out for `down_for` (Curator's
//! down-instance policy), unless every node is down, when all are candidates again.
//!
//! [`Metadata::weight`]: super::Metadata::weight

use crate::backoff::deadline_after;
use crate::discovery::Discovery;
use crate::instance::ServiceInstance;
use crate::rng::SplitMix64;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

/// Where a picker reads the current instances from.
pub trait InstanceSource: Debug + Send + Sync {
    /// The instances now, in a stable order (id order for a [`Discovery`]).
    fn instances(&self) -> Arc<[ServiceInstance]>;
}

impl InstanceSource for Discovery {
    fn instances(&self) -> Arc<[ServiceInstance]> {
        self.snapshot()
    }
}

/// A fixed list.
impl InstanceSource for Arc<[ServiceInstance]> {
    fn instances(&self) -> Arc<[ServiceInstance]> {
        self.clone()
    }
}

/// How a [`Picker`] chooses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Each node in turn, in the source's order.
    #[default]
    RoundRobin,
    /// Uniformly at random.
    Random,
    /// At random, in proportion to each node's weight (all uniform if every weight is 0).
    Weighted,
    /// Two distinct random nodes; the one with fewer calls in flight wins, then the one with
    /// fewer recent failures.
    PowerOfTwoChoices,
}

/// How a [`Picker`] behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PickerOptions {
    /// The strategy.
    pub strategy: Strategy,
    /// Seeds the random strategies: the same seed and the same calls give the same picks.
    pub seed: u64,
    /// Consecutive failures after which a node is left out (0 counts as 1).
    pub failure_threshold: u32,
    /// How long a failing node is left out; after that it is a candidate again, with a clean
    /// record.
    pub down_for: Duration,
}

impl Default for PickerOptions {
    /// Round-robin; a node is left out for 30 s after 3 failures in a row.
    fn default() -> Self {
        PickerOptions {
            strategy: Strategy::RoundRobin,
            seed: 0,
            failure_threshold: 3,
            down_for: Duration::from_secs(30),
        }
    }
}

impl PickerOptions {
    /// Default options with `strategy`.
    pub fn new(strategy: Strategy) -> Self {
        PickerOptions {
            strategy,
            ..Self::default()
        }
    }

    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets the consecutive failures that take a node out.
    pub fn failure_threshold(mut self, failures: u32) -> Self {
        self.failure_threshold = failures;
        self
    }

    /// Sets how long a failing node stays out.
    pub fn down_for(mut self, down_for: Duration) -> Self {
        self.down_for = down_for;
        self
    }
}

/// What the picker knows about one node.
#[derive(Clone, Debug, Default)]
struct NodeStats {
    in_flight: u64,
    consecutive_failures: u32,
    down_until: Option<Instant>,
}

#[derive(Debug)]
struct PickState {
    rng: SplitMix64,
    turn: u64,
    nodes: HashMap<String, NodeStats>,
}

impl PickState {
    /// Whether `id` is left out now; a down period that has run out is forgotten.
    fn is_down(&mut self, id: &str, now: Instant) -> bool {
        let Some(stats) = self.nodes.get_mut(id) else {
            return false;
        };
        match stats.down_until {
            Some(until) if until > now => true,
            Some(_) => {
                stats.down_until = None;
                stats.consecutive_failures = 0;
                false
            }
            None => false,
        }
    }

    fn load(&self, id: &str) -> (u64, u32) {
        self.nodes
            .get(id)
            .map_or((0, 0), |s| (s.in_flight, s.consecutive_failures))
    }
}

/// Picks a node per request; safe to share between tasks.
#[derive(Debug)]
pub struct Picker {
    source: Box<dyn InstanceSource>,
    options: PickerOptions,
    state: Mutex<PickState>,
}

impl Picker {
    /// A picker over `source` (typically a [`Discovery`]).
    pub fn new(source: impl InstanceSource + 'static, options: PickerOptions) -> Self {
        Picker {
            source: Box::new(source),
            state: Mutex::new(PickState {
                rng: SplitMix64::new(options.seed),
                turn: 0,
                nodes: HashMap::new(),
            }),
            options,
        }
    }

    /// The strategy in use.
    pub fn strategy(&self) -> Strategy {
        self.options.strategy
    }

    fn lock(&self) -> MutexGuard<'_, PickState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A node for the next call, or `None` when there is none. The call counts as in flight on
    /// that node until reported.
    pub fn pick(&self) -> Option<ServiceInstance> {
        let all = self.source.instances();
        if all.is_empty() {
            return None;
        }
        let now = Instant::now();
        let mut state = self.lock();
        let mut candidates: Vec<&ServiceInstance> = Vec::with_capacity(all.len());
        // Draining (or unknown-status) instances take no new work, whatever else holds.
        let serving = all.iter().filter(|instance| instance.status.is_serving());
        for instance in serving.clone() {
            if !state.is_down(&instance.id, now) {
                candidates.push(instance);
            }
        }
        if candidates.is_empty() {
            // Every node is failing: better to try one than to refuse every call.
            candidates = serving.collect();
        }
        let chosen = choose(self.options.strategy, &candidates, &mut state)?;
        state.nodes.entry(chosen.id.clone()).or_default().in_flight += 1;
        if state.nodes.len() > 2 * all.len() + 16 {
            state
                .nodes
                .retain(|id, stats| stats.in_flight > 0 || all.iter().any(|i| &i.id == id));
        }
        Some(chosen.clone())
    }

    /// Reports a successful call to `id`: ends its in-flight count and clears its failures.
    pub fn report_success(&self, id: &str) {
        let mut state = self.lock();
        let stats = state.nodes.entry(id.to_owned()).or_default();
        stats.in_flight = stats.in_flight.saturating_sub(1);
        stats.consecutive_failures = 0;
        stats.down_until = None;
    }

    /// Reports a failed call to `id`: ends its in-flight count, and after `failure_threshold`
    /// failures in a row leaves it out for `down_for`.
    pub fn report_failure(&self, id: &str) {
        let now = Instant::now();
        let threshold = self.options.failure_threshold.max(1);
        let down_for = self.options.down_for;
        let mut state = self.lock();
        state.is_down(id, now);
        let stats = state.nodes.entry(id.to_owned()).or_default();
        stats.in_flight = stats.in_flight.saturating_sub(1);
        stats.consecutive_failures = stats.consecutive_failures.saturating_add(1);
        if stats.consecutive_failures >= threshold && stats.down_until.is_none() {
            stats.down_until = Some(deadline_after(down_for));
            tracing::warn!(
                id,
                failures = stats.consecutive_failures,
                ?down_for,
                "node left out"
            );
        }
    }

    /// Whether `id` is being left out now.
    pub fn is_down(&self, id: &str) -> bool {
        self.lock().is_down(id, Instant::now())
    }

    /// Calls picked on `id` and not yet reported.
    pub fn in_flight(&self, id: &str) -> u64 {
        self.lock().load(id).0
    }
}

fn choose<'a>(
    strategy: Strategy,
    candidates: &[&'a ServiceInstance],
    state: &mut PickState,
) -> Option<&'a ServiceInstance> {
    let len = candidates.len() as u64;
    let index = match strategy {
        Strategy::RoundRobin => {
            let turn = state.turn;
            state.turn = state.turn.wrapping_add(1);
            turn % len.max(1)
        }
        Strategy::Random => state.rng.below(len),
        Strategy::Weighted => {
            let total: u64 = candidates
                .iter()
                .map(|i| u64::from(i.metadata.weight))
                .sum();
            if total == 0 {
                state.rng.below(len)
            } else {
                let mut ticket = state.rng.below(total);
                let mut index = 0;
                for (i, instance) in candidates.iter().enumerate() {
                    let weight = u64::from(instance.metadata.weight);
                    if ticket < weight {
                        index = i as u64;
                        break;
                    }
                    ticket -= weight;
                }
                index
            }
        }
        Strategy::PowerOfTwoChoices => {
            if len < 2 {
                0
            } else {
                let a = state.rng.below(len);
                let mut b = state.rng.below(len - 1);
                if b >= a {
                    b += 1;
                }
                let load_a = state.load(&candidates[a as usize].id);
                let load_b = state.load(&candidates[b as usize].id);
                if load_b < load_a {
                    b
                } else {
                    a
                }
            }
        }
    };
    candidates.get(usize::try_from(index).ok()?).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(weights: &[u32]) -> Arc<[ServiceInstance]> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                ServiceInstance::new("s", format!("n{i}"), format!("10.0.0.{i}:80"))
                    .with_metadata(crate::Metadata::default().with_weight(w))
            })
            .collect()
    }

    fn counts(picker: &Picker, picks: usize, report: bool) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for _ in 0..picks {
            let node = picker.pick().expect("a node");
            if report {
                picker.report_success(&node.id);
            }
            *counts.entry(node.id).or_default() += 1;
        }
        counts
    }

    #[test]
    fn empty_source_picks_nothing() {
        for strategy in [
            Strategy::RoundRobin,
            Strategy::Random,
            Strategy::Weighted,
            Strategy::PowerOfTwoChoices,
        ] {
            let picker = Picker::new(nodes(&[]), PickerOptions::new(strategy));
            assert_eq!(picker.pick(), None);
        }
    }

    #[test]
    fn round_robin_is_exact() {
        let picker = Picker::new(nodes(&[1, 1, 1, 1]), PickerOptions::default());
        let order: Vec<String> = (0..8).map(|_| picker.pick().unwrap().id).collect();
        assert_eq!(order, ["n0", "n1", "n2", "n3", "n0", "n1", "n2", "n3"]);
    }

    #[test]
    fn weighted_zero_weights_fall_back_to_uniform() {
        let picker = Picker::new(nodes(&[0, 0]), PickerOptions::new(Strategy::Weighted));
        let counts = counts(&picker, 1_000, true);
        assert_eq!(counts.len(), 2);
        let drained = Picker::new(nodes(&[0, 5]), PickerOptions::new(Strategy::Weighted));
        assert_eq!(counts_of(&drained, 500).get("n0"), None);
    }

    fn counts_of(picker: &Picker, picks: usize) -> HashMap<String, usize> {
        counts(picker, picks, true)
    }

    #[test]
    fn same_seed_same_picks() {
        let a = Picker::new(
            nodes(&[1, 2, 3]),
            PickerOptions::new(Strategy::Random).seed(9),
        );
        let b = Picker::new(
            nodes(&[1, 2, 3]),
            PickerOptions::new(Strategy::Random).seed(9),
        );
        for _ in 0..100 {
            assert_eq!(a.pick(), b.pick());
        }
    }
}
