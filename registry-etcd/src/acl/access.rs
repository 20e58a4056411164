//! Permissions: a kind of access to a key, a range or a prefix, as etcd's roles hold them.

use etcd_client::{Permission, PermissionType};
use std::fmt;

/// What a permission allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AccessKind {
    /// Get, list, watch.
    Read,
    /// Put, delete, revoke.
    Write,
    /// Both.
    ReadWrite,
}

impl AccessKind {
    /// `read`, `write` or `readwrite`, as etcdctl names them.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessKind::Read => "read",
            AccessKind::Write => "write",
            AccessKind::ReadWrite => "readwrite",
        }
    }

    fn from_etcd(raw: i32) -> Self {
        match PermissionType::try_from(raw) {
            Ok(PermissionType::Read) => AccessKind::Read,
            Ok(PermissionType::Write) => AccessKind::Write,
            _ => AccessKind::ReadWrite,
        }
    }

    fn to_etcd(self) -> PermissionType {
        match self {
            AccessKind::Read => PermissionType::Read,
            AccessKind::Write => PermissionType::Write,
            AccessKind::ReadWrite => PermissionType::Readwrite,
        }
    }
}

/// One permission of a role: a kind of access to a key, a key range or a key prefix (raw etcd
/// keys, the registry's key prefix included).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Access {
    /// What it allows.
    pub kind: AccessKind,
    /// The first key.
    pub key: Vec<u8>,
    /// The end of the range (exclusive); empty for the one key.
    pub range_end: Vec<u8>,
}

impl Access {
    /// `kind` on every key that starts with `prefix`.
    pub fn prefix(kind: AccessKind, prefix: &[u8]) -> Self {
        Access {
            kind,
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
        }
    }

    /// True when the range is exactly the keys that start with `key`.
    pub fn is_prefix(&self) -> bool {
        !self.range_end.is_empty() && self.range_end == prefix_end(&self.key)
    }

    /// True when this permission lets `kind` happen on `key`.
    pub fn allows(&self, kind: AccessKind, key: &[u8]) -> bool {
        let kind_ok = self.kind == AccessKind::ReadWrite || self.kind == kind;
        let in_range = if self.range_end.is_empty() {
            key == self.key.as_slice()
        } else {
            key >= self.key.as_slice() && (self.range_end == [0] || key < self.range_end.as_slice())
        };
        kind_ok && in_range
    }

    pub(super) fn from_etcd(permission: &Permission) -> Self {
        Access {
            kind: AccessKind::from_etcd(permission.get_type()),
            key: permission.key().to_vec(),
            range_end: permission.range_end().to_vec(),
        }
    }

    pub(super) fn to_etcd(&self) -> Permission {
        Permission::new(self.kind.to_etcd(), self.key.clone())
            .with_range_end(self.range_end.clone())
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = String::from_utf8_lossy(&self.key);
        if self.is_prefix() {
            write!(f, "{} prefix {key}", self.kind.as_str())
        } else if self.range_end.is_empty() {
            write!(f, "{} key {key}", self.kind.as_str())
        } else {
            let end = String::from_utf8_lossy(&self.range_end);
            write!(f, "{} range [{key}, {end})", self.kind.as_str())
        }
    }
}

/// The end of the range of keys that start with `prefix` (etcd's `GetPrefix`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff (or no byte at all): to the end of the keyspace.
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_end_where_etcd_says() {
        assert_eq!(prefix_end(b"services/a/"), b"services/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn access_allows_only_its_kind_and_range() {
        let own = Access::prefix(AccessKind::ReadWrite, b"services/a/");
        assert!(own.is_prefix());
        assert!(own.allows(AccessKind::Write, b"services/a/1"));
        assert!(own.allows(AccessKind::Read, b"services/a/"));
        assert!(!own.allows(AccessKind::Write, b"services/ab/1"));
        assert!(!own.allows(AccessKind::Write, b"services/b/1"));
        let read = Access::prefix(AccessKind::Read, b"services/b/");
        assert!(read.allows(AccessKind::Read, b"services/b/x"));
        assert!(!read.allows(AccessKind::Write, b"services/b/x"));
        assert_eq!(read.to_string(), "read prefix services/b/");
        let key = Access {
            kind: AccessKind::Write,
            key: b"k".to_vec(),
            range_end: Vec::new(),
        };
        assert!(key.allows(AccessKind::Write, b"k"));
        assert!(!key.allows(AccessKind::Write, b"k2"));
        assert_eq!(key.to_string(), "write key k");
    }
}
