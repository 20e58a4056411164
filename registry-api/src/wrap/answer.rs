//! What the inner registry answered, as an intercept sees it, and the way on to it.

use super::{Call, CallKind};
use crate::{
    DeleteResponse, Error, GetResponse, LeaseGrant, LeaseId, LeaseTimeToLive, ListResponse,
    PutResponse, Registry, Result, Revision, WatchStream,
};

/// The answer to one [`Call`], as an [`Intercept::around`](super::Intercept::around) hook sees
/// it: the inner registry's, or one the hook made. One variant per variant of [`Call`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Answer {
    /// To [`Call::LeaseGrant`].
    LeaseGrant(Result<LeaseGrant>),
    /// To [`Call::LeaseKeepAlive`]: the granted TTL.
    LeaseKeepAlive(Result<i64>),
    /// To [`Call::LeaseKeepAliveMany`]: one answer per lease, in order.
    LeaseKeepAliveMany(Result<Vec<Result<i64>>>),
    /// To [`Call::LeaseRevoke`].
    LeaseRevoke(Result<Revision>),
    /// To [`Call::LeaseTimeToLive`].
    LeaseTimeToLive(Result<LeaseTimeToLive>),
    /// To [`Call::Leases`].
    Leases(Result<Vec<LeaseId>>),
    /// To [`Call::Put`].
    Put(Result<PutResponse>),
    /// To [`Call::Get`].
    Get(Result<GetResponse>),
    /// To [`Call::List`].
    List(Result<ListResponse>),
    /// To [`Call::Delete`].
    Delete(Result<DeleteResponse>),
    /// To [`Call::DeletePrefix`].
    DeletePrefix(Result<DeleteResponse>),
    /// To [`Call::Compact`].
    Compact(Result<Revision>),
    /// To [`Call::Watch`].
    Watch(Result<WatchStream>),
}

impl Answer {
    /// The answer `error` gives to `call`, as if the inner registry had returned it.
    pub fn failed(call: &Call<'_>, error: Error) -> Answer {
        match call {
            Call::LeaseGrant { .. } => Answer::LeaseGrant(Err(error)),
            Call::LeaseKeepAlive { .. } => Answer::LeaseKeepAlive(Err(error)),
            Call::LeaseKeepAliveMany { .. } => Answer::LeaseKeepAliveMany(Err(error)),
            Call::LeaseRevoke { .. } => Answer::LeaseRevoke(Err(error)),
            Call::LeaseTimeToLive { .. } => Answer::LeaseTimeToLive(Err(error)),
            Call::Leases => Answer::Leases(Err(error)),
            Call::Put { .. } => Answer::Put(Err(error)),
            Call::Get { .. } => Answer::Get(Err(error)),
            Call::List { .. } => Answer::List(Err(error)),
            Call::Delete { .. } => Answer::Delete(Err(error)),
            Call::DeletePrefix { .. } => Answer::DeletePrefix(Err(error)),
            Call::Compact { .. } => Answer::Compact(Err(error)),
            Call::Watch { .. } => Answer::Watch(Err(error)),
        }
    }

    /// The kind of call this answers.
    pub fn kind(&self) -> CallKind {
        match self {
            Answer::LeaseGrant(_) => CallKind::LeaseGrant,
            Answer::LeaseKeepAlive(_) | Answer::LeaseKeepAliveMany(_) => CallKind::LeaseKeepAlive,
            Answer::LeaseRevoke(_) => CallKind::LeaseRevoke,
            Answer::LeaseTimeToLive(_) => CallKind::LeaseTimeToLive,
            Answer::Leases(_) => CallKind::Leases,
            Answer::Put(_) => CallKind::Put,
            Answer::Get(_) => CallKind::Get,
            Answer::List(_) => CallKind::List,
            Answer::Delete(_) => CallKind::Delete,
            Answer::DeletePrefix(_) => CallKind::DeletePrefix,
            Answer::Compact(_) => CallKind::Compact,
            Answer::Watch(_) => CallKind::Watch,
        }
    }

    /// Whether the call as a whole succeeded, and its error if not (a batch of keep-alives
    /// succeeds as a whole even when some of its leases are not found).
    pub fn outcome(&self) -> Result<(), &Error> {
        fn of<T>(result: &Result<T>) -> Result<(), &Error> {
            result.as_ref().map(|_| ())
        }
        match self {
            Answer::LeaseGrant(r) => of(r),
            Answer::LeaseKeepAlive(r) => of(r),
            Answer::LeaseKeepAliveMany(r) => of(r),
            Answer::LeaseRevoke(r) | Answer::Compact(r) => of(r),
            Answer::LeaseTimeToLive(r) => of(r),
            Answer::Leases(r) => of(r),
            Answer::Put(r) => of(r),
            Answer::Get(r) => of(r),
            Answer::List(r) => of(r),
            Answer::Delete(r) | Answer::DeletePrefix(r) => of(r),
            Answer::Watch(r) => of(r),
        }
    }

    /// The leases this answer renewed: a grant's new lease, or those of `asked` (the call's
    /// [`leases`](Call::leases)) whose keep-alive succeeded. What a wrapper that times leases
    /// from their last renewal needs.
    pub fn renewed(&self, asked: &[LeaseId]) -> Vec<LeaseId> {
        match self {
            Answer::LeaseGrant(Ok(grant)) => vec![grant.id],
            Answer::LeaseKeepAlive(Ok(_)) => asked.to_vec(),
            Answer::LeaseKeepAliveMany(Ok(answers)) => asked
                .iter()
                .zip(answers)
                .filter(|(_, answer)| answer.is_ok())
                .map(|(lease, _)| *lease)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// This answer with its result replaced by `error` (a reply that was lost: the call took
    /// effect, the caller does not know).
    pub fn with_error(self, error: Error) -> Answer {
        match self {
            Answer::LeaseGrant(_) => Answer::LeaseGrant(Err(error)),
            Answer::LeaseKeepAlive(_) => Answer::LeaseKeepAlive(Err(error)),
            Answer::LeaseKeepAliveMany(_) => Answer::LeaseKeepAliveMany(Err(error)),
            Answer::LeaseRevoke(_) => Answer::LeaseRevoke(Err(error)),
            Answer::LeaseTimeToLive(_) => Answer::LeaseTimeToLive(Err(error)),
            Answer::Leases(_) => Answer::Leases(Err(error)),
            Answer::Put(_) => Answer::Put(Err(error)),
            Answer::Get(_) => Answer::Get(Err(error)),
            Answer::List(_) => Answer::List(Err(error)),
            Answer::Delete(_) => Answer::Delete(Err(error)),
            Answer::DeletePrefix(_) => Answer::DeletePrefix(Err(error)),
            Answer::Compact(_) => Answer::Compact(Err(error)),
            Answer::Watch(_) => Answer::Watch(Err(error)),
        }
    }
}

/// The way on from an [`Intercept::around`](super::Intercept::around) hook to the registry it
/// wraps. `Copy`: a hook may send several calls (or none) for the one it was given.
#[derive(Clone, Copy)]
pub struct Next<'a> {
    pub(super) inner: &'a dyn Registry,
}

impl std::fmt::Debug for Next<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Next").finish_non_exhaustive()
    }
}

impl Next<'_> {
    /// Sends `call` to the wrapped registry and returns its answer.
    pub async fn run(self, call: Call<'_>) -> Answer {
        let inner = self.inner;
        match call {
            Call::LeaseGrant { ttl, id } => Answer::LeaseGrant(inner.lease_grant(ttl, id).await),
            Call::LeaseKeepAlive { id } => Answer::LeaseKeepAlive(inner.lease_keep_alive(id).await),
            Call::LeaseKeepAliveMany { ids } => {
                Answer::LeaseKeepAliveMany(inner.lease_keep_alive_many(ids).await)
            }
            Call::LeaseRevoke { id } => Answer::LeaseRevoke(inner.lease_revoke(id).await),
            Call::LeaseTimeToLive { id } => {
                Answer::LeaseTimeToLive(inner.lease_time_to_live(id).await)
            }
            Call::Leases => Answer::Leases(inner.leases().await),
            Call::Put {
                key,
                value,
                options,
            } => Answer::Put(inner.put(key, value, options).await),
            Call::Get { key } => Answer::Get(inner.get(key).await),
            Call::List { prefix, options } => Answer::List(inner.list(prefix, options).await),
            Call::Delete { key } => Answer::Delete(inner.delete(key).await),
            Call::DeletePrefix { prefix } => {
                Answer::DeletePrefix(inner.delete_prefix(prefix).await)
            }
            Call::Compact { revision } => Answer::Compact(inner.compact(revision).await),
            Call::Watch { prefix, options } => Answer::Watch(inner.watch(prefix, options).await),
        }
    }
}
