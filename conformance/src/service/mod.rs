//! The service-layer suite: registration, discovery and picking scenarios, written once, run
//! on any backend with one macro call ([`service_suite!`](crate::service_suite)), one named test
//! per scenario.
//!
//! A backend implements [`ServiceBackend`]: named clients of one server, the faults it can stage
//! ([`ServiceCapabilities`]), and its time. Scenarios that need a fault the backend declares
//! absent pass with a printed "not supported by this backend" line; every other scenario runs.
//! On virtual time the bounds are exact (expiry lateness zero, no allowance); on real time each
//! bound is the stated one plus the backend's declared expiry lateness and a second of
//! scheduling allowance.
//!
//! The backend's side lives in `registry-testing`, re-exported here so that an adapter needs
//! no other import: [`ServiceBackend`], [`ServiceCapabilities`], [`Time`], [`Links`] (per-client
//! partitions for any backend), [`Link`] (what [`ServiceBackend::link`] returns) and
//! [`runtime`]; plus `Registry` and `LeaseId` from `registry_api`. The ready-made backends
//! (`registry_memory::testing::backend()`, `registry_etcd::testing::backend()`, behind their
//! `testing` features) run the suite with no adapter at all.

mod ctx;
mod discovery;
mod picking;
#[cfg(test)]
mod races;
mod registration;
mod seeds;
mod suite_runner;
mod tap;

pub use registry_testing::{runtime, Link, Links, ServiceBackend, ServiceCapabilities, Time};
pub use seeds::{search_seeds, seed_search_test, SeedFailure, SeedsReport};
pub use suite_runner::{run_scenario, run_test, scenario_names};

use crate::failure::Check;
use ctx::ServiceCtx;
use std::future::Future;
use std::pin::Pin;

/// A scenario: an async check over a fresh [`ServiceCtx`].
type ScenarioFn =
    for<'a, 'b> fn(&'a mut ServiceCtx<'b>) -> Pin<Box<dyn Future<Output = Check> + 'a>>;

macro_rules! scenario_table {
    ($($name:ident => $f:path),* $(,)?) => {
        /// Every named scenario, by name.
        const SCENARIOS: &[(&str, ScenarioFn)] = &[$(
            (stringify!($name), {
                fn $name<'a, 'b>(
                    cx: &'a mut ServiceCtx<'b>,
                ) -> Pin<Box<dyn Future<Output = Check> + 'a>> {
                    Box::pin($f(cx))
                }
                $name
            }),
        )*];
    };
}

scenario_table! {
    live_registration_is_seen_and_stays => registration::live_registration_is_seen_and_stays,
    crashed_instance_expires_one_ttl_after_its_last_keep_alive =>
        registration::crashed_instance_expires_one_ttl_after_its_last_keep_alive,
    deregistration_removes_the_instance_at_once =>
        registration::deregistration_removes_the_instance_at_once,
    revoked_lease_is_replaced_with_the_latest_metadata =>
        registration::revoked_lease_is_replaced_with_the_latest_metadata,
    lease_expired_by_the_server_is_replaced_within_the_backoff_bound =>
        registration::lease_expired_by_the_server_is_replaced_within_the_backoff_bound,
    deleted_or_overwritten_key_is_put_back_on_the_same_lease =>
        registration::deleted_or_overwritten_key_is_put_back_on_the_same_lease,
    bad_input_fails_typed_and_writes_nothing =>
        registration::bad_input_fails_typed_and_writes_nothing,
    lease_is_declared_lost_one_ttl_after_the_last_good_keep_alive =>
        registration::lease_is_declared_lost_one_ttl_after_the_last_good_keep_alive,
    cache_resyncs_by_diff_after_a_partition_and_a_compaction =>
        discovery::cache_resyncs_by_diff_after_a_partition_and_a_compaction,
    watch_that_starts_compacted_re_lists_without_duplicates =>
        discovery::watch_that_starts_compacted_re_lists_without_duplicates,
    outage_longer_than_the_ttl_heals_by_itself =>
        discovery::outage_longer_than_the_ttl_heals_by_itself,
    malformed_values_are_skipped_counted_and_never_fatal =>
        discovery::malformed_values_are_skipped_counted_and_never_fatal,
    handles_of_one_service_share_one_watch => discovery::handles_of_one_service_share_one_watch,
    cache_is_synced_only_once_its_watch_is_up =>
        discovery::cache_is_synced_only_once_its_watch_is_up,
    waits_return_a_synced_view_and_a_cut_view_knows_it_is_stale =>
        discovery::waits_return_a_synced_view_and_a_cut_view_knows_it_is_stale,
    picker_follows_the_cache => picking::picker_follows_the_cache,
}
