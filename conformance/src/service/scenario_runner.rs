//! Running one named scenario: its runtime (paused for virtual time), the lock that runs
//! real-time scenarios one at a time, and the entry points the macro and the suite's own tests
//! call.

use super::backend::ServiceBackend;
use super::ctx::ServiceCtx;
use super::SCENARIOS;
use crate::backend::Time;
use crate::failure::Failure;
use std::future::Future;
use std::sync::Mutex;
use tokio::runtime::Runtime;

/// Real-time scenarios take this lock: they share a real server (an outage stops it for all)
/// and their timing bounds assume the machine is not running other scenarios meanwhile.
static REAL_TIME: Mutex<()> = Mutex::new(());

/// The name of every scenario, in the order the macro stamps them.
pub fn scenario_names() -> Vec<&'static str> {
    SCENARIOS.iter().map(|(n, _)| *n).collect()
}

/// A current-thread runtime for a scenario on `time`: its clock paused for [`Time::Virtual`] (it
/// moves only when every task waits, so sleeps cost nothing and instants are exact).
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

/// Runs scenario `name` on `backend` inside `rt` (from [`runtime`] with the backend's time).
pub fn run_scenario<B: ServiceBackend>(
    name: &str,
    backend: &B,
    rt: &Runtime,
) -> Result<(), Failure> {
    let Some((name, scenario)) = SCENARIOS.iter().find(|(n, _)| *n == name) else {
        return Err(Failure::new(name, "no such service scenario"));
    };
    let caps = backend.capabilities();
    let _guard = match caps.time {
        Time::Real => Some(REAL_TIME.lock().unwrap_or_else(|p| p.into_inner())),
        Time::Virtual => None,
    };
    let started = std::time::Instant::now();
    let result = rt.block_on(async {
        let mut cx = ServiceCtx::new(backend, name);
        let result = scenario(&mut cx).await;
        cx.cleanup().await;
        result.map_err(|m| Failure::new(*name, format!("service scenario: {m}")))
    });
    // What a real-time backend's run costs, scenario by scenario (shown with `--nocapture`).
    if caps.time == Time::Real {
        println!(
            "service scenario `{name}`: {} in {:?} of wall time",
            if result.is_ok() { "passed" } else { "failed" },
            started.elapsed()
        );
    }
    result
}

/// What one generated test does: builds the backend, a runtime for its time, runs the scenario,
/// and panics with the failure (a test's way of failing).
///
/// `make` is called twice: once on a plain runtime, only to read the backend's time, then again
/// on the scenario's own runtime, which for [`Time::Virtual`] is paused from its start (so every
/// timer fires on the instant it was set for, to the millisecond).
pub fn run_test<B, F, Fut>(name: &str, make: F)
where
    B: ServiceBackend,
    F: Fn() -> Fut,
    Fut: Future<Output = B>,
{
    let time = runtime(Time::Real).block_on(async { make().await.capabilities().time });
    let rt = runtime(time);
    let backend = rt.block_on(make());
    if let Err(failure) = run_scenario(name, &backend, &rt) {
        panic!("{failure}");
    }
}
