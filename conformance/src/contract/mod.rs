//! The contract suite: the `Registry` calls one by one against the pure reference [`model`],
//! written once and stamped on any backend with one macro call
//! ([`conformance_suite!`](crate::conformance_suite)), one named test per case.
//!
//! A backend implements [`Backend`]: a registry per case, what it declares
//! ([`Capabilities`]: its time, its expiry lateness, how it reports TTLs, its limits, whether
//! it is shared), and a way to move a virtual clock.

pub(crate) mod backend;
mod case_runner;
mod cases;
mod concurrency;
mod fuzz;
mod generated;
pub mod model;
mod model_check;
mod observe;
pub mod ops;
mod prefix;
mod proptest_setup;
mod report;
mod sequence;
mod watch_read;

pub use backend::{Backend, Capabilities, Sharing, Time, TtlReporting};
pub use case_runner::{__run_stamped, case_names, run_case, run_test, runtime};
pub use generated::{CASE_VAR, SEED_VAR};
pub use model_check::run as run_model_check;
pub use observe::{
    ErrorKind, LeaseRef, ObsBatch, ObsEvent, ObsKv, Observation, Outcome, Step, WatchLog,
};
pub use ops::{ops as ops_strategy, Op};
pub use proptest_setup::{full_mode, fuzz_cases, fuzz_runner};
pub use sequence::{check, run, UNKNOWN_LEASE};
