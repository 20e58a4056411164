#![doc = include_str!("../README.md")]

mod backend;
mod cases;
mod failure;
pub mod fleet;
mod fuzz;
mod harness;
pub mod model;
mod model_check;
mod observe;
pub mod ops;
mod prefix;
mod proptest_setup;
mod run;
pub mod service;
mod watch_read;

pub use backend::{Backend, Capabilities, Sharing, Time};
pub use failure::Failure;
pub use harness::{case_names, run_case, run_test, runtime};
pub use model_check::run as run_model_check;
pub use observe::{
    ErrorKind, LeaseRef, ObsBatch, ObsEvent, ObsKv, Observation, Outcome, Step, WatchLog,
};
pub use ops::{ops as ops_strategy, Op};
pub use proptest_setup::{full_mode, fuzz_cases, fuzz_runner};
pub use run::{check, run, UNKNOWN_LEASE};

/// Stamps one `#[test]` per conformance case, each running that case on a fresh backend from
/// `$backend` (a `fn() -> impl Backend`; write `async $backend` for an async constructor).
///
/// ```
/// # use registry_conformance::{Backend, Capabilities};
/// # use std::{sync::Arc, time::Duration};
/// # struct Sim;
/// # #[async_trait::async_trait]
/// # impl Backend for Sim {
/// #     async fn registry(&self) -> Arc<dyn registry_api::Registry> {
/// #         Arc::new(registry_memory::MemoryRegistry::with_manual_clock())
/// #     }
/// #     fn capabilities(&self) -> Capabilities { Capabilities::simulator() }
/// #     async fn advance(&self, _by: Duration) {}
/// # }
/// fn backend() -> Sim {
///     Sim
/// }
/// registry_conformance::conformance_suite!(backend);
///
/// // With an async constructor (say, one that connects), in another test file:
/// mod connected {
/// #   use super::Sim;
///     async fn connect() -> Sim {
///         Sim
///     }
///     registry_conformance::conformance_suite!(async connect);
/// }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! conformance_suite {
    (async $backend:expr) => {
        $crate::__conformance_cases!(with_cases stamp (|| $backend()));
    };
    ($backend:expr) => {
        $crate::conformance_suite!(async (|| async { $backend() }));
    };
}

/// Implementation detail of [`conformance_suite!`]: the one list of case names, and what is
/// done with it (stamp tests, or list the names for the suite's own check).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    (stamp ($make:expr); $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::run_test(stringify!($case), file!(), $make);
            }
        )*
    };
    (names (); $($case:ident),* $(,)?) => {
        [$(stringify!($case)),*]
    };
    (with_cases $mode:ident $arg:tt) => {
        $crate::__conformance_cases! {
            $mode $arg;
            watch_is_ordered,
            watch_is_unique,
            watch_is_atomic,
            watch_is_reliable,
            watch_is_resumable,
            watch_progress_is_a_bookmark,
            watch_is_filtered,
            watch_prev_kv_and_create_flag,
            concurrent_watchers_agree,
            watch_from_compacted_revision_fails,
            reads_outside_history_fail,
            revision_accounting,
            revoke_deletes_all_keys_in_one_revision,
            lease_grant_respects_minimum,
            lease_expiry_is_bounded,
            lease_keep_alive_extends_life,
            expired_lease_ops_fail,
            unknown_lease_ops_fail,
            put_moves_and_detaches_keys,
            bad_input_writes_nothing,
            public_api_survives_arbitrary_input,
            model_check,
        }
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_macro_stamps_every_case() {
        let stamped: Vec<&str> = __conformance_cases!(with_cases names ()).to_vec();
        assert_eq!(stamped, crate::case_names());
    }
}
