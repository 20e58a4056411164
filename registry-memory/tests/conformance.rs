//! The whole conformance suite on the simulator: one named test per case, on the manual clock.

use async_trait::async_trait;
use registry_api::Registry;
use registry_conformance::{Backend, Capabilities};
use registry_memory::MemoryRegistry;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Hands out a fresh store on a manual clock per call, and advances the last one.
#[derive(Debug, Default)]
struct Simulator {
    current: Mutex<Option<MemoryRegistry>>,
}

#[async_trait]
impl Backend for Simulator {
    async fn registry(&self) -> Arc<dyn Registry> {
        let registry = MemoryRegistry::with_manual_clock();
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(registry.clone());
        Arc::new(registry)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::simulator()
    }

    async fn advance(&self, by: Duration) {
        if let Some(registry) = &*self.current.lock().unwrap_or_else(|p| p.into_inner()) {
            registry.advance(by);
        }
    }
}

fn simulator() -> Simulator {
    Simulator::default()
}

registry_conformance::conformance_suite!(simulator);
