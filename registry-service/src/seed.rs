//! Seeds for jitter and random picks, drawn from the workspace's one random source
//! ([`registry_api::rng`]).
//!
//! Every options struct of this crate takes its seed the same way: `Option<u64>`, `None` by
//! default. A seed given (`Some`) gives the same waits and picks on every run; `None` takes a
//! seed of the process's own, so that processes of a fleet, all started with the same options,
//! spread their retries and picks out instead of moving in step. Either way the seed is mixed
//! with the name of what draws from it (a registration's service and id, a prefix, a
//! service), so two things sharing one configured seed still draw differently.

pub(crate) use registry_api::rng::SplitMix64;

/// The seed of the thing called `name`: drawn from `seed` when the options give one, else from
/// the process's own ([`process_seed`]).
pub(crate) fn seed_for(seed: Option<u64>, name: &str) -> u64 {
    SplitMix64::derive(seed.unwrap_or_else(process_seed), name)
}

/// A seed of this process's own: the process id mixed with the wall-clock time of the first
/// call, so that processes of a fleet (even ones that are all pid 1 in their containers) draw
/// different waits and their re-lists spread out.
pub(crate) fn process_seed() -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since| since.as_nanos() as u64)
            .unwrap_or(0);
        SplitMix64::new(nanos ^ u64::from(std::process::id()).rotate_left(32)).next_u64()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_seed_is_the_same_run_and_names_separate_it() {
        assert_eq!(seed_for(Some(5), "x"), seed_for(Some(5), "x"));
        assert_ne!(seed_for(Some(0), "svc/a"), seed_for(Some(0), "svc/b"));
        assert_eq!(
            seed_for(None, "x"),
            seed_for(None, "x"),
            "one seed per process"
        );
        assert_ne!(seed_for(None, "x"), seed_for(None, "y"));
    }
}
