//! Deliberately broken service layers, each built as a wrapper over what the real service
//! layer reads and writes, so that the search can prove it catches them.

use super::harness::{ClientLayer, FleetOptions};
use registry_api::wrap::{CallKind, Intercept, Intercepted};
use registry_api::{
    async_trait, DeleteResponse, Error, EventKind, GetResponse, LeaseGrant, LeaseId,
    LeaseTimeToLive, ListOptions, ListResponse, PutOptions, PutResponse, Registry, Result,
    Revision, WatchOptions, WatchStream,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// A broken service layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mutant {
    /// An instance that never registers again once its first lease is lost: every grant after
    /// the first fails.
    NeverReRegisters,
    /// An instance that keeps using its first lease id after the lease died: every grant after
    /// the first answers with the first lease, which the server no longer knows.
    ReusesDeadLease,
    /// A discovery cache that drops removals: its watches lose every delete event.
    DropsRemovals,
}

impl Mutant {
    /// Every mutant.
    pub const ALL: [Mutant; 3] = [
        Mutant::NeverReRegisters,
        Mutant::ReusesDeadLease,
        Mutant::DropsRemovals,
    ];

    /// `options` with this mutant's wrapper in place.
    pub fn apply(self, mut options: FleetOptions) -> FleetOptions {
        let layer: ClientLayer = match self {
            Mutant::NeverReRegisters => Arc::new(|_: &str, inner: Arc<dyn Registry>| {
                Arc::new(Intercepted::new(inner, GrantsOnce::default())) as Arc<dyn Registry>
            }),
            Mutant::ReusesDeadLease => Arc::new(|_: &str, inner: Arc<dyn Registry>| {
                Arc::new(FirstLeaseForever {
                    inner,
                    first: Mutex::new(None),
                }) as Arc<dyn Registry>
            }),
            Mutant::DropsRemovals => Arc::new(|_: &str, inner: Arc<dyn Registry>| {
                Arc::new(Intercepted::new(inner, DropDeletes)) as Arc<dyn Registry>
            }),
        };
        match self {
            Mutant::DropsRemovals => options.gateway_layer = Some(layer),
            _ => options.instance_layer = Some(layer),
        }
        options
    }
}

#[derive(Debug, Default)]
struct GrantsOnce {
    granted: AtomicBool,
}

#[async_trait]
impl Intercept for GrantsOnce {
    async fn before(&self, kind: CallKind) -> Result<()> {
        if kind == CallKind::LeaseGrant && self.granted.load(Ordering::SeqCst) {
            return Err(Error::unavailable("this layer never grants twice"));
        }
        Ok(())
    }

    async fn after(&self, kind: CallKind, outcome: Result<(), &Error>) -> Result<()> {
        if kind == CallKind::LeaseGrant && outcome.is_ok() {
            self.granted.store(true, Ordering::SeqCst);
        }
        Ok(())
    }
}

#[derive(Debug)]
struct DropDeletes;

#[async_trait]
impl Intercept for DropDeletes {
    fn watch(&self, stream: WatchStream) -> WatchStream {
        use futures::StreamExt;
        stream.map_events(|events| {
            events
                .filter_map(|item| async move {
                    match item {
                        Ok(mut batch) if !batch.events.is_empty() => {
                            batch.events.retain(|e| e.kind != EventKind::Delete);
                            (!batch.events.is_empty()).then_some(Ok(batch))
                        }
                        other => Some(other),
                    }
                })
                .boxed()
        })
    }
}

/// Answers every grant after the first with the first lease.
#[derive(Debug)]
struct FirstLeaseForever {
    inner: Arc<dyn Registry>,
    first: Mutex<Option<LeaseGrant>>,
}

#[async_trait]
impl Registry for FirstLeaseForever {
    async fn lease_grant(&self, ttl: i64, id: Option<LeaseId>) -> Result<LeaseGrant> {
        let first = self
            .first
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(first) = first {
            return Ok(first);
        }
        let grant = self.inner.lease_grant(ttl, id).await?;
        *self.first.lock().unwrap_or_else(PoisonError::into_inner) = Some(grant.clone());
        Ok(grant)
    }
    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        self.inner.lease_keep_alive(id).await
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
        self.inner.watch(prefix, opts).await
    }
}
