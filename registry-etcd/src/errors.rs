//! The one place where etcd's errors become the contract's [`Error`]s.
//!
//! etcd reports most failures as a gRPC status whose message carries the server's own error
//! text ("etcdserver: requested lease not found"), so the mapping matches on code and text
//! together. The request's own details (lease id, revision, size) are not in the status; the
//! caller passes them in a [`Context`].

use registry_api::limits::MAX_LEASE_TTL;
use registry_api::{Error, InvalidArgument, LeaseId, Revision};
use tonic::Code;

/// What the failed request was about, to fill in the fields of the contract's errors.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Context {
    /// The lease the request named.
    pub(crate) lease: Option<LeaseId>,
    /// The revision the request named.
    pub(crate) revision: Option<Revision>,
    /// The TTL the request asked for.
    pub(crate) ttl: Option<i64>,
    /// The request's key plus value size and the limit it was checked against.
    pub(crate) size: Option<(usize, usize)>,
}

impl Context {
    /// About the lease `id`.
    pub(crate) fn lease(id: LeaseId) -> Self {
        Context {
            lease: Some(id),
            ..Self::default()
        }
    }

    /// About the revision `revision`.
    pub(crate) fn revision(revision: Revision) -> Self {
        Context {
            revision: Some(revision),
            ..Self::default()
        }
    }
}

/// etcd refused the credentials (authentication) or the operation for this user (permission).
/// The source of an [`Error::Backend`]; the status says which.
#[derive(Debug, thiserror::Error)]
#[error("etcd auth error: {}", .0.message())]
pub struct AuthError(#[source] pub tonic::Status);

/// Maps any etcd-client error.
pub(crate) fn from_etcd(err: etcd_client::Error, ctx: Context) -> Error {
    use etcd_client::Error as E;
    match err {
        E::GRpcStatus(status) => from_status(status, ctx),
        E::LeaseKeepAliveError(msg) if msg.contains("lease not found") => {
            Error::LeaseNotFound(ctx.lease.unwrap_or(LeaseId(0)))
        }
        // The request channel of a stream closed: the stream, and so the connection, is gone.
        E::LeaseKeepAliveError(_) | E::WatchError(_) => Error::unavailable(err),
        E::TransportError(_) | E::IoError(_) => Error::unavailable(err),
        E::InvalidArgs(_) | E::InvalidUri(_) | E::EndpointError(_) => {
            InvalidArgument::Config(err.to_string()).into()
        }
        other => Error::backend(other),
    }
}

/// Maps a gRPC status, from etcd or from the transport under it.
pub(crate) fn from_status(status: tonic::Status, ctx: Context) -> Error {
    let msg = status.message();
    if msg.contains("requested lease not found") {
        return Error::LeaseNotFound(ctx.lease.unwrap_or(LeaseId(0)));
    }
    if msg.contains("lease already exists") {
        return Error::LeaseExists(ctx.lease.unwrap_or(LeaseId(0)));
    }
    if msg.contains("required revision has been compacted") {
        // etcd does not say where the compaction point is; the caller may look it up.
        return Error::Compacted {
            compact_revision: Revision(0),
        };
    }
    if msg.contains("required revision is a future revision") {
        return Error::FutureRevision {
            requested: ctx.revision.unwrap_or_default(),
            current: Revision(0),
        };
    }
    if msg.contains("too large lease TTL") {
        return InvalidArgument::TtlTooLarge {
            ttl: ctx.ttl.unwrap_or_default(),
            max: MAX_LEASE_TTL,
        }
        .into();
    }
    if msg.contains("key is not provided") {
        return InvalidArgument::EmptyKey.into();
    }
    if msg.contains("request is too large") || status.code() == Code::ResourceExhausted {
        let (size, limit) = ctx.size.unwrap_or_default();
        return Error::TooLarge { size, limit };
    }
    if is_auth_failure(&status) {
        return Error::backend(AuthError(status));
    }
    if is_transport_failure(&status) {
        return Error::unavailable(status);
    }
    if status.code() == Code::InvalidArgument {
        return InvalidArgument::Other(msg.to_owned()).into();
    }
    Error::backend(status)
}

fn is_auth_failure(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unauthenticated | Code::PermissionDenied
    ) || status.message().contains("authentication failed")
        || status.message().contains("invalid auth token")
        || status.message().contains("user name is empty")
}

/// True when the status says the server could not be reached or went away, rather than that
/// it refused the request: worth retrying as is.
fn is_transport_failure(status: &tonic::Status) -> bool {
    match status.code() {
        // etcd's own "no leader", "leader changed", "request timed out" are Unavailable too.
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted => true,
        // tonic reports a connection lost mid-stream as Unknown or Internal with the h2 or
        // hyper error's text.
        Code::Unknown | Code::Internal => {
            let msg = status.message();
            [
                "h2 protocol error",
                "transport error",
                "error trying to connect",
                "tcp connect error",
                "connection",
                "broken pipe",
                "Timeout expired",
            ]
            .iter()
            .any(|needle| msg.contains(needle))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: Code, msg: &str) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::new(code, msg))
    }

    #[test]
    fn lease_not_found_carries_the_lease() {
        let err = from_etcd(
            status(Code::NotFound, "etcdserver: requested lease not found"),
            Context::lease(LeaseId(7)),
        );
        assert!(matches!(err, Error::LeaseNotFound(LeaseId(7))));
        let err = from_etcd(
            etcd_client::Error::LeaseKeepAliveError("lease not found".into()),
            Context::lease(LeaseId(8)),
        );
        assert!(matches!(err, Error::LeaseNotFound(LeaseId(8))));
    }

    #[test]
    fn revisions_map_to_compacted_and_future() {
        let err = from_etcd(
            status(
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
            ),
            Context::revision(Revision(3)),
        );
        assert!(matches!(err, Error::Compacted { .. }));
        let err = from_etcd(
            status(
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision",
            ),
            Context::revision(Revision(99)),
        );
        assert!(matches!(
            err,
            Error::FutureRevision {
                requested: Revision(99),
                ..
            }
        ));
    }

    #[test]
    fn size_and_ttl_limits_are_typed() {
        let ctx = Context {
            size: Some((10, 5)),
            ..Context::default()
        };
        let err = from_etcd(
            status(Code::InvalidArgument, "etcdserver: request is too large"),
            ctx,
        );
        assert!(matches!(err, Error::TooLarge { size: 10, limit: 5 }));
        let err = from_etcd(
            status(Code::ResourceExhausted, "message larger than max"),
            ctx,
        );
        assert!(matches!(err, Error::TooLarge { .. }));
        let ctx = Context {
            ttl: Some(MAX_LEASE_TTL + 1),
            ..Context::default()
        };
        let err = from_etcd(
            status(Code::OutOfRange, "etcdserver: too large lease TTL"),
            ctx,
        );
        assert!(matches!(
            err,
            Error::InvalidArgument(InvalidArgument::TtlTooLarge { .. })
        ));
    }

    #[test]
    fn transport_failures_are_retryable() {
        for (code, msg) in [
            (Code::Unavailable, "tcp connect error"),
            (Code::DeadlineExceeded, "deadline"),
            (
                Code::Unknown,
                "h2 protocol error: error reading a body from connection",
            ),
            (Code::Unavailable, "etcdserver: leader changed"),
        ] {
            let err = from_etcd(status(code, msg), Context::default());
            assert!(err.is_retryable(), "{code:?} {msg}: {err}");
            assert!(std::error::Error::source(&err).is_some());
        }
    }

    #[test]
    fn others_keep_their_source() {
        let err = from_etcd(status(Code::FailedPrecondition, "odd"), Context::default());
        assert!(matches!(err, Error::Backend { .. }));
        assert!(!err.is_retryable());
        let err = from_etcd(
            status(
                Code::InvalidArgument,
                "etcdserver: authentication failed, invalid user ID or password",
            ),
            Context::default(),
        );
        assert!(err.to_string().contains("authentication failed"), "{err}");
    }
}
