//! A [`Registry`] decorator that counts watches opened and remembers, per lease, when the last
//! successful grant or keep-alive was *sent*: the server renewed the lease no earlier, so a
//! lease's expiry measured from that instant is never flattered.

use async_trait::async_trait;
use registry_api::{
    DeleteResponse, GetResponse, LeaseGrant, LeaseId, LeaseTimeToLive, ListOptions, ListResponse,
    PutOptions, PutResponse, Registry, Result, Revision, WatchOptions, WatchStream,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::time::Instant;

/// Wraps another registry; see the module docs.
#[derive(Debug)]
pub(crate) struct Recording {
    inner: Arc<dyn Registry>,
    watches: AtomicU64,
    renewed: Mutex<HashMap<LeaseId, Instant>>,
}

impl Recording {
    pub(crate) fn new(inner: Arc<dyn Registry>) -> Self {
        Recording {
            inner,
            watches: AtomicU64::new(0),
            renewed: Mutex::new(HashMap::new()),
        }
    }

    /// How many watches were opened through this registry.
    pub(crate) fn watches_opened(&self) -> u64 {
        self.watches.load(Ordering::Relaxed)
    }

    /// When the last successful grant or keep-alive of `lease` was sent.
    pub(crate) fn last_renewal_sent(&self, lease: LeaseId) -> Option<Instant> {
        self.renewed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&lease)
            .copied()
    }

    fn renewed(&self, lease: LeaseId, sent: Instant) {
        self.renewed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(lease, sent);
    }
}

#[async_trait]
impl Registry for Recording {
    async fn lease_grant(&self, ttl: i64, id: Option<LeaseId>) -> Result<LeaseGrant> {
        let sent = Instant::now();
        let grant = self.inner.lease_grant(ttl, id).await?;
        self.renewed(grant.id, sent);
        Ok(grant)
    }
    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        let sent = Instant::now();
        let ttl = self.inner.lease_keep_alive(id).await?;
        self.renewed(id, sent);
        Ok(ttl)
    }
    async fn lease_revoke(&self, id: LeaseId) -> Result<Revision> {
        self.inner.lease_revoke(id).await
    }
    async fn lease_time_to_live(&self, id: LeaseId) -> Result<LeaseTimeToLive> {
        self.inner.lease_time_to_live(id).await
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
        self.watches.fetch_add(1, Ordering::Relaxed);
        self.inner.watch(prefix, opts).await
    }
}
