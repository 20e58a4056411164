//! What the registrar's machines ask the driver to do, and what comes back: the only place
//! where the machines meet the registry, as plain data.
//!
//! A transition returns [`Call`]s; the driver makes them and feeds each [`Answer`] back into
//! the machines, the same way whether it came at once or later and from whichever backend.

use super::commands::Reply;
use super::status::Shared;
use crate::instance::ServiceInstance;
use crate::watcher::{WatcherConfig, WatcherEvent};
use bytes::Bytes;
use futures::future::BoxFuture;
use registry_api::{Error, LeaseGrant, LeaseId, PutResponse};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A lease slot's index (see [`super::leases`]).
pub(super) type SlotId = usize;
/// A key watch's index (see [`super::key_watches`]).
pub(super) type GroupId = usize;
/// A registration's id, given by its registrar.
pub(super) type MemberId = u64;

/// One lease whose keep-alive goes out in a round, and the token its answer must carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Renewal {
    pub(super) slot: SlotId,
    pub(super) token: u64,
    pub(super) lease: LeaseId,
    /// How long the answer is worth waiting for: until the lease's deadline, at most the
    /// request timeout.
    pub(super) limit: Duration,
}

/// Why an instance is put.
pub(super) enum Purpose {
    /// First registration or re-registration.
    Register,
    /// The watch showed the key missing or overwritten.
    Restore,
    /// New metadata or status from the handle; `previous` is restored if the value is refused.
    Change {
        reply: Reply,
        previous: Box<(ServiceInstance, Bytes)>,
    },
    /// Marked draining by a shutdown.
    Drain,
}

/// A registration on its way out, once its lease is revoked or its key deleted: who to tell.
pub(super) struct Leaving {
    pub(super) shared: Arc<Shared>,
    pub(super) replies: Vec<Reply>,
    /// Why it ends, when it fails rather than deregisters.
    pub(super) failure: Option<Arc<crate::Error>>,
}

/// A registry call (or a wait) for the driver to make.
pub(super) enum Call {
    /// Grant the slot's lease.
    Grant {
        slot: SlotId,
        token: u64,
        ttl: i64,
        limit: Duration,
    },
    /// Renew these leases: one call for one, a batch for several.
    KeepAlive {
        renewals: Vec<Renewal>,
        limit: Duration,
    },
    /// Put a member's instance under its key on `lease`.
    Put {
        member: MemberId,
        key: Bytes,
        value: Bytes,
        lease: LeaseId,
        purpose: Purpose,
        limit: Duration,
    },
    /// Revoke a lease; tell `then` when done.
    Revoke {
        lease: LeaseId,
        limit: Duration,
        then: Option<Leaving>,
    },
    /// Delete a key (a member leaving a shared lease); tell `then` when done.
    Delete {
        key: Bytes,
        limit: Duration,
        then: Option<Leaving>,
    },
    /// Wait for a member's readiness.
    AwaitReady {
        member: MemberId,
        ready: BoxFuture<'static, ()>,
    },
    /// Start watching a service's prefix.
    Watch {
        group: GroupId,
        prefix: String,
        config: WatcherConfig,
    },
    /// Stop watching it.
    Unwatch { group: GroupId },
}

/// What came back from a [`Call`], or from a watch.
pub(super) enum Answer {
    Granted {
        slot: SlotId,
        token: u64,
        sent_at: Instant,
        result: registry_api::Result<LeaseGrant>,
    },
    /// The answers to a round's keep-alives, one per renewal, in order (a call that failed as a
    /// whole: its error).
    Renewed {
        renewals: Vec<Renewal>,
        sent_at: Instant,
        result: registry_api::Result<Vec<registry_api::Result<i64>>>,
    },
    Put {
        member: MemberId,
        key: Bytes,
        lease: LeaseId,
        purpose: Purpose,
        result: registry_api::Result<PutResponse>,
    },
    /// A revoke or delete that a leaving member waited for.
    Left {
        leaving: Leaving,
        result: registry_api::Result<()>,
    },
    Ready {
        member: MemberId,
    },
    Watched {
        group: GroupId,
        event: WatcherEvent,
    },
    /// A call whose answer changes nothing.
    Ignored,
}

/// True when `error` ends a registration instead of being retried: the registry refused the
/// request itself, and sending it again cannot succeed. Permission denied (the client's role
/// does not cover the key), not supported, an invalid argument, a value too large. Every other
/// error (unavailable, timeouts, a lease not found, a watch cancelled, any backend error) is
/// retried, for ever, with backoff.
pub(super) fn ends_registration(error: &Error) -> bool {
    matches!(
        error,
        Error::PermissionDenied { .. }
            | Error::NotSupported { .. }
            | Error::InvalidArgument(_)
            | Error::TooLarge { .. }
    )
}

/// The shared form of a registry error, as handles keep it.
pub(super) fn shared(error: Error) -> Arc<crate::Error> {
    Arc::new(crate::Error::from(error))
}
