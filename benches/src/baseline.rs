//! The plain baseline of (b): a `BTreeMap` behind a mutex, a revision counter and a
//! `tokio::sync::broadcast` of events. What a store with watches costs with nothing else: no
//! history, no leases, no per-revision batches, no prefix filtering, no owned copies.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::broadcast;

/// One change, shared by every receiver.
#[derive(Debug)]
pub(crate) struct PlainEvent {
    pub(crate) revision: i64,
    pub(crate) key: Vec<u8>,
    pub(crate) value: Vec<u8>,
}

/// etcd's bookkeeping per key, kept as the registry keeps it, so the baseline pays for it too.
#[derive(Debug)]
#[allow(dead_code)]
struct Entry {
    value: Vec<u8>,
    create_revision: i64,
    mod_revision: i64,
    version: i64,
}

#[derive(Debug, Default)]
struct State {
    revision: i64,
    keys: BTreeMap<Vec<u8>, Entry>,
}

/// The baseline store.
#[derive(Debug)]
pub(crate) struct PlainStore {
    state: Mutex<State>,
    events: broadcast::Sender<Arc<PlainEvent>>,
}

impl PlainStore {
    /// A store whose receivers may fall `capacity` events behind before they lag.
    pub(crate) fn new(capacity: usize) -> Self {
        PlainStore {
            state: Mutex::new(State {
                revision: 1,
                keys: BTreeMap::new(),
            }),
            events: broadcast::channel(capacity).0,
        }
    }

    /// Writes `value` under `key` and returns the new revision. Async, like the registry's, so
    /// both are driven the same way.
    pub(crate) async fn put(&self, key: &[u8], value: &[u8]) -> i64 {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.revision += 1;
        let revision = state.revision;
        match state.keys.get_mut(key) {
            Some(entry) => {
                entry.value = value.to_vec();
                entry.mod_revision = revision;
                entry.version += 1;
            }
            None => {
                state.keys.insert(
                    key.to_vec(),
                    Entry {
                        value: value.to_vec(),
                        create_revision: revision,
                        mod_revision: revision,
                        version: 1,
                    },
                );
            }
        }
        drop(state);
        if self.events.receiver_count() > 0 {
            // No receiver is not an error for a store.
            let _ = self.events.send(Arc::new(PlainEvent {
                revision,
                key: key.to_vec(),
                value: value.to_vec(),
            }));
        }
        revision
    }

    /// The value and revisions under `key`.
    #[cfg(test)]
    pub(crate) fn get(&self, key: &[u8]) -> Option<(Vec<u8>, i64, i64, i64)> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.keys.get(key).map(|e| {
            (
                e.value.clone(),
                e.create_revision,
                e.mod_revision,
                e.version,
            )
        })
    }

    /// A receiver of every change from now on.
    pub(crate) fn watch(&self) -> broadcast::Receiver<Arc<PlainEvent>> {
        self.events.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn puts_bump_the_revision_and_reach_receivers() {
        futures::executor::block_on(async {
            let store = PlainStore::new(16);
            let mut rx = store.watch();
            assert_eq!(store.put(b"a", b"1").await, 2);
            assert_eq!(store.put(b"a", b"2").await, 3);
            assert_eq!(store.get(b"a"), Some((b"2".to_vec(), 2, 3, 2)));
            let first = rx.try_recv().expect("event");
            assert_eq!(
                (first.revision, &first.key[..], &first.value[..]),
                (2, &b"a"[..], &b"1"[..])
            );
            assert_eq!(rx.try_recv().expect("event").revision, 3);
        });
    }
}
