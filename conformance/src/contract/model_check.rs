//! `model_check`: generated operation sequences, every result and watched event checked against
//! the reference model; a failure is shrunk and reported with its number, the seed and the
//! command that replays exactly it (see [`generated`](super::generated)).

use crate::contract::backend::Backend;
use crate::contract::generated::{self, Site};
use crate::contract::ops;
use crate::contract::proptest_setup::cases_from_env;
use crate::contract::sequence::check;
use crate::failure::Failure;
use tokio::runtime::Runtime;

/// The case's name.
pub(crate) const NAME: &str = "model_check";

/// Runs `cases` generated sequences (default: `PROPTEST_CASES`, else the backend's default) on
/// `backend`. `source_file` (the test file that stamped the case) names the test in the replay
/// command a failure prints.
pub fn run<B: Backend>(
    backend: &B,
    rt: &Runtime,
    source_file: Option<&'static str>,
    cases: Option<u32>,
) -> Result<(), Failure> {
    let site = Site {
        file: source_file,
        module: None,
    };
    run_at(backend, rt, site, cases)
}

pub(crate) fn run_at<B: Backend>(
    backend: &B,
    rt: &Runtime,
    site: Site,
    cases: Option<u32>,
) -> Result<(), Failure> {
    let caps = backend.capabilities();
    let cases = cases
        .or_else(cases_from_env)
        .unwrap_or_else(|| caps.default_cases());
    generated::run(NAME, site, cases, &ops::ops(&caps), |ops| {
        rt.block_on(check(backend, NAME, ops))
            .map(|_| ())
            .map_err(|f| f.message)
    })
}
