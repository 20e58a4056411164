//! The lease table: granted TTLs, virtual-time deadlines, and each lease's keys.
//!
//! Deadlines live in a [`DeadlineIndex`], so finding what is due is a look at its front,
//! however many leases are alive; ties expire in id order.
//!
//! A keep-alive, by far the most frequent lease call, does not touch the index: it only moves
//! the lease's own deadline. An index entry may therefore be early (never late); when it comes
//! up, it is moved to the lease's real deadline instead of expiring it. So a keep-alive costs
//! one hash lookup, and the index work is at most one move per lease per TTL.

use crate::deadlines::DeadlineIndex;
use bytes::Bytes;
use registry_api::{Error, LeaseId};
use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

#[derive(Debug)]
pub(crate) struct Lease {
    pub(crate) granted_ttl: i64,
    /// Virtual time (since the clock's start) at which the lease expires.
    pub(crate) deadline: Duration,
    /// Where the lease sits in the deadline index: at or before `deadline`.
    indexed_at: Duration,
    /// The attached keys, in key order: revoke deletes them in this order.
    pub(crate) keys: BTreeSet<Bytes>,
}

/// Hashes a lease id to itself in the low bits, so the store's own ids (a counter) land in
/// neighbouring buckets and a sweep of keep-alives walks memory in order; the top bits, which
/// the table uses as tags, get a multiplicative mix. Lease ids are not attacker-chosen keys.
#[derive(Default)]
struct LeaseIdHasher(u64);

impl Hasher for LeaseIdHasher {
    fn finish(&self) -> u64 {
        const TAG_BITS: u64 = 0xfe00_0000_0000_0000;
        self.0 ^ (self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15) & TAG_BITS)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_i64(&mut self, n: i64) {
        self.0 = n as u64;
    }
}

#[derive(Debug)]
pub(crate) struct Leases {
    /// Never iterated where order could show: `ids` sorts.
    by_id: HashMap<LeaseId, Lease, BuildHasherDefault<LeaseIdHasher>>,
    deadlines: DeadlineIndex,
    /// The next id the store picks itself: a counter, so ids are the same on every run.
    next_id: i64,
}

impl Default for Leases {
    fn default() -> Self {
        Leases {
            by_id: HashMap::default(),
            deadlines: DeadlineIndex::default(),
            next_id: 1,
        }
    }
}

fn ttl_duration(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}

impl Leases {
    /// Grants a lease of `granted_ttl` seconds (already validated and raised to the minimum).
    pub(crate) fn grant(
        &mut self,
        granted_ttl: i64,
        id: Option<LeaseId>,
        now: Duration,
    ) -> Result<(LeaseId, Duration), Error> {
        let id = match id {
            Some(id) if self.by_id.contains_key(&id) => return Err(Error::LeaseExists(id)),
            Some(id) => id,
            None => self.pick_id(),
        };
        let deadline = now.saturating_add(ttl_duration(granted_ttl));
        self.by_id.insert(
            id,
            Lease {
                granted_ttl,
                deadline,
                indexed_at: deadline,
                keys: BTreeSet::new(),
            },
        );
        self.deadlines.push(deadline, id);
        self.drop_stale_entries();
        Ok((id, deadline))
    }

    fn pick_id(&mut self) -> LeaseId {
        loop {
            let id = LeaseId(self.next_id);
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            // Skip ids a caller granted explicitly and that are still live.
            if !self.by_id.contains_key(&id) {
                return id;
            }
        }
    }

    pub(crate) fn get(&self, id: LeaseId) -> Option<&Lease> {
        self.by_id.get(&id)
    }

    pub(crate) fn contains(&self, id: LeaseId) -> bool {
        self.by_id.contains_key(&id)
    }

    /// Ids of every live lease, in order.
    pub(crate) fn ids(&self) -> Vec<LeaseId> {
        let mut ids: Vec<LeaseId> = self.by_id.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Renews the lease for its whole granted TTL; returns that TTL.
    pub(crate) fn keep_alive(&mut self, id: LeaseId, now: Duration) -> Option<i64> {
        let lease = self.by_id.get_mut(&id)?;
        let deadline = now.saturating_add(ttl_duration(lease.granted_ttl));
        // Usually later than the index entry; earlier only after a leader change extended the
        // lease beyond its TTL, and then the entry must move up so it is never late.
        if deadline < lease.indexed_at {
            self.deadlines.push(deadline, id);
            lease.indexed_at = deadline;
        }
        lease.deadline = deadline;
        Some(lease.granted_ttl)
    }

    /// Takes the lease out of the table (its keys are the caller's to delete).
    pub(crate) fn remove(&mut self, id: LeaseId) -> Option<Lease> {
        self.by_id.remove(&id)
    }

    /// Rebuilds the index once stale entries outnumber live leases, so revoked long leases do
    /// not pile up in it.
    fn drop_stale_entries(&mut self) {
        if self.deadlines.len() > self.by_id.len().saturating_mul(2).saturating_add(1024) {
            self.reindex();
        }
    }

    fn reindex(&mut self) {
        self.deadlines.clear();
        for (id, lease) in &mut self.by_id {
            lease.indexed_at = lease.deadline;
            self.deadlines.push(lease.deadline, *id);
        }
    }

    /// The live lease with the earliest deadline at or before `now`. Its index entry is taken:
    /// the caller must remove the lease.
    #[inline]
    pub(crate) fn next_due(&mut self, now: Duration) -> Option<LeaseId> {
        loop {
            let (indexed_at, id) = self.deadlines.pop_due(now)?;
            let Some(lease) = self.by_id.get_mut(&id) else {
                continue; // revoked since
            };
            if lease.indexed_at != indexed_at {
                continue; // a newer entry stands for it
            }
            if lease.deadline == indexed_at {
                return Some(id);
            }
            // Kept alive since it was indexed: move it to its real deadline, which may still be
            // due but must then wait its turn behind earlier real deadlines.
            lease.indexed_at = lease.deadline;
            self.deadlines.push(lease.deadline, id);
        }
    }

    /// A time at or before the earliest deadline of any live lease (early when the lease was
    /// kept alive since: look again then).
    pub(crate) fn next_deadline(&self) -> Option<Duration> {
        self.deadlines.first_at()
    }

    pub(crate) fn attach(&mut self, id: LeaseId, key: &Bytes) {
        if let Some(lease) = self.by_id.get_mut(&id) {
            lease.keys.insert(key.clone());
        }
    }

    pub(crate) fn detach(&mut self, id: LeaseId, key: &[u8]) {
        if let Some(lease) = self.by_id.get_mut(&id) {
            lease.keys.remove(key);
        }
    }

    /// Every live lease with its granted TTL and keys, in id order, for a backup.
    pub(crate) fn backup(&self) -> Vec<(LeaseId, i64, BTreeSet<Bytes>)> {
        self.ids()
            .into_iter()
            .filter_map(|id| {
                let lease = self.by_id.get(&id)?;
                Some((id, lease.granted_ttl, lease.keys.clone()))
            })
            .collect()
    }

    /// Replaces the table by a backup's leases, each restarting from now with its whole granted
    /// TTL (etcd's restarted lessor promotes every lease so). Ids picked from now on never
    /// repeat one picked before the restore: a client still holding a lease granted after the
    /// backup must find it gone, not someone else's.
    pub(crate) fn restore(&mut self, leases: &[(LeaseId, i64, BTreeSet<Bytes>)], now: Duration) {
        self.by_id.clear();
        self.deadlines.clear();
        for (id, granted_ttl, keys) in leases {
            let deadline = now.saturating_add(ttl_duration(*granted_ttl));
            self.by_id.insert(
                *id,
                Lease {
                    granted_ttl: *granted_ttl,
                    deadline,
                    indexed_at: deadline,
                    keys: keys.clone(),
                },
            );
            self.deadlines.push(deadline, *id);
        }
    }

    /// A new leader's lessor (etcd's `Promote`) restarts every live lease from now: its whole
    /// granted TTL plus `extra` (etcd keeps no remaining TTL across a failover unless lease
    /// checkpointing is on, which it is not by default).
    pub(crate) fn extend_all(&mut self, now: Duration, extra: Duration) {
        for lease in self.by_id.values_mut() {
            lease.deadline = now
                .saturating_add(ttl_duration(lease.granted_ttl))
                .saturating_add(extra);
        }
        self.reindex();
    }
}
