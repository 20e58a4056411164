//! The [`Registry`] contract over the state machine: input checks first (nothing is written on
//! bad input), then one locked operation, each in a debug-level `tracing` span; on a timed
//! client, between the two legs of its round trip (see [`crate::timing`]).

use crate::keys::{KeyDisplay, KeyRange, Kv};
use crate::timing::Leg;
use crate::watches::{self, WatchSpec};
use crate::{expiry, MemoryRegistry};
use async_trait::async_trait;
use registry_api::{
    limits, DeleteResponse, Error, GetResponse, LeaseGrant, LeaseId, LeaseTimeToLive, ListOptions,
    ListResponse, PutOptions, PutResponse, Registry, Result, Revision, WatchOptions, WatchStream,
};
use std::sync::Arc;
use std::time::Duration;

/// Waits out one leg of a round trip on tokio's clock (nothing for a zero delay).
pub(crate) async fn pause(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

/// `op` between two pauses: the request leg and the reply leg.
fn delayed<'a, T: Send + 'a>(
    (before, after): (Duration, Duration),
    op: impl FnOnce() -> T + Send + 'a,
) -> futures::future::BoxFuture<'a, T> {
    Box::pin(async move {
        pause(before).await;
        let answer = op();
        pause(after).await;
        answer
    })
}

/// Runs `$op` on the server between the request leg and the reply leg of a `$leg` round trip
/// (see [`delayed`]); on an instant handle at once, in the call's own future. A macro, not an
/// `async fn`: a nested future on the instant path cost a keep-alive about a third more
/// (benchmarks run instant, and part (c) renews millions of leases).
macro_rules! round_trip {
    ($self:ident, $leg:expr, $op:expr) => {
        match $self.legs($leg) {
            None => $op,
            Some(legs) => delayed(legs, || $op).await,
        }
    };
}

impl MemoryRegistry {
    fn grant_now(&self, ttl: i64, id: Option<LeaseId>) -> Result<LeaseGrant> {
        let span = tracing::debug_span!("memory.lease_grant", ttl, id = ?id, lease = tracing::field::Empty);
        let _entered = span.enter();
        limits::check_ttl_max(ttl, self.shared.config.max_ttl)?;
        if let Some(id) = id {
            limits::check_lease_id(id)?;
        }
        let grant = self.shared.call(|state, now| {
            let (grant, deadline) = state.grant(&self.shared.config, ttl, id, now)?;
            expiry::schedule(&self.shared, state, deadline);
            Ok(grant)
        })?;
        span.record("lease", tracing::field::display(grant.id));
        Ok(grant)
    }

    // Inlined into both arms of `round_trip!`: a registrar renews thousands of leases a round,
    // one call each, and the call was measured (part c's floor) about 14 instructions dearer
    // when the compiler left this out of line.
    #[inline(always)]
    fn keep_alive_now(&self, id: LeaseId) -> Result<i64> {
        let _span = tracing::debug_span!("memory.lease_keep_alive", lease = %id).entered();
        limits::check_lease_id(id)?;
        self.shared.call(|state, now| {
            state
                .leases
                .keep_alive(id, now)
                .ok_or(Error::LeaseNotFound(id))
        })
    }

    /// One lock and one clock reading for the whole batch: what makes a registrar's round of
    /// thousands of leases cheap.
    fn keep_alive_many_now(&self, ids: &[LeaseId]) -> Result<Vec<Result<i64>>> {
        let _span =
            tracing::debug_span!("memory.lease_keep_alive_many", leases = ids.len()).entered();
        limits::check_keep_alive_batch(ids.len())?;
        self.shared.call(|state, now| {
            Ok(ids
                .iter()
                .map(|&id| {
                    limits::check_lease_id(id)?;
                    state
                        .leases
                        .keep_alive(id, now)
                        .ok_or(Error::LeaseNotFound(id))
                })
                .collect())
        })
    }

    fn revoke_now(&self, id: LeaseId) -> Result<Revision> {
        let span = tracing::debug_span!("memory.lease_revoke", lease = %id, revision = tracing::field::Empty);
        let _entered = span.enter();
        limits::check_lease_id(id)?;
        let revision = self.shared.call(|state, _| state.revoke(id))?;
        span.record("revision", revision.0);
        Ok(revision)
    }

    fn time_to_live_now(&self, id: LeaseId) -> Result<LeaseTimeToLive> {
        let _span = tracing::debug_span!("memory.lease_time_to_live", lease = %id).entered();
        limits::check_lease_id(id)?;
        self.shared.call(|state, now| {
            let lease = state.leases.get(id).ok_or(Error::LeaseNotFound(id))?;
            let remaining = lease.deadline.saturating_sub(now);
            Ok(LeaseTimeToLive {
                id,
                ttl: i64::try_from(remaining.as_secs()).unwrap_or(i64::MAX),
                granted_ttl: lease.granted_ttl,
                keys: lease.keys.iter().map(|key| key.to_vec()).collect(),
            })
        })
    }

    fn leases_now(&self) -> Result<Vec<LeaseId>> {
        let _span = tracing::debug_span!("memory.leases").entered();
        self.shared.call(|state, _| Ok(state.leases.ids()))
    }

    fn put_now(&self, key: &[u8], value: &[u8], opts: &PutOptions) -> Result<PutResponse> {
        let span = tracing::debug_span!(
            "memory.put",
            key = %KeyDisplay(key),
            lease = ?opts.lease,
            revision = tracing::field::Empty
        );
        let _entered = span.enter();
        limits::check_put(key, value, self.shared.config.max_value_bytes)?;
        if let Some(lease) = opts.lease {
            limits::check_lease_id(lease)?;
        }
        let response = self
            .shared
            .call(|state, _| state.put(key, value, opts.lease, opts.prev_kv))?;
        span.record("revision", response.revision.0);
        Ok(response)
    }

    fn get_now(&self, key: &[u8]) -> Result<GetResponse> {
        let _span = tracing::debug_span!("memory.get", key = %KeyDisplay(key)).entered();
        limits::check_key(key)?;
        self.shared.call(|state, _| {
            Ok(GetResponse {
                kv: state.mvcc.get(key).map(|kv| kv.to_api()),
                revision: state.revision(),
            })
        })
    }

    fn list_now(&self, prefix: &[u8], opts: &ListOptions) -> Result<ListResponse> {
        let _span = tracing::debug_span!(
            "memory.list",
            prefix = %KeyDisplay(prefix),
            at = ?opts.revision.map(|r| r.0)
        )
        .entered();
        if let Some(at) = opts.revision {
            limits::check_revision(at)?;
        }
        self.shared.call(|state, _| {
            let kvs = state
                .mvcc
                .read(KeyRange::Prefix(prefix), opts.revision.map(|r| r.0))?;
            Ok(ListResponse {
                kvs: kvs.iter().map(|kv| Kv::to_api(kv)).collect(),
                // etcd answers with the store's current revision, also for a read in the past.
                revision: state.revision(),
            })
        })
    }

    fn delete_now(&self, range: KeyRange<'_>) -> Result<DeleteResponse> {
        let span = tracing::debug_span!(
            "memory.delete",
            range = %range,
            revision = tracing::field::Empty
        );
        let _entered = span.enter();
        if let KeyRange::Key(key) = range {
            limits::check_key(key)?;
        }
        let response = self.shared.call(|state, _| Ok(state.delete(range)))?;
        span.record("revision", response.revision.0);
        Ok(response)
    }

    fn compact_now(&self, revision: Revision) -> Result<Revision> {
        let _span = tracing::debug_span!("memory.compact", revision = revision.0).entered();
        limits::check_revision(revision)?;
        self.shared.call(|state, _| state.compact(revision.0))
    }

    fn watch_now(&self, prefix: &[u8], opts: &WatchOptions) -> Result<WatchStream> {
        let _span = tracing::debug_span!(
            "memory.watch",
            prefix = %KeyDisplay(prefix),
            start = ?opts.start_revision.map(|r| r.0)
        )
        .entered();
        if let Some(start) = opts.start_revision {
            limits::check_revision(start)?;
        }
        let spec = WatchSpec {
            prefix: Arc::from(prefix),
            start: opts.start_revision.map(|r| r.0),
            prev_kv: opts.prev_kv,
            progress_notify: opts.progress_notify,
        };
        let timer = self.timer.clone();
        self.shared
            .call(|state, _| Ok(watches::open(self.shared.clone(), state, spec, timer)))
    }
}

#[async_trait]
impl Registry for MemoryRegistry {
    async fn lease_grant(&self, ttl: i64, id: Option<LeaseId>) -> Result<LeaseGrant> {
        round_trip!(self, Leg::Call, self.grant_now(ttl, id))
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        round_trip!(self, Leg::KeepAlive, self.keep_alive_now(id))
    }

    async fn lease_keep_alive_many(&self, ids: &[LeaseId]) -> Result<Vec<Result<i64>>> {
        round_trip!(self, Leg::KeepAlive, self.keep_alive_many_now(ids))
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<Revision> {
        round_trip!(self, Leg::Call, self.revoke_now(id))
    }

    async fn lease_time_to_live(&self, id: LeaseId) -> Result<LeaseTimeToLive> {
        round_trip!(self, Leg::Call, self.time_to_live_now(id))
    }

    async fn leases(&self) -> Result<Vec<LeaseId>> {
        round_trip!(self, Leg::Call, self.leases_now())
    }

    async fn put(&self, key: &[u8], value: &[u8], opts: PutOptions) -> Result<PutResponse> {
        round_trip!(self, Leg::Call, self.put_now(key, value, &opts))
    }

    async fn get(&self, key: &[u8]) -> Result<GetResponse> {
        round_trip!(self, Leg::Call, self.get_now(key))
    }

    async fn list(&self, prefix: &[u8], opts: ListOptions) -> Result<ListResponse> {
        round_trip!(self, Leg::Call, self.list_now(prefix, &opts))
    }

    async fn delete(&self, key: &[u8]) -> Result<DeleteResponse> {
        round_trip!(self, Leg::Call, self.delete_now(KeyRange::Key(key)))
    }

    async fn delete_prefix(&self, prefix: &[u8]) -> Result<DeleteResponse> {
        round_trip!(self, Leg::Call, self.delete_now(KeyRange::Prefix(prefix)))
    }

    async fn compact(&self, revision: Revision) -> Result<Revision> {
        round_trip!(self, Leg::Call, self.compact_now(revision))
    }

    async fn watch(&self, prefix: &[u8], opts: WatchOptions) -> Result<WatchStream> {
        round_trip!(self, Leg::Watch, self.watch_now(prefix, &opts))
    }
}
