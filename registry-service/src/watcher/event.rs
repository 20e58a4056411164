//! What a [`Watcher`](super::Watcher) yields.

use crate::Error;
use registry_api::{KeyValue, Revision};
use std::sync::Arc;
use std::time::Duration;

/// One change to one key under the watched prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The key was created or its value replaced.
    Put {
        /// The key-value now.
        kv: KeyValue,
        /// What the watcher held for the key before, if anything.
        prev: Option<KeyValue>,
    },
    /// The key is gone.
    Delete {
        /// What the watcher held for the key.
        prev: KeyValue,
    },
}

impl Change {
    /// The key changed.
    pub fn key(&self) -> &[u8] {
        match self {
            Change::Put { kv, .. } => &kv.key,
            Change::Delete { prev } => &prev.key,
        }
    }
}

/// An item of a [`Watcher`](super::Watcher): changes, the moment it is synced, or a failure
/// it is recovering from. The stream never ends by itself; failures are items, and the next
/// poll carries on.
#[derive(Clone, Debug)]
pub enum WatcherEvent {
    /// Keys changed. From the watch (`resync: false`), or from a re-list (`resync: true`), in
    /// which case `changes` is exactly the difference between what the watcher held and the
    /// fresh list: no duplicate put, no missed delete. Never empty.
    Changed {
        /// The store revision the watcher reflects after these changes.
        revision: Revision,
        /// The changes, in key order within one revision.
        changes: Vec<Change>,
        /// True when they come from a re-list rather than the watch.
        resync: bool,
    },
    /// Listed, and the watch that continues the list is established: a change made from now
    /// on reaches the watcher even if the connection breaks the moment after.
    Synced {
        /// The revision of the list.
        revision: Revision,
    },
    /// The watch confirmed that every change up to `revision` has been delivered (a progress
    /// notification, or a batch whose events changed nothing the watcher holds).
    Progress {
        /// The revision the watcher now reflects.
        revision: Revision,
    },
    /// The store's revision went back: it was restored from an older backup (`etcdutl
    /// snapshot restore` without `--bump-revision`), and its lists stayed below what the
    /// watcher held however often it asked. The list is the truth after all: what follows is
    /// exactly the differences from what the watcher held (a `Changed { resync: true }`, unless
    /// nothing under the prefix differs), then `Synced`; revisions compare from `listed` on.
    Regressed {
        /// The revision the watcher held.
        held: Revision,
        /// The store's revision now, as listed.
        listed: Revision,
    },
    /// A list or watch failed, or a watch ended, was compacted or went silent
    /// ([`Error::WatchStalled`]). What the watcher held stays as it was; it lists again in
    /// `retry_in`.
    Failed {
        /// Why. Shared, so that a store can keep it as "the last error" cheaply.
        error: Arc<Error>,
        /// The backoff wait before the next list.
        retry_in: Duration,
    },
}

impl WatcherEvent {
    /// The revision the watcher reflects after this item, when it says.
    pub fn revision(&self) -> Option<Revision> {
        match self {
            WatcherEvent::Changed { revision, .. }
            | WatcherEvent::Synced { revision }
            | WatcherEvent::Progress { revision } => Some(*revision),
            WatcherEvent::Regressed { listed, .. } => Some(*listed),
            WatcherEvent::Failed { .. } => None,
        }
    }
}
