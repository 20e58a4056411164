//! The server's own journal: every committed revision, stamped with the server's virtual time,
//! kept for a test's checker.
//!
//! A checker that follows the truth through a client of its own sees it late whenever that
//! client is cut off (an outage ends every watch, and a re-list is a retry away), so it can
//! blame a gateway for routing to an instance that has already registered again. The journal is
//! read straight from the server, under its lock, with no link in between: what it says is what
//! the store did, and when.
//!
//! It keeps the last `capacity` revisions (a ring, so it cannot grow), sharing each revision's
//! record with the history log; a reader that falls further behind is told so instead of being
//! given a history with a hole in it.

use crate::keys::Record;
use crate::MemoryRegistry;
use registry_api::{Revision, WatchBatch};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// One committed revision, as the journal of [`MemoryRegistryBuilder::journal`] keeps it.
///
/// [`MemoryRegistryBuilder::journal`]: crate::MemoryRegistryBuilder::journal
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    /// When the server committed it, in virtual time since the registry was built (the clock of
    /// [`MemoryRegistry::now`]). For the deletions of an expired lease, the lease's deadline: the
    /// instant the keys stopped being alive, even when the expiry was carried out later (on the
    /// manual clock, by the `advance` that passed it).
    pub at: Duration,
    /// The revision and its changes in key order, as a watcher of every key sees them with
    /// `prev_kv`.
    pub batch: WatchBatch,
}

/// The ring of the last `capacity` records, each with its commit time.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    capacity: usize,
    commits: VecDeque<(Duration, Arc<Record>)>,
    /// Some records were let go to stay within the capacity.
    dropped: bool,
    /// The revision a restore started this timeline at: nothing at or below it is held.
    floor: i64,
}

impl Journal {
    /// A journal of the last `capacity` revisions; 0 keeps none (the default: no cost at all).
    pub(crate) fn new(capacity: usize) -> Self {
        Journal {
            capacity,
            commits: VecDeque::with_capacity(capacity.min(4096)),
            dropped: false,
            floor: 0,
        }
    }

    pub(crate) fn record(&mut self, at: Duration, record: &Arc<Record>) {
        if self.capacity == 0 {
            return;
        }
        if self.commits.len() == self.capacity {
            self.commits.pop_front();
            self.dropped = true;
        }
        self.commits.push_back((at, record.clone()));
    }

    /// The store was restored from a backup: the commits kept are another timeline's. From now
    /// on it holds the restored store's commits only, and has none at or below `revision` (the
    /// restored one): readers start over from there (see [`MemoryRegistry::resets`]).
    pub(crate) fn restart_at(&mut self, revision: i64) {
        self.commits.clear();
        self.dropped = false;
        self.floor = revision;
    }

    /// Every revision above `after`, or `None` when the journal is off or has let some go.
    fn after(&self, after: i64) -> Option<Vec<Commit>> {
        if self.capacity == 0 || after < self.floor {
            return None;
        }
        // Revisions are consecutive (every revision above 1 has a record), so the journal holds
        // all of them above `after` unless it dropped one, i.e. starts above `after + 1`.
        let first = self.commits.front().map(|(_, record)| record.revision);
        if self.dropped && first.is_some_and(|first| first > after.saturating_add(1)) {
            return None;
        }
        Some(
            self.commits
                .iter()
                .filter(|(_, record)| record.revision > after)
                .filter_map(|(at, record)| {
                    record
                        .batch_for(b"", true)
                        .map(|batch| Commit { at: *at, batch })
                })
                .collect(),
        )
    }
}

impl MemoryRegistry {
    /// Every revision committed after `after`, oldest first, each with the server's virtual
    /// time of its commit: the store's own account of what happened, for a checker that must not
    /// depend on any client (see [`MemoryRegistryBuilder::journal`]).
    ///
    /// `None` when the journal does not hold all of them: it is off (the default), or it let
    /// some go to stay within its capacity (read it more often, or keep more). Works during an
    /// outage; like every inspection, it first expires the leases that are due.
    ///
    /// ```
    /// use registry_api::{PutOptions, Registry, Revision};
    /// use registry_memory::MemoryRegistry;
    /// use std::time::Duration;
    ///
    /// # tokio_test::block_on(async {
    /// let server = MemoryRegistry::builder().manual_clock().journal(1_000).build();
    /// let lease = server.lease_grant(5, None).await?;
    /// server.put(b"svc/a", b"1", PutOptions::with_lease(lease.id)).await?;
    /// server.advance(Duration::from_secs(7));
    ///
    /// let commits = server.journal_after(Revision(1)).expect("the journal holds them all");
    /// assert_eq!(commits.len(), 2);
    /// assert_eq!(commits[0].at, Duration::ZERO); // the put
    /// // The expiry, stamped with the lease's deadline, not with when the clock passed it.
    /// assert_eq!(commits[1].at, Duration::from_secs(5));
    /// assert_eq!(commits[1].batch.revision, server.current_revision());
    /// # Ok::<(), registry_api::Error>(())
    /// # }).unwrap();
    /// ```
    ///
    /// [`MemoryRegistryBuilder::journal`]: crate::MemoryRegistryBuilder::journal
    pub fn journal_after(&self, after: Revision) -> Option<Vec<Commit>> {
        self.shared
            .with_state(|state, _| state.journal.after(after.get()))
    }
}
