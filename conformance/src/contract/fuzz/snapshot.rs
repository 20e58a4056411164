//! Everything a call could change that the case may look at, read through the public API: the
//! revision, the compaction point, the keys under the case's prefix, the case's leases (and, on
//! a store of its own, every lease), and on virtual time the seconds each of them has left.
//!
//! The compaction point is read only when asked: on etcd a read below it costs a watch that
//! etcd cancels on its next sync, about 100 ms, so real-time runs read it only around the calls
//! that meet it.

use crate::failure::Check;
use registry_api::{Error, KeyValue, LeaseId, ListOptions, Registry, Revision};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A live lease's granted TTL and its keys.
type LeaseState = (i64, Vec<Vec<u8>>);

/// One look at the store.
#[derive(PartialEq)]
pub(super) struct Snapshot {
    pub(super) revision: Revision,
    pub(super) compacted: Compaction,
    kvs: Vec<KeyValue>,
    /// Granted TTL and keys of each lease the case knows of, `None` once it is gone.
    leases: BTreeMap<LeaseId, Option<LeaseState>>,
    /// Every lease id, when the store is the case's alone.
    all_leases: Option<BTreeSet<LeaseId>>,
    /// The seconds each live known lease has left, read only on virtual time: there they move
    /// only with an advance or a renewal, so a failed call that renews a lease shows; on real
    /// time they tick on their own.
    time_left: Option<BTreeMap<LeaseId, i64>>,
}

/// What a snapshot tells of one lease id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LeaseSeen {
    /// Live, granted this TTL.
    Live(i64),
    /// Gone, or never granted.
    Absent,
    /// Not read by itself: an id the case never granted nor asked for, on a store it shares
    /// (or live on its own, which only someone else's grant could explain).
    Unseen,
}

impl Snapshot {
    pub(super) async fn take(
        registry: &dyn Registry,
        prefix: &[u8],
        known_leases: &BTreeSet<LeaseId>,
        exclusive: bool,
        read_compaction: bool,
        read_time_left: bool,
    ) -> Check<Self> {
        let list = registry
            .list(prefix, ListOptions::default())
            .await
            .map_err(|e| format!("listing the case's prefix failed: {e}"))?;
        let mut leases = BTreeMap::new();
        let mut time_left = BTreeMap::new();
        for &id in known_leases {
            let state = match registry.lease_time_to_live(id).await {
                Ok(t) => {
                    time_left.insert(id, t.ttl);
                    Some((t.granted_ttl, t.keys))
                }
                Err(Error::LeaseNotFound(_)) => None,
                Err(e) => return Err(format!("time_to_live of lease {id} failed: {e}")),
            };
            leases.insert(id, state);
        }
        let all_leases = if exclusive {
            let all = registry
                .leases()
                .await
                .map_err(|e| format!("listing the leases failed: {e}"))?;
            Some(all.into_iter().collect())
        } else {
            None
        };
        Ok(Snapshot {
            revision: list.revision,
            compacted: if read_compaction {
                compaction_point(registry, prefix).await?
            } else {
                Compaction::Unread
            },
            kvs: list.kvs,
            leases,
            all_leases,
            time_left: read_time_left.then_some(time_left),
        })
    }

    /// What this look tells of lease `id`: the case's own leases are read one by one, and on a
    /// store of its own any other id was never granted.
    pub(super) fn lease(&self, id: LeaseId) -> LeaseSeen {
        match self.leases.get(&id) {
            Some(Some((granted, _))) => LeaseSeen::Live(*granted),
            Some(None) => LeaseSeen::Absent,
            None => match &self.all_leases {
                Some(all) if all.contains(&id) => LeaseSeen::Unseen,
                Some(_) => LeaseSeen::Absent,
                None => LeaseSeen::Unseen,
            },
        }
    }

    /// Whether `other` is this look but for the time the leases have left: all a keep-alive
    /// may change.
    pub(super) fn same_but_time_left(&self, other: &Snapshot) -> bool {
        // Destructured so that a field added later is compared here too, or left out on purpose.
        let Snapshot {
            revision,
            compacted,
            kvs,
            leases,
            all_leases,
            time_left: _,
        } = self;
        *revision == other.revision
            && *compacted == other.compacted
            && *kvs == other.kvs
            && *leases == other.leases
            && *all_leases == other.all_leases
    }
}

/// The compaction point as far as a snapshot knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Compaction {
    /// Not read for this snapshot.
    Unread,
    /// Nothing compacted (beyond revision 1, which no read can tell).
    Nothing,
    /// Compacted at this revision.
    At(Revision),
}

/// A read at revision 1 fails with the compaction point once anything above it is compacted.
async fn compaction_point(registry: &dyn Registry, prefix: &[u8]) -> Check<Compaction> {
    match registry.list(prefix, ListOptions::at(Revision(1))).await {
        Ok(_) => Ok(Compaction::Nothing),
        Err(Error::Compacted { compact_revision }) => Ok(Compaction::At(compact_revision)),
        Err(e) => Err(format!("a read at revision 1 failed: {e}")),
    }
}

/// Values may be a megabyte: a failure shows their length, not their bytes.
impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kvs: Vec<_> = self
            .kvs
            .iter()
            .map(|kv| {
                (
                    kv.key_str(),
                    kv.value.len(),
                    kv.create_revision,
                    kv.mod_revision,
                    kv.version,
                    kv.lease,
                )
            })
            .collect();
        f.debug_struct("Snapshot")
            .field("revision", &self.revision)
            .field("compacted", &self.compacted)
            .field(
                "kvs (key, value length, created, modified, version, lease)",
                &kvs,
            )
            .field("leases", &self.leases)
            .field("all_leases", &self.all_leases)
            .field("time_left", &self.time_left)
            .finish()
    }
}
