//! `model_check`: generated operation sequences, every result and watched event checked against
//! the reference model, failures shrunk to a minimal sequence and kept as regressions.

use crate::contract::backend::Backend;
use crate::contract::ops;
use crate::contract::proptest_setup::{case_runner, cases_from_env};
use crate::contract::sequence::check;
use crate::failure::Failure;
use proptest::test_runner::TestCaseError;
use tokio::runtime::Runtime;

/// The case's name.
pub(crate) const NAME: &str = "model_check";

/// Runs `cases` generated sequences (default: `PROPTEST_CASES`, else the backend's default) on
/// `backend`. With a `source_file`, failures are kept beside it under `proptest-regressions/`
/// and replayed first on later runs.
pub fn run<B: Backend>(
    backend: &B,
    rt: &Runtime,
    source_file: Option<&'static str>,
    cases: Option<u32>,
) -> Result<(), Failure> {
    let caps = backend.capabilities();
    let cases = cases
        .or_else(cases_from_env)
        .unwrap_or_else(|| caps.default_cases());
    let mut runner = case_runner(NAME, cases, source_file, "");
    runner
        .run(&ops::ops(&caps), |ops| {
            rt.block_on(check(backend, NAME, &ops))
                .map(|_| ())
                .map_err(|f| TestCaseError::fail(f.message))
        })
        .map_err(|e| Failure::new(NAME, e.to_string()))
}
