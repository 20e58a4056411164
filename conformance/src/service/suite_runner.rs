//! Running one named scenario of the suite: on the runtime and in the turn that
//! `registry-testing` gives the backend's time, with the entry points the macro and the suite's
//! own tests call.

use super::ctx::ServiceCtx;
use super::SCENARIOS;
use crate::backend::Time;
use crate::failure::Failure;
use registry_testing::{runtime, take_turn, ServiceBackend};
use std::future::Future;
use tokio::runtime::Runtime;

/// The name of every scenario, in the order the macro stamps them.
pub fn scenario_names() -> Vec<&'static str> {
    SCENARIOS.iter().map(|(n, _)| *n).collect()
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
    let _turn = take_turn(backend.capabilities().time);
    let started = std::time::Instant::now();
    let result = rt.block_on(async {
        let mut cx = ServiceCtx::new(backend, name);
        let result = scenario(&mut cx).await;
        cx.cleanup().await;
        result.map_err(|m| Failure::new(*name, format!("service scenario: {m}")))
    });
    // What a real-time backend's run costs, scenario by scenario (shown with `--nocapture`).
    if backend.capabilities().time == Time::Real {
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
