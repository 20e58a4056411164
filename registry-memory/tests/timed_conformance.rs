//! The contract suite's cases where timing matters (watches, progress, concurrent clients) on
//! the simulator with its seeded timing, over many seeds: leases on the manual clock as the
//! suite moves it, calls and deliveries delayed on a paused tokio clock, so that a reply can
//! come after the watch event of its write and watches open after later calls. A failing seed
//! is printed with the line that replays it (`REGISTRY_SEED=<n>`, one seed only).

use async_trait::async_trait;
use registry_api::seeding;
use registry_api::Registry;
use registry_conformance::{Backend, Capabilities};
use registry_memory::{Latencies, MemoryRegistry};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Seeds per case (`REGISTRY_SEEDS` changes them, `REGISTRY_SEED` replays one).
const SEEDS: u64 = 20;

/// The cases whose outcome could depend on when calls are answered and events delivered.
const TIMED_CASES: &[&str] = &[
    "watch_is_ordered",
    "watch_is_unique",
    "watch_is_atomic",
    "watch_is_reliable",
    "watch_is_resumable",
    "watch_progress_is_a_bookmark",
    "watch_progress_request_answers",
    "watch_is_filtered",
    "watch_prev_kv_and_create_flag",
    "concurrent_watchers_agree",
    "concurrent_clients_are_linearizable",
    "watch_from_compacted_revision_fails",
    "slow_watcher_never_skips_an_event",
    "watch_from_a_future_revision_starts_there",
    "watch_across_compaction_keeps_deletes",
    "revision_accounting",
    "revoke_deletes_all_keys_in_one_revision",
    "put_moves_and_detaches_keys",
];

/// A fresh store per case on the manual clock, with etcd's delays drawn from the seed in scope.
#[derive(Debug, Default)]
struct TimedSimulator {
    current: Mutex<Option<MemoryRegistry>>,
}

#[async_trait]
impl Backend for TimedSimulator {
    async fn registry(&self) -> Arc<dyn Registry> {
        let registry = MemoryRegistry::builder()
            .manual_clock()
            .timing(Latencies::etcd())
            .build();
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(registry.clone());
        Arc::new(registry)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::simulator()
    }

    async fn advance(&self, by: Duration) {
        if let Some(registry) = &*self.current.lock().unwrap_or_else(|p| p.into_inner()) {
            registry.advance(by);
        }
    }
}

#[test]
fn timing_sensitive_cases_over_seeds() {
    let seeds = seeding::seeds_from_env(0..SEEDS);
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    let mut virtual_time = Duration::ZERO;
    for seed in seeds.clone() {
        for case in TIMED_CASES {
            // The delays sleep on tokio's clock: paused, they cost no wall time.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .expect("a runtime");
            let before = rt.block_on(async { tokio::time::Instant::now() });
            let outcome = seeding::with_seed(seed, || {
                registry_conformance::run_case(case, &TimedSimulator::default(), &rt, Some(file!()))
            });
            virtual_time += rt.block_on(async { tokio::time::Instant::now() }) - before;
            if let Err(failure) = outcome {
                failures.push(format!(
                    "seed {seed}: {failure}\n  replay: {}",
                    seeding::replay_command(seed)
                ));
            }
        }
    }
    println!(
        "{} timing-sensitive cases over seeds {}..{}: {:.2}s wall, {:.3}s of delays in virtual \
         time, {} failing",
        TIMED_CASES.len(),
        seeds.start,
        seeds.end,
        started.elapsed().as_secs_f64(),
        virtual_time.as_secs_f64(),
        failures.len()
    );
    assert!(!virtual_time.is_zero(), "the calls were timed");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_timed_case_is_a_case_of_the_suite() {
    let names = registry_conformance::case_names();
    for case in TIMED_CASES {
        assert!(names.contains(case), "{case} is not a case");
    }
}
