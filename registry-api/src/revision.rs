use std::fmt;

/// A store-wide revision: etcd's logical clock. Every successful write bumps it by exactly one;
/// every key-value and event carries the revision that wrote it.
///
/// Revisions under one prefix have gaps (other writers), so never assume they are contiguous.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision(pub i64);

impl Revision {
    /// The revision of an empty store: a fresh etcd starts here, and its first write is at 2.
    pub const INITIAL: Revision = Revision(1);

    /// The revision just after this one, where a watch resumes after delivering `self`.
    pub fn next(self) -> Revision {
        Revision(self.0.saturating_add(1))
    }

    /// The raw number.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<i64> for Revision {
    fn from(raw: i64) -> Self {
        Revision(raw)
    }
}
