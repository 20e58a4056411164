//! Forwarding the whole trait through a hook: the public way to write a wrapper.

use super::CallKind;
use crate::{
    DeleteResponse, Error, GetResponse, LeaseGrant, LeaseId, LeaseTimeToLive, ListOptions,
    ListResponse, PutOptions, PutResponse, Registry, Result, Revision, WatchOptions, WatchStream,
};
use async_trait::async_trait;
use futures::StreamExt;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};

/// What a wrapper changes about the calls it forwards. Every method has a default that changes
/// nothing, so a wrapper writes only what it changes; [`Intercepted`] does the forwarding.
#[async_trait]
pub trait Intercept: Debug + Send + Sync + 'static {
    /// Runs before the call reaches the inner registry. An error is the call's result and the
    /// call never reaches it (a request that was not delivered).
    async fn before(&self, kind: CallKind) -> Result<()> {
        let _ = kind;
        Ok(())
    }

    /// Runs before a call that carries `n` requests of `kind` to the inner registry in one
    /// round trip ([`lease_keep_alive_many`](Registry::lease_keep_alive_many)). The default
    /// runs [`before`](Intercept::before) once, as for one call: a link delays or cuts the
    /// batch as a whole. A hook that counts requests overrides it to count `n`.
    async fn before_many(&self, kind: CallKind, n: usize) -> Result<()> {
        let _ = n;
        self.before(kind).await
    }

    /// Runs after the inner registry answered, with what it answered. An error replaces the
    /// answer (a reply that was lost: the call took effect, the caller does not know).
    async fn after(&self, kind: CallKind, outcome: Result<(), &Error>) -> Result<()> {
        let _ = (kind, outcome);
        Ok(())
    }

    /// Wraps every watch stream the inner registry opened (to delay, hold or cut deliveries,
    /// see [`WatchStream::map_events`]). Progress requests on the stream returned go through
    /// [`before`](Intercept::before) and [`after`](Intercept::after) as
    /// [`CallKind::ProgressRequest`].
    fn watch(&self, stream: WatchStream) -> WatchStream {
        stream
    }
}

/// A [`Registry`] that forwards every call to `inner` through the hook `intercept`.
///
/// `R` is any registry (`Arc<dyn Registry>` included); clones are cheap when `R`'s are. See
/// the [module docs](super) for a wrapper of ten lines.
#[derive(Debug, Clone)]
pub struct Intercepted<R, I> {
    inner: R,
    intercept: Arc<I>,
}

impl<R: Registry, I: Intercept> Intercepted<R, I> {
    /// `inner`, with every call going through `intercept`.
    pub fn new(inner: R, intercept: I) -> Self {
        Intercepted {
            inner,
            intercept: Arc::new(intercept),
        }
    }

    /// The wrapped registry.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    /// The hook.
    pub fn intercept(&self) -> &I {
        &self.intercept
    }

    async fn call<T: Send>(
        &self,
        kind: CallKind,
        call: impl std::future::Future<Output = Result<T>> + Send,
    ) -> Result<T> {
        self.intercept.before(kind).await?;
        let result = call.await;
        self.intercept
            .after(kind, result.as_ref().map(|_| ()))
            .await?;
        result
    }
}

/// Routes a stream's progress requests through the hook. The stream is shared between its
/// reader and the requester behind a mutex that neither holds across an await.
fn intercept_progress<I: Intercept>(stream: WatchStream, intercept: Arc<I>) -> WatchStream {
    if !stream.supports_progress_requests() {
        return stream;
    }
    let shared = Arc::new(Mutex::new(stream));
    let reader = shared.clone();
    let events = futures::stream::poll_fn(move |cx| {
        reader
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .poll_next_unpin(cx)
    });
    WatchStream::new(events).with_progress_requests(move || {
        let intercept = intercept.clone();
        let shared = shared.clone();
        Box::pin(async move {
            intercept.before(CallKind::ProgressRequest).await?;
            let request = shared
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .request_progress();
            let result = request.await;
            intercept
                .after(CallKind::ProgressRequest, result.as_ref().map(|_| ()))
                .await?;
            result
        })
    })
}

#[async_trait]
impl<R: Registry, I: Intercept> Registry for Intercepted<R, I> {
    async fn lease_grant(&self, ttl: i64, id: Option<LeaseId>) -> Result<LeaseGrant> {
        self.call(CallKind::LeaseGrant, self.inner.lease_grant(ttl, id))
            .await
    }
    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        self.call(CallKind::LeaseKeepAlive, self.inner.lease_keep_alive(id))
            .await
    }
    async fn lease_keep_alive_many(&self, ids: &[LeaseId]) -> Result<Vec<Result<i64>>> {
        let kind = CallKind::LeaseKeepAlive;
        self.intercept.before_many(kind, ids.len()).await?;
        let result = self.inner.lease_keep_alive_many(ids).await;
        self.intercept
            .after(kind, result.as_ref().map(|_| ()))
            .await?;
        result
    }
    async fn lease_revoke(&self, id: LeaseId) -> Result<Revision> {
        self.call(CallKind::LeaseRevoke, self.inner.lease_revoke(id))
            .await
    }
    async fn lease_time_to_live(&self, id: LeaseId) -> Result<LeaseTimeToLive> {
        self.call(CallKind::LeaseTimeToLive, self.inner.lease_time_to_live(id))
            .await
    }
    async fn leases(&self) -> Result<Vec<LeaseId>> {
        self.call(CallKind::Leases, self.inner.leases()).await
    }
    async fn put(&self, key: &[u8], value: &[u8], opts: PutOptions) -> Result<PutResponse> {
        self.call(CallKind::Put, self.inner.put(key, value, opts))
            .await
    }
    async fn get(&self, key: &[u8]) -> Result<GetResponse> {
        self.call(CallKind::Get, self.inner.get(key)).await
    }
    async fn list(&self, prefix: &[u8], opts: ListOptions) -> Result<ListResponse> {
        self.call(CallKind::List, self.inner.list(prefix, opts))
            .await
    }
    async fn delete(&self, key: &[u8]) -> Result<DeleteResponse> {
        self.call(CallKind::Delete, self.inner.delete(key)).await
    }
    async fn delete_prefix(&self, prefix: &[u8]) -> Result<DeleteResponse> {
        self.call(CallKind::DeletePrefix, self.inner.delete_prefix(prefix))
            .await
    }
    async fn compact(&self, revision: Revision) -> Result<Revision> {
        self.call(CallKind::Compact, self.inner.compact(revision))
            .await
    }
    async fn watch(&self, prefix: &[u8], opts: WatchOptions) -> Result<WatchStream> {
        let stream = self
            .call(CallKind::Watch, self.inner.watch(prefix, opts))
            .await?;
        Ok(intercept_progress(
            self.intercept.watch(stream),
            self.intercept.clone(),
        ))
    }
}
