use std::fmt;

/// A lease identifier, as the server issued it. Never zero: etcd uses 0 for "no lease".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseId(pub i64);

impl LeaseId {
    /// The raw number.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // etcdctl prints lease ids in hex; do the same so logs can be matched against it.
        write!(f, "{:x}", self.0)
    }
}

/// What [`lease_grant`](crate::Registry::lease_grant) returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The new lease.
    pub id: LeaseId,
    /// The TTL actually granted, in seconds: at least the one asked, raised to the backend's
    /// minimum when the request was below it.
    pub ttl: i64,
}

/// What [`lease_time_to_live`](crate::Registry::lease_time_to_live) returns for a live lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseTimeToLive {
    /// The lease asked about.
    pub id: LeaseId,
    /// Whole seconds left before expiry, rounded down (etcd reports `granted - 1` just after a
    /// grant or keep-alive).
    pub ttl: i64,
    /// The TTL the lease was granted with, in seconds.
    pub granted_ttl: i64,
    /// The keys attached to the lease, in key order.
    pub keys: Vec<Vec<u8>>,
}
