//! Leases in the model: grants, keep-alives, revokes and expiry on the model's own clock.

use super::Model;
use registry_api::{limits, Bytes, Error, LeaseGrant, LeaseId, LeaseTimeToLive, Result, Revision};
use std::collections::BTreeSet;
use std::time::Duration;

/// A live lease in the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelLease {
    /// The TTL granted, in seconds.
    pub granted: i64,
    /// When it expires, on the model's clock: the last grant or keep-alive plus the TTL.
    pub deadline: Duration,
    /// The keys attached to it.
    pub keys: BTreeSet<Bytes>,
    /// Its deadline has passed but the backend may not have deleted its keys yet (within the
    /// backend's declared expiry lateness): gone for keep-alives and time-to-live, its keys
    /// still there until [`Model::reap`].
    pub expired: bool,
}

impl Model {
    /// `lease_grant` of `ttl`, where the backend named the lease `id` (the model cannot know
    /// which id a backend picks, so it takes the backend's).
    pub fn lease_grant(&mut self, ttl: i64, id: LeaseId) -> Result<LeaseGrant> {
        limits::check_ttl_max(ttl, self.limits.max_ttl)?;
        if self.leases.contains_key(&id) {
            return Err(Error::LeaseExists(id));
        }
        let granted = ttl.max(self.limits.min_ttl);
        self.leases.insert(
            id,
            ModelLease {
                granted,
                deadline: self.now.saturating_add(secs(granted)),
                keys: BTreeSet::new(),
                expired: false,
            },
        );
        Ok(LeaseGrant { id, ttl: granted })
    }

    /// `lease_keep_alive`.
    pub fn lease_keep_alive(&mut self, id: LeaseId) -> Result<i64> {
        limits::check_lease_id(id)?;
        let now = self.now;
        let lease = self
            .leases
            .get_mut(&id)
            .filter(|l| !l.expired)
            .ok_or(Error::LeaseNotFound(id))?;
        lease.deadline = now.saturating_add(secs(lease.granted));
        Ok(lease.granted)
    }

    /// `lease_keep_alive_many`: a batch over the limit is refused as a whole and renews
    /// nothing; otherwise each id is answered, in order, as `lease_keep_alive` answers it, all
    /// at the same moment (a repeated id is renewed again, to the same deadline).
    pub fn lease_keep_alive_many(&mut self, ids: &[LeaseId]) -> Result<Vec<Result<i64>>> {
        limits::check_keep_alive_batch(ids.len())?;
        Ok(ids.iter().map(|&id| self.lease_keep_alive(id)).collect())
    }

    /// `lease_revoke`.
    pub fn lease_revoke(&mut self, id: LeaseId) -> Result<Revision> {
        limits::check_lease_id(id)?;
        let lease = self.leases.remove(&id).ok_or(Error::LeaseNotFound(id))?;
        Ok(self.delete_keys(lease.keys.into_iter().collect()).revision)
    }

    /// `lease_time_to_live`, with the remaining TTL rounded down. An expired lease whose keys
    /// are not deleted yet is gone here too (a backend may instead report it with nothing left).
    pub fn lease_time_to_live(&self, id: LeaseId) -> Result<LeaseTimeToLive> {
        limits::check_lease_id(id)?;
        let lease = self
            .leases
            .get(&id)
            .filter(|l| !l.expired)
            .ok_or(Error::LeaseNotFound(id))?;
        Ok(LeaseTimeToLive {
            id,
            ttl: lease.deadline.saturating_sub(self.now).as_secs() as i64,
            granted_ttl: lease.granted,
            keys: lease.keys.iter().map(|key| key.to_vec()).collect(),
        })
    }

    /// The leases not revoked yet (expired ones whose keys are not deleted yet included), in
    /// id order.
    pub fn leases(&self) -> Vec<LeaseId> {
        self.leases.keys().copied().collect()
    }

    /// A lease not revoked yet (see [`ModelLease::expired`]).
    pub fn lease(&self, id: LeaseId) -> Option<&ModelLease> {
        self.leases.get(&id)
    }

    /// A lease that is live: granted, not revoked, its deadline not reached.
    pub fn live_lease(&self, id: LeaseId) -> Option<&ModelLease> {
        self.leases.get(&id).filter(|l| !l.expired)
    }

    /// The expired leases whose keys may still be there, earliest deadline first (ties by id):
    /// the order a late reaper deletes them in.
    pub fn expired_leases(&self) -> Vec<LeaseId> {
        let mut expired: Vec<(Duration, LeaseId)> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expired)
            .map(|(id, l)| (l.deadline, *id))
            .collect();
        expired.sort();
        expired.into_iter().map(|(_, id)| id).collect()
    }

    /// Deletes the keys of an expired lease, as the backend's late reaper did: one revision if
    /// it had keys. Returns the revision after it.
    pub fn reap(&mut self, id: LeaseId) -> Result<Revision> {
        self.lease_revoke(id)
    }

    /// Moves the clock by `by` and expires every lease whose deadline has come, earliest
    /// deadline first (ties by id), each as a revoke: its keys deleted in one revision.
    pub fn advance(&mut self, by: Duration) {
        self.advance_with_lateness(by, Duration::ZERO);
    }

    /// Moves the clock by `by`. Every lease whose deadline plus `lateness` has come is revoked
    /// (earliest deadline first, ties by id), as the backend must have done by now; a lease whose
    /// deadline has come but not its lateness is marked [expired](ModelLease::expired): gone for
    /// keep-alives, its keys there until the caller sees the backend delete them ([`Model::reap`]).
    pub fn advance_with_lateness(&mut self, by: Duration, lateness: Duration) {
        self.now = self.now.saturating_add(by);
        loop {
            let due = self
                .leases
                .iter()
                .filter(|(_, l)| l.deadline.saturating_add(lateness) <= self.now)
                .min_by_key(|(id, l)| (l.deadline, **id))
                .map(|(id, _)| *id);
            let Some(id) = due else { break };
            // The lease is known not revoked, so the revoke cannot fail.
            let _ = self.lease_revoke(id);
        }
        let now = self.now;
        for lease in self.leases.values_mut() {
            lease.expired |= lease.deadline <= now;
        }
    }
}

fn secs(s: i64) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}
