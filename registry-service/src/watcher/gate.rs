//! One re-list at a time per prefix per process.
//!
//! After an outage, every cache of a prefix in a process would list it at once; a thousand
//! processes doing that is how a registry recovering from an outage is knocked over again
//! (go-micro #2821, Curator #961). Each watcher takes its prefix's gate for the duration of a
//! list. Gates are keyed by the registry's `Arc` and the prefix, so two registries (two
//! clusters, or two tests) never wait on each other.

use bytes::Bytes;
use registry_api::Registry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

type Key = (usize, Bytes);

/// Every live gate. Entries hold `Weak`s and are swept on each lookup, so the map holds at most
/// one entry per prefix some live watcher follows.
fn gates() -> &'static Mutex<HashMap<Key, Weak<Semaphore>>> {
    static GATES: OnceLock<Mutex<HashMap<Key, Weak<Semaphore>>>> = OnceLock::new();
    GATES.get_or_init(Default::default)
}

/// A watcher's handle on its prefix's gate.
#[derive(Clone, Debug)]
pub(crate) struct HerdGate {
    semaphore: Arc<Semaphore>,
}

impl HerdGate {
    /// The gate of `prefix` on `registry`, shared with every other watcher of that pair.
    pub(crate) fn of(registry: &Arc<dyn Registry>, prefix: &Bytes) -> HerdGate {
        // The data pointer identifies the registry object; the vtable part is irrelevant.
        let id = Arc::as_ptr(registry) as *const () as usize;
        let mut gates = gates().lock().unwrap_or_else(|p| p.into_inner());
        gates.retain(|_, gate| gate.strong_count() > 0);
        let key = (id, prefix.clone());
        if let Some(semaphore) = gates.get(&key).and_then(Weak::upgrade) {
            return HerdGate { semaphore };
        }
        let semaphore = Arc::new(Semaphore::new(1));
        gates.insert(key, Arc::downgrade(&semaphore));
        HerdGate { semaphore }
    }

    /// Waits for the turn to list; the turn ends when the permit is dropped. `None` only if
    /// the semaphore were closed, which nothing does: then there is no gate to wait for.
    pub(crate) async fn enter(&self) -> Option<OwnedSemaphorePermit> {
        self.semaphore.clone().acquire_owned().await.ok()
    }
}
