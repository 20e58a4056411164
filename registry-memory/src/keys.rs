//! What the store keeps for a key, and one revision's changes as the history log holds them.
//!
//! Versions and changes are shared (`Arc`) between the live key table, the history log and every
//! watcher, so a write allocates its value once however many watchers see it.

use bytes::Bytes;
use registry_api::{EventKind, KeyValue, LeaseId, Revision, WatchBatch, WatchEvent};
use smallvec::SmallVec;
use std::fmt;
use std::sync::Arc;

/// One version of one key.
#[derive(Debug)]
pub(crate) struct Kv {
    pub(crate) key: Bytes,
    pub(crate) value: Bytes,
    pub(crate) create_revision: i64,
    pub(crate) mod_revision: i64,
    pub(crate) version: i64,
    pub(crate) lease: Option<LeaseId>,
}

impl Kv {
    /// The contract's owned form.
    pub(crate) fn to_api(&self) -> KeyValue {
        KeyValue {
            key: self.key.clone(),
            value: self.value.clone(),
            create_revision: Revision(self.create_revision),
            mod_revision: Revision(self.mod_revision),
            version: self.version,
            lease: self.lease,
        }
    }
}

/// One key's change within a revision.
#[derive(Debug)]
pub(crate) struct Change {
    pub(crate) key: Bytes,
    /// The new version; `None` when the key was deleted.
    pub(crate) kv: Option<Arc<Kv>>,
    /// The version just before this revision, if the key existed.
    pub(crate) prev: Option<Arc<Kv>>,
}

impl Change {
    fn to_event(&self, revision: i64, with_prev: bool) -> WatchEvent {
        let prev_kv = if with_prev {
            self.prev.as_deref().map(Kv::to_api)
        } else {
            None
        };
        match &self.kv {
            Some(kv) => WatchEvent {
                kind: EventKind::Put,
                kv: kv.to_api(),
                prev_kv,
            },
            // etcd's delete event carries only the key and the deletion's revision.
            None => WatchEvent {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: self.key.clone(),
                    mod_revision: Revision(revision),
                    ..KeyValue::default()
                },
                prev_kv,
            },
        }
    }
}

/// A revision's changes, the first held inline: a put (nearly every revision) has one, and
/// its record is then one allocation, freed in one piece when history is pruned.
pub(crate) type Changes = SmallVec<[Change; 1]>;

/// Every change of one revision, in key order. Every revision above 1 has at least one.
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) revision: i64,
    pub(crate) changes: Changes,
}

impl Record {
    /// True when any change is under `prefix`.
    pub(crate) fn touches(&self, prefix: &[u8]) -> bool {
        self.changes.iter().any(|c| c.key.starts_with(prefix))
    }

    /// The batch a watcher of `prefix` sees for this revision, or `None` when nothing matches.
    pub(crate) fn batch_for(&self, prefix: &[u8], with_prev: bool) -> Option<WatchBatch> {
        let events: Vec<WatchEvent> = self
            .changes
            .iter()
            .filter(|c| c.key.starts_with(prefix))
            .map(|c| c.to_event(self.revision, with_prev))
            .collect();
        if events.is_empty() {
            return None;
        }
        Some(WatchBatch {
            revision: Revision(self.revision),
            events,
        })
    }
}

/// Which keys an operation addresses.
#[derive(Clone, Copy, Debug)]
pub(crate) enum KeyRange<'a> {
    /// Exactly this key.
    Key(&'a [u8]),
    /// Every key starting with these bytes; empty means every key.
    Prefix(&'a [u8]),
}

impl KeyRange<'_> {
    /// The smallest key in the range, where a scan of the ordered key table starts.
    pub(crate) fn start(&self) -> &[u8] {
        match self {
            KeyRange::Key(k) | KeyRange::Prefix(k) => k,
        }
    }

    /// True when `key` is in the range.
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Key(k) => key == *k,
            KeyRange::Prefix(p) => key.starts_with(p),
        }
    }
}

impl fmt::Display for KeyRange<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRange::Key(key) => write!(f, "key {}", KeyDisplay(key)),
            KeyRange::Prefix(prefix) => write!(f, "prefix {}", KeyDisplay(prefix)),
        }
    }
}

/// Shows a key in logs as UTF-8 with invalid bytes replaced; formatted only when a span is on.
pub(crate) struct KeyDisplay<'a>(pub(crate) &'a [u8]);

impl fmt::Display for KeyDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        String::from_utf8_lossy(self.0).fmt(f)
    }
}
