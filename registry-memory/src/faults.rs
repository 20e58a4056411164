//! Fault injection: what a test does to the server, not what a client asks of it.

use crate::MemoryRegistry;
use registry_api::{limits, LeaseId, Result, Revision};
use std::time::Duration;

impl MemoryRegistry {
    /// Makes the server unreachable (`true`) or reachable again (`false`).
    ///
    /// While unreachable, every [`Registry`](registry_api::Registry) call fails with
    /// [`Error::Unavailable`](registry_api::Error::Unavailable), and every watch open when the
    /// outage starts yields `Err(Unavailable)` and ends: watches do not resume by themselves,
    /// as with a real etcd (re-watch from the last delivered revision + 1). The server itself
    /// keeps running: lease deadlines pass and leases expire during the outage, so a client that
    /// cannot keep alive loses its lease, as it would against a real cluster.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.shared.with_state(|state, _| {
            if unavailable && !state.unavailable {
                state.outages += 1;
                state.watchers.wake_all(&mut state.to_wake);
            }
            state.unavailable = unavailable;
        });
    }

    /// True while [`set_unavailable`](Self::set_unavailable) holds the server unreachable.
    pub fn is_unavailable(&self) -> bool {
        self.shared.with_state(|state, _| state.unavailable)
    }

    /// Expires the lease now, as the server does at its deadline: its keys are deleted in one
    /// revision (none if it has no keys). Returns the store revision after it. Works during an
    /// outage (the server is running). Fails with `LeaseNotFound` if the lease is not live.
    pub fn expire_lease(&self, id: LeaseId) -> Result<Revision> {
        limits::check_lease_id(id)?;
        let _span = tracing::debug_span!("memory.expire_lease", lease = %id).entered();
        self.shared.with_state(|state, _| state.revoke(id))
    }

    /// A leader change: every live lease restarts from now with its whole granted TTL plus
    /// `extra`, as etcd's new leader does (`lessor.Promote` refreshes each lease by the election
    /// timeout), so a key can outlive its TTL across a failover.
    pub fn leader_change(&self, extra: Duration) {
        let _span =
            tracing::debug_span!("memory.leader_change", extra_ms = extra.as_millis() as u64)
                .entered();
        self.shared
            .with_state(|state, now| state.leases.extend_all(now, extra));
    }
}
