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
    /// The request's key plus value size.
    pub(crate) size: Option<usize>,
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

/// etcd refused the credentials (authentication, the source of an [`Error::Backend`]) or the
/// operation for this user (permission, the source of an [`Error::PermissionDenied`]); the
/// status says which.
#[derive(Debug, thiserror::Error)]
#[error("etcd auth error: {}", .0.message())]
pub struct AuthError(#[source] pub tonic::Status);

/// A TLS connection to etcd failed for a reason that trying again will not cure. The source of
/// an [`Error::Backend`], so not retried.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// etcd's server certificate did not verify: not signed by a trusted CA, expired, or not
    /// valid for the endpoint's host.
    #[error(
        "TLS certificate verification failed for etcd's server certificate ({0}): the CA given \
         (--cacert) must be the one that signed it, and it must name the endpoint's host"
    )]
    ServerCertificate(String),
    /// etcd requires a client certificate (`--client-cert-auth`) and none was shown.
    #[error(
        "etcd requires a client certificate (it runs with --client-cert-auth) and none was \
         given: pass --cert and --key ({0})"
    )]
    ClientCertificateRequired(String),
    /// etcd refused the client certificate shown: not signed by a CA it trusts, or not meant
    /// for clients.
    #[error(
        "etcd refused the client certificate shown ({0}): it must be signed by a CA in etcd's \
         --trusted-ca-file and allow client authentication"
    )]
    ClientCertificateRefused(String),
    /// etcd closed the connection right after the TLS handshake, as it does when it requires a
    /// client certificate and none, or one it does not trust, was shown.
    #[error(
        "etcd closed the connection during the TLS handshake ({0}): when it runs with \
         --client-cert-auth it requires a client certificate signed by a CA it trusts (--cert \
         and --key)"
    )]
    ClosedDuringHandshake(String),
    /// The endpoint speaks TLS, and was reached with plaintext.
    #[error(
        "{0} serves TLS but was reached over plaintext: use an https:// endpoint and the CA \
         that signed etcd's certificate (--cacert)"
    )]
    PlaintextToTls(String),
}

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

/// Maps the cancel of a watch: compaction when etcd names a compact revision, a refused
/// permission when the reason says so, else a plain cancel with etcd's reason.
pub(crate) fn from_watch_cancel(reason: &str, compact_revision: i64) -> Error {
    if compact_revision > 0 {
        return Error::Compacted {
            compact_revision: Revision(compact_revision),
        };
    }
    if reason.contains("permission denied") {
        return Error::permission_denied(format!("watch refused: {reason}"));
    }
    Error::WatchCancelled {
        reason: reason.to_owned(),
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
    if msg.contains("request is too large") {
        // etcd's `--max-request-bytes` check names no figure: its limit is the server's flag,
        // not ours, and it measures the whole raft request.
        return Error::TooLarge {
            size: ctx.size,
            limit: None,
        };
    }
    if let Some((size, limit)) = message_size_limit(msg) {
        return Error::TooLarge { size, limit };
    }
    if status.code() == Code::ResourceExhausted {
        // etcd's other ResourceExhausted answers say nothing about the request's size.
        if msg.contains("too many requests") {
            // The apply loop is behind the commits: back off and try again.
            return Error::unavailable(status);
        }
        // "mvcc: database space exceeded" (the NOSPACE alarm: nothing can be written until an
        // operator compacts, defragments and disarms it) and anything else: not retryable,
        // the message kept.
        return Error::backend(status);
    }
    if msg.contains("revision of auth store is old") {
        // The roles changed between the request's authentication and its apply: the same
        // request, sent again, is checked against the new roles.
        return Error::unavailable(status);
    }
    if status.code() == Code::PermissionDenied || msg.contains("permission denied") {
        return Error::permission_denied(AuthError(status));
    }
    if is_auth_failure(&status) {
        return Error::backend(AuthError(status));
    }
    if let Some(tls) = tls_failure(&status) {
        return Error::backend(tls);
    }
    if is_transport_failure(&status) {
        return Error::unavailable(status);
    }
    if status.code() == Code::InvalidArgument {
        return InvalidArgument::Other(msg.to_owned()).into();
    }
    Error::backend(status)
}

/// A gRPC message limit on the request, with the figures the message gives: grpc-go's
/// "received message larger than max (N vs. M)" (the server's receive limit) and tonic's
/// "encoded message length too large: found N bytes, the limit is: M bytes" (our send limit).
/// Each figure is `None` when the text does not carry it. Not for a response over our receive
/// limit ("decoded message length too large"): that request was not refused.
fn message_size_limit(msg: &str) -> Option<(Option<usize>, Option<usize>)> {
    if let Some(at) = msg.find("larger than max") {
        let figures = msg[at..]
            .split_once('(')
            .and_then(|(_, rest)| rest.split_once(')'))
            .and_then(|(inside, _)| inside.split_once(" vs. "));
        return Some(match figures {
            Some((size, limit)) => (number(size), number(limit)),
            None => (None, None),
        });
    }
    let rest = msg.split_once("encoded message length too large")?.1;
    let size = rest
        .split_once("found ")
        .and_then(|(_, r)| r.split_once(" bytes"))
        .and_then(|(n, _)| number(n));
    let limit = rest
        .split_once("the limit is: ")
        .and_then(|(_, r)| r.split_once(" bytes"))
        .and_then(|(n, _)| number(n));
    Some((size, limit))
}

fn number(text: &str) -> Option<usize> {
    text.trim().parse().ok()
}

/// A TLS handshake failure that will fail again the same way, read from the status and the
/// transport errors under it (the rustls error is several sources down).
fn tls_failure(status: &tonic::Status) -> Option<TlsError> {
    let mut texts = vec![status.message().to_owned()];
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        texts.push(cause.to_string());
        source = cause.source();
    }
    let find = |needle: &str| texts.iter().rev().find(|t| t.contains(needle)).cloned();
    if let Some(detail) = find("invalid peer certificate") {
        return Some(TlsError::ServerCertificate(detail));
    }
    if let Some(detail) = find("received fatal alert: CertificateRequired") {
        return Some(TlsError::ClientCertificateRequired(detail));
    }
    if let Some(detail) = find("received fatal alert") {
        return Some(TlsError::ClientCertificateRefused(detail));
    }
    None
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
    fn too_large_carries_only_true_figures() {
        let ctx = Context {
            size: Some(10),
            ..Context::default()
        };
        // etcd's own check: our size, its limit unknown (not ours).
        let err = from_etcd(
            status(Code::InvalidArgument, "etcdserver: request is too large"),
            ctx,
        );
        assert!(
            matches!(
                err,
                Error::TooLarge {
                    size: Some(10),
                    limit: None
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "request too large: 10 bytes, limit unknown"
        );
        // gRPC's receive limit, as grpc-go words it: both figures from the message.
        let err = from_etcd(
            status(
                Code::ResourceExhausted,
                "grpc: received message larger than max (2500012 vs. 2097152)",
            ),
            ctx,
        );
        assert!(
            matches!(
                err,
                Error::TooLarge {
                    size: Some(2_500_012),
                    limit: Some(2_097_152)
                }
            ),
            "{err:?}"
        );
        // Worded without figures: unknown, not zero.
        let err = from_etcd(
            status(
                Code::ResourceExhausted,
                "grpc: received message after decompression larger than max",
            ),
            ctx,
        );
        assert!(
            matches!(
                err,
                Error::TooLarge {
                    size: None,
                    limit: None
                }
            ),
            "{err:?}"
        );
        // tonic's send limit.
        let err = from_etcd(
            status(
                Code::OutOfRange,
                "Error, encoded message length too large: found 300 bytes, the limit is: 200 bytes",
            ),
            ctx,
        );
        assert!(
            matches!(
                err,
                Error::TooLarge {
                    size: Some(300),
                    limit: Some(200)
                }
            ),
            "{err:?}"
        );
        // A response over our receive limit refused no request.
        let err = from_etcd(
            status(
                Code::OutOfRange,
                "Error, decoded message length too large: found 300 bytes, the limit is: 200 bytes",
            ),
            ctx,
        );
        assert!(matches!(err, Error::Backend { .. }), "{err:?}");
    }

    #[test]
    fn other_resource_exhaustion_is_not_too_large() {
        let err = from_etcd(
            status(Code::ResourceExhausted, "etcdserver: too many requests"),
            Context::default(),
        );
        assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
        assert!(err.is_retryable());
        let err = from_etcd(
            status(
                Code::ResourceExhausted,
                "etcdserver: mvcc: database space exceeded",
            ),
            Context::default(),
        );
        assert!(matches!(err, Error::Backend { .. }), "{err:?}");
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("database space exceeded"), "{err}");
        let err = from_etcd(
            status(Code::ResourceExhausted, "something else ran out"),
            Context::default(),
        );
        assert!(matches!(err, Error::Backend { .. }), "{err:?}");
    }

    #[test]
    fn ttl_limits_are_typed() {
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
    fn permission_denied_is_typed_and_not_retryable() {
        let err = from_etcd(
            status(Code::PermissionDenied, "etcdserver: permission denied"),
            Context::default(),
        );
        assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
        assert!(!err.is_retryable());
        assert_eq!(
            err.to_string(),
            "permission denied: etcd auth error: etcdserver: permission denied"
        );
        let err = from_etcd(
            status(
                Code::InvalidArgument,
                "etcdserver: revision of auth store is old",
            ),
            Context::default(),
        );
        assert!(err.is_retryable(), "{err:?}");
    }

    #[test]
    fn tls_failures_are_named_and_not_retryable() {
        for (msg, expected) in [
            (
                "invalid peer certificate: UnknownIssuer",
                "TLS certificate verification failed",
            ),
            (
                "received fatal alert: CertificateRequired",
                "requires a client certificate",
            ),
            (
                "received fatal alert: UnknownCA",
                "refused the client certificate shown",
            ),
        ] {
            let err = from_etcd(status(Code::Unavailable, msg), Context::default());
            assert!(!err.is_retryable(), "{msg}: {err:?}");
            assert!(err.to_string().contains(expected), "{msg}: {err}");
            let source = std::error::Error::source(&err).expect("source kept");
            assert!(source.downcast_ref::<TlsError>().is_some(), "{msg}");
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
