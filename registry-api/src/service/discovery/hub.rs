//! One cache and one watch per service, however many handles a process asks for.

use super::{Discovery, DiscoveryOptions, Shared};
use crate::{Registry, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// Hands out [`Discovery`] handles that share one cache and one watch per service.
///
/// Keep one hub per registry and process; handles for a service live as long as any of them,
/// and the next request after the last one is dropped starts a fresh cache.
#[derive(Debug)]
pub struct DiscoveryHub {
    registry: Arc<dyn Registry>,
    options: DiscoveryOptions,
    caches: Mutex<HashMap<String, Weak<Shared>>>,
}

impl DiscoveryHub {
    /// A hub over `registry`; every cache it starts uses `options`.
    pub fn new(registry: Arc<dyn Registry>, options: DiscoveryOptions) -> Self {
        DiscoveryHub {
            registry,
            options,
            caches: Mutex::new(HashMap::new()),
        }
    }

    /// A handle on `service`'s shared cache, started if none is live.
    pub fn discovery(&self, service: &str) -> Result<Discovery> {
        let mut caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(shared) = caches.get(service).and_then(Weak::upgrade) {
            return Ok(Discovery { shared });
        }
        let discovery = Discovery::start(self.registry.clone(), service, self.options.clone())?;
        caches.retain(|_, cache| cache.strong_count() > 0);
        caches.insert(service.to_owned(), Arc::downgrade(&discovery.shared));
        Ok(discovery)
    }

    /// How many caches (and so watches) are live.
    pub fn live_caches(&self) -> usize {
        let caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        caches
            .values()
            .filter(|cache| cache.strong_count() > 0)
            .count()
    }
}
