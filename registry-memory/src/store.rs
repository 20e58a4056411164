//! The state machine: keys and history, leases, watchers and faults behind one lock, and the
//! operations that touch several of them at once (a put moves a key between leases, a revoke
//! deletes a lease's keys, every write wakes the watchers it concerns).
//!
//! Every operation runs start to end under the lock, and wakers are woken only after it is
//! released, so no lock is ever held across an await or a wake.

use crate::builder::Config;
use crate::clock::Clock;
use crate::journal::Journal;
use crate::keys::{KeyRange, Record};
use crate::leases::Leases;
use crate::mvcc::Mvcc;
use crate::timing::Timing;
use crate::watches::Watchers;
use registry_api::{DeleteResponse, Error, LeaseGrant, LeaseId, PutResponse, Result, Revision};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;
use std::time::Duration;
use tokio::sync::Notify;

/// What every clone of a `MemoryRegistry` and every open watch share.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    pub(crate) config: Config,
    pub(crate) clock: Clock,
    /// How long calls and deliveries take, and the seed they are drawn from.
    pub(crate) timing: Timing,
    /// Wakes the background expiry task when a deadline earlier than its sleep appears, or
    /// when the store goes away.
    pub(crate) expiry_wakeup: Arc<Notify>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The expiry task holds only a weak reference: wake it so it sees the store is gone.
        self.expiry_wakeup.notify_one();
        // A test failing with a timed simulator: the seed is what replays it. The last handle
        // goes while the test's panic unwinds, on the test's own thread (the runtime that
        // holds the other handles is dropped there too).
        if std::thread::panicking() && self.timing.used.load(Ordering::Relaxed) {
            eprintln!(
                "the simulator ran with timing {}; replay: {}",
                self.timing.seed,
                registry_api::seeding::replay_command(self.timing.seed.seed)
            );
        }
    }
}

impl Shared {
    pub(crate) fn new(config: Config, clock: Clock, timing: Timing) -> Self {
        let state = State {
            history_limit: config.history_limit,
            journal: Journal::new(config.journal),
            ..State::default()
        };
        Shared {
            state: Mutex::new(state),
            config,
            clock,
            timing,
            expiry_wakeup: Arc::new(Notify::new()),
        }
    }

    /// The state, even if a panic elsewhere poisoned the lock: every operation leaves the state
    /// consistent before it can panic, so the data is still good.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Virtual time now.
    pub(crate) fn now(&self, state: &State) -> Duration {
        self.clock.now(state.manual_now)
    }

    /// Runs `op` on the state after expiring every lease past its deadline, then wakes the
    /// watchers the operation concerns. Fails with `Unavailable` during an injected outage.
    pub(crate) fn call<T>(&self, op: impl FnOnce(&mut State, Duration) -> Result<T>) -> Result<T> {
        self.with_state(|state, now| {
            if state.unavailable {
                return Err(Error::unavailable(
                    "memory registry made unavailable by fault injection",
                ));
            }
            op(state, now)
        })
    }

    /// Like [`Shared::call`], but also during an outage: for the test-side controls that act
    /// on the server itself.
    pub(crate) fn with_state<T>(&self, op: impl FnOnce(&mut State, Duration) -> T) -> T {
        let mut state = self.lock();
        let now = self.now(&state);
        state.stamp = now;
        state.expire_due(now);
        let result = op(&mut state, now);
        let wake = std::mem::take(&mut state.to_wake);
        drop(state);
        wake.into_iter().for_each(Waker::wake);
        result
    }
}

/// Everything the lock protects.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) mvcc: Mvcc,
    pub(crate) leases: Leases,
    pub(crate) watchers: Watchers,
    /// The manual clock's reading (unused with tokio's clock).
    pub(crate) manual_now: Duration,
    /// An injected outage is on.
    pub(crate) unavailable: bool,
    /// Counts outages: a watch opened before the latest one has been cut.
    pub(crate) outages: u64,
    /// Watchers to wake once the lock is released.
    pub(crate) to_wake: Vec<Waker>,
    /// The background expiry task (tokio clock only) was started.
    pub(crate) expiry_task_started: bool,
    /// The deadline the expiry task sleeps until, if it sleeps on one.
    pub(crate) expiry_task_deadline: Option<Duration>,
    pub(crate) history_limit: Option<i64>,
    /// The server's journal of commits (empty and free unless the builder asked for one).
    pub(crate) journal: Journal,
    /// Every restore from a backup, in order (one per test-side call: it grows only as fast
    /// as a test resets the store).
    pub(crate) resets: Vec<crate::reset::Reset>,
    /// The virtual time the journal stamps the next commit with: now, or an expired lease's
    /// deadline while its keys are deleted.
    stamp: Duration,
}

impl State {
    pub(crate) fn revision(&self) -> Revision {
        Revision(self.mvcc.revision())
    }

    /// The state stamps journal commits with (read by a restore, which records its time).
    pub(crate) fn stamp(&self) -> Duration {
        self.stamp
    }

    /// Publishes a new revision to the watchers and applies the history limit.
    fn commit(&mut self, record: &Arc<Record>) {
        self.journal.record(self.stamp, record);
        self.watchers.notify(record, &mut self.to_wake);
        if let Some(limit) = self.history_limit {
            self.mvcc.compact_to_limit(limit);
            // Free memory in steps, not on every write, and in small ones: the log holds at
            // most an eighth (and 64 records) over the limit, so each step frees records still
            // near in memory instead of thousands at once that left every cache long ago.
            if self.mvcc.log_len() as i64 > limit.saturating_add((limit / 8).max(64)) {
                self.prune();
            }
        }
    }

    /// Frees history that is compacted and that no live watcher still has to read.
    pub(crate) fn prune(&mut self) {
        let keep_from = self.watchers.min_cursor().unwrap_or(i64::MAX);
        self.mvcc.prune(keep_from);
    }

    /// Revokes, in deadline order, every lease whose deadline is at or before `now`.
    pub(crate) fn expire_due(&mut self, now: Duration) {
        while let Some(id) = self.leases.next_due(now) {
            tracing::debug!(lease = %id, "lease expired");
            // Its keys stopped being alive at its deadline, whenever the expiry runs.
            let deadline = self.leases.get(id).map_or(now, |lease| lease.deadline);
            self.stamp = deadline.min(now);
            // The lease is live (it is in the deadline index), so this cannot fail.
            let _ = self.revoke(id);
        }
        self.stamp = now;
    }

    pub(crate) fn grant(
        &mut self,
        config: &Config,
        ttl: i64,
        id: Option<LeaseId>,
        now: Duration,
    ) -> Result<(LeaseGrant, Duration)> {
        let granted = ttl.max(config.min_ttl);
        let (id, deadline) = self.leases.grant(granted, id, now)?;
        Ok((LeaseGrant { id, ttl: granted }, deadline))
    }

    pub(crate) fn put(
        &mut self,
        key: &[u8],
        value: &[u8],
        lease: Option<LeaseId>,
        want_prev: bool,
    ) -> Result<PutResponse> {
        if let Some(id) = lease {
            if !self.leases.contains(id) {
                return Err(Error::LeaseNotFound(id));
            }
        }
        let record = self.mvcc.put(key, value, lease);
        let mut prev_kv = None;
        if let Some(change) = record.changes.first() {
            let old_lease = change.prev.as_ref().and_then(|prev| prev.lease);
            if old_lease != lease {
                if let Some(old) = old_lease {
                    self.leases.detach(old, &change.key);
                }
                if let Some(new) = lease {
                    self.leases.attach(new, &change.key);
                }
            }
            if want_prev {
                prev_kv = change.prev.as_ref().map(|prev| prev.to_api());
            }
        }
        self.commit(&record);
        Ok(PutResponse {
            revision: Revision(record.revision),
            prev_kv,
        })
    }

    pub(crate) fn delete(&mut self, range: KeyRange<'_>) -> DeleteResponse {
        let Some(record) = self.mvcc.delete_range(range) else {
            return DeleteResponse {
                deleted: 0,
                revision: self.revision(),
                prev_kvs: Vec::new(),
            };
        };
        let mut prev_kvs = Vec::with_capacity(record.changes.len());
        for change in &record.changes {
            if let Some(prev) = &change.prev {
                if let Some(lease) = prev.lease {
                    self.leases.detach(lease, &change.key);
                }
                prev_kvs.push(prev.to_api());
            }
        }
        self.commit(&record);
        DeleteResponse {
            deleted: prev_kvs.len() as i64,
            revision: Revision(record.revision),
            prev_kvs,
        }
    }

    /// Removes the lease and deletes its keys in one revision (none if it had no keys).
    pub(crate) fn revoke(&mut self, id: LeaseId) -> Result<Revision> {
        let lease = self.leases.remove(id).ok_or(Error::LeaseNotFound(id))?;
        if let Some(record) = self.mvcc.delete_keys(lease.keys.iter()) {
            self.commit(&record);
        }
        Ok(self.revision())
    }

    pub(crate) fn compact(&mut self, at: i64) -> Result<Revision> {
        self.mvcc.compact(at)?;
        self.prune();
        Ok(self.revision())
    }
}
