//! The state one watch feeds and every handle reads: the instances, the revision, the
//! subscribers, and the diffing that turns a fresh list into exactly the events that differ.

use super::DiscoveryEvent;
use crate::instance::{KeyLayout, ServiceInstance};
use registry_api::{EventKind, KeyValue, Revision, WatchBatch};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, watch};

/// How fresh a cache is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Status {
    pub(super) synced: bool,
    pub(super) revision: Revision,
}

/// One service's cache, shared by the task that feeds it and every handle on it.
#[derive(Debug)]
pub(super) struct Cache {
    pub(super) service: String,
    pub(super) layout: KeyLayout,
    state: Mutex<State>,
    pub(super) status: watch::Sender<Status>,
    malformed: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    instances: BTreeMap<String, ServiceInstance>,
    /// Rebuilt on the first read after a change, so a burst of batches costs one copy.
    snapshot: Option<Arc<[ServiceInstance]>>,
    /// One shared copy of each event goes to every subscriber; each clones it when it reads it,
    /// so a fan-out to a thousand handles costs the publisher a thousand `Arc` clones, not a
    /// thousand instance copies.
    subscribers: Vec<mpsc::UnboundedSender<Arc<DiscoveryEvent>>>,
}

/// What a key under the prefix holds.
enum Entry {
    Instance(ServiceInstance),
    /// Under the prefix and shaped like an instance key, but its value is not an instance.
    Malformed,
    /// Not an instance key at all (deeper, or not valid as an id): none of our business.
    Ignored,
}

impl Cache {
    pub(super) fn new(service: String, layout: KeyLayout) -> Self {
        let (status, _) = watch::channel(Status {
            synced: false,
            revision: Revision(0),
        });
        Cache {
            service,
            layout,
            state: Mutex::new(State::default()),
            status,
            malformed: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map half-updated in a way that
        // matters more than losing the cache; keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn snapshot(&self) -> Arc<[ServiceInstance]> {
        let mut state = self.lock();
        if let Some(snapshot) = &state.snapshot {
            return snapshot.clone();
        }
        let snapshot: Arc<[ServiceInstance]> = state.instances.values().cloned().collect();
        state.snapshot = Some(snapshot.clone());
        snapshot
    }

    pub(super) fn get(&self, id: &str) -> Option<ServiceInstance> {
        self.lock().instances.get(id).cloned()
    }

    pub(super) fn len(&self) -> usize {
        self.lock().instances.len()
    }

    pub(super) fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    /// A new subscriber, first told about every instance held now, then every change.
    pub(super) fn subscribe(&self) -> mpsc::UnboundedReceiver<Arc<DiscoveryEvent>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self.lock();
        for instance in state.instances.values() {
            tx.send(Arc::new(DiscoveryEvent::Added(instance.clone())))
                .ok();
        }
        state.subscribers.push(tx);
        rx
    }

    pub(super) fn status(&self) -> Status {
        *self.status.borrow()
    }

    pub(super) fn mark_stale(&self) {
        self.status.send_if_modified(|status| {
            let was = status.synced;
            status.synced = false;
            was
        });
    }

    /// Replaces the held set with a fresh list read at `revision`, emitting only differences.
    pub(super) fn resync(&self, kvs: &[KeyValue], revision: Revision) {
        let mut fresh = BTreeMap::new();
        for kv in kvs {
            if let Entry::Instance(instance) = self.entry(kv) {
                fresh.insert(instance.id.clone(), instance);
            }
        }
        let mut state = self.lock();
        let mut events = Vec::new();
        for (id, old) in &state.instances {
            match fresh.get(id) {
                None => events.push(DiscoveryEvent::Removed(old.clone())),
                Some(new) if new != old => events.push(DiscoveryEvent::Updated {
                    old: old.clone(),
                    new: new.clone(),
                }),
                Some(_) => {}
            }
        }
        for (id, new) in &fresh {
            if !state.instances.contains_key(id) {
                events.push(DiscoveryEvent::Added(new.clone()));
            }
        }
        state.instances = fresh;
        publish(&mut state, events);
        drop(state);
        // Synced only once the watch that follows this list is up: see `mark_synced`.
        self.status.send_modify(|status| status.revision = revision);
    }

    /// The watch that continues the last list is established: nothing can be missed now.
    pub(super) fn mark_synced(&self) {
        self.status.send_if_modified(|status| {
            let was = status.synced;
            status.synced = true;
            !was
        });
    }

    /// Applies one watch batch. Batches at or below the held revision were already seen.
    pub(super) fn apply(&self, batch: &WatchBatch) {
        if batch.revision <= self.status().revision {
            return;
        }
        let mut state = self.lock();
        let mut events = Vec::new();
        for event in &batch.events {
            let Some(id) = self.layout.instance_id(&self.service, &event.kv.key) else {
                continue;
            };
            let id = id.to_owned();
            let entry = match event.kind {
                EventKind::Put => self.entry(&event.kv),
                EventKind::Delete => Entry::Ignored,
            };
            match entry {
                Entry::Instance(new) => match state.instances.insert(id, new.clone()) {
                    None => events.push(DiscoveryEvent::Added(new)),
                    Some(old) if old != new => events.push(DiscoveryEvent::Updated { old, new }),
                    Some(_) => {}
                },
                // A delete, or a value that is no longer an instance: either way it is gone.
                Entry::Malformed | Entry::Ignored => {
                    if let Some(old) = state.instances.remove(&id) {
                        events.push(DiscoveryEvent::Removed(old));
                    }
                }
            }
        }
        publish(&mut state, events);
        drop(state);
        self.status
            .send_modify(|status| status.revision = batch.revision);
    }

    fn entry(&self, kv: &KeyValue) -> Entry {
        let Some(id) = self.layout.instance_id(&self.service, &kv.key) else {
            return Entry::Ignored;
        };
        match ServiceInstance::from_json(&kv.value) {
            Ok(instance) if instance.service == self.service && instance.id == id => {
                Entry::Instance(instance)
            }
            Ok(_) => {
                self.count_malformed(kv, "service or id disagrees with the key");
                Entry::Malformed
            }
            Err(e) => {
                self.count_malformed(kv, &e.to_string());
                Entry::Malformed
            }
        }
    }

    fn count_malformed(&self, kv: &KeyValue, why: &str) {
        self.malformed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            key = %kv.key_str(),
            revision = %kv.mod_revision,
            why,
            "skipping a malformed instance value"
        );
    }
}

fn publish(state: &mut State, events: Vec<DiscoveryEvent>) {
    if events.is_empty() {
        return;
    }
    state.snapshot = None;
    let events: Vec<Arc<DiscoveryEvent>> = events.into_iter().map(Arc::new).collect();
    state.subscribers.retain(|subscriber| {
        events
            .iter()
            .all(|event| subscriber.send(event.clone()).is_ok())
    });
}
