//! Helpers shared by the service-layer tests: a registry wrapper that cuts one client off, and
//! ways to read the truth from the store.

#![allow(dead_code, unreachable_pub)]

use async_trait::async_trait;
use futures::StreamExt;
use registry_api::{
    DeleteResponse, Error, GetResponse, LeaseGrant, LeaseId, LeaseTimeToLive, ListOptions,
    ListResponse, PutOptions, PutResponse, Registry, Result, Revision, WatchOptions, WatchStream,
};
use registry_service::{DiscoveryEvent, DiscoveryEvents, ServiceInstance};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A client's view of a shared registry that the test can cut off by itself, while every other
/// client (holding the inner registry) keeps working: a network partition of one process.
pub struct Partitioned {
    inner: Arc<dyn Registry>,
    connected: watch::Sender<bool>,
}

impl std::fmt::Debug for Partitioned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partitioned")
            .field("inner", &self.inner)
            .field("connected", &*self.connected.borrow())
            .finish_non_exhaustive()
    }
}

impl Partitioned {
    pub fn new(inner: Arc<dyn Registry>) -> Arc<Self> {
        Arc::new(Partitioned {
            inner,
            connected: watch::channel(true).0,
        })
    }

    /// Cuts the client off: every call fails with `Unavailable`, every open watch ends with it.
    pub fn cut(&self) {
        self.connected.send_replace(false);
    }

    /// Reconnects the client.
    pub fn restore(&self) {
        self.connected.send_replace(true);
    }

    fn check(&self) -> Result<()> {
        if *self.connected.borrow() {
            Ok(())
        } else {
            Err(Error::unavailable("partitioned by the test"))
        }
    }
}

#[async_trait]
impl Registry for Partitioned {
    async fn lease_grant(&self, ttl: i64, id: Option<LeaseId>) -> Result<LeaseGrant> {
        self.check()?;
        self.inner.lease_grant(ttl, id).await
    }
    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        self.check()?;
        self.inner.lease_keep_alive(id).await
    }
    async fn lease_revoke(&self, id: LeaseId) -> Result<Revision> {
        self.check()?;
        self.inner.lease_revoke(id).await
    }
    async fn lease_time_to_live(&self, id: LeaseId) -> Result<LeaseTimeToLive> {
        self.check()?;
        self.inner.lease_time_to_live(id).await
    }
    async fn leases(&self) -> Result<Vec<LeaseId>> {
        self.check()?;
        self.inner.leases().await
    }
    async fn put(&self, key: &[u8], value: &[u8], opts: PutOptions) -> Result<PutResponse> {
        self.check()?;
        self.inner.put(key, value, opts).await
    }
    async fn get(&self, key: &[u8]) -> Result<GetResponse> {
        self.check()?;
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &[u8], opts: ListOptions) -> Result<ListResponse> {
        self.check()?;
        self.inner.list(prefix, opts).await
    }
    async fn delete(&self, key: &[u8]) -> Result<DeleteResponse> {
        self.check()?;
        self.inner.delete(key).await
    }
    async fn delete_prefix(&self, prefix: &[u8]) -> Result<DeleteResponse> {
        self.check()?;
        self.inner.delete_prefix(prefix).await
    }
    async fn compact(&self, revision: Revision) -> Result<Revision> {
        self.check()?;
        self.inner.compact(revision).await
    }
    async fn watch(&self, prefix: &[u8], opts: WatchOptions) -> Result<WatchStream> {
        self.check()?;
        let inner = self.inner.watch(prefix, opts).await?;
        let mut connected = self.connected.subscribe();
        let cut = async move {
            connected.wait_for(|up| !*up).await.ok();
        };
        let ended = futures::stream::once(async { Err(Error::unavailable("partitioned")) });
        Ok(inner.map_events(|events| events.take_until(cut).chain(ended).boxed()))
    }
}

/// The instances of `service` in the store now, parsed, in id order: the truth.
pub async fn truth(registry: &dyn Registry, service: &str) -> Vec<ServiceInstance> {
    let prefix = format!("services/{service}/");
    let list = registry
        .list(prefix.as_bytes(), ListOptions::default())
        .await
        .expect("list the truth");
    list.kvs
        .iter()
        .filter_map(|kv| ServiceInstance::from_json(&kv.value).ok())
        .collect()
}

/// Lets every ready task run and virtual time move by `by`.
pub async fn settle(by: Duration) {
    tokio::time::sleep(by).await;
}

/// Every event waiting in `events` now.
pub fn drain(events: &mut DiscoveryEvents) -> Vec<DiscoveryEvent> {
    std::iter::from_fn(|| events.try_recv()).collect()
}

/// The instance named `id` of service `hello`, at a port derived from the id.
pub fn hello(id: &str) -> ServiceInstance {
    ServiceInstance::new("hello", id, format!("10.0.0.1:{}", 8000 + id.len()))
}
