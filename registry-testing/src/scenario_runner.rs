//! Running one scenario: its runtime (paused for virtual time), the turns that run real-time
//! scenarios one at a time, and the entry point the [`scenarios!`](crate::scenarios) macro calls.

use crate::backend::ServiceBackend;
use crate::time::Time;
use registry_api::seeding;
use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use tokio::runtime::Runtime;

/// Real-time scenarios take turns on this lock: they share a real server (an outage stops it
/// for all) and their timing bounds assume the machine is not running other scenarios meanwhile.
static REAL_TIME: Mutex<()> = Mutex::new(());

/// A current-thread runtime for a scenario on `time`: its clock paused for [`Time::Virtual`] (it
/// moves only when every task waits, so sleeps cost nothing and instants are exact).
///
/// ```
/// use registry_testing::{runtime, Time};
/// use std::time::Duration;
///
/// let rt = runtime(Time::Virtual);
/// let slept = rt.block_on(async {
///     let start = std::time::Instant::now();
///     tokio::time::sleep(Duration::from_secs(3600)).await; // an hour of virtual time
///     start.elapsed()
/// });
/// assert!(slept < Duration::from_secs(1));
/// ```
pub fn runtime(time: Time) -> Runtime {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all();
    if time == Time::Virtual {
        builder.start_paused(true);
    }
    match builder.build() {
        Ok(rt) => rt,
        // No runtime means no scenario can run at all; there is nothing to recover.
        Err(e) => panic!("cannot build a tokio runtime: {e}"),
    }
}

/// A real-time scenario's turn: while it is held, no other real-time scenario of the process
/// runs. Virtual-time scenarios need none and run in parallel.
#[must_use = "the turn ends when it is dropped"]
pub struct Turn {
    _guard: Option<MutexGuard<'static, ()>>,
}

impl fmt::Debug for Turn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Turn")
            .field("real_time", &self._guard.is_some())
            .finish()
    }
}

/// Waits for the turn of a scenario on `time` (at once for [`Time::Virtual`]). A scenario that
/// panicked while holding its turn does not block the next one.
pub fn take_turn(time: Time) -> Turn {
    let guard = match time {
        Time::Real => Some(REAL_TIME.lock().unwrap_or_else(|p| p.into_inner())),
        Time::Virtual => None,
    };
    Turn { _guard: guard }
}

/// One scenario: an async function of the backend.
pub type Scenario<B> = for<'a> fn(&'a B) -> Pin<Box<dyn Future<Output = ()> + 'a>>;

/// What one stamped test does: builds the backend with `make`, takes the turn and the runtime
/// of its time, and runs `scenario` on it to the end. A failing scenario panics (a test's way of
/// failing); the backend is dropped after the runtime, while the turn is still held, so a
/// backend that staged an outage can bring its server back in `Drop` before the next scenario.
pub fn run<B: ServiceBackend>(make: impl FnOnce() -> B, scenario: Scenario<B>) {
    let backend = make();
    let time = backend.capabilities().time;
    // Declared in this order, dropped in the reverse: the runtime (and every task the scenario
    // left), then the backend, then the turn.
    let turn = take_turn(time);
    let backend = backend;
    let rt = runtime(time);
    rt.block_on(scenario(&backend));
    drop(rt);
    drop(backend);
    drop(turn);
}

/// [`run`] once per seed of `seeds`, each on a fresh backend from `make` with the seed in scope
/// ([`seeding::with_seed`]), so that a simulator the backend builds draws its timing from it:
/// the orders a real etcd can produce are tried, seed by seed. `REGISTRY_SEEDS` changes the
/// seeds and `REGISTRY_SEED` replays one ([`seeding::seeds_from_env`]). The first failing seed
/// fails the test; a timed simulator going down with it prints the seed and the line that
/// replays it.
pub fn run_seeded<B: ServiceBackend>(
    make: impl Fn() -> B,
    scenario: Scenario<B>,
    seeds: Range<u64>,
) {
    for seed in seeding::seeds_from_env(seeds) {
        seeding::with_seed(seed, || run(&make, scenario));
    }
}
