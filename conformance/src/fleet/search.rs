//! The seeded search: many seeds of one fleet, on as many threads as the machine has, each
//! seed on its own paused runtime.

use super::harness::{run_fleet, FleetOptions, FleetReport};
use crate::service::ServiceBackend;
use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The environment variable that replays one seed: `REGISTRY_FLEET_SEED=<seed>`.
pub const SEED_VAR: &str = "REGISTRY_FLEET_SEED";

/// The environment variable that overrides how many seeds a stamped search runs:
/// `REGISTRY_FLEET_SEEDS=<count>` (more in a nightly job, fewer on a slow machine).
pub const SEEDS_VAR: &str = "REGISTRY_FLEET_SEEDS";

/// What a search found.
#[derive(Clone, Debug)]
pub struct SearchReport {
    /// How many seeds ran.
    pub seeds_run: u64,
    /// The lowest failing seed's report, if any seed failed. Every seed below it passed.
    pub failure: Option<FleetReport>,
    /// Wall-clock time of the whole search.
    pub wall: Duration,
    /// Threads it ran on.
    pub threads: usize,
    /// Routes and discovery events over every seed that ran.
    pub routes: u64,
    /// Discovery events over every seed that ran.
    pub events: u64,
}

/// Runs one seed of the fleet on a fresh backend from `make`, on its own current-thread
/// runtime with a paused clock. A panic in the run is a failure of that seed.
pub fn run_seed<B, F>(make: &F, seed: u64, options: &FleetOptions) -> FleetReport
where
    F: Fn() -> B,
    B: ServiceBackend,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build();
    let outcome = match runtime {
        Ok(runtime) => std::panic::catch_unwind(AssertUnwindSafe(|| {
            runtime.block_on(async {
                let backend = make();
                run_fleet(&backend, seed, options).await
            })
        }))
        .map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        }),
        Err(e) => Err(format!("cannot build a runtime: {e}")),
    };
    outcome.unwrap_or_else(|why| FleetReport {
        seed,
        plan: super::FaultPlan::generate(seed, &options.plan_profile()),
        violations: vec![format!("the run panicked: {why}")],
        routes: 0,
        events: 0,
        skipped_faults: 0,
        settled_after: None,
        log_hash: 0,
        log: Vec::new(),
    })
}

/// Runs `seeds` of the fleet, in parallel, and reports the lowest failing seed (every seed
/// below it is run too, so the answer does not depend on the threads' timing).
pub fn search<B, F>(make: F, seeds: Range<u64>, options: &FleetOptions) -> SearchReport
where
    F: Fn() -> B + Sync,
    B: ServiceBackend,
{
    let started = Instant::now();
    let threads = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .clamp(1, 8);
    let next = AtomicU64::new(seeds.start);
    let lowest_failure = AtomicU64::new(u64::MAX);
    let found: Mutex<Option<FleetReport>> = Mutex::new(None);
    let totals = Mutex::new((0u64, 0u64, 0u64));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::SeqCst);
                if seed >= seeds.end || seed > lowest_failure.load(Ordering::SeqCst) {
                    break;
                }
                let report = run_seed(&make, seed, options);
                {
                    let mut totals = totals.lock().unwrap_or_else(|e| e.into_inner());
                    totals.0 += 1;
                    totals.1 += report.routes;
                    totals.2 += report.events;
                }
                if !report.passed() {
                    lowest_failure.fetch_min(seed, Ordering::SeqCst);
                    let mut found = found.lock().unwrap_or_else(|e| e.into_inner());
                    if found.as_ref().map_or(true, |f| f.seed > seed) {
                        *found = Some(report);
                    }
                }
            });
        }
    });
    let (seeds_run, routes, events) = totals.into_inner().unwrap_or_else(|e| e.into_inner());
    SearchReport {
        seeds_run,
        failure: found.into_inner().unwrap_or_else(|e| e.into_inner()),
        wall: started.elapsed(),
        threads,
        routes,
        events,
    }
}

/// What the test that [`fleet_search!`](crate::fleet_search) stamps does: searches seeds
/// `0..seeds` (or as many as [`SEEDS_VAR`] says, or only the seed in [`SEED_VAR`]), prints the wall time, and on failure panics
/// with the seed, what broke, the plan, and the command that replays exactly that seed.
pub fn search_test<B, F>(
    test: &str,
    package: &str,
    file: &str,
    make: F,
    seeds: u64,
    mut options: FleetOptions,
) where
    F: Fn() -> B + Sync,
    B: ServiceBackend,
{
    let replay = std::env::var(SEED_VAR)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let range = match replay {
        Some(seed) => seed..seed.saturating_add(1),
        None => {
            let count = std::env::var(SEEDS_VAR)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(seeds);
            0..count
        }
    };
    // Replaying one seed keeps its whole event log, printed below.
    options.keep_log |= replay.is_some();
    let report = search(make, range.clone(), &options);
    println!(
        "fleet search: {} seeds ({}..{}) in {:.2}s wall on {} threads; {} routes, {} discovery events",
        report.seeds_run,
        range.start,
        range.end,
        report.wall.as_secs_f64(),
        report.threads,
        report.routes,
        report.events
    );
    if let Some(seed) = replay {
        println!("replayed seed {seed} (from {SEED_VAR})");
    }
    if let Some(failure) = report.failure.as_ref().filter(|f| !f.log.is_empty()) {
        println!("event log of seed {}:", failure.seed);
        for line in &failure.log {
            println!("  {line}");
        }
    }
    if let Some(failure) = report.failure {
        let stem = std::path::Path::new(file)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("fleet");
        let name = test.rsplit("::").next().unwrap_or(test);
        panic!(
            "fleet seed {seed} failed:\n  {violations}\n{plan}\nreplay exactly this seed with:\n  \
             {SEED_VAR}={seed} cargo test -p {package} --test {stem} {name} -- --nocapture",
            seed = failure.seed,
            violations = failure.violations.join("\n  "),
            plan = failure.plan,
        );
    }
}
