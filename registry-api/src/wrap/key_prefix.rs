//! A registry seen under a key prefix.

use crate::limits::check_key;
use crate::{
    Bytes, DeleteResponse, Error, GetResponse, KeyValue, LeaseGrant, LeaseId, LeaseTimeToLive,
    ListOptions, ListResponse, PutOptions, PutResponse, Registry, Result, Revision, WatchOptions,
    WatchStream,
};
use async_trait::async_trait;
use futures::StreamExt;

/// A registry whose every key lives under `prefix`: keys, ranges, deletes and watches are
/// prefixed on the way in and the prefix is stripped from what comes back, so several apps
/// (or test cases) share one server without seeing each other's keys.
///
/// The prefix is raw bytes (add the `/` yourself if you want one). Leases are not keyed:
/// [`leases`](Registry::leases) lists every lease of the server, while
/// [`lease_time_to_live`](Registry::lease_time_to_live) shows only the lease's keys under the
/// prefix. The prefix's bytes count against the server's size limit: a put's
/// [`TooLarge`](Error::TooLarge) reports its size and the limit as the caller sees them (both
/// less the prefix).
///
/// ```
/// use registry_api::wrap::KeyPrefix;
/// use registry_api::{ListOptions, PutOptions, Registry};
/// use registry_memory::MemoryRegistry;
///
/// # tokio_test::block_on(async {
/// let server = MemoryRegistry::with_manual_clock();
/// let app = KeyPrefix::new(server.clone(), "app-1/");
/// app.put(b"services/a", b"1", PutOptions::default()).await?;
/// assert!(server.get(b"app-1/services/a").await?.kv.is_some());
/// let list = app.list(b"services/", ListOptions::default()).await?;
/// assert_eq!(&list.kvs[0].key[..], b"services/a");
/// # Ok::<(), registry_api::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct KeyPrefix<R> {
    inner: R,
    prefix: Bytes,
}

impl<R: Registry> KeyPrefix<R> {
    /// `inner`, with every key under `prefix`.
    pub fn new(inner: R, prefix: impl Into<Bytes>) -> Self {
        KeyPrefix {
            inner,
            prefix: prefix.into(),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// The wrapped registry.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    fn full(&self, key: &[u8]) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.prefix.len() + key.len());
        full.extend_from_slice(&self.prefix);
        full.extend_from_slice(key);
        full
    }
}

fn strip(prefix: &[u8], mut kv: KeyValue) -> KeyValue {
    if kv.key.starts_with(prefix) {
        kv.key = kv.key.slice(prefix.len()..);
    }
    kv
}

#[async_trait]
impl<R: Registry> Registry for KeyPrefix<R> {
    async fn lease_grant(&self, ttl: i64, id: Option<LeaseId>) -> Result<LeaseGrant> {
        self.inner.lease_grant(ttl, id).await
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        self.inner.lease_keep_alive(id).await
    }

    async fn lease_keep_alive_many(&self, ids: &[LeaseId]) -> Result<Vec<Result<i64>>> {
        self.inner.lease_keep_alive_many(ids).await
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<Revision> {
        self.inner.lease_revoke(id).await
    }

    async fn lease_time_to_live(&self, id: LeaseId) -> Result<LeaseTimeToLive> {
        let mut ttl = self.inner.lease_time_to_live(id).await?;
        let n = self.prefix.len();
        ttl.keys = ttl
            .keys
            .into_iter()
            .filter(|key| key.starts_with(&self.prefix))
            .map(|key| key[n..].to_vec())
            .collect();
        Ok(ttl)
    }

    async fn leases(&self) -> Result<Vec<LeaseId>> {
        self.inner.leases().await
    }

    async fn put(&self, key: &[u8], value: &[u8], opts: PutOptions) -> Result<PutResponse> {
        check_key(key)?;
        let mut response = match self.inner.put(&self.full(key), value, opts).await {
            // Sizes as the caller sees them: the prefix's bytes count against the server's limit.
            Err(Error::TooLarge { size, limit }) => {
                let n = self.prefix.len();
                return Err(Error::TooLarge {
                    size: size.map(|s| s.saturating_sub(n)),
                    limit: limit.map(|l| l.saturating_sub(n)),
                });
            }
            other => other?,
        };
        response.prev_kv = response.prev_kv.map(|kv| strip(&self.prefix, kv));
        Ok(response)
    }

    async fn get(&self, key: &[u8]) -> Result<GetResponse> {
        check_key(key)?;
        let mut response = self.inner.get(&self.full(key)).await?;
        response.kv = response.kv.map(|kv| strip(&self.prefix, kv));
        Ok(response)
    }

    async fn list(&self, prefix: &[u8], opts: ListOptions) -> Result<ListResponse> {
        let mut response = self.inner.list(&self.full(prefix), opts).await?;
        response.kvs = std::mem::take(&mut response.kvs)
            .into_iter()
            .map(|kv| strip(&self.prefix, kv))
            .collect();
        Ok(response)
    }

    async fn delete(&self, key: &[u8]) -> Result<DeleteResponse> {
        check_key(key)?;
        let mut response = self.inner.delete(&self.full(key)).await?;
        response.prev_kvs = std::mem::take(&mut response.prev_kvs)
            .into_iter()
            .map(|kv| strip(&self.prefix, kv))
            .collect();
        Ok(response)
    }

    async fn delete_prefix(&self, prefix: &[u8]) -> Result<DeleteResponse> {
        let mut response = self.inner.delete_prefix(&self.full(prefix)).await?;
        response.prev_kvs = std::mem::take(&mut response.prev_kvs)
            .into_iter()
            .map(|kv| strip(&self.prefix, kv))
            .collect();
        Ok(response)
    }

    async fn compact(&self, revision: Revision) -> Result<Revision> {
        self.inner.compact(revision).await
    }

    async fn watch(&self, prefix: &[u8], opts: WatchOptions) -> Result<WatchStream> {
        let stream = self.inner.watch(&self.full(prefix), opts).await?;
        let own = self.prefix.clone();
        Ok(stream.map_events(move |events| {
            events
                .map(move |item| {
                    item.map(|mut batch| {
                        for event in &mut batch.events {
                            event.kv = strip(&own, std::mem::take(&mut event.kv));
                            event.prev_kv = event.prev_kv.take().map(|kv| strip(&own, kv));
                        }
                        batch
                    })
                })
                .boxed()
        }))
    }
}
