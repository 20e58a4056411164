//! Forwarding the whole trait through a hook: the public way to write a wrapper.

use super::{Answer, Call, CallKind, Next};
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
///
/// Two levels: [`before`](Intercept::before), [`after`](Intercept::after) and
/// [`watch`](Intercept::watch) see the kind of each call and whether it succeeded, enough to
/// count, delay, cut or fail calls; [`around`](Intercept::around) sees each whole call (the
/// leases it names, its keys and options) and its whole answer, and may change either or answer
/// in place of the inner registry. Its default runs the first level.
#[async_trait]
pub trait Intercept: Debug + Send + Sync + 'static {
    /// Runs the call: by default [`before`](Intercept::before) (or
    /// [`before_many`](Intercept::before_many) for a batch), the call itself through `next`,
    /// then [`after`](Intercept::after). A hook that overrides it sees what the call asks and
    /// what came back, with lease ids (a grant's new lease, each lease of a keep-alive batch),
    /// and decides what the caller gets: pass `call` on as is or changed, answer it without
    /// the inner registry, or change the answer. Keep the answer's variant that of the call
    /// ([`Answer::failed`] builds an error of the right one).
    async fn around(&self, call: Call<'_>, next: Next<'_>) -> Answer {
        let kind = call.kind();
        let before = match &call {
            Call::LeaseKeepAliveMany { ids } => self.before_many(kind, ids.len()).await,
            _ => self.before(kind).await,
        };
        if let Err(error) = before {
            return Answer::failed(&call, error);
        }
        let answer = next.run(call).await;
        match self.after(kind, answer.outcome()).await {
            Ok(()) => answer,
            Err(error) => answer.with_error(error),
        }
    }

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

    /// Runs `call` through the hook; `unpack` takes the answer of the call's own variant.
    async fn run<T>(&self, call: Call<'_>, unpack: fn(Answer) -> Option<Result<T>>) -> Result<T> {
        let kind = call.kind();
        let next = Next { inner: &self.inner };
        let answer = self.intercept.around(call, next).await;
        let answered = answer.kind();
        unpack(answer).unwrap_or_else(|| {
            Err(Error::backend(format!(
                "the intercept answered a {kind} call with a {answered} answer"
            )))
        })
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

/// Takes the result out of an answer of one variant, `None` for any other.
macro_rules! unpack {
    ($variant:ident) => {
        |answer| match answer {
            Answer::$variant(result) => Some(result),
            _ => None,
        }
    };
}

#[async_trait]
impl<R: Registry, I: Intercept> Registry for Intercepted<R, I> {
    async fn lease_grant(&self, ttl: i64, id: Option<LeaseId>) -> Result<LeaseGrant> {
        self.run(Call::LeaseGrant { ttl, id }, unpack!(LeaseGrant))
            .await
    }
    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        self.run(Call::LeaseKeepAlive { id }, unpack!(LeaseKeepAlive))
            .await
    }
    async fn lease_keep_alive_many(&self, ids: &[LeaseId]) -> Result<Vec<Result<i64>>> {
        self.run(
            Call::LeaseKeepAliveMany { ids },
            unpack!(LeaseKeepAliveMany),
        )
        .await
    }
    async fn lease_revoke(&self, id: LeaseId) -> Result<Revision> {
        self.run(Call::LeaseRevoke { id }, unpack!(LeaseRevoke))
            .await
    }
    async fn lease_time_to_live(&self, id: LeaseId) -> Result<LeaseTimeToLive> {
        self.run(Call::LeaseTimeToLive { id }, unpack!(LeaseTimeToLive))
            .await
    }
    async fn leases(&self) -> Result<Vec<LeaseId>> {
        self.run(Call::Leases, unpack!(Leases)).await
    }
    async fn put(&self, key: &[u8], value: &[u8], opts: PutOptions) -> Result<PutResponse> {
        let call = Call::Put {
            key,
            value,
            options: opts,
        };
        self.run(call, unpack!(Put)).await
    }
    async fn get(&self, key: &[u8]) -> Result<GetResponse> {
        self.run(Call::Get { key }, unpack!(Get)).await
    }
    async fn list(&self, prefix: &[u8], opts: ListOptions) -> Result<ListResponse> {
        let call = Call::List {
            prefix,
            options: opts,
        };
        self.run(call, unpack!(List)).await
    }
    async fn delete(&self, key: &[u8]) -> Result<DeleteResponse> {
        self.run(Call::Delete { key }, unpack!(Delete)).await
    }
    async fn delete_prefix(&self, prefix: &[u8]) -> Result<DeleteResponse> {
        self.run(Call::DeletePrefix { prefix }, unpack!(DeletePrefix))
            .await
    }
    async fn compact(&self, revision: Revision) -> Result<Revision> {
        self.run(Call::Compact { revision }, unpack!(Compact)).await
    }
    async fn watch(&self, prefix: &[u8], opts: WatchOptions) -> Result<WatchStream> {
        let call = Call::Watch {
            prefix,
            options: opts,
        };
        let stream = self.run(call, unpack!(Watch)).await?;
        Ok(intercept_progress(
            self.intercept.watch(stream),
            self.intercept.clone(),
        ))
    }
}
