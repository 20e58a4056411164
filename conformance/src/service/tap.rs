//! The suite's own view of each client it hands to the service layer: when each lease was last
//! renewed (so expiry can be timed from the last keep-alive), how many watches are open, and a
//! hook that runs on the server between a cache's list and its watch.

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::StreamExt;
use registry_api::{
    DeleteResponse, GetResponse, LeaseGrant, LeaseId, LeaseTimeToLive, ListOptions, ListResponse,
    PutOptions, PutResponse, Registry, Result, Revision, WatchOptions, WatchStream,
};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// When a renewal (a grant or a keep-alive) of a lease was sent and when its reply came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Renewal {
    pub(crate) sent: Instant,
    pub(crate) replied: Instant,
}

/// A client of the backend, watched by the suite.
pub(crate) struct Tap {
    inner: Arc<dyn Registry>,
    // One entry per lease granted through this client in one scenario: a handful.
    renewals: Mutex<HashMap<LeaseId, Renewal>>,
    watches_open: Arc<AtomicUsize>,
    before_next_watch: Mutex<Option<BoxFuture<'static, ()>>>,
}

impl fmt::Debug for Tap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tap")
            .field("inner", &self.inner)
            .field("watches_open", &self.watches_open())
            .finish_non_exhaustive()
    }
}

impl Tap {
    pub(crate) fn new(inner: Arc<dyn Registry>) -> Arc<Self> {
        Arc::new(Tap {
            inner,
            renewals: Mutex::new(HashMap::new()),
            watches_open: Arc::new(AtomicUsize::new(0)),
            before_next_watch: Mutex::new(None),
        })
    }

    /// The last successful renewal of `lease` through this client.
    pub(crate) fn last_renewal(&self, lease: LeaseId) -> Option<Renewal> {
        self.renewals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&lease)
            .copied()
    }

    /// Watches opened through this client and not yet dropped.
    pub(crate) fn watches_open(&self) -> usize {
        self.watches_open.load(Ordering::SeqCst)
    }

    /// Runs `action` just before the next watch call reaches the server.
    pub(crate) fn before_next_watch(&self, action: BoxFuture<'static, ()>) {
        *self
            .before_next_watch
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(action);
    }

    fn renewed(&self, lease: LeaseId, sent: Instant) {
        let renewal = Renewal {
            sent,
            replied: Instant::now(),
        };
        self.renewals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(lease, renewal);
    }
}

/// Counts one open watch until dropped with its stream.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Registry for Tap {
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
        let action = self
            .before_next_watch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(action) = action {
            action.await;
        }
        let stream = self.inner.watch(prefix, opts).await?;
        self.watches_open.fetch_add(1, Ordering::SeqCst);
        let open = Open(self.watches_open.clone());
        Ok(stream.map_events(move |events| {
            events
                .map(move |item| {
                    let _counted = &open;
                    item
                })
                .boxed()
        }))
    }
}
