//! The registry-api contract over a real etcd server, through the etcd-client crate.
//!
//! [`EtcdRegistry`] implements [`Registry`] by mapping every operation onto one etcd request:
//! results carry etcd's own revisions and lease ids, and etcd's errors become the contract's
//! typed [`Error`](registry_api::Error)s (lease not found, compacted, future revision, too
//! large, unavailable). Input is checked with [`registry_api::limits`] before anything is sent,
//! so bad input fails the same way as on every other backend.
//!
//! What the backend adds over a bare `etcd-client`:
//! - a **key prefix** applied to every key, list, delete and watch and stripped from
//!   every result, so several registries share one etcd;
//! - **watches** cut into one [`WatchBatch`](registry_api::WatchBatch) per revision, ending with
//!   an error item (compacted, cancelled, unavailable) rather than silently;
//! - **keep-alives** of all leases over one shared gRPC stream per registry.
//!
//! ```no_run
//! # async fn demo() -> registry_api::Result<()> {
//! use registry_api::{PutOptions, Registry};
//! use registry_etcd::EtcdRegistry;
//!
//! let registry = EtcdRegistry::builder(["http://127.0.0.1:2379"])
//!     .key_prefix("my-app/")
//!     .connect()
//!     .await?;
//! let lease = registry.lease_grant(10, None).await?;
//! registry
//!     .put(b"services/hello/a", b"127.0.0.1:8080", PutOptions::with_lease(lease.id))
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! With the `testing` feature, the `testing` module starts throwaway etcd servers and clusters.

pub mod acl;
mod builder;
mod clock;
mod connection;
mod diagnose;
mod errors;
mod key_prefix;
mod keys;
mod leases;
mod retry;
#[cfg(feature = "testing")]
pub mod testing;
mod watches;

pub use builder::{
    EtcdRegistryBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEP_ALIVE_INTERVAL,
    DEFAULT_KEEP_ALIVE_TIMEOUT, DEFAULT_REQUEST_TIMEOUT,
};
pub use errors::{AuthError, TlsError};
#[cfg(feature = "tls")]
pub use etcd_client::{Certificate, Identity, TlsOptions};

use async_trait::async_trait;
use etcd_client::Client;
use key_prefix::KeyPrefix;
use leases::KeepAlives;
use registry_api::{
    DeleteResponse, GetResponse, LeaseGrant, LeaseId, LeaseTimeToLive, ListOptions, ListResponse,
    PutOptions, PutResponse, Registry, Result, Revision, WatchOptions, WatchStream,
};
use retry::Idempotence::{Safe, Unsafe};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// A [`Registry`] backed by a real etcd (v3 API, 3.4 or later). Cheap to clone: clones share
/// one connection and one keep-alive stream.
#[derive(Clone)]
pub struct EtcdRegistry {
    inner: Arc<Inner>,
}

/// What every clone shares.
pub(crate) struct Inner {
    client: Client,
    /// The KV and watch services, with a decoding limit raised for large lists and catch-ups.
    kv: etcd_client::KvClient,
    watch: etcd_client::WatchClient,
    key_prefix: KeyPrefix,
    endpoints: Vec<String>,
    max_value_bytes: usize,
    request_timeout: Duration,
    keep_alive: KeepAlives,
}

impl fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("endpoints", &self.inner.endpoints)
            .field(
                "key_prefix",
                &String::from_utf8_lossy(self.inner.key_prefix.prefix()),
            )
            .field("keep_alive", &self.inner.keep_alive)
            .finish_non_exhaustive()
    }
}

impl EtcdRegistry {
    /// A builder for a registry on `endpoints` (`http://host:port`, one or more members of one
    /// cluster).
    pub fn builder<I, S>(endpoints: I) -> EtcdRegistryBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        EtcdRegistryBuilder::new(endpoints)
    }

    /// Connects with default settings and no key prefix.
    pub async fn connect<I, S>(endpoints: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::builder(endpoints).connect().await
    }

    /// The endpoints this registry was built with.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// The key prefix of this registry; empty for the whole keyspace.
    pub fn key_prefix(&self) -> &[u8] {
        self.inner.key_prefix.prefix()
    }

    /// Introspection: how many keep-alive gRPC streams this registry (all its clones) opened so
    /// far. Keep-alives share one stream, so this stays small however many leases are kept
    /// alive; it grows only when a stream fails and is reopened.
    pub fn keep_alive_streams_opened(&self) -> u64 {
        self.inner.keep_alive.streams_opened()
    }

    /// The underlying etcd-client, for what the contract does not cover (maintenance, auth,
    /// cluster). Keys used through it are not prefixed. Its connection runs on the backend's
    /// own runtime, so its pings keep real time; its calls' timeouts are the caller's.
    pub fn client(&self) -> Client {
        self.inner.client.clone()
    }

    /// The store's compaction point, or `None` if it was never compacted. etcd has no direct
    /// call for it; this opens a short watch that etcd cancels with the compact revision.
    pub async fn compact_revision(&self) -> Result<Option<Revision>> {
        clock::check()?;
        let watch = clock::Stopwatch::start();
        watch.check(self.inner.compact_revision().await)
    }
}

#[async_trait]
impl Registry for EtcdRegistry {
    async fn lease_grant(&self, ttl: i64, id: Option<LeaseId>) -> Result<LeaseGrant> {
        self.retry(Unsafe, || self.inner.lease_grant(ttl, id)).await
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        self.retry(Safe, || self.inner.lease_keep_alive(id)).await
    }

    /// Every keep-alive of the batch goes out at once on the registry's shared keep-alive
    /// stream and etcd answers each on its own: one round trip for the batch, not one per lease.
    async fn lease_keep_alive_many(&self, ids: &[LeaseId]) -> Result<Vec<Result<i64>>> {
        let span = tracing::debug_span!("etcd.lease_keep_alive_many", leases = ids.len());
        async move {
            clock::check()?;
            registry_api::limits::check_keep_alive_batch(ids.len())?;
            let renewals = ids
                .iter()
                .map(|&id| self.retry(Safe, move || self.inner.lease_keep_alive(id)));
            Ok(futures::future::join_all(renewals).await)
        }
        .instrument(span)
        .await
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<Revision> {
        self.retry(Unsafe, || self.inner.lease_revoke(id)).await
    }

    async fn lease_time_to_live(&self, id: LeaseId) -> Result<LeaseTimeToLive> {
        self.retry(Safe, || self.inner.lease_time_to_live(id)).await
    }

    async fn leases(&self) -> Result<Vec<LeaseId>> {
        self.retry(Safe, || self.inner.leases()).await
    }

    async fn put(&self, key: &[u8], value: &[u8], opts: PutOptions) -> Result<PutResponse> {
        self.retry(Unsafe, || self.inner.put(key, value, opts.clone()))
            .await
    }

    async fn get(&self, key: &[u8]) -> Result<GetResponse> {
        self.retry(Safe, || self.inner.get(key)).await
    }

    async fn list(&self, prefix: &[u8], opts: ListOptions) -> Result<ListResponse> {
        self.retry(Safe, || self.inner.list(prefix, opts.clone()))
            .await
    }

    async fn delete(&self, key: &[u8]) -> Result<DeleteResponse> {
        self.retry(Unsafe, || self.inner.delete(key)).await
    }

    async fn delete_prefix(&self, prefix: &[u8]) -> Result<DeleteResponse> {
        self.retry(Unsafe, || self.inner.delete_prefix(prefix))
            .await
    }

    async fn compact(&self, revision: Revision) -> Result<Revision> {
        self.retry(Unsafe, || self.inner.compact(revision)).await
    }

    async fn watch(&self, prefix: &[u8], opts: WatchOptions) -> Result<WatchStream> {
        self.retry(Safe, || self.inner.watch(prefix, opts.clone()))
            .await
    }
}

impl EtcdRegistry {
    /// Runs one call, sending it again on another endpoint where [`retry`] allows. A paused
    /// tokio clock is refused before anything is sent, and a timeout that fired because the
    /// clock stopped while the call was in flight is reported as the paused clock.
    async fn retry<T, Fut>(&self, kind: retry::Idempotence, call: impl FnMut() -> Fut) -> Result<T>
    where
        Fut: std::future::Future<Output = Result<T>>,
    {
        clock::check()?;
        let watch = clock::Stopwatch::start();
        watch.check(retry::retry(self.inner.endpoints.len(), kind, call).await)
    }
}
