use crate::{LeaseId, Revision};

/// A boxed error source, kept so callers can see what a backend saw.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The result of every registry call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every way a registry call fails. Match on the variant to decide what to do; only
/// [`Error::Unavailable`] is worth retrying as is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The lease does not exist: never granted, revoked, or expired. Nothing was written.
    #[error("lease {0} not found")]
    LeaseNotFound(LeaseId),

    /// A grant named an id that is still live.
    #[error("lease {0} already exists")]
    LeaseExists(LeaseId),

    /// The requested revision has been compacted away. Re-list, then watch from the list's
    /// revision + 1.
    #[error("revision has been compacted (compact revision {compact_revision})")]
    Compacted {
        /// The store's compaction point; reads and watches from here on work.
        compact_revision: Revision,
    },

    /// The requested revision is above the store's current one.
    #[error("revision {requested} is a future revision (current {current})")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The current revision, where known (0 otherwise).
        current: Revision,
    },

    /// The request was malformed; nothing was sent or written.
    #[error("invalid argument: {0}")]
    InvalidArgument(#[from] InvalidArgument),

    /// The request exceeds a size limit, the backend's own or the server's; nothing was written.
    /// Each figure is `None` when the side that refused did not say it, never a made-up 0.
    #[error("request too large: {} bytes, limit {}", Shown(size), Shown(limit))]
    TooLarge {
        /// The size of the request as the refusing side measured it: key plus value for the
        /// contract's own check ([`limits::check_put`](crate::limits::check_put)) and for a
        /// server that gives no figure, the whole encoded message for a gRPC message limit.
        size: Option<usize>,
        /// The largest size accepted, in the same measure as `size`; `None` when the server
        /// refused without saying (etcd's `--max-request-bytes` check).
        limit: Option<usize>,
    },

    /// The backend cannot be reached right now (connection refused, timed out, server down or
    /// deliberately made unavailable). Retrying later may succeed.
    #[error("registry unavailable: {source}")]
    Unavailable {
        /// What the transport reported.
        #[source]
        source: BoxError,
    },

    /// The server ended a watch for a reason other than compaction.
    #[error("watch cancelled: {reason}")]
    WatchCancelled {
        /// The server's reason, possibly empty.
        reason: String,
    },

    /// The backend cannot do what was asked (for example, answer a progress request).
    #[error("not supported: {what}")]
    NotSupported {
        /// What is not supported.
        what: String,
    },

    /// The server refused the operation for this client's identity (etcd's RBAC: the user's
    /// roles do not cover the key or prefix). Retrying as is cannot succeed; nothing was
    /// written. A registration that meets it ends (see `registry-service`'s registrar).
    #[error("permission denied: {source}")]
    PermissionDenied {
        /// What the server reported.
        #[source]
        source: BoxError,
    },

    /// Anything else the backend reports, with its own error kept as the source.
    #[error("backend error: {source}")]
    Backend {
        /// The backend's error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// An [`Error::Unavailable`] from any error or message.
    pub fn unavailable(source: impl Into<BoxError>) -> Self {
        Error::Unavailable {
            source: source.into(),
        }
    }

    /// An [`Error::PermissionDenied`] from any error or message.
    pub fn permission_denied(source: impl Into<BoxError>) -> Self {
        Error::PermissionDenied {
            source: source.into(),
        }
    }

    /// An [`Error::Backend`] from any error or message.
    pub fn backend(source: impl Into<BoxError>) -> Self {
        Error::Backend {
            source: source.into(),
        }
    }

    /// True when the same call may succeed later without any change: the backend was
    /// unreachable.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }
}

/// Shows a figure that may be unknown.
struct Shown<'a>(&'a Option<usize>);

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(n) => write!(f, "{n}"),
            None => f.write_str("unknown"),
        }
    }
}

/// Why a request was rejected before it reached the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidArgument {
    /// Keys must not be empty.
    #[error("key is empty")]
    EmptyKey,
    /// A TTL that had to be above zero was not. No backend's
    /// [`lease_grant`](crate::Registry::lease_grant) produces it (a grant of zero or below is
    /// raised to the minimum, as etcd does); layers above the contract use it for TTLs they
    /// require to be positive, such as a registration's lease TTL.
    #[error("TTL {0} is not positive")]
    TtlNotPositive(i64),
    /// The TTL exceeds the backend's maximum.
    #[error("TTL {ttl} exceeds the maximum of {max}")]
    TtlTooLarge {
        /// The TTL asked.
        ttl: i64,
        /// The largest TTL accepted.
        max: i64,
    },
    /// Lease ids are never zero or negative.
    #[error("lease id {0} is not valid")]
    LeaseId(i64),
    /// A batch names more items than one call takes.
    #[error("a batch of {len} is more than the {max} one call takes")]
    BatchTooLarge {
        /// The items in the batch.
        len: usize,
        /// The most one call takes.
        max: usize,
    },
    /// Revisions in requests are positive.
    #[error("revision {0} is not valid")]
    Revision(i64),
    /// A connection setting (endpoint, namespace, credentials) is malformed.
    #[error("bad configuration: {0}")]
    Config(String),
    /// Anything else the server rejected as malformed.
    #[error("{0}")]
    Other(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_large_says_unknown_rather_than_zero() {
        let known = Error::TooLarge {
            size: Some(11),
            limit: Some(10),
        };
        assert_eq!(known.to_string(), "request too large: 11 bytes, limit 10");
        let unknown = Error::TooLarge {
            size: Some(11),
            limit: None,
        };
        assert_eq!(
            unknown.to_string(),
            "request too large: 11 bytes, limit unknown"
        );
        let none = Error::TooLarge {
            size: None,
            limit: None,
        };
        assert!(!none.to_string().contains('0'), "{none}");
    }
}
