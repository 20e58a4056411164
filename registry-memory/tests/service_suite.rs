//! The whole service-layer suite on the simulator, on virtual time: one named test per
//! scenario, a fresh store per scenario, every fault native except the partition of one client,
//! which goes through the suite's [`Links`]. The same suite again over the store seen through a
//! second, never-cut layer of links: the suite runs over a wrapper as over the backend.

use async_trait::async_trait;
use registry_api::{LeaseId, Registry};
use registry_conformance::service::{Links, ServiceBackend, ServiceCapabilities};
use registry_memory::MemoryRegistry;
use std::sync::{Arc, OnceLock};

/// One store per scenario, created on the first client call (so on the scenario's paused
/// clock), shared by every named client, each behind its own link.
#[derive(Debug, Default)]
struct Simulator {
    store: OnceLock<MemoryRegistry>,
    links: Links,
    /// A second layer of links over every client, never cut.
    wrapped: Option<Links>,
}

impl Simulator {
    fn store(&self) -> &MemoryRegistry {
        self.store.get_or_init(MemoryRegistry::new)
    }
}

#[async_trait]
impl ServiceBackend for Simulator {
    async fn client(&self, name: &str) -> Arc<dyn Registry> {
        let store: Arc<dyn Registry> = Arc::new(self.store().clone());
        let client = self.links.wrap(name, store);
        match &self.wrapped {
            Some(outer) => outer.wrap(name, client),
            None => client,
        }
    }

    fn capabilities(&self) -> ServiceCapabilities {
        ServiceCapabilities::simulator()
    }

    async fn partition(&self, name: &str, cut: bool) {
        self.links.cut(name, cut);
    }

    async fn outage(&self, down: bool) {
        self.store().set_unavailable(down);
    }

    async fn expire_lease(&self, lease: LeaseId) {
        // An unknown lease has nothing to expire; the scenario then sees its own failure.
        let _ = self.store().expire_lease(lease);
    }
}

fn simulator() -> Simulator {
    Simulator::default()
}

registry_conformance::service_suite!(simulator);

/// The suite over the simulator behind a pass-through wrapper.
mod over_a_wrapper {
    use super::*;

    fn wrapped_simulator() -> Simulator {
        Simulator {
            wrapped: Some(Links::new()),
            ..Simulator::default()
        }
    }

    registry_conformance::service_suite!(wrapped_simulator);
}
