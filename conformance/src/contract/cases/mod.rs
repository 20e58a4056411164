//! The named cases: one property (or one small family) each, so a failure names what broke.

pub(crate) mod ctx;
mod input;
mod lease;
mod lease_window;
mod revision;
mod watch;
mod watch_reach;

pub(crate) use ctx::Ctx;

use crate::failure::Check;
use std::future::Future;
use std::pin::Pin;

/// A case: an async check over a fresh [`Ctx`].
pub(crate) type CaseFn =
    for<'a, 'b> fn(&'a mut Ctx<'b>) -> Pin<Box<dyn Future<Output = Check> + 'a>>;

macro_rules! case_table {
    ($($name:ident => $f:path),* $(,)?) => {
        /// Every named case, by name.
        pub(crate) const CASES: &[(&str, CaseFn)] = &[$(
            (stringify!($name), {
                fn $name<'a, 'b>(cx: &'a mut Ctx<'b>) -> Pin<Box<dyn Future<Output = Check> + 'a>> {
                    Box::pin($f(cx))
                }
                $name
            }),
        )*];
    };
}

case_table! {
    watch_is_ordered => watch::ordered,
    watch_is_unique => watch::unique,
    watch_is_atomic => watch::atomic,
    watch_is_reliable => watch::reliable,
    watch_is_resumable => watch::resumable,
    watch_progress_is_a_bookmark => watch::bookmark,
    watch_progress_request_answers => watch::progress_request_answers,
    watch_is_filtered => watch::filtered,
    watch_prev_kv_and_create_flag => watch::prev_kv_and_create_flag,
    concurrent_watchers_agree => watch::concurrent_watchers_agree,
    concurrent_clients_are_linearizable =>
        crate::contract::concurrency::concurrent_clients_are_linearizable,
    watch_from_compacted_revision_fails => watch::compacted_start_fails,
    slow_watcher_never_skips_an_event => watch_reach::slow_watcher_never_skips_an_event,
    watch_from_a_future_revision_starts_there =>
        watch_reach::watch_from_a_future_revision_starts_there,
    watch_across_compaction_keeps_deletes => watch_reach::watch_across_compaction_keeps_deletes,
    reads_outside_history_fail => revision::reads_outside_history_fail,
    revision_accounting => revision::accounting,
    revoke_deletes_all_keys_in_one_revision => revision::revoke_is_one_revision,
    lease_grant_respects_minimum => lease::grant_respects_minimum,
    lease_expiry_is_bounded => lease::expiry_is_bounded,
    lease_keep_alive_extends_life => lease::keep_alive_extends_life,
    keep_alive_many_renews_each_live_lease_and_answers_in_order =>
        lease::keep_alive_many_renews_each_live_lease_and_answers_in_order,
    lease_past_its_deadline_is_gone_though_its_keys_may_linger =>
        lease_window::lease_past_its_deadline_is_gone_though_its_keys_may_linger,
    expired_lease_ops_fail => lease::expired_lease_ops_fail,
    unknown_lease_ops_fail => lease::unknown_lease_ops_fail,
    put_moves_and_detaches_keys => lease::put_moves_and_detaches_keys,
    bad_input_writes_nothing => input::bad_input_writes_nothing,
}
