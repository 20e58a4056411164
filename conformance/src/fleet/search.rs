//! The seeded search: many seeds of one fleet, on every core, each seed on its own paused
//! runtime; every failing seed is reported, not only the first.

use super::harness::{run_fleet, FleetOptions, FleetReport};
use super::mode::Mode;
use super::seeds::{SeedPlan, SEED_VAR};
use crate::service::ServiceBackend;
use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The environment variable that sets how many threads a search runs on:
/// `REGISTRY_FLEET_THREADS=<n>` (default: every core the machine has).
pub const THREADS_VAR: &str = "REGISTRY_FLEET_THREADS";

/// What a search found.
#[derive(Clone, Debug)]
pub struct SearchReport {
    /// How many seeds ran.
    pub seeds_run: u64,
    /// How many of them ran in [`Mode::Liveness`] (the others in [`Mode::Safety`]).
    pub liveness_seeds: u64,
    /// Every failing seed's report, in seed order.
    pub failures: Vec<FleetReport>,
    /// Wall-clock time of the whole search.
    pub wall: Duration,
    /// Threads it ran on.
    pub threads: usize,
    /// Requests routed by the gateways over every seed that ran.
    pub routes: u64,
    /// Discovery events over every seed that ran.
    pub events: u64,
    /// The longest convergence after the faults stopped among the liveness seeds that
    /// converged: how close the search came to the bound.
    pub slowest_convergence: Option<(u64, Duration)>,
}

impl SearchReport {
    /// True when every seed passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The lowest failing seed's report, if any.
    pub fn first_failure(&self) -> Option<&FleetReport> {
        self.failures.first()
    }
}

/// Runs one seed of the fleet on a fresh backend from `make`, on its own current-thread
/// runtime with a paused clock, with `seed` in scope ([`registry_api::seeding::with_seed`]) so
/// that a simulator built by `make` takes its timing from it. A panic in the run is a failure
/// of that seed.
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
        // The seed in scope: a simulator the backend builds meanwhile draws its timing from it,
        // so the seed replays the faults and the timing both.
        Ok(runtime) => std::panic::catch_unwind(AssertUnwindSafe(|| {
            registry_api::seeding::with_seed(seed, || {
                runtime.block_on(async {
                    let backend = make();
                    run_fleet(&backend, seed, options).await
                })
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
    outcome.unwrap_or_else(|why| {
        FleetReport::aborted(seed, options, format!("the run panicked: {why}"))
    })
}

/// Runs every seed of `seeds` in parallel and reports every failing one.
pub fn search<B, F>(make: F, seeds: Range<u64>, options: &FleetOptions) -> SearchReport
where
    F: Fn() -> B + Sync,
    B: ServiceBackend,
{
    search_ranges(make, &[seeds], options)
}

#[derive(Default)]
struct Totals {
    seeds: u64,
    liveness: u64,
    routes: u64,
    events: u64,
    slowest: Option<(u64, Duration)>,
    failures: Vec<FleetReport>,
}

/// Runs every seed of every range (a seed in two ranges runs twice), on [`THREADS_VAR`] threads
/// or one per core.
pub(super) fn search_ranges<B, F>(
    make: F,
    ranges: &[Range<u64>],
    options: &FleetOptions,
) -> SearchReport
where
    F: Fn() -> B + Sync,
    B: ServiceBackend,
{
    let started = Instant::now();
    let threads = threads();
    let total: u64 = ranges.iter().map(|r| r.end.saturating_sub(r.start)).sum();
    let seed_at = |mut index: u64| {
        for range in ranges {
            let len = range.end.saturating_sub(range.start);
            if index < len {
                return range.start + index;
            }
            index -= len;
        }
        u64::MAX
    };
    let next = AtomicU64::new(0);
    let totals = Mutex::new(Totals::default());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                if index >= total {
                    break;
                }
                let report = run_seed(&make, seed_at(index), options);
                let mut totals = totals.lock().unwrap_or_else(|e| e.into_inner());
                totals.seeds += 1;
                totals.routes += report.routes;
                totals.events += report.events;
                if report.mode == Mode::Liveness {
                    totals.liveness += 1;
                    if let Some(after) = report.settled_after {
                        // Ties go to the lowest seed, so the answer does not depend on timing.
                        let slower = totals.slowest.map_or(true, |(seed, slowest)| {
                            after > slowest || (after == slowest && report.seed < seed)
                        });
                        if slower {
                            totals.slowest = Some((report.seed, after));
                        }
                    }
                }
                if !report.passed() {
                    totals.failures.push(report);
                }
            });
        }
    });
    let mut totals = totals.into_inner().unwrap_or_else(|e| e.into_inner());
    totals.failures.sort_by_key(|report| report.seed);
    SearchReport {
        seeds_run: totals.seeds,
        liveness_seeds: totals.liveness,
        failures: totals.failures,
        wall: started.elapsed(),
        threads,
        routes: totals.routes,
        events: totals.events,
        slowest_convergence: totals.slowest,
    }
}

pub(crate) fn threads() -> usize {
    std::env::var(THREADS_VAR)
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1)
        })
        .max(1)
}

/// What the test that [`fleet_search!`](crate::fleet_search) stamps does: searches the seeds
/// [`SeedPlan::from_env`] gives (the fixed seeds `0..seeds` plus the moving window, or only the
/// seed in [`SEED_VAR`]), prints the ranges, the modes and the wall time, and on failure panics
/// listing every failing seed with the command that replays exactly that seed, then the first
/// one's plan.
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
    let plan = SeedPlan::from_env(seeds);
    // Replaying one seed keeps its whole event log, printed below.
    options.keep_log |= plan.replay.is_some();
    let report = search_ranges(make, &plan.ranges(), &options);
    println!("{plan}");
    println!(
        "fleet search: {} seeds in {:.2}s wall on {} threads ({} safety, {} liveness); {} routes, \
         {} discovery events",
        report.seeds_run,
        report.wall.as_secs_f64(),
        report.threads,
        report.seeds_run - report.liveness_seeds,
        report.liveness_seeds,
        report.routes,
        report.events
    );
    if let Some((seed, after)) = report.slowest_convergence {
        println!(
            "liveness: the slowest seed ({seed}) converged {:.3}s after its faults stopped \
             (bound {:.3}s)",
            after.as_secs_f64(),
            options.liveness_bound().as_secs_f64()
        );
    }
    if let Some(failure) = report.first_failure().filter(|f| !f.log.is_empty()) {
        println!("event log of seed {}:", failure.seed);
        for line in &failure.log {
            println!("  {line}");
        }
    }
    let Some(first) = report.first_failure() else {
        return;
    };
    let stem = std::path::Path::new(file)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("fleet");
    let name = test.rsplit("::").next().unwrap_or(test);
    let mut message = format!("{} failing fleet seeds:\n", report.failures.len());
    for failure in &report.failures {
        message.push_str(&format!(
            "fleet seed {seed} failed ({mode} mode):\n  {violations}\n  replay: {SEED_VAR}={seed} \
             cargo test -p {package} --test {stem} {name} -- --nocapture\n",
            seed = failure.seed,
            mode = failure.mode,
            violations = failure.violations.join("\n  "),
        ));
    }
    panic!(
        "{message}the first one, seed {seed}, ran {mode} mode with faults until {quiet:.3}s; {plan}",
        seed = first.seed,
        mode = first.mode,
        quiet = first.quiet_at.as_secs_f64(),
        plan = first.plan,
    );
}
