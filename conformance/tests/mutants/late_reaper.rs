//! A simulator whose lessor works as etcd's does: it checks for expired leases every 500 ms,
//! so a lease's keys are deleted at the first check after its deadline (up to 500 ms late),
//! while every lease call sees the lease gone from its deadline on. It declares an expiry
//! lateness of 500 ms. Its broken twin revives a lease that a keep-alive reaches in that window.

use async_trait::async_trait;
use registry_api::{
    limits, DeleteResponse, Error, GetResponse, LeaseGrant, LeaseId, LeaseTimeToLive, ListOptions,
    ListResponse, PutOptions, PutResponse, Registry, Result, Revision, WatchOptions, WatchStream,
};
use registry_conformance::{Backend, Capabilities};
use registry_memory::MemoryRegistry;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How often the lessor looks for expired leases, as etcd's does.
const CHECK_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Default)]
struct Lessor {
    now: Duration,
    /// Granted TTL and deadline of every lease not deleted yet.
    leases: BTreeMap<LeaseId, (i64, Duration)>,
}

/// The memory store holds the keys and the leases (with TTLs that never run out); this layer
/// keeps the real TTLs and deletes expired leases on its own schedule.
#[derive(Debug, Clone)]
pub(crate) struct LateReaper {
    inner: MemoryRegistry,
    lessor: Arc<Mutex<Lessor>>,
    /// The bug: a keep-alive in the window renews the lease instead of answering not found.
    revives: bool,
}

impl LateReaper {
    fn lessor(&self) -> std::sync::MutexGuard<'_, Lessor> {
        self.lessor.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves time by `by`, stopping at each check on the way to delete the leases whose
    /// deadline is strictly before it, in deadline order.
    async fn advance(&self, by: Duration) {
        let end = self.lessor().now + by;
        loop {
            let now = self.lessor().now;
            let next_check = Duration::from_nanos(
                (now.as_nanos() / CHECK_EVERY.as_nanos() + 1) as u64
                    * CHECK_EVERY.as_nanos() as u64,
            );
            if next_check > end {
                self.lessor().now = end;
                return;
            }
            let due: Vec<LeaseId> = {
                let mut lessor = self.lessor();
                lessor.now = next_check;
                let mut due: Vec<(Duration, LeaseId)> = lessor
                    .leases
                    .iter()
                    .filter(|(_, (_, deadline))| *deadline < next_check)
                    .map(|(id, (_, deadline))| (*deadline, *id))
                    .collect();
                due.sort();
                for (_, id) in &due {
                    lessor.leases.remove(id);
                }
                due.into_iter().map(|(_, id)| id).collect()
            };
            for id in due {
                let _ = self.inner.lease_revoke(id).await;
            }
        }
    }

    fn renew(&self, id: LeaseId) -> Result<i64> {
        limits::check_lease_id(id)?;
        let mut lessor = self.lessor();
        let now = lessor.now;
        let Some((granted, deadline)) = lessor.leases.get_mut(&id) else {
            return Err(Error::LeaseNotFound(id));
        };
        if *deadline <= now && !self.revives {
            // Expired: etcd waits for the revoke, then answers not found.
            return Err(Error::LeaseNotFound(id));
        }
        *deadline = now + secs(*granted);
        Ok(*granted)
    }
}

fn secs(s: i64) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

#[async_trait]
impl Registry for LateReaper {
    async fn lease_grant(&self, ttl: i64, id: Option<LeaseId>) -> Result<LeaseGrant> {
        limits::check_ttl_max(ttl, limits::MAX_LEASE_TTL)?;
        let granted = ttl.max(limits::DEFAULT_MIN_LEASE_TTL);
        let lease = self.inner.lease_grant(limits::MAX_LEASE_TTL, id).await?;
        let mut lessor = self.lessor();
        let deadline = lessor.now + secs(granted);
        lessor.leases.insert(lease.id, (granted, deadline));
        Ok(LeaseGrant {
            id: lease.id,
            ttl: granted,
        })
    }
    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        self.renew(id)
    }
    async fn lease_keep_alive_many(&self, ids: &[LeaseId]) -> Result<Vec<Result<i64>>> {
        limits::check_keep_alive_batch(ids.len())?;
        Ok(ids.iter().map(|id| self.renew(*id)).collect())
    }
    async fn lease_revoke(&self, id: LeaseId) -> Result<Revision> {
        limits::check_lease_id(id)?;
        if self.lessor().leases.remove(&id).is_none() {
            return Err(Error::LeaseNotFound(id));
        }
        self.inner.lease_revoke(id).await
    }
    async fn lease_time_to_live(&self, id: LeaseId) -> Result<LeaseTimeToLive> {
        let mut answer = self.inner.lease_time_to_live(id).await?;
        let lessor = self.lessor();
        let (granted, deadline) = lessor.leases.get(&id).ok_or(Error::LeaseNotFound(id))?;
        answer.granted_ttl = *granted;
        answer.ttl = deadline.saturating_sub(lessor.now).as_secs() as i64;
        Ok(answer)
    }
    async fn leases(&self) -> Result<Vec<LeaseId>> {
        self.inner.leases().await
    }
    async fn put(&self, key: &[u8], value: &[u8], opts: PutOptions) -> Result<PutResponse> {
        self.inner.put(key, value, opts).await
    }
    async fn get(&self, key: &[u8]) -> Result<GetResponse> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &[u8], opts: ListOptions) -> Result<ListResponse> {
        self.inner.list(prefix, opts).await
    }
    async fn delete(&self, key: &[u8]) -> Result<DeleteResponse> {
        self.inner.delete(key).await
    }
    async fn delete_prefix(&self, prefix: &[u8]) -> Result<DeleteResponse> {
        self.inner.delete_prefix(prefix).await
    }
    async fn compact(&self, revision: Revision) -> Result<Revision> {
        self.inner.compact(revision).await
    }
    async fn watch(&self, prefix: &[u8], opts: WatchOptions) -> Result<WatchStream> {
        self.inner.watch(prefix, opts).await
    }
}

/// A fresh late-reaping store per case, declaring 500 ms of expiry lateness.
#[derive(Debug, Default)]
pub(crate) struct LateReaperBackend {
    revives: bool,
    current: Mutex<Option<LateReaper>>,
}

impl LateReaperBackend {
    /// The honest one (`revives: false`) or its broken twin.
    pub(crate) fn new(revives: bool) -> Self {
        LateReaperBackend {
            revives,
            current: Mutex::new(None),
        }
    }
}

#[async_trait]
impl Backend for LateReaperBackend {
    async fn registry(&self) -> Arc<dyn Registry> {
        let registry = LateReaper {
            inner: MemoryRegistry::with_manual_clock(),
            lessor: Arc::default(),
            revives: self.revives,
        };
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(registry.clone());
        Arc::new(registry)
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::simulator().with_expiry_lateness(CHECK_EVERY)
    }
    async fn advance(&self, by: Duration) {
        let current = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(registry) = current {
            registry.advance(by).await;
        }
    }
}
