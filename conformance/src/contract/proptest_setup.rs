//! The proptest set-up: how many inputs (from the environment or the caller), and a runner with
//! a fixed seed for a backend's own fuzz tests.

use proptest::test_runner::{
    Config, FailurePersistence, FileFailurePersistence, RngSeed, TestRunner,
};

/// The seed used when `PROPTEST_RNG_SEED` is not set: the same inputs on every run.
const DEFAULT_SEED: u64 = 0x5eed_0005;

/// `PROPTEST_CASES`, when it is set to a number: it overrides every default count.
pub(crate) fn cases_from_env() -> Option<u32> {
    std::env::var("PROPTEST_CASES").ok()?.parse().ok()
}

/// Whether `REGISTRY_FAULTS_FULL` asks for the full-size reliability run (`scripts/faults.sh`),
/// which raises the generated counts far above what CI runs.
pub fn full_mode() -> bool {
    std::env::var_os("REGISTRY_FAULTS_FULL").is_some_and(|v| !v.is_empty() && v != "0")
}

/// `PROPTEST_CASES` if set, else `full` in [full mode](full_mode), else `ci`.
pub fn fuzz_cases(ci: u32, full: u32) -> u32 {
    cases_from_env().unwrap_or(if full_mode() { full } else { ci })
}

/// A deterministic runner for a backend's own fuzz test: [`fuzz_cases`]`(ci, full)` inputs, the
/// suite's fixed seed, failures kept in `regressions` (a path relative to the package, e.g.
/// `proptest-regressions/fuzz-discovery.txt`) and replayed first.
pub fn fuzz_runner(ci: u32, full: u32, regressions: &'static str) -> TestRunner {
    TestRunner::new(config(fuzz_cases(ci, full), None, Some(regressions)))
}

fn config(cases: u32, name: Option<&'static str>, regressions: Option<&'static str>) -> Config {
    let mut config = Config {
        cases,
        test_name: name,
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(DEFAULT_SEED);
    }
    if std::env::var_os("PROPTEST_MAX_SHRINK_ITERS").is_none() {
        config.max_shrink_iters = 1024;
    }
    config.failure_persistence = regressions
        .map(|file| Box::new(FileFailurePersistence::Direct(file)) as Box<dyn FailurePersistence>);
    config
}
