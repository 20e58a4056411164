//! The suite can fail: deliberately broken wrappers around the memory backend, each named after
//! the bug it mirrors and caught by a named case; the unbroken backend and an honest backend
//! with a late reaper as controls.
//!
//! Each test prints its row of the mutant table in the README (`-- --nocapture`): the case
//! that catches the mutant, the other named cases that do, and the generated sequence of
//! `model_check` (of its default 256) that first fails on it.

#[path = "mutants/broken.rs"]
mod broken;
#[path = "mutants/late_reaper.rs"]
mod late_reaper;

use broken::{Bug, MutantBackend};
use late_reaper::LateReaperBackend;
use registry_conformance::{
    case_names, run_case, run_model_check, runtime, Backend, Capabilities, TtlReporting,
};

/// The generated cases: counted apart (by the sequence that fails).
const GENERATED: [&str; 2] = ["model_check", "public_api_survives_arbitrary_input"];

/// The named cases that fail on `backend` (the generated ones left out).
fn failing_cases(backend: &impl Backend) -> Vec<&'static str> {
    let rt = runtime();
    case_names()
        .into_iter()
        .filter(|name| !GENERATED.contains(name))
        .filter(|name| run_case(name, backend, &rt, None).is_err())
        .collect()
}

/// The number (from 1) of the first of `model_check`'s default sequences that fails on
/// `backend`, with its failure; `None` when all pass.
fn model_check_catches(backend: &impl Backend) -> Option<(u32, String)> {
    let rt = runtime();
    let failure = run_model_check(backend, &rt, None, None).err()?;
    let n: u32 = failure
        .message
        .strip_prefix("generated sequence ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no sequence number in: {}", failure.message));
    Some((n + 1, failure.message))
}

/// `bug` is caught by `case` (in one run of it), and the row of the mutant table is printed.
fn assert_caught(bug: Bug, mirrors: &str, case: &str) {
    let backend = MutantBackend::new(Some(bug));
    let failed = failing_cases(&backend);
    assert!(
        failed.contains(&case),
        "{bug:?} not caught by {case}; cases that failed: {failed:?}"
    );
    let model = model_check_catches(&backend);
    if let Some((_, message)) = &model {
        assert!(
            message.contains("Replay exactly this sequence") && message.contains("Shrunk from"),
            "model_check's failure for {bug:?} has no replay command or shrunk sequence: {message}"
        );
    }
    print_row(&format!("{bug:?}"), mirrors, case, &failed, model);
}

/// One row of the README's mutant table.
fn print_row(name: &str, mirrors: &str, case: &str, failed: &[&str], model: Option<(u32, String)>) {
    let others: Vec<String> = failed
        .iter()
        .filter(|c| **c != case)
        .map(|c| format!("`{c}`"))
        .collect();
    println!(
        "| `{name}` | {mirrors} | `{case}` | {} | {} |",
        if others.is_empty() {
            "none".to_owned()
        } else {
            others.join(", ")
        },
        model.map_or_else(|| "not caught".to_owned(), |(n, _)| format!("sequence {n}")),
    );
}

#[test]
fn control_the_unbroken_backend_passes_every_case() {
    let backend = MutantBackend::new(None);
    let failed = failing_cases(&backend);
    assert!(
        failed.is_empty(),
        "cases failed on the real simulator: {failed:?}"
    );
    assert_eq!(
        model_check_catches(&backend).map(|(_, m)| m),
        None,
        "model_check failed on the real simulator"
    );
}

#[test]
fn control_an_honest_late_reaper_passes_every_case_with_its_declared_lateness() {
    let backend = LateReaperBackend::new(false);
    assert_eq!(failing_cases(&backend), Vec::<&str>::new());
    let rt = runtime();
    for name in GENERATED {
        if let Err(failure) = run_case(name, &backend, &rt, None) {
            panic!("{failure}");
        }
    }
}

#[test]
fn catches_a_keep_alive_that_revives_an_expired_lease() {
    let backend = LateReaperBackend::new(true);
    let failed = failing_cases(&backend);
    let case = "lease_past_its_deadline_is_gone_though_its_keys_may_linger";
    assert!(failed.contains(&case), "cases that failed: {failed:?}");
    print_row(
        "RevivesAnExpiredLease",
        "a keep-alive between the deadline and the late reaper renews the lease (etcd answers not found)",
        case,
        &failed,
        model_check_catches(&backend),
    );
}

#[test]
fn ttl_one_second_short_passes_when_declared_and_is_caught_when_not() {
    let declared = Capabilities::simulator().with_ttl_reporting(TtlReporting::UpToOneLess);
    let honest = MutantBackend::declaring(Some(Bug::ReportsTtlOneShort), declared);
    assert_eq!(failing_cases(&honest), Vec::<&str>::new());
    assert_eq!(model_check_catches(&honest).map(|(_, m)| m), None);
    assert_caught(
        Bug::ReportsTtlOneShort,
        "time-to-live reports `granted - 1` (as etcd) while the backend declares exact TTLs",
        "keep_alive_many_renews_each_live_lease_and_answers_in_order",
    );
}

#[test]
fn catches_a_dropped_event() {
    assert_caught(
        Bug::DropsAnEvent,
        "a watch loses an event",
        "watch_is_reliable",
    );
}

#[test]
fn catches_two_reordered_batches() {
    assert_caught(
        Bug::ReordersTwoBatches,
        "two batches delivered out of order",
        "watch_is_ordered",
    );
}

#[test]
fn catches_a_revision_split_across_batches() {
    assert_caught(
        Bug::SplitsARevision,
        "one revision's events in several batches",
        "watch_is_atomic",
    );
}

#[test]
fn catches_a_lease_expiring_a_second_late() {
    assert_caught(
        Bug::ExpiresASecondLate,
        "leases live a second beyond their TTL",
        "lease_expiry_is_bounded",
    );
}

#[test]
fn catches_a_revision_bump_on_a_no_op_delete() {
    assert_caught(
        Bug::BumpsOnNoOpDelete,
        "a delete of a missing key bumps the revision",
        "revision_accounting",
    );
}

#[test]
fn catches_a_put_with_an_unknown_lease() {
    assert_caught(
        Bug::AcceptsUnknownLease,
        "a put with an unknown lease is written without it",
        "unknown_lease_ops_fail",
    );
}

#[test]
fn catches_a_keep_alive_batch_that_renews_only_its_first_lease() {
    assert_caught(
        Bug::RenewsOnlyTheFirstOfABatch,
        "a keep-alive batch renews only its first lease",
        "keep_alive_many_renews_each_live_lease_and_answers_in_order",
    );
}

#[test]
fn catches_a_keep_alive_batch_answered_in_lease_id_order() {
    assert_caught(
        Bug::AnswersABatchInIdOrder,
        "a keep-alive batch answered in lease id order",
        "keep_alive_many_renews_each_live_lease_and_answers_in_order",
    );
}

#[test]
fn catches_time_travel_after_a_reconnect() {
    assert_caught(
        Bug::TimeTravelAfterReconnect,
        "etcd #15271: reads after a reconnect answer from a member behind",
        "concurrent_clients_are_linearizable",
    );
}

#[test]
fn catches_events_dropped_under_a_slow_reader() {
    assert_caught(
        Bug::DropsEventsUnderASlowReader,
        "etcd #17529: a watcher 64 revisions behind loses events instead of being cancelled",
        "slow_watcher_never_skips_an_event",
    );
}

#[test]
fn catches_deletes_dropped_across_a_compaction() {
    assert_caught(
        Bug::DropsDeletesAcrossACompaction,
        "etcd #18089, #19179: deletes at or below the compaction point dropped from watches",
        "watch_across_compaction_keeps_deletes",
    );
}

#[test]
fn catches_old_events_for_a_future_start() {
    assert_caught(
        Bug::OldEventsForAFutureStart,
        "etcd #20221: a watch from a future revision delivers events below it",
        "watch_from_a_future_revision_starts_there",
    );
}

#[test]
fn catches_a_grant_or_keep_alive_that_bumps_the_revision() {
    assert_caught(
        Bug::GrantAndKeepAliveBumpTheRevision,
        "a grant or a keep-alive uses a revision (a simulator deviation)",
        "revision_accounting",
    );
}

#[test]
fn catches_a_revoke_in_several_revisions() {
    assert_caught(
        Bug::RevokesInSeveralRevisions,
        "a revoke deletes its keys one revision each",
        "revoke_deletes_all_keys_in_one_revision",
    );
}

#[test]
fn catches_a_prefix_watch_leaking_a_neighbour() {
    assert_caught(
        Bug::PrefixWatchLeaksANeighbour,
        "a watch on \"a/\" delivers \"a0\"",
        "watch_is_filtered",
    );
}

#[test]
fn catches_a_watch_missing_writes_made_while_it_was_created_only_under_concurrency() {
    let backend = MutantBackend::new(Some(Bug::MissesWritesWhileAWatchIsCreated));
    let rt = runtime();
    let failure = run_case("concurrent_clients_are_linearizable", &backend, &rt, None)
        .expect_err("the concurrency check passed");
    let message = &failure.message;
    assert!(message.contains("reliable: missing"), "{message}");
    assert!(message.contains("REGISTRY_CONFORMANCE_CASE="), "{message}");
    let run: u32 = message
        .strip_prefix("concurrency run ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no run number: {message}"));
    // One client alone never opens a watch while another writes: every other case passes.
    let failed = failing_cases(&backend);
    assert_eq!(failed, ["concurrent_clients_are_linearizable"]);
    assert_eq!(model_check_catches(&backend).map(|(_, m)| m), None);
    println!(
        "| `MissesWritesWhileAWatchIsCreated` | a watch from a past revision replays up to the head it read, then subscribes from the next write: writes in between are lost (concurrency only) | `concurrent_clients_are_linearizable` (run {}) | none | not caught |",
        run + 1
    );
}

/// The arbitrary-input fuzz on its own catches `bug` (the batch case may too): the failure says
/// `says` and is shrunk to a sequence with a keep-alive batch, so the fuzz's own batch checks
/// are what failed.
fn assert_fuzz_catches(bug: Bug, says: &str) {
    let rt = runtime();
    let backend = MutantBackend::new(Some(bug));
    let failure = run_case("public_api_survives_arbitrary_input", &backend, &rt, None)
        .expect_err("the fuzz passed");
    let message = &failure.message;
    let shrunk = message
        .split("The shrunk sequence")
        .nth(1)
        .unwrap_or_else(|| panic!("{bug:?}: no shrunk input: {message}"));
    assert!(
        message.contains(says) && shrunk.contains("KeepAliveMany"),
        "{bug:?}: {message}"
    );
    let n: u32 = message
        .strip_prefix("generated sequence ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no sequence number: {message}"));
    println!(
        "| `{bug:?}` | {says} | `public_api_survives_arbitrary_input` (sequence {} of 192) | | |",
        n + 1
    );
}

#[test]
fn the_fuzz_catches_a_keep_alive_batch_that_writes() {
    assert_fuzz_catches(Bug::WritesOnABatch, "a keep-alive changed the store");
}

#[test]
fn the_fuzz_catches_an_oversized_keep_alive_batch_that_renews() {
    assert_fuzz_catches(
        Bug::RenewsAnOversizedBatch,
        "the failed call changed the store",
    );
}

#[test]
fn catches_an_unanswered_progress_request() {
    // Only the named case asks for progress and waits; model_check never does.
    let rt = runtime();
    let backend = MutantBackend::new(Some(Bug::IgnoresProgressRequests));
    let failure = run_case("watch_progress_request_answers", &backend, &rt, None)
        .expect_err("an unanswered progress request passed");
    assert!(
        failure.message.contains("no progress answer"),
        "{}",
        failure.message
    );
    println!(
        "| `IgnoresProgressRequests` | progress requests accepted and never answered | `watch_progress_request_answers` | | not caught (never asks) |"
    );
}
