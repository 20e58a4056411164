//! Deliberately broken registries: the memory backend behind a wrapper that forwards every call
//! (batched keep-alives included) and breaks one thing, each named after the bug it mirrors.

use async_trait::async_trait;
use futures::stream::{self, StreamExt};
use futures::FutureExt;
use registry_api::{
    limits, Bytes, DeleteResponse, Error, EventKind, GetResponse, LeaseGrant, LeaseId,
    LeaseTimeToLive, ListOptions, ListResponse, PutOptions, PutResponse, Registry, Result,
    Revision, WatchBatch, WatchOptions, WatchStream,
};
use registry_conformance::{Backend, Capabilities};
use registry_memory::MemoryRegistry;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One deliberate bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bug {
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
    /// etcd #15271: after a reconnect the client reads from a member that lags behind: every
    /// third read (from the fourth call on) answers from two revisions back, header included.
    TimeTravelAfterReconnect,
    /// etcd #17529: a watcher's buffer holds 64 revisions; once the reader is further behind
    /// than that, events are dropped instead of the watch being cancelled.
    DropsEventsUnderASlowReader,
    /// etcd #18089, #19179: deletes at or below the compaction point are dropped from what a
    /// watch has not delivered yet (their tombstones compacted away under it).
    DropsDeletesAcrossACompaction,
    /// etcd #20221: a watch from a revision beyond the next one starts from the next write, so
    /// it delivers events below its start.
    OldEventsForAFutureStart,
    /// A grant and a keep-alive each write a bookkeeping key (a revision each), as the
    /// simulator once did.
    GrantAndKeepAliveBumpTheRevision,
    /// A revoke deletes its lease's keys one by one (a revision each), then the lease.
    RevokesInSeveralRevisions,
    /// A prefix watch matches the prefix without its trailing '/': "a/" also delivers "a0".
    PrefixWatchLeaksANeighbour,
    /// Time-to-live reports a second less than the time left (etcd's `granted - 1`).
    ReportsTtlOneShort,
    /// Concurrency only: a watch from a past revision replays the history up to the head it
    /// read at creation, then subscribes from the next write: writes committed while it was
    /// being created (between the two) are never delivered.
    MissesWritesWhileAWatchIsCreated,
}

/// The memory backend behind `bug`.
#[derive(Debug)]
pub(crate) struct Mutant {
    inner: MemoryRegistry,
    bug: Option<Bug>,
    /// The last compaction point, for [`Bug::DropsDeletesAcrossACompaction`].
    compacted: Arc<AtomicI64>,
    /// Calls so far, for [`Bug::TimeTravelAfterReconnect`].
    calls: AtomicU64,
}

impl Mutant {
    fn is(&self, bug: Bug) -> bool {
        self.bug == Some(bug)
    }

    /// For [`Bug::TimeTravelAfterReconnect`]: the lagging member's revision for this read, if
    /// this read goes to it.
    fn stale_read(&self) -> Option<Revision> {
        if !self.is(Bug::TimeTravelAfterReconnect) {
            return None;
        }
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        let behind = self.inner.current_revision().0 - 2;
        (n >= 3 && n % 3 == 0 && behind > self.inner.compact_revision().0.max(1))
            .then_some(Revision(behind))
    }

    fn mutate(&self, inner: WatchStream) -> WatchStream {
        let Some(bug) = self.bug else { return inner };
        let mut events_seen = 0usize;
        let mut batches_seen = 0usize;
        let mut held: Option<WatchBatch> = None;
        let store = self.inner.clone();
        let compacted = self.compacted.clone();
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
                                non_empty(batch)
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
                            Bug::DropsEventsUnderASlowReader => {
                                if store.current_revision().0 - batch.revision.0 > 64 {
                                    vec![]
                                } else {
                                    vec![Ok(batch)]
                                }
                            }
                            Bug::DropsDeletesAcrossACompaction => {
                                if batch.revision.0 <= compacted.load(Ordering::Relaxed) {
                                    batch.events.retain(|e| e.kind != EventKind::Delete);
                                }
                                non_empty(batch)
                            }
                            _ => vec![Ok(batch)],
                        },
                    };
                    stream::iter(out)
                })
                .boxed()
        })
    }

    /// [`Bug::MissesWritesWhileAWatchIsCreated`]: the history up to the head read at creation,
    /// a pause (other clients write), then a watch from the next write.
    async fn watch_with_a_gap(&self, prefix: &[u8], opts: WatchOptions) -> Result<WatchStream> {
        let head = self.inner.current_revision();
        let start = match opts.start_revision {
            Some(start) if start <= head.next() => start,
            _ => return self.inner.watch(prefix, opts).await,
        };
        let mut replay = self.inner.watch(prefix, opts.clone()).await?;
        let mut past = Vec::new();
        while let Some(Some(item)) = replay.next().now_or_never() {
            match item {
                Ok(batch) if batch.revision <= head => past.push(Ok(batch)),
                Ok(_) => break,
                Err(e) => {
                    past.push(Err(e));
                    break;
                }
            }
        }
        drop(replay);
        let _ = start;
        for _ in 0..6 {
            tokio::task::yield_now().await;
        }
        let live = self
            .inner
            .watch(
                prefix,
                WatchOptions {
                    start_revision: None,
                    ..opts
                },
            )
            .await?;
        Ok(live.map_events(move |events| stream::iter(past).chain(events).boxed()))
    }

    async fn bump(&self, what: &str) -> Result<()> {
        let key = format!("\u{ff}mutant/{what}");
        self.inner
            .put(key.as_bytes(), b"", PutOptions::default())
            .await
            .map(|_| ())
    }
}

fn non_empty(batch: WatchBatch) -> Vec<Result<WatchBatch>> {
    if batch.events.is_empty() {
        vec![]
    } else {
        vec![Ok(batch)]
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
        let granted = self.inner.lease_grant(ttl, id).await?;
        if self.is(Bug::GrantAndKeepAliveBumpTheRevision) {
            self.bump("grant").await?;
        }
        Ok(granted)
    }
    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        let ttl = self.inner.lease_keep_alive(id).await?;
        if self.is(Bug::GrantAndKeepAliveBumpTheRevision) {
            self.bump("keep-alive").await?;
        }
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
            self.bump("batch").await?;
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
        if self.is(Bug::RevokesInSeveralRevisions) {
            if let Ok(live) = self.inner.lease_time_to_live(id).await {
                for key in live.keys {
                    self.inner.delete(&key).await?;
                }
            }
        }
        self.inner.lease_revoke(id).await
    }
    async fn lease_time_to_live(&self, id: LeaseId) -> Result<LeaseTimeToLive> {
        let mut t = self.inner.lease_time_to_live(id).await?;
        if self.is(Bug::ExpiresASecondLate) {
            t.granted_ttl -= 1;
            t.ttl = (t.ttl - 1).max(0);
        }
        if self.is(Bug::ReportsTtlOneShort) {
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
        let Some(at) = self.stale_read() else {
            return self.inner.get(key).await;
        };
        limits::check_key(key)?;
        let old = self.inner.list(key, ListOptions::at(at)).await?;
        Ok(GetResponse {
            kv: old
                .kvs
                .into_iter()
                .find(|kv| kv.key == Bytes::copy_from_slice(key)),
            revision: at,
        })
    }
    async fn list(&self, prefix: &[u8], opts: ListOptions) -> Result<ListResponse> {
        match (opts.revision, self.stale_read()) {
            (None, Some(at)) => {
                let old = self.inner.list(prefix, ListOptions::at(at)).await?;
                Ok(ListResponse {
                    revision: at,
                    ..old
                })
            }
            _ => self.inner.list(prefix, opts).await,
        }
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
        let answer = self.inner.compact(revision).await?;
        self.compacted.fetch_max(revision.0, Ordering::Relaxed);
        Ok(answer)
    }
    async fn watch(&self, prefix: &[u8], opts: WatchOptions) -> Result<WatchStream> {
        let mut opts = opts;
        if self.is(Bug::OldEventsForAFutureStart)
            && opts
                .start_revision
                .is_some_and(|s| s > self.inner.current_revision().next())
        {
            opts.start_revision = None;
        }
        if self.is(Bug::MissesWritesWhileAWatchIsCreated) {
            return self.watch_with_a_gap(prefix, opts).await;
        }
        let prefix = match prefix.strip_suffix(b"/") {
            Some(short) if self.is(Bug::PrefixWatchLeaksANeighbour) => short,
            _ => prefix,
        };
        let stream = self.inner.watch(prefix, opts).await?;
        if self.is(Bug::IgnoresProgressRequests) {
            // The events as they are, behind a requester that only says yes.
            return Ok(WatchStream::new(stream)
                .with_progress_requests(|| Box::pin(futures::future::ready(Ok(())))));
        }
        Ok(self.mutate(stream))
    }
}

/// The memory backend on a manual clock, wrapped with one bug (or none), declaring `caps`.
#[derive(Debug)]
pub(crate) struct MutantBackend {
    bug: Option<Bug>,
    caps: Capabilities,
    current: Mutex<Option<MemoryRegistry>>,
}

impl MutantBackend {
    pub(crate) fn new(bug: Option<Bug>) -> Self {
        Self::declaring(bug, Capabilities::simulator())
    }

    pub(crate) fn declaring(bug: Option<Bug>, caps: Capabilities) -> Self {
        MutantBackend {
            bug,
            caps,
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
            compacted: Arc::default(),
            calls: AtomicU64::new(0),
        })
    }
    fn capabilities(&self) -> Capabilities {
        self.caps.clone()
    }
    async fn advance(&self, by: Duration) {
        if let Some(r) = &*self.current.lock().unwrap_or_else(|p| p.into_inner()) {
            r.advance(by);
        }
    }
}
