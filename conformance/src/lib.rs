#![doc = include_str!("../README.md")]

pub mod contract;
mod failure;
pub mod fleet;
pub mod service;

// The service and fleet suites share the contract suite's notion of time.
use contract::backend;

pub use contract::{
    __run_stamped, case_names, check, full_mode, fuzz_cases, fuzz_runner, model, ops, ops_strategy,
    run, run_case, run_model_check, run_test, runtime, Backend, Capabilities, ErrorKind, LeaseRef,
    ObsBatch, ObsEvent, ObsKv, Observation, Op, Outcome, Sharing, Step, Time, TtlReporting,
    WatchLog, CASE_VAR, SEED_VAR, UNKNOWN_LEASE,
};
pub use failure::Failure;

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
                $crate::__run_stamped(stringify!($case), file!(), module_path!(), $make);
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
            watch_progress_request_answers,
            watch_is_filtered,
            watch_prev_kv_and_create_flag,
            concurrent_watchers_agree,
            concurrent_clients_are_linearizable,
            watch_from_compacted_revision_fails,
            slow_watcher_never_skips_an_event,
            watch_from_a_future_revision_starts_there,
            watch_across_compaction_keeps_deletes,
            reads_outside_history_fail,
            revision_accounting,
            revoke_deletes_all_keys_in_one_revision,
            lease_grant_respects_minimum,
            lease_expiry_is_bounded,
            lease_keep_alive_extends_life,
            keep_alive_many_renews_each_live_lease_and_answers_in_order,
            lease_past_its_deadline_is_gone_though_its_keys_may_linger,
            expired_lease_ops_fail,
            unknown_lease_ops_fail,
            put_moves_and_detaches_keys,
            bad_input_writes_nothing,
            public_api_survives_arbitrary_input,
            model_check,
        }
    };
}

/// Stamps one `#[test]` per service-layer scenario (registration, discovery, picking), each
/// running that scenario on a fresh backend from `$backend` (a `fn() -> impl ServiceBackend`;
/// write `async $backend` for an async constructor). Scenarios run on a paused current-thread
/// runtime when the backend declares [`Time::Virtual`], on a normal one for [`Time::Real`].
///
/// The ready-made backends need no adapter (`registry_memory::testing::backend`,
/// `registry_etcd::testing::backend`, behind their `testing` features):
///
/// ```
/// registry_conformance::service_suite!(registry_memory::testing::backend);
/// # fn main() {}
/// ```
///
/// Another backend implements [`ServiceBackend`](service::ServiceBackend) (from
/// `registry-testing`, re-exported in [`service`]):
///
/// ```
/// # use registry_api::Registry;
/// # use registry_conformance::service::{Links, ServiceBackend, ServiceCapabilities};
/// # use registry_memory::MemoryRegistry;
/// # use std::sync::{Arc, OnceLock};
/// # #[derive(Default)]
/// # struct Sim { store: OnceLock<MemoryRegistry>, links: Links }
/// # #[async_trait::async_trait]
/// # impl ServiceBackend for Sim {
/// #     async fn client(&self, name: &str) -> Arc<dyn Registry> {
/// #         let store = self.store.get_or_init(MemoryRegistry::new).clone();
/// #         self.links.wrap(name, Arc::new(store))
/// #     }
/// #     fn capabilities(&self) -> ServiceCapabilities {
/// #         ServiceCapabilities { expire_lease: false, ..ServiceCapabilities::simulator() }
/// #     }
/// #     async fn partition(&self, name: &str, cut: bool) { self.links.cut(name, cut) }
/// #     async fn outage(&self, down: bool) {
/// #         if let Some(s) = self.store.get() { s.set_unavailable(down) }
/// #     }
/// # }
/// fn simulator() -> Sim {
///     Sim::default()
/// }
/// registry_conformance::service_suite!(simulator);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! service_suite {
    (async $backend:expr) => {
        $crate::__service_scenarios!(with_scenarios stamp (|| $backend()));
    };
    ($backend:expr) => {
        $crate::service_suite!(async (|| async { $backend() }));
    };
}

/// Implementation detail of [`service_suite!`]: the one list of scenario names, and what is
/// done with it (stamp tests, or list the names for the suite's own check).
#[doc(hidden)]
#[macro_export]
macro_rules! __service_scenarios {
    (stamp ($make:expr); $($scenario:ident),* $(,)?) => {
        $(
            #[test]
            fn $scenario() {
                $crate::service::run_test(stringify!($scenario), $make);
            }
        )*
    };
    (names (); $($scenario:ident),* $(,)?) => {
        [$(stringify!($scenario)),*]
    };
    (with_scenarios $mode:ident $arg:tt) => {
        $crate::__service_scenarios! {
            $mode $arg;
            live_registration_is_seen_and_stays,
            crashed_instance_expires_one_ttl_after_its_last_keep_alive,
            deregistration_removes_the_instance_at_once,
            revoked_lease_is_replaced_with_the_latest_metadata,
            lease_expired_by_the_server_is_replaced_within_the_backoff_bound,
            deleted_or_overwritten_key_is_put_back_on_the_same_lease,
            bad_input_fails_typed_and_writes_nothing,
            lease_is_declared_lost_one_ttl_after_the_last_good_keep_alive,
            cache_resyncs_by_diff_after_a_partition_and_a_compaction,
            watch_that_starts_compacted_re_lists_without_duplicates,
            outage_longer_than_the_ttl_heals_by_itself,
            malformed_values_are_skipped_counted_and_never_fatal,
            handles_of_one_service_share_one_watch,
            cache_is_synced_only_once_its_watch_is_up,
            waits_return_a_synced_view_and_a_cut_view_knows_it_is_stale,
            picker_follows_the_cache,
        }
    };
}

/// Stamps a `#[test]` named `service_seed_search` that runs every service-layer scenario once
/// per seed, `0..seeds` (or `REGISTRY_SEEDS`; `REGISTRY_SEED` replays one), each on a fresh
/// backend from `$backend` built with its seed in scope, and prints the seeds and the wall time;
/// every failing scenario and seed is listed with the line that replays it. Stamp it beside
/// [`service_suite!`] (at the top level of the same test file) so that the replay line's test
/// exists.
///
/// ```text
/// registry_conformance::service_suite!(simulator);
/// registry_conformance::service_seed_search!(simulator, seeds = 100);
/// ```
#[macro_export]
macro_rules! service_seed_search {
    (async $backend:expr, seeds = $seeds:expr) => {
        #[test]
        fn service_seed_search() {
            $crate::service::seed_search_test(|| $backend(), $seeds);
        }
    };
    ($backend:expr, seeds = $seeds:expr) => {
        $crate::service_seed_search!(async (|| async { $backend() }), seeds = $seeds);
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_service_macro_stamps_every_scenario() {
        let stamped: Vec<&str> = __service_scenarios!(with_scenarios names ()).to_vec();
        assert_eq!(stamped, crate::service::scenario_names());
    }

    #[test]
    fn the_macro_stamps_every_case() {
        let stamped: Vec<&str> = __conformance_cases!(with_cases names ()).to_vec();
        assert_eq!(stamped, crate::case_names());
    }
}
