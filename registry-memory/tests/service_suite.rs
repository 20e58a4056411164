//! The whole service-layer suite on the simulator, on virtual time: one named test per
//! scenario, a fresh store per scenario, every fault native (a partition is the simulator's own
//! per-client link), through the ready-made backend an app uses (`testing::backend()`). The
//! same suite again with every client seen through the wrappers of `registry_api::wrap`
//! (`KeyPrefix` over `Counting` over the client's link): the suite runs over a wrapped backend
//! as over the backend itself.

use async_trait::async_trait;
use registry_api::wrap::{Counting, KeyPrefix};
use registry_api::{LeaseId, Registry};
use registry_conformance::service::{ServiceBackend, ServiceCapabilities};
use registry_memory::testing::Simulator;
use std::sync::Arc;

registry_conformance::service_suite!(registry_memory::testing::backend);

/// The ready-made backend with every client seen through the wrappers.
#[derive(Debug, Default)]
struct Wrapped {
    simulator: Simulator,
    counting: Counting,
}

#[async_trait]
impl ServiceBackend for Wrapped {
    async fn client(&self, name: &str) -> Arc<dyn Registry> {
        let client = self.simulator.server().client(name);
        Arc::new(KeyPrefix::new(self.counting.wrap(client), "wrapped/"))
    }

    fn capabilities(&self) -> ServiceCapabilities {
        self.simulator.capabilities()
    }

    async fn partition(&self, name: &str, cut: bool) {
        self.simulator.partition(name, cut).await;
    }

    async fn outage(&self, down: bool) {
        self.simulator.outage(down).await;
    }

    async fn expire_lease(&self, lease: LeaseId) {
        self.simulator.expire_lease(lease).await;
    }
}

/// The suite over the simulator behind `KeyPrefix` over `Counting` over each client's link.
mod over_the_wrappers {
    use super::*;

    fn wrapped_simulator() -> Wrapped {
        Wrapped::default()
    }

    registry_conformance::service_suite!(wrapped_simulator);
}

// Every scenario again over seeds 0..100 of the simulator's timing (`scripts/test.sh` runs it
// on its own with the wall time printed; `REGISTRY_SEEDS` changes the seeds).
registry_conformance::service_seed_search!(registry_memory::testing::backend, seeds = 100);
