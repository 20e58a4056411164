//! Store resets: the server restored from a backup taken earlier, as an operator does with
//! `etcdctl snapshot save` and, later, `etcdutl snapshot restore` and a restart.
//!
//! What a restore does, *observed* on etcd 3.5.16 (a single member, `etcdutl snapshot restore`
//! into a fresh data dir, then started on it):
//! - **Revision and keys** go back to the backup's: revision 8 back to 3, the keys and their
//!   `create`/`mod` revisions as they were, the history up to the backup readable (a watch
//!   from an old revision replays it).
//! - With `--bump-revision 1000 --mark-compacted` the revision is the backup's plus 1,000
//!   (3 -> 1,003), compacted there: the keys keep their revisions, a read below 1,003 and a
//!   watch from below it fail as compacted, the next write is 1,004.
//! - **Leases** granted before the backup are back, each with its whole granted TTL again (30 s
//!   granted, 19 s left at the backup, 29 s left just after the restart: the restarted lessor
//!   promotes every lease), their keys with them. Leases granted after the backup are gone
//!   ("lease not found"), and so are their keys.
//! - **Open watches** end with the server (the restore needs a restart): `etcd-client` streams
//!   yield an error and do not resume. The Go client resumes by itself from its last revision,
//!   which after a plain restore lies in the restored store's future: `etcdctl watch` then
//!   silently missed the writes until the store passed that revision again (4 of 6 puts lost).
//!   After a bumped, compacted restore it was cancelled as compacted instead.
//!
//! [`MemoryRegistry::restore`] does the same on virtual time, at once: every open watch ends
//! with `Unavailable` (as a restart cuts it), leases restart with their whole TTL, the revision
//! and keys are the backup's (optionally bumped and compacted). Lease ids are never handed out
//! twice across a restore (etcd's ids are unique per member and time), so a client still
//! keeping a lease granted after the backup finds it gone rather than someone else's. The
//! downtime of the restart is the test's to model (with
//! [`set_unavailable`](MemoryRegistry::set_unavailable)) around the call.

use crate::mvcc::Mvcc;
use crate::{expiry, MemoryRegistry};
use bytes::Bytes;
use registry_api::{Error, InvalidArgument, LeaseId, Result, Revision};
use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

/// The server's state at one moment, as `etcdctl snapshot save` writes it: keys, history,
/// revision and leases. Taken by [`MemoryRegistry::backup`], put back by
/// [`MemoryRegistry::restore`]. Cheap: it shares every value with the live store.
pub struct Backup {
    mvcc: Mvcc,
    leases: Vec<(LeaseId, i64, BTreeSet<Bytes>)>,
    taken_at: Duration,
}

impl fmt::Debug for Backup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backup")
            .field("revision", &self.mvcc.revision())
            .field("leases", &self.leases.len())
            .field("taken_at", &self.taken_at)
            .finish_non_exhaustive()
    }
}

impl Backup {
    /// The store revision of the backup.
    pub fn revision(&self) -> Revision {
        Revision(self.mvcc.revision())
    }

    /// When it was taken, in the server's virtual time ([`MemoryRegistry::now`]).
    pub fn taken_at(&self) -> Duration {
        self.taken_at
    }
}

/// How a backup is restored: etcdutl's `--bump-revision N` and `--mark-compacted`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    /// How much to raise the revision above the backup's (0: not at all). A bump makes every
    /// watcher resuming from a revision it held see a compacted history and list again,
    /// instead of waiting for the store to pass that revision.
    pub bump_revision: u64,
    /// Compact at the (bumped) revision. Required with a bump and refused without one, as
    /// etcdutl does.
    pub mark_compacted: bool,
}

impl RestoreOptions {
    /// A plain restore: the revision goes back to the backup's.
    pub fn plain() -> Self {
        Self::default()
    }

    /// `--bump-revision by --mark-compacted`.
    pub fn bumped(by: u64) -> Self {
        RestoreOptions {
            bump_revision: by,
            mark_compacted: true,
        }
    }
}

/// One restore, as [`MemoryRegistry::resets`] records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reset {
    /// When, in the server's virtual time.
    pub at: Duration,
    /// The revision before the restore.
    pub from: Revision,
    /// The revision after it (the backup's, plus any bump).
    pub to: Revision,
    /// The history up to `to` was compacted.
    pub compacted: bool,
}

impl MemoryRegistry {
    /// Takes a backup of the whole server now (`etcdctl snapshot save`). Works during an
    /// outage; like every inspection, it first expires the leases that are due.
    pub fn backup(&self) -> Backup {
        let _span = tracing::debug_span!("memory.backup").entered();
        self.shared.with_state(|state, now| Backup {
            mvcc: state.mvcc.backup(),
            leases: state.leases.backup(),
            taken_at: now,
        })
    }

    /// Restores the server from `backup` (`etcdutl snapshot restore` and a restart, as
    /// observed on etcd 3.5.16): the keys, history and
    /// revision become the backup's (the revision raised and compacted with
    /// [`RestoreOptions::bumped`]), the backup's leases restart with their whole TTL and later
    /// ones are gone, and every open watch ends with `Unavailable`. The journal starts over at
    /// the restored revision, and [`resets`](Self::resets) records the restore. Returns the
    /// revision after it.
    ///
    /// Fails with `InvalidArgument` (changing nothing) for a bump without `mark_compacted`,
    /// `mark_compacted` without a bump, or a bump past the largest revision.
    ///
    /// ```
    /// use registry_api::{PutOptions, Registry, Revision};
    /// use registry_memory::{MemoryRegistry, RestoreOptions};
    ///
    /// # tokio_test::block_on(async {
    /// let server = MemoryRegistry::with_manual_clock();
    /// server.put(b"k", b"1", PutOptions::default()).await?;
    /// let backup = server.backup();
    /// server.put(b"k", b"2", PutOptions::default()).await?;
    ///
    /// assert_eq!(server.restore(&backup, RestoreOptions::plain())?, Revision(2));
    /// assert_eq!(&server.get(b"k").await?.kv.unwrap().value[..], b"1");
    /// assert_eq!(server.restore(&backup, RestoreOptions::bumped(1_000))?, Revision(1_002));
    /// assert_eq!(server.compact_revision(), Revision(1_002));
    /// # Ok::<(), registry_api::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn restore(&self, backup: &Backup, options: RestoreOptions) -> Result<Revision> {
        let _span = tracing::debug_span!(
            "memory.restore",
            to = backup.mvcc.revision(),
            bump = options.bump_revision
        )
        .entered();
        if (options.bump_revision > 0) != options.mark_compacted {
            return Err(Error::from(InvalidArgument::Other(
                "--mark-compacted is required with --bump-revision and refused without it"
                    .to_owned(),
            )));
        }
        let bump = i64::try_from(options.bump_revision)
            .ok()
            .filter(|bump| backup.mvcc.revision().checked_add(*bump).is_some())
            .ok_or_else(|| {
                Error::from(InvalidArgument::Revision(
                    i64::try_from(options.bump_revision).unwrap_or(i64::MAX),
                ))
            })?;
        let shared = self.shared.clone();
        Ok(self.shared.with_state(|state, now| {
            let from = state.revision();
            state.mvcc = backup.mvcc.backup();
            if bump > 0 {
                state.mvcc.bump_and_compact(bump);
            }
            state.leases.restore(&backup.leases, now);
            if let Some(deadline) = state.leases.next_deadline() {
                expiry::schedule(&shared, state, deadline);
            }
            // The restart cuts every open watch, as an outage does.
            state.outages += 1;
            state.watchers.wake_all(&mut state.to_wake);
            let to = state.revision();
            state.journal.restart_at(to.get());
            state.resets.push(Reset {
                at: state.stamp(),
                from,
                to,
                compacted: bump > 0,
            });
            tracing::info!(%from, %to, compacted = bump > 0, "store restored from a backup");
            to
        }))
    }

    /// Every restore so far, oldest first. A journal reader whose last revision predates the
    /// latest restore must start over from its `to` (the journal holds nothing at or below it).
    pub fn resets(&self) -> Vec<Reset> {
        self.shared.with_state(|state, _| state.resets.clone())
    }
}
