//! The whole service-layer suite on the simulator, on virtual time: one named test per
//! scenario, a fresh store per scenario, every fault native (a partition is the simulator's own
//! per-client link). The same suite again with every client seen through the wrappers of
//! `registry_api::wrap` (`KeyPrefix` over `Counting` over the client's link): the suite runs over
//! a wrapped backend as over the backend itself.

use async_trait::async_trait;
use registry_api::wrap::{Counting, KeyPrefix};
use registry_api::{LeaseId, Registry};
use registry_conformance::service::{ServiceBackend, ServiceCapabilities};
use registry_memory::{Latencies, MemoryRegistry};
use std::sync::{Arc, OnceLock};

/// One store per scenario, created on the first client call (so on the scenario's paused
/// clock), shared by every named client, each on its own link.
#[derive(Debug, Default)]
struct Simulator {
    store: OnceLock<MemoryRegistry>,
    /// Every client behind a key prefix over a request counter, when set.
    wrapped: bool,
    counting: Counting,
}

impl Simulator {
    fn store(&self) -> &MemoryRegistry {
        self.store.get_or_init(MemoryRegistry::new)
    }
}

#[async_trait]
impl ServiceBackend for Simulator {
    async fn client(&self, name: &str) -> Arc<dyn Registry> {
        let client = self.store().client(name);
        if self.wrapped {
            Arc::new(KeyPrefix::new(self.counting.wrap(client), "wrapped/"))
        } else {
            Arc::new(client)
        }
    }

    fn capabilities(&self) -> ServiceCapabilities {
        // The simulator's default timing: etcd's measured delays on every call and delivery.
        ServiceCapabilities::simulator().with_latency(Latencies::etcd().bound())
    }

    async fn partition(&self, name: &str, cut: bool) {
        let link = self.store().link(name);
        if cut {
            link.partition();
        } else {
            link.heal();
        }
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

/// The suite over the simulator behind `KeyPrefix` over `Counting` over each client's link.
mod over_the_wrappers {
    use super::*;

    fn wrapped_simulator() -> Simulator {
        Simulator {
            wrapped: true,
            ..Simulator::default()
        }
    }

    registry_conformance::service_suite!(wrapped_simulator);
}

// Every scenario again over seeds 0..100 of the simulator's timing (`scripts/test.sh` runs it
// on its own with the wall time printed; `REGISTRY_SEEDS` changes the seeds).
registry_conformance::service_seed_search!(simulator, seeds = 100);
