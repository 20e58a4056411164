//! One cache and one watch per service, however many handles a process asks for.

use super::{Discovery, DiscoveryOptions, Shared};
use crate::Result;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use registry_api::Registry;
use std::sync::{Arc, Weak};

/// Hands out [`Discovery`] handles that share one cache and one watch per service.
///
/// Keep one hub per registry and process; handles for a service live as long as any of them,
/// and the next request after the last one is dropped starts a fresh cache.
#[derive(Debug)]
pub struct DiscoveryHub {
    registry: Arc<dyn Registry>,
    options: DiscoveryOptions,
    /// Looked up concurrently by every part of a process that discovers a service, and never
    /// iterated in an order anyone sees: a sharded map, so services do not contend.
    caches: DashMap<String, Weak<Shared>>,
}

impl DiscoveryHub {
    /// A hub over `registry`; every cache it starts uses `options`.
    pub fn new(registry: Arc<dyn Registry>, options: DiscoveryOptions) -> Self {
        DiscoveryHub {
            registry,
            options,
            caches: DashMap::new(),
        }
    }

    /// A handle on `service`'s shared cache, started if none is live.
    pub fn discovery(&self, service: &str) -> Result<Discovery> {
        if let Some(shared) = self.caches.get(service).and_then(|cache| live(&cache)) {
            return Ok(Discovery { shared });
        }
        // Forget caches whose handles are all gone, before taking the entry (retain locks
        // every shard, the entry one of them).
        self.caches.retain(|_, cache| cache.strong_count() > 0);
        // The entry holds its shard, so two callers racing for one service start one cache.
        match self.caches.entry(service.to_owned()) {
            Entry::Occupied(mut entry) => {
                if let Some(shared) = live(entry.get()) {
                    return Ok(Discovery { shared });
                }
                let discovery =
                    Discovery::start(self.registry.clone(), service, self.options.clone())?;
                entry.insert(Arc::downgrade(&discovery.shared));
                Ok(discovery)
            }
            Entry::Vacant(entry) => {
                let discovery =
                    Discovery::start(self.registry.clone(), service, self.options.clone())?;
                entry.insert(Arc::downgrade(&discovery.shared));
                Ok(discovery)
            }
        }
    }

    /// How many caches (and so watches) are live.
    pub fn live_caches(&self) -> usize {
        self.caches
            .iter()
            .filter(|cache| cache.value().strong_count() > 0)
            .count()
    }
}

/// The cache behind `cache` when it has handles and its task has not died (a cache whose task
/// died is replaced by a fresh one).
fn live(cache: &Weak<Shared>) -> Option<Arc<Shared>> {
    cache
        .upgrade()
        .filter(|shared| !(shared.task.is_finished() && shared.store.status().failed))
}
