//! The suite can fail: deliberately broken wrappers around the memory backend, each of which
//! the suite must catch, and the unbroken backend as a control.

use async_trait::async_trait;
use futures::stream::{self, StreamExt};
use registry_api::{
    limits, DeleteResponse, Error, GetResponse, LeaseGrant, LeaseId, LeaseTimeToLive, ListOptions,
    ListResponse, PutOptions, PutResponse, Registry, Result, Revision, WatchBatch, WatchOptions,
    WatchStream,
};
use registry_conformance::{case_names, run_case, run_model_check, runtime, Backend, Capabilities};
use registry_memory::MemoryRegistry;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One deliberate bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bug {
    /// Every watch loses its third event.
    DropsAnEvent,
    /// Every watch delivers its second and third batches swapped.
    ReordersTwoBatches,
    /// A revision with several events comes one batch per event.
    SplitsARevision,
    /// Leases live a second longer than granted (ttl + 1 underneath, ttl reported).
    ExpiresASecondLate,
    /// Deleting a missing key uses a revision (a hidden write elsewhere).
    BumpsOnNoOpDelete,
    /// A put with an unknown lease is written without the lease.
    AcceptsUnknownLease,
    /// Progress requests are accepted and never answered.
    IgnoresProgressRequests,
    /// A keep-alive batch renews only its first lease; the others are answered from their
    /// granted TTL as if renewed (a sender that stops after the first request of a burst).
    RenewsOnlyTheFirstOfABatch,
    /// A keep-alive batch is answered in lease id order, a repeated id once (replies gathered
    /// in a map by lease id instead of matched to the requests).
    AnswersABatchInIdOrder,
    /// A keep-alive batch over the limit renews its leases before it is refused (the limit
    /// checked after the burst went out).
    RenewsAnOversizedBatch,
    /// A keep-alive batch writes a key of its own outside the case's prefix (bookkeeping
    /// stored beside the data).
    WritesOnABatch,
}

#[derive(Debug)]
struct Mutant {
    inner: MemoryRegistry,
    bug: Option<Bug>,
}

impl Mutant {
    fn is(&self, bug: Bug) -> bool {
        self.bug == Some(bug)
    }

    fn mutate(&self, inner: WatchStream) -> WatchStream {
        let Some(bug) = self.bug else { return inner };
        let mut events_seen = 0usize;
        let mut batches_seen = 0usize;
        let mut held: Option<WatchBatch> = None;
        inner.map_events(move |events| {
            events
                .flat_map(move |item| {
                    let out: Vec<Result<WatchBatch>> = match item {
                        Err(e) => held.take().map(Ok).into_iter().chain([Err(e)]).collect(),
                        Ok(batch) if batch.is_progress() => vec![Ok(batch)],
                        Ok(mut batch) => match bug {
                            Bug::DropsAnEvent => {
                                let before = events_seen;
                                events_seen += batch.events.len();
                                if before < 3 && events_seen >= 3 {
                                    batch.events.remove(2 - before);
                                }
                                if batch.events.is_empty() {
                                    vec![]
                                } else {
                                    vec![Ok(batch)]
                                }
                            }
                            Bug::ReordersTwoBatches => {
                                batches_seen += 1;
                                match batches_seen {
                                    2 => {
                                        held = Some(batch);
                                        vec![]
                                    }
                                    3 => {
                                        [Ok(batch)].into_iter().chain(held.take().map(Ok)).collect()
                                    }
                                    _ => vec![Ok(batch)],
                                }
                            }
                            Bug::SplitsARevision => batch
                                .events
                                .into_iter()
                                .map(|e| {
                                    Ok(WatchBatch {
                                        revision: batch.revision,
                                        events: vec![e],
                                    })
                                })
                                .collect(),
                            _ => vec![Ok(batch)],
                        },
                    };
                    stream::iter(out)
                })
                .boxed()
        })
    }
}

#[async_trait]
impl Registry for Mutant {
    async fn lease_grant(&self, ttl: i64, id: Option<LeaseId>) -> Result<LeaseGrant> {
        if self.is(Bug::ExpiresASecondLate) && ttl > 0 {
            let g = self.inner.lease_grant(ttl.saturating_add(1), id).await?;
            return Ok(LeaseGrant {
                id: g.id,
                ttl: g.ttl - 1,
            });
        }
        self.inner.lease_grant(ttl, id).await
    }
    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        let ttl = self.inner.lease_keep_alive(id).await?;
        Ok(if self.is(Bug::ExpiresASecondLate) {
            ttl - 1
        } else {
            ttl
        })
    }
    async fn lease_keep_alive_many(&self, ids: &[LeaseId]) -> Result<Vec<Result<i64>>> {
        if self.is(Bug::RenewsAnOversizedBatch) {
            for id in ids {
                let _ = self.inner.lease_keep_alive(*id).await;
            }
        }
        if self.is(Bug::WritesOnABatch) {
            self.inner
                .put(b"\xffmutant/batch", b"", PutOptions::default())
                .await?;
        }
        if self.is(Bug::RenewsOnlyTheFirstOfABatch) {
            limits::check_keep_alive_batch(ids.len())?;
            let mut answers = Vec::with_capacity(ids.len());
            for (i, id) in ids.iter().enumerate() {
                answers.push(if i == 0 {
                    self.inner.lease_keep_alive(*id).await
                } else {
                    self.inner
                        .lease_time_to_live(*id)
                        .await
                        .map(|t| t.granted_ttl)
                });
            }
            return Ok(answers);
        }
        let answers = self.inner.lease_keep_alive_many(ids).await?;
        if self.is(Bug::AnswersABatchInIdOrder) {
            let by_id: BTreeMap<LeaseId, Result<i64>> = ids.iter().copied().zip(answers).collect();
            return Ok(by_id.into_values().collect());
        }
        Ok(if self.is(Bug::ExpiresASecondLate) {
            answers.into_iter().map(|a| a.map(|ttl| ttl - 1)).collect()
        } else {
            answers
        })
    }
    async fn lease_revoke(&self, id: LeaseId) -> Result<Revision> {
        self.inner.lease_revoke(id).await
    }
    async fn lease_time_to_live(&self, id: LeaseId) -> Result<LeaseTimeToLive> {
        let mut t = self.inner.lease_time_to_live(id).await?;
        if self.is(Bug::ExpiresASecondLate) {
            t.granted_ttl -= 1;
            t.ttl = (t.ttl - 1).max(0);
        }
        Ok(t)
    }
    async fn leases(&self) -> Result<Vec<LeaseId>> {
        self.inner.leases().await
    }
    async fn put(&self, key: &[u8], value: &[u8], opts: PutOptions) -> Result<PutResponse> {
        match self.inner.put(key, value, opts.clone()).await {
            Err(Error::LeaseNotFound(_)) if self.is(Bug::AcceptsUnknownLease) => {
                let opts = PutOptions {
                    lease: None,
                    ..opts
                };
                self.inner.put(key, value, opts).await
            }
            other => other,
        }
    }
    async fn get(&self, key: &[u8]) -> Result<GetResponse> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &[u8], opts: ListOptions) -> Result<ListResponse> {
        self.inner.list(prefix, opts).await
    }
    async fn delete(&self, key: &[u8]) -> Result<DeleteResponse> {
        let deleted = self.inner.delete(key).await?;
        if deleted.deleted == 0 && self.is(Bug::BumpsOnNoOpDelete) {
            let noise = self
                .inner
                .put(b"\xffmutant/noise", b"", PutOptions::default())
                .await?;
            return Ok(DeleteResponse {
                revision: noise.revision,
                ..deleted
            });
        }
        Ok(deleted)
    }
    async fn delete_prefix(&self, prefix: &[u8]) -> Result<DeleteResponse> {
        self.inner.delete_prefix(prefix).await
    }
    async fn compact(&self, revision: Revision) -> Result<Revision> {
        self.inner.compact(revision).await
    }
    async fn watch(&self, prefix: &[u8], opts: WatchOptions) -> Result<WatchStream> {
        let stream = self.inner.watch(prefix, opts).await?;
        if self.is(Bug::IgnoresProgressRequests) {
            // The events as they are, behind a requester that only says yes.
            return Ok(WatchStream::new(stream)
                .with_progress_requests(|| Box::pin(futures::future::ready(Ok(())))));
        }
        Ok(self.mutate(stream))
    }
}

/// The memory backend on a manual clock, wrapped with one bug (or none).
#[derive(Debug)]
struct MutantBackend {
    bug: Option<Bug>,
    current: Mutex<Option<MemoryRegistry>>,
}

impl MutantBackend {
    fn new(bug: Option<Bug>) -> Self {
        MutantBackend {
            bug,
            current: Mutex::new(None),
        }
    }
}

#[async_trait]
impl Backend for MutantBackend {
    async fn registry(&self) -> Arc<dyn Registry> {
        let inner = MemoryRegistry::with_manual_clock();
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(inner.clone());
        Arc::new(Mutant {
            inner,
            bug: self.bug,
        })
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::simulator()
    }
    async fn advance(&self, by: Duration) {
        if let Some(r) = &*self.current.lock().unwrap_or_else(|p| p.into_inner()) {
            r.advance(by);
        }
    }
}

/// The cases that fail on `bug`, and whether `model_check` does.
fn failing_cases(bug: Option<Bug>) -> (Vec<&'static str>, Option<String>) {
    let rt = runtime();
    let backend = MutantBackend::new(bug);
    let failed = case_names()
        .into_iter()
        .filter(|name| *name != "model_check")
        .filter(|name| run_case(name, &backend, &rt, None).is_err())
        .collect();
    let model = run_model_check(&backend, &rt, None, Some(64))
        .err()
        .map(|f| f.message);
    (failed, model)
}

fn assert_caught(bug: Bug, named_case: &str) {
    let (failed, model) = failing_cases(Some(bug));
    assert!(
        failed.contains(&named_case),
        "{bug:?} not caught by {named_case}; cases that failed: {failed:?}"
    );
    let model = model.unwrap_or_else(|| panic!("{bug:?} not caught by model_check"));
    assert!(
        model.contains("minimal failing input"),
        "model_check's failure for {bug:?} has no shrunk input: {model}"
    );
}

#[test]
fn control_the_unbroken_backend_passes_every_case() {
    let (failed, model) = failing_cases(None);
    assert!(
        failed.is_empty(),
        "cases failed on the real simulator: {failed:?}"
    );
    assert_eq!(model, None, "model_check failed on the real simulator");
}

#[test]
fn catches_a_dropped_event() {
    assert_caught(Bug::DropsAnEvent, "watch_is_reliable");
}

#[test]
fn catches_two_reordered_batches() {
    assert_caught(Bug::ReordersTwoBatches, "watch_is_ordered");
}

#[test]
fn catches_a_revision_split_across_batches() {
    assert_caught(Bug::SplitsARevision, "watch_is_atomic");
}

#[test]
fn catches_a_lease_expiring_a_second_late() {
    assert_caught(Bug::ExpiresASecondLate, "lease_expiry_is_bounded");
}

#[test]
fn catches_a_revision_bump_on_a_no_op_delete() {
    assert_caught(Bug::BumpsOnNoOpDelete, "revision_accounting");
}

#[test]
fn catches_a_put_with_an_unknown_lease() {
    assert_caught(Bug::AcceptsUnknownLease, "unknown_lease_ops_fail");
}

#[test]
fn catches_a_keep_alive_batch_that_renews_only_its_first_lease() {
    assert_caught(
        Bug::RenewsOnlyTheFirstOfABatch,
        "keep_alive_many_renews_each_live_lease_and_answers_in_order",
    );
}

#[test]
fn catches_a_keep_alive_batch_answered_in_lease_id_order() {
    assert_caught(
        Bug::AnswersABatchInIdOrder,
        "keep_alive_many_renews_each_live_lease_and_answers_in_order",
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
        .split("minimal failing input")
        .nth(1)
        .unwrap_or_else(|| panic!("{bug:?}: no shrunk input: {message}"));
    assert!(
        message.contains(says) && shrunk.contains("KeepAliveMany"),
        "{bug:?}: {message}"
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
    // Only the named case asks for progress; model_check never does.
    let rt = runtime();
    let backend = MutantBackend::new(Some(Bug::IgnoresProgressRequests));
    let failure = run_case("watch_progress_request_answers", &backend, &rt, None)
        .expect_err("an unanswered progress request passed");
    assert!(
        failure.message.contains("no progress answer"),
        "{}",
        failure.message
    );
}
