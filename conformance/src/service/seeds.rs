//! The service-layer suite over many seeds: every scenario once per seed, each on a fresh
//! backend built with that seed in scope, so that a simulator with seeded timing explores a
//! new interleaving per seed; every failing pair is reported with the line that replays it.

use super::suite_runner::{run_scenario, scenario_names};
use crate::backend::Time;
use crate::fleet::threads;
use registry_api::seeding;
use registry_testing::{runtime, ServiceBackend};
use std::future::Future;
use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One scenario that failed at one seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedFailure {
    /// The seed.
    pub seed: u64,
    /// The scenario.
    pub scenario: &'static str,
    /// What broke.
    pub message: String,
}

/// What a search over seeds found.
#[derive(Clone, Debug)]
pub struct SeedsReport {
    /// The seeds searched.
    pub seeds: Range<u64>,
    /// Scenario runs made (scenarios times seeds).
    pub runs: usize,
    /// Every failure, by seed then scenario.
    pub failures: Vec<SeedFailure>,
    /// Wall-clock time of the whole search.
    pub wall: Duration,
    /// Threads it ran on.
    pub threads: usize,
}

impl SeedsReport {
    /// True when every scenario passed at every seed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs every scenario of `scenarios` (every one of the suite when empty) once per seed of
/// `seeds` on a fresh backend from `make`, built and run with the seed in scope
/// ([`seeding::with_seed`]), on [`THREADS_VAR`](crate::fleet::THREADS_VAR) threads or one per
/// core. Only backends on [`Time::Virtual`] are searched: a real server has no seed.
pub fn search_seeds<B, F, Fut>(make: F, seeds: Range<u64>, scenarios: &[&str]) -> SeedsReport
where
    B: ServiceBackend,
    F: Fn() -> Fut + Sync,
    Fut: Future<Output = B>,
{
    let started = Instant::now();
    let names: Vec<&'static str> = scenario_names()
        .into_iter()
        .filter(|name| scenarios.is_empty() || scenarios.contains(name))
        .collect();
    let runs: Vec<(u64, &'static str)> = seeds
        .clone()
        .flat_map(|seed| names.iter().map(move |name| (seed, *name)))
        .collect();
    let threads = threads().min(runs.len().max(1));
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while let Some(&(seed, name)) = runs.get(next.fetch_add(1, Ordering::SeqCst)) {
                    if let Err(message) = run_one(&make, seed, name) {
                        failures
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(SeedFailure {
                                seed,
                                scenario: name,
                                message,
                            });
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
    failures.sort_by(|a, b| (a.seed, a.scenario).cmp(&(b.seed, b.scenario)));
    SeedsReport {
        seeds,
        runs: runs.len(),
        failures,
        wall: started.elapsed(),
        threads,
    }
}

/// One scenario at one seed on its own paused runtime; a panic is a failure.
fn run_one<B, F, Fut>(make: &F, seed: u64, name: &str) -> Result<(), String>
where
    B: ServiceBackend,
    F: Fn() -> Fut,
    Fut: Future<Output = B>,
{
    let rt = runtime(Time::Virtual);
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        seeding::with_seed(seed, || {
            let backend = rt.block_on(make());
            if backend.capabilities().time != Time::Virtual {
                return Err(
                    "the backend is not on virtual time: there is no seed to search".into(),
                );
            }
            run_scenario(name, &backend, &rt).map_err(|failure| failure.message)
        })
    }));
    outcome.unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(format!("the scenario panicked: {why}"))
    })
}

/// What the test [`service_seed_search!`](crate::service_seed_search) stamps does: searches
/// the seeds [`seeding::seeds_from_env`] gives (`0..seeds` by default, `REGISTRY_SEEDS` to
/// change them, `REGISTRY_SEED` to replay one), prints the seeds and the wall time, and on
/// failure panics listing every failing scenario and seed with the line that replays it: the
/// scenario's own test (stamped by [`service_suite!`](crate::service_suite) in the same test
/// file, at its top level) with that seed.
pub fn seed_search_test<B, F, Fut>(make: F, seeds: u64)
where
    B: ServiceBackend,
    F: Fn() -> Fut + Sync,
    Fut: Future<Output = B>,
{
    let seeds = seeding::seeds_from_env(0..seeds);
    let report = search_seeds(make, seeds.clone(), &[]);
    println!(
        "service suite over seeds {}..{}: {} scenario runs in {:.2}s wall on {} threads, {} failing",
        seeds.start,
        seeds.end,
        report.runs,
        report.wall.as_secs_f64(),
        report.threads,
        report.failures.len()
    );
    if report.passed() {
        return;
    }
    let mut message = format!("{} failing scenario runs:\n", report.failures.len());
    for failure in &report.failures {
        message.push_str(&format!(
            "seed {} `{}`: {}\n  replay: {}\n",
            failure.seed,
            failure.scenario,
            failure.message,
            seeding::replay_command_for(failure.seed, Some(failure.scenario))
        ));
    }
    panic!("{message}");
}
