use crate::{KeyValue, Result, Revision};
use futures::stream::BoxStream;

/// Options of [`watch`](crate::Registry::watch).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchOptions {
    /// Replay from this revision (inclusive). `None` watches from the next write.
    pub start_revision: Option<Revision>,
    /// Carry each changed key's previous value in [`WatchEvent::prev_kv`].
    pub prev_kv: bool,
    /// Ask the server for progress notifications: batches with no events, which tell a quiet
    /// watch from a dead one.
    pub progress_notify: bool,
}

impl WatchOptions {
    /// Watch from `revision` (inclusive).
    pub fn from_revision(revision: Revision) -> Self {
        WatchOptions {
            start_revision: Some(revision),
            ..Self::default()
        }
    }

    /// Also deliver previous values.
    pub fn with_prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }

    /// Also ask for progress notifications.
    pub fn with_progress_notify(mut self) -> Self {
        self.progress_notify = true;
        self
    }
}

/// Whether an event wrote or deleted its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The key was created or updated.
    Put,
    /// The key was deleted, by a delete, a revoke or a lease's expiry.
    Delete,
}

/// One change to one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// Put or delete.
    pub kind: EventKind,
    /// The key-value after the change. For a delete, only `key` and `mod_revision` (the
    /// deletion's revision) are set, as in etcd.
    pub kv: KeyValue,
    /// The key's value just before this revision, when asked for and the key existed.
    pub prev_kv: Option<KeyValue>,
}

impl WatchEvent {
    /// True when this put created the key (it was absent just before).
    pub fn is_create(&self) -> bool {
        self.kind == EventKind::Put && self.kv.create_revision == self.kv.mod_revision
    }
}

/// The events of exactly one revision, in key order.
///
/// A batch with no events is a progress notification: every change up to `revision` has been
/// delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchBatch {
    /// The revision all these events share.
    pub revision: Revision,
    /// The events, never split across batches.
    pub events: Vec<WatchEvent>,
}

impl WatchBatch {
    /// True for a progress notification.
    pub fn is_progress(&self) -> bool {
        self.events.is_empty()
    }
}

/// The stream [`watch`](crate::Registry::watch) returns. It yields batches in revision order;
/// an `Err` item (compacted, unavailable, cancelled by the server) is the last item. Dropping the
/// stream cancels the watch.
pub type WatchStream = BoxStream<'static, Result<WatchBatch>>;
