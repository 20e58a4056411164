use crate::{
    DeleteResponse, GetResponse, LeaseGrant, LeaseId, LeaseTimeToLive, ListOptions, ListResponse,
    PutOptions, PutResponse, Result, Revision, WatchOptions, WatchStream,
};
use async_trait::async_trait;
use std::fmt::Debug;
use std::sync::Arc;

/// An etcd-shaped key-value store with leases and watches: what every backend implements.
///
/// The trait is object safe: applications hold an `Arc<dyn Registry>` and swap backends by
/// changing the one line that builds it. Every backend follows the rules in the crate docs and
/// is checked by the `registry-conformance` suite:
///
/// - one store-wide [`Revision`]; a put always bumps it by one; deleting nothing, granting,
///   keeping alive and revoking a lease with no keys do not;
/// - revoking or expiring a lease deletes all its keys in one revision, in key order;
/// - bad input (empty key, oversized value, TTL above the maximum, unknown lease) fails with a typed
///   [`Error`](crate::Error) and writes nothing.
#[async_trait]
pub trait Registry: Debug + Send + Sync {
    /// Grants a lease of `ttl` seconds, with the id `id` if given (else the backend picks one).
    /// Returns the TTL actually granted: `ttl` raised to the backend's minimum
    /// ([`DEFAULT_MIN_LEASE_TTL`](crate::limits::DEFAULT_MIN_LEASE_TTL), 2 s, on a default etcd),
    /// so a TTL of zero or below, as any below the minimum, is granted the minimum, as etcd 3.5
    /// does. A TTL above the maximum fails with
    /// [`InvalidArgument::TtlTooLarge`](crate::InvalidArgument::TtlTooLarge).
    async fn lease_grant(&self, ttl: i64, id: Option<LeaseId>) -> Result<LeaseGrant>;

    /// Renews a lease for its whole granted TTL and returns that TTL in seconds. Fails with
    /// [`LeaseNotFound`](crate::Error::LeaseNotFound) when the lease is gone.
    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64>;

    /// Renews several leases in one call: the answer holds one result per id, in the order
    /// given, each what [`lease_keep_alive`](Registry::lease_keep_alive) would have answered
    /// for that id (a lease that is gone fails alone; the others are renewed).
    ///
    /// The call fails as a whole, renewing nothing, for more than
    /// [`MAX_KEEP_ALIVE_BATCH`](crate::limits::MAX_KEEP_ALIVE_BATCH) ids
    /// ([`InvalidArgument::BatchTooLarge`](crate::InvalidArgument::BatchTooLarge)); a backend
    /// that cannot be reached may fail the whole call or each id. The default makes the single
    /// calls concurrently; backends override it to answer the batch at once (the simulator
    /// under one lock, etcd as one burst on its shared keep-alive stream).
    ///
    /// ```
    /// use registry_api::{Error, Registry};
    /// use registry_memory::MemoryRegistry;
    ///
    /// # tokio_test::block_on(async {
    /// let registry = MemoryRegistry::with_manual_clock();
    /// let a = registry.lease_grant(10, None).await?.id;
    /// let b = registry.lease_grant(20, None).await?.id;
    /// registry.lease_revoke(a).await?;
    /// let answers = registry.lease_keep_alive_many(&[a, b]).await?;
    /// assert!(matches!(answers[..], [Err(Error::LeaseNotFound(gone)), Ok(20)] if gone == a));
    /// # Ok::<(), Error>(())
    /// # }).unwrap();
    /// ```
    async fn lease_keep_alive_many(&self, ids: &[LeaseId]) -> Result<Vec<Result<i64>>> {
        crate::limits::check_keep_alive_batch(ids.len())?;
        Ok(futures::future::join_all(ids.iter().map(|id| self.lease_keep_alive(*id))).await)
    }

    /// Revokes a lease, deleting every key attached to it in one revision. Returns the store
    /// revision after the revoke (unchanged when the lease had no keys).
    async fn lease_revoke(&self, id: LeaseId) -> Result<Revision>;

    /// Reports a live lease's remaining and granted TTL and its keys. Fails with
    /// [`LeaseNotFound`](crate::Error::LeaseNotFound) when the lease is gone.
    async fn lease_time_to_live(&self, id: LeaseId) -> Result<LeaseTimeToLive>;

    /// Lists the ids of every live lease, in id order.
    async fn leases(&self) -> Result<Vec<LeaseId>>;

    /// Writes `value` under `key`, attached to `opts.lease` if given. Returns the new revision.
    async fn put(&self, key: &[u8], value: &[u8], opts: PutOptions) -> Result<PutResponse>;

    /// Reads one key at the current revision.
    async fn get(&self, key: &[u8]) -> Result<GetResponse>;

    /// Reads every key under `prefix` (all keys for an empty prefix), in key order, with the
    /// revision it was read at.
    async fn list(&self, prefix: &[u8], opts: ListOptions) -> Result<ListResponse>;

    /// Deletes one key. Deleting a missing key succeeds with `deleted == 0` and uses no revision.
    async fn delete(&self, key: &[u8]) -> Result<DeleteResponse>;

    /// Deletes every key under `prefix` in one revision.
    async fn delete_prefix(&self, prefix: &[u8]) -> Result<DeleteResponse>;

    /// Discards history below `revision`: reads and watches from earlier revisions then fail
    /// with [`Compacted`](crate::Error::Compacted). Uses no revision; returns the current one.
    /// As in etcd, compacting at or below the last compaction fails with
    /// [`Compacted`](crate::Error::Compacted), above the current revision with
    /// [`FutureRevision`](crate::Error::FutureRevision).
    async fn compact(&self, revision: Revision) -> Result<Revision>;

    /// Watches every change under `prefix`, from `opts.start_revision` (inclusive) or from the
    /// next write. The stream yields one [`WatchBatch`](crate::WatchBatch) per revision, in
    /// order; a start below the compaction point yields
    /// [`Compacted`](crate::Error::Compacted) as its only item.
    async fn watch(&self, prefix: &[u8], opts: WatchOptions) -> Result<WatchStream>;
}

macro_rules! forward_registry {
    ($($ptr:ident),*) => {$(
        #[async_trait]
        impl<T: Registry + ?Sized> Registry for $ptr<T> {
            async fn lease_grant(&self, ttl: i64, id: Option<LeaseId>) -> Result<LeaseGrant> {
                (**self).lease_grant(ttl, id).await
            }
            async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
                (**self).lease_keep_alive(id).await
            }
            async fn lease_keep_alive_many(&self, ids: &[LeaseId]) -> Result<Vec<Result<i64>>> {
                (**self).lease_keep_alive_many(ids).await
            }
            async fn lease_revoke(&self, id: LeaseId) -> Result<Revision> {
                (**self).lease_revoke(id).await
            }
            async fn lease_time_to_live(&self, id: LeaseId) -> Result<LeaseTimeToLive> {
                (**self).lease_time_to_live(id).await
            }
            async fn leases(&self) -> Result<Vec<LeaseId>> {
                (**self).leases().await
            }
            async fn put(&self, key: &[u8], value: &[u8], opts: PutOptions) -> Result<PutResponse> {
                (**self).put(key, value, opts).await
            }
            async fn get(&self, key: &[u8]) -> Result<GetResponse> {
                (**self).get(key).await
            }
            async fn list(&self, prefix: &[u8], opts: ListOptions) -> Result<ListResponse> {
                (**self).list(prefix, opts).await
            }
            async fn delete(&self, key: &[u8]) -> Result<DeleteResponse> {
                (**self).delete(key).await
            }
            async fn delete_prefix(&self, prefix: &[u8]) -> Result<DeleteResponse> {
                (**self).delete_prefix(prefix).await
            }
            async fn compact(&self, revision: Revision) -> Result<Revision> {
                (**self).compact(revision).await
            }
            async fn watch(&self, prefix: &[u8], opts: WatchOptions) -> Result<WatchStream> {
                (**self).watch(prefix, opts).await
            }
        }
    )*};
}

forward_registry!(Arc, Box);
