//! The watcher's state machine: list, watch, fail, wait, list again.

use super::gate::HerdGate;
use super::older_list::{ListVerdict, OlderLists};
use super::stall::{Stall, Verdict};
use super::{Change, WatcherConfig, WatcherEvent};
use crate::seed::SplitMix64;
use crate::Error;
use bytes::Bytes;
use futures::StreamExt;
use registry_api::{
    EventKind, KeyValue, ListOptions, Registry, Revision, WatchBatch, WatchOptions, WatchStream,
};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Where the machine is.
enum Phase {
    /// About to list (after the gate).
    List,
    /// Listed (or heard up to `revision`); about to open a watch from `revision + 1`.
    Open,
    /// Watching.
    Watch(Box<Watching>),
    /// Backing off until then, after a failure.
    Wait(Instant),
}

struct Watching {
    stream: WatchStream,
    started: Instant,
    delivered: bool,
    stall: Stall,
    /// Fires at or before the stall's deadline: one timer for the watch's life, moved on only
    /// when it fires early (every delivery moves the deadline later, and resetting a timer per
    /// delivery would cost a timer-wheel entry and removal per event).
    timer: Pin<Box<Sleep>>,
    /// The store revision a read saw at the last idle check: by the next one, the watch must
    /// have reached it.
    must_reach: Option<Revision>,
}

pub(super) struct Machine {
    registry: Arc<dyn Registry>,
    prefix: Bytes,
    config: WatcherConfig,
    rng: SplitMix64,
    gate: HerdGate,
    /// Every key under the prefix as last seen: what a re-list is diffed against. `KeyValue`s
    /// share their buffers (`Bytes`) with the events they came from.
    known: BTreeMap<Bytes, KeyValue>,
    /// The revision the watcher reflects.
    revision: Revision,
    /// Failures in a row, for the backoff.
    attempt: u32,
    older_lists: OlderLists,
    phase: Phase,
    pending: VecDeque<WatcherEvent>,
}

impl Machine {
    pub(super) fn new(
        registry: Arc<dyn Registry>,
        prefix: Bytes,
        config: WatcherConfig,
        seed: u64,
    ) -> Self {
        let gate = HerdGate::of(&registry, &prefix);
        Machine {
            registry,
            prefix,
            rng: SplitMix64::new(seed),
            config,
            gate,
            known: BTreeMap::new(),
            revision: Revision(0),
            attempt: 0,
            older_lists: OlderLists::default(),
            phase: Phase::List,
            pending: VecDeque::new(),
        }
    }

    /// Runs until there is something to say. Never returns without an event: the stream is
    /// endless and only stops when dropped.
    pub(super) async fn next(&mut self) -> WatcherEvent {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return event;
            }
            match std::mem::replace(&mut self.phase, Phase::List) {
                Phase::Wait(until) => tokio::time::sleep_until(until).await,
                Phase::List => self.list().await,
                Phase::Open => self.open().await,
                Phase::Watch(watching) => self.watch(watching).await,
            }
        }
    }

    async fn list(&mut self) {
        // One list of this prefix at a time in this process: the others wait here, then list
        // in turn (each needs its own consistent read to diff against).
        let permit = self.gate.enter().await;
        let listed = call(
            self.config.request_timeout,
            "list",
            self.registry.list(&self.prefix, ListOptions::default()),
        )
        .await;
        drop(permit);
        let list = match listed {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "listing failed; keeping what was held");
                return self.fail(Error::from(e), false);
            }
        };
        match self.older_lists.judge(self.revision, list.revision) {
            ListVerdict::Take => {}
            ListVerdict::Refuse { refusal } => {
                // A member behind the one we watched: its list would bring back removed keys.
                // It catches up within moments, so ask again after the first backoff step
                // rather than a growing one; a store that stays behind was reset (below).
                tracing::warn!(held = %self.revision, listed = %list.revision, refusal, "list is older than what is held; retrying");
                let error = registry_api::Error::unavailable(format!(
                    "listed revision {} is older than the held {}",
                    list.revision, self.revision
                ));
                return self.fail(Error::from(error), true);
            }
            ListVerdict::Regressed { held, listed } => {
                tracing::warn!(%held, %listed, "the store's revision went back (restored from an older backup?); taking its list as the truth");
                self.pending
                    .push_back(WatcherEvent::Regressed { held, listed });
            }
        }
        let changes = self.resync(list.kvs);
        tracing::debug!(revision = %list.revision, changes = changes.len(), "listed");
        self.revision = list.revision;
        if !changes.is_empty() {
            self.pending.push_back(WatcherEvent::Changed {
                revision: list.revision,
                changes,
                resync: true,
            });
        }
        self.phase = Phase::Open;
    }

    /// Replaces `known` by a fresh list and returns exactly the differences, in key order.
    fn resync(&mut self, kvs: Vec<KeyValue>) -> Vec<Change> {
        let fresh: BTreeMap<Bytes, KeyValue> =
            kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
        let mut changes = Vec::new();
        let mut old = std::mem::take(&mut self.known).into_iter().peekable();
        let mut new = fresh.into_iter().peekable();
        loop {
            let order = match (old.peek(), new.peek()) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some((a, _)), Some((b, _))) => a.cmp(b),
            };
            match order {
                std::cmp::Ordering::Less => {
                    if let Some((_, prev)) = old.next() {
                        changes.push(Change::Delete { prev });
                    }
                }
                std::cmp::Ordering::Greater => {
                    if let Some((key, kv)) = new.next() {
                        self.known.insert(key, kv.clone());
                        changes.push(Change::Put { kv, prev: None });
                    }
                }
                std::cmp::Ordering::Equal => {
                    if let (Some((_, prev)), Some((key, kv))) = (old.next(), new.next()) {
                        self.known.insert(key, kv.clone());
                        if prev != kv {
                            changes.push(Change::Put {
                                kv,
                                prev: Some(prev),
                            });
                        }
                    }
                }
            }
        }
        changes
    }

    async fn open(&mut self) {
        let from = self.revision.next();
        let opened = call(
            self.config.request_timeout,
            "watch",
            self.registry
                .watch(&self.prefix, WatchOptions::from_revision(from)),
        )
        .await;
        match opened {
            Ok(stream) => {
                self.pending.push_back(WatcherEvent::Synced {
                    revision: self.revision,
                });
                let stall = Stall::new(self.config.idle_timeout, self.config.progress_timeout);
                self.phase = Phase::Watch(Box::new(Watching {
                    stream,
                    started: Instant::now(),
                    delivered: false,
                    timer: Box::pin(tokio::time::sleep_until(stall.deadline())),
                    stall,
                    must_reach: None,
                }));
            }
            Err(e) => {
                tracing::warn!(error = %e, "watch failed to start; keeping what was held");
                self.fail(Error::from(e), false);
            }
        }
    }

    async fn watch(&mut self, mut watching: Box<Watching>) {
        loop {
            let item = tokio::select! {
                item = watching.stream.next() => Some(item),
                () = watching.timer.as_mut() => None,
            };
            let Some(item) = item else {
                // The deadline only ever moves later (a delivery, an ask), so a timer that
                // fired may be early: move it on to the deadline, which it then hits exactly.
                let deadline = watching.stall.deadline();
                if Instant::now() < deadline {
                    watching.timer.as_mut().reset(deadline);
                    continue;
                }
                match watching.stall.expired() {
                    Verdict::Ask => {
                        if let Some(cluster) = watching.must_reach.take() {
                            if self.revision < cluster {
                                tracing::warn!(watched = %self.revision, %cluster, "watch answers but stays behind; re-listing");
                                let healthy = self.healthy(&watching);
                                let error = Error::WatchBehind {
                                    watched: self.revision,
                                    cluster,
                                };
                                return self.fail(error, healthy);
                            }
                        }
                        // Where the store is now, read afresh (through any member): a watch
                        // that answers progress requests from a member that has stopped
                        // following its cluster is still behind this by the next check. A
                        // failed read proves nothing either way.
                        let probe = call(
                            self.config.request_timeout,
                            "revision probe",
                            self.registry.get(&self.prefix),
                        )
                        .await;
                        if let Ok(read) = probe {
                            if read.revision > self.revision {
                                watching.must_reach = Some(read.revision);
                            }
                        }
                        let request = watching.stream.request_progress();
                        match call(self.config.request_timeout, "progress request", request).await {
                            Ok(()) => continue,
                            Err(registry_api::Error::NotSupported { .. }) => {
                                // Nothing can tell quiet from dead on this backend: open a
                                // fresh watch from where this one was (no list needed); a
                                // dead connection fails to open one.
                                tracing::debug!(
                                    "watch idle; re-watching (no progress requests here)"
                                );
                                self.phase = Phase::Open;
                                return;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "progress request failed; re-listing");
                                let healthy = self.healthy(&watching);
                                return self.fail(Error::from(e), healthy);
                            }
                        }
                    }
                    Verdict::Dead { silent_for } => {
                        tracing::warn!(
                            ?silent_for,
                            "watch silent and no answer to a progress request; re-listing"
                        );
                        let healthy = self.healthy(&watching);
                        return self.fail(Error::WatchStalled { silent_for }, healthy);
                    }
                }
            };
            match item {
                Some(Ok(batch)) => {
                    watching.stall.heard();
                    if let Some(event) = self.apply(batch) {
                        watching.delivered = true;
                        self.pending.push_back(event);
                        self.phase = Phase::Watch(watching);
                        return;
                    }
                }
                Some(Err(e)) => {
                    match &e {
                        registry_api::Error::Compacted { compact_revision } => {
                            tracing::info!(%compact_revision, "watch compacted; re-listing")
                        }
                        e => tracing::warn!(error = %e, "watch failed; re-listing"),
                    }
                    let healthy = self.healthy(&watching);
                    return self.fail(Error::from(e), healthy);
                }
                None => {
                    tracing::warn!("watch ended; re-listing");
                    let healthy = self.healthy(&watching);
                    let error = registry_api::Error::unavailable("the watch stream ended");
                    return self.fail(Error::from(error), healthy);
                }
            }
        }
    }

    /// Applies one batch to `known`: the event to emit, if it says anything new.
    fn apply(&mut self, batch: WatchBatch) -> Option<WatcherEvent> {
        if batch.revision <= self.revision {
            // Already reflected (a replay overlapping the list, or a repeated notification).
            return None;
        }
        self.revision = batch.revision;
        if batch.is_progress() {
            return Some(WatcherEvent::Progress {
                revision: batch.revision,
            });
        }
        let mut changes = Vec::with_capacity(batch.events.len());
        for event in batch.events {
            match event.kind {
                EventKind::Put => {
                    let prev = self.known.insert(event.kv.key.clone(), event.kv.clone());
                    changes.push(Change::Put { kv: event.kv, prev });
                }
                EventKind::Delete => {
                    // A delete of a key never seen changes nothing here.
                    if let Some(prev) = self.known.remove(&event.kv.key) {
                        changes.push(Change::Delete { prev });
                    }
                }
            }
        }
        if changes.is_empty() {
            return Some(WatcherEvent::Progress {
                revision: batch.revision,
            });
        }
        Some(WatcherEvent::Changed {
            revision: batch.revision,
            changes,
            resync: false,
        })
    }

    /// A watch that delivered something, or lasted a while, was healthy: the backoff starts
    /// over instead of growing.
    fn healthy(&self, watching: &Watching) -> bool {
        watching.delivered || watching.started.elapsed() >= self.config.backoff.max
    }

    fn fail(&mut self, error: Error, healthy: bool) {
        self.attempt = if healthy {
            1
        } else {
            self.attempt.saturating_add(1)
        };
        let retry_in = self.config.backoff.delay(self.attempt, &mut self.rng);
        self.phase = Phase::Wait(crate::backoff::deadline_after(retry_in));
        self.pending.push_back(WatcherEvent::Failed {
            error: Arc::new(error),
            retry_in,
        });
    }
}

/// `call`, failed as unavailable when it takes longer than `timeout`. A free function: the
/// machine holds a watch stream, which is `Send` but not `Sync`, so no `&Machine` may live
/// across an await.
async fn call<T>(
    timeout: Duration,
    what: &str,
    call: impl Future<Output = registry_api::Result<T>>,
) -> registry_api::Result<T> {
    match tokio::time::timeout(timeout, call).await {
        Ok(outcome) => outcome,
        Err(_) => Err(registry_api::Error::unavailable(format!(
            "{what}: no answer within {timeout:?}"
        ))),
    }
}
