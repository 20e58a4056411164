//! The one writer of a store: applies changes, publishes snapshots and events.

use super::{Published, Shared, Snapshot, StoreEvent};
use crate::Error;
use imbl::OrdMap;
use registry_api::Revision;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Writes a [`Store`](super::Store); see [`store`](super::store). Dropping it closes the store:
/// subscriptions end, and the status says [`closed`](super::StoreStatus::closed).
#[derive(Debug)]
pub struct Writer<T> {
    pub(super) shared: Arc<Shared<T>>,
    pub(super) sender: broadcast::Sender<Arc<Published<T>>>,
    pub(super) entries: OrdMap<Arc<str>, Arc<T>>,
    pub(super) version: u64,
}

impl<T: Clone + PartialEq + Send + Sync + 'static> Writer<T> {
    /// Applies changes read at `revision`: `(key, Some(value))` puts, `(key, None)` removes.
    /// Publishes one snapshot and one event per actual difference (a put of an equal value
    /// and a removal of an absent key say nothing). Returns how many events it published.
    pub fn apply(
        &mut self,
        revision: Revision,
        changes: impl IntoIterator<Item = (Arc<str>, Option<T>)>,
    ) -> usize {
        let changes = changes.into_iter();
        let mut events = Vec::with_capacity(changes.size_hint().0);
        for (key, value) in changes {
            match value {
                Some(new) => match self.entries.get(&key) {
                    Some(old) if **old == new => {}
                    Some(old) => {
                        events.push(StoreEvent::Updated {
                            old: (**old).clone(),
                            new: new.clone(),
                        });
                        self.entries.insert(key, Arc::new(new));
                    }
                    None => {
                        events.push(StoreEvent::Added(new.clone()));
                        self.entries.insert(key, Arc::new(new));
                    }
                },
                None => {
                    if let Some(old) = self.entries.remove(&key) {
                        events.push(StoreEvent::Removed(Arc::unwrap_or_clone(old)));
                    }
                }
            }
        }
        let count = events.len();
        if events.is_empty() {
            self.progress(revision);
            return 0;
        }
        self.version += 1;
        let snapshot = Arc::new(Snapshot::new(
            self.entries.clone(),
            revision.max(self.shared.current().revision),
            self.version,
        ));
        // Readers first, then subscribers: a subscriber that sees this message and then reads
        // the store sees at least this snapshot.
        self.shared.snapshot.store(snapshot.clone());
        self.shared.status.send_modify(|status| {
            status.revision = snapshot.revision;
            status.version = snapshot.version;
        });
        // No subscriber: nothing to send, and nothing is kept.
        self.sender
            .send(Arc::new(Published { events, snapshot }))
            .ok();
        count
    }

    /// Everything up to `revision` is reflected (a progress notification): moves the revision
    /// forward without changing entries.
    pub fn progress(&mut self, revision: Revision) {
        let current = self.shared.current();
        if revision <= current.revision {
            return;
        }
        let snapshot = Arc::new(Snapshot::new(
            current.entries.clone(),
            revision,
            current.version,
        ));
        self.shared.snapshot.store(snapshot);
        self.shared.status.send_if_modified(|status| {
            std::mem::replace(&mut status.revision, revision) != revision
        });
    }

    /// Listed at `revision` and watching on: the store is synced (and ready, from now on). A
    /// seeded store is a real read from now on.
    pub fn synced(&mut self, revision: Revision) {
        self.progress(revision);
        self.shared.status.send_if_modified(|status| {
            let changed = !status.synced || !status.ready || status.seeded.is_some();
            status.synced = true;
            status.ready = true;
            status.seeded = None;
            changed
        });
    }

    /// The entries applied so far are a saved copy, not a read: the store says so
    /// ([`StoreStatus::seeded`](super::StoreStatus::seeded)) and counts as stale until
    /// [`synced`](Self::synced).
    pub fn seeded(&mut self, seeded: super::Seeded) {
        self.shared.status.send_modify(|status| {
            status.seeded = Some(seeded);
        });
    }

    /// The source's revision went back to `revision` (its store was restored from an older
    /// backup): the store's revision follows it down, the entries stay as they are (the
    /// source's differences follow), and
    /// [`StoreStatus::regressions`](super::StoreStatus::regressions) counts it.
    pub fn regressed(&mut self, revision: Revision) {
        let current = self.shared.current();
        if revision < current.revision {
            let snapshot = Arc::new(Snapshot::new(
                current.entries.clone(),
                revision,
                current.version,
            ));
            self.shared.snapshot.store(snapshot);
        }
        self.shared.status.send_modify(|status| {
            status.revision = status.revision.min(revision);
            status.regressions += 1;
        });
    }

    /// The keys held now, in order (for a feed that must tell which of them a list left out).
    pub fn keys(&self) -> impl Iterator<Item = &Arc<str>> + '_ {
        self.entries.keys()
    }

    /// The source failed: the entries stay as they are, flagged stale, with `error` as the
    /// reason.
    pub fn failed(&mut self, error: Arc<Error>) {
        self.shared.status.send_modify(|status| {
            status.synced = false;
            status.last_error = Some(error);
        });
    }

    /// A reader of this store.
    pub fn reader(&self) -> super::Store<T> {
        super::Store {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Writer<T> {
    fn drop(&mut self) {
        self.shared.status.send_modify(|status| {
            status.synced = false;
            status.closed = true;
        });
    }
}
