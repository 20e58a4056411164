//! One published state of a store: immutable, shared, cheap to hold.

use imbl::OrdMap;
use registry_api::Revision;
use std::fmt;
use std::sync::{Arc, OnceLock};

/// The entries of a [`Store`](super::Store) at one moment, by key.
///
/// Snapshots share structure: a new one after a change costs O(log n), and a subscriber that
/// holds an old one pins only the parts that changed since.
pub struct Snapshot<T> {
    pub(super) entries: OrdMap<Arc<str>, Arc<T>>,
    pub(super) revision: Revision,
    /// Bumped by every publish that changed entries: what subscribers order themselves by.
    pub(super) version: u64,
    /// The values as one slice, built on the first ask: a burst of changes costs one copy, and
    /// only if someone reads it.
    values: OnceLock<Arc<[T]>>,
}

impl<T> Snapshot<T> {
    pub(super) fn new(entries: OrdMap<Arc<str>, Arc<T>>, revision: Revision, version: u64) -> Self {
        Snapshot {
            entries,
            revision,
            version,
            values: OnceLock::new(),
        }
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry under `key`.
    pub fn get(&self, key: &str) -> Option<&T> {
        self.entries.get(key).map(|value| &**value)
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &T)> + '_ {
        self.entries.iter().map(|(key, value)| (&**key, &**value))
    }

    /// The store revision this snapshot reflects.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// A number that grows with every change of entries: two snapshots with one version hold
    /// the same entries.
    pub fn version(&self) -> u64 {
        self.version
    }
}

impl<T: Clone> Snapshot<T> {
    /// The values, in key order, as one shared slice (built once per snapshot).
    pub fn values(&self) -> Arc<[T]> {
        self.values
            .get_or_init(|| {
                self.entries
                    .values()
                    .map(|value| (**value).clone())
                    .collect()
            })
            .clone()
    }
}

impl<T> fmt::Debug for Snapshot<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("len", &self.entries.len())
            .field("revision", &self.revision)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}
