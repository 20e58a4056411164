use crate::{LeaseId, Revision};
use bytes::Bytes;

/// A key and its value as the store holds it, with etcd's bookkeeping.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeyValue {
    /// The key. `Bytes`, so that every watcher and cache that receives it shares one copy.
    pub key: Bytes,
    /// The value. Empty in a delete event.
    pub value: Bytes,
    /// The revision of the put that created this key (since its last deletion). Zero in a
    /// delete event.
    pub create_revision: Revision,
    /// The revision of the last change: the put that wrote this value, or in a delete event the
    /// deletion's revision.
    pub mod_revision: Revision,
    /// How many puts since the key was created: 1 after the first. Zero in a delete event.
    pub version: i64,
    /// The lease the key is attached to, if any.
    pub lease: Option<LeaseId>,
}

impl KeyValue {
    /// The key as UTF-8, with invalid bytes replaced.
    pub fn key_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.key)
    }

    /// The value as UTF-8, with invalid bytes replaced.
    pub fn value_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.value)
    }
}

/// Options of [`put`](crate::Registry::put).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Attach the key to this lease. `None` detaches it from any lease it had, as etcd does.
    pub lease: Option<LeaseId>,
    /// Return the key's previous value.
    pub prev_kv: bool,
}

impl PutOptions {
    /// A put attached to `lease`.
    pub fn with_lease(lease: LeaseId) -> Self {
        PutOptions {
            lease: Some(lease),
            ..Self::default()
        }
    }

    /// Also return the previous value.
    pub fn prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }
}

/// What [`put`](crate::Registry::put) returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutResponse {
    /// The revision this put created.
    pub revision: Revision,
    /// The previous value, when asked for and the key existed.
    pub prev_kv: Option<KeyValue>,
}

/// What [`get`](crate::Registry::get) returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetResponse {
    /// The key-value, if the key exists.
    pub kv: Option<KeyValue>,
    /// The store revision the read was served at.
    pub revision: Revision,
}

/// Options of [`list`](crate::Registry::list).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Read at this past revision instead of the current one. A revision below the compaction
    /// point fails with [`Error::Compacted`](crate::Error::Compacted); one above the current
    /// revision with [`Error::FutureRevision`](crate::Error::FutureRevision).
    pub revision: Option<Revision>,
}

impl ListOptions {
    /// Read at `revision`.
    pub fn at(revision: Revision) -> Self {
        ListOptions {
            revision: Some(revision),
        }
    }
}

/// What [`list`](crate::Registry::list) returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListResponse {
    /// Every key under the prefix, in key order.
    pub kvs: Vec<KeyValue>,
    /// The store's current revision when the list was served (etcd's header revision: for a
    /// read at a past revision this is still the current one). For a read at the current
    /// revision, watch from `revision.next()` to see every change after it.
    pub revision: Revision,
}

/// What [`delete`](crate::Registry::delete) and [`delete_prefix`](crate::Registry::delete_prefix)
/// return.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteResponse {
    /// How many keys were deleted. Zero uses no revision.
    pub deleted: i64,
    /// The deletion's revision, or the current revision when nothing was deleted.
    pub revision: Revision,
    /// The deleted key-values, in key order.
    pub prev_kvs: Vec<KeyValue>,
}
