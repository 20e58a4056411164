//! The kinds of call a wrapper sees.

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
