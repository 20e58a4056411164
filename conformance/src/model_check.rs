//! `model_check`: generated operation sequences, every result and watched event checked against
//! the reference model, failures shrunk to a minimal sequence and kept as regressions.

use crate::backend::Backend;
use crate::failure::Failure;
use crate::ops;
use crate::run::check;
use proptest::test_runner::{
    Config, FailurePersistence, FileFailurePersistence, RngSeed, TestCaseError, TestRunner,
};
use tokio::runtime::Runtime;

/// The case's name.
pub(crate) const NAME: &str = "model_check";

/// The seed used when `PROPTEST_RNG_SEED` is not set: the same sequences on every run.
const DEFAULT_SEED: u64 = 0x5eed_0005;

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
    let mut config = Config::default();
    let from_env = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok());
    config.cases = cases.or(from_env).unwrap_or_else(|| caps.default_cases());
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(DEFAULT_SEED);
    }
    if std::env::var_os("PROPTEST_MAX_SHRINK_ITERS").is_none() {
        config.max_shrink_iters = 1024;
    }
    config.source_file = source_file;
    config.test_name = Some(NAME);
    config.failure_persistence = source_file.map(|file| {
        Box::new(FileFailurePersistence::Direct(regressions_path(file)))
            as Box<dyn FailurePersistence>
    });
    let mut runner = TestRunner::new(config);
    runner
        .run(&ops::ops(&caps), |ops| {
            rt.block_on(check(backend, NAME, &ops))
                .map(|_| ())
                .map_err(|f| TestCaseError::fail(f.message))
        })
        .map_err(|e| Failure::new(NAME, e.to_string()))
}

/// `proptest-regressions/<test file stem>.txt`, relative to the package being tested (cargo
/// runs tests from its directory). proptest wants a `'static` path; one small leak per test.
fn regressions_path(source_file: &str) -> &'static str {
    let stem = std::path::Path::new(source_file)
        .file_stem()
        .map_or_else(|| "conformance".into(), |s| s.to_string_lossy());
    Box::leak(format!("proptest-regressions/{stem}.txt").into_boxed_str())
}
