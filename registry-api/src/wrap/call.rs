//! The calls a wrapper sees: their kinds, and each call with what it asks.

use crate::{LeaseId, ListOptions, PutOptions, Revision, WatchOptions};
use std::fmt;

/// One variant per method of [`Registry`](crate::Registry), plus the progress requests of an
/// open watch ([`WatchStream::request_progress`](crate::WatchStream::request_progress)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum CallKind {
    /// [`lease_grant`](crate::Registry::lease_grant).
    LeaseGrant,
    /// [`lease_keep_alive`](crate::Registry::lease_keep_alive).
    LeaseKeepAlive,
    /// [`lease_revoke`](crate::Registry::lease_revoke).
    LeaseRevoke,
    /// [`lease_time_to_live`](crate::Registry::lease_time_to_live).
    LeaseTimeToLive,
    /// [`leases`](crate::Registry::leases).
    Leases,
    /// [`put`](crate::Registry::put).
    Put,
    /// [`get`](crate::Registry::get).
    Get,
    /// [`list`](crate::Registry::list).
    List,
    /// [`delete`](crate::Registry::delete).
    Delete,
    /// [`delete_prefix`](crate::Registry::delete_prefix).
    DeletePrefix,
    /// [`compact`](crate::Registry::compact).
    Compact,
    /// [`watch`](crate::Registry::watch): opening a watch.
    Watch,
    /// A progress request on an open watch.
    ProgressRequest,
}

impl CallKind {
    /// Every kind, in declaration order.
    pub const ALL: [CallKind; 13] = [
        CallKind::LeaseGrant,
        CallKind::LeaseKeepAlive,
        CallKind::LeaseRevoke,
        CallKind::LeaseTimeToLive,
        CallKind::Leases,
        CallKind::Put,
        CallKind::Get,
        CallKind::List,
        CallKind::Delete,
        CallKind::DeletePrefix,
        CallKind::Compact,
        CallKind::Watch,
        CallKind::ProgressRequest,
    ];

    /// The position of this kind in [`CallKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The method's name, as in the trait (`"lease_grant"`, `"put"`, ...; `"progress_request"`).
    pub fn name(self) -> &'static str {
        match self {
            CallKind::LeaseGrant => "lease_grant",
            CallKind::LeaseKeepAlive => "lease_keep_alive",
            CallKind::LeaseRevoke => "lease_revoke",
            CallKind::LeaseTimeToLive => "lease_time_to_live",
            CallKind::Leases => "leases",
            CallKind::Put => "put",
            CallKind::Get => "get",
            CallKind::List => "list",
            CallKind::Delete => "delete",
            CallKind::DeletePrefix => "delete_prefix",
            CallKind::Compact => "compact",
            CallKind::Watch => "watch",
            CallKind::ProgressRequest => "progress_request",
        }
    }

    /// True for calls that change the store: grants, keep-alives, revokes, puts, deletes,
    /// compactions.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            CallKind::LeaseGrant
                | CallKind::LeaseKeepAlive
                | CallKind::LeaseRevoke
                | CallKind::Put
                | CallKind::Delete
                | CallKind::DeletePrefix
                | CallKind::Compact
        )
    }
}

impl fmt::Display for CallKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One call of the trait on its way to the inner registry, as an
/// [`Intercept::around`](super::Intercept::around) hook sees it: what it asks, which a hook may
/// change before passing it on ([`Next::run`](super::Next::run)) or answer itself.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Call<'a> {
    /// [`lease_grant`](crate::Registry::lease_grant).
    LeaseGrant {
        /// The TTL asked for, in seconds.
        ttl: i64,
        /// The id asked for, if any.
        id: Option<LeaseId>,
    },
    /// [`lease_keep_alive`](crate::Registry::lease_keep_alive) of one lease.
    LeaseKeepAlive {
        /// The lease renewed.
        id: LeaseId,
    },
    /// [`lease_keep_alive_many`](crate::Registry::lease_keep_alive_many): one round trip for
    /// every lease of `ids`, one answer each.
    LeaseKeepAliveMany {
        /// The leases renewed, in the order of the answers.
        ids: &'a [LeaseId],
    },
    /// [`lease_revoke`](crate::Registry::lease_revoke).
    LeaseRevoke {
        /// The lease revoked.
        id: LeaseId,
    },
    /// [`lease_time_to_live`](crate::Registry::lease_time_to_live).
    LeaseTimeToLive {
        /// The lease looked up.
        id: LeaseId,
    },
    /// [`leases`](crate::Registry::leases).
    Leases,
    /// [`put`](crate::Registry::put).
    Put {
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
        /// The options (the lease the key is attached to).
        options: PutOptions,
    },
    /// [`get`](crate::Registry::get).
    Get {
        /// The key.
        key: &'a [u8],
    },
    /// [`list`](crate::Registry::list).
    List {
        /// The prefix.
        prefix: &'a [u8],
        /// The options.
        options: ListOptions,
    },
    /// [`delete`](crate::Registry::delete).
    Delete {
        /// The key.
        key: &'a [u8],
    },
    /// [`delete_prefix`](crate::Registry::delete_prefix).
    DeletePrefix {
        /// The prefix.
        prefix: &'a [u8],
    },
    /// [`compact`](crate::Registry::compact).
    Compact {
        /// The revision to compact to.
        revision: Revision,
    },
    /// [`watch`](crate::Registry::watch).
    Watch {
        /// The prefix.
        prefix: &'a [u8],
        /// The options (the revision the watch starts from).
        options: WatchOptions,
    },
}

impl Call<'_> {
    /// The kind of the call (a batch of keep-alives is [`CallKind::LeaseKeepAlive`]).
    pub fn kind(&self) -> CallKind {
        match self {
            Call::LeaseGrant { .. } => CallKind::LeaseGrant,
            Call::LeaseKeepAlive { .. } | Call::LeaseKeepAliveMany { .. } => {
                CallKind::LeaseKeepAlive
            }
            Call::LeaseRevoke { .. } => CallKind::LeaseRevoke,
            Call::LeaseTimeToLive { .. } => CallKind::LeaseTimeToLive,
            Call::Leases => CallKind::Leases,
            Call::Put { .. } => CallKind::Put,
            Call::Get { .. } => CallKind::Get,
            Call::List { .. } => CallKind::List,
            Call::Delete { .. } => CallKind::Delete,
            Call::DeletePrefix { .. } => CallKind::DeletePrefix,
            Call::Compact { .. } => CallKind::Compact,
            Call::Watch { .. } => CallKind::Watch,
        }
    }

    /// The leases the call names: the id a grant asks for, the leases kept alive, revoked or
    /// looked up, the lease a put attaches its key to.
    pub fn leases(&self) -> &[LeaseId] {
        match self {
            Call::LeaseGrant { id: Some(id), .. }
            | Call::LeaseKeepAlive { id }
            | Call::LeaseRevoke { id }
            | Call::LeaseTimeToLive { id } => std::slice::from_ref(id),
            Call::LeaseKeepAliveMany { ids } => ids,
            Call::Put {
                options: PutOptions {
                    lease: Some(lease), ..
                },
                ..
            } => std::slice::from_ref(lease),
            _ => &[],
        }
    }
}
