//! The whole conformance suite on the simulator seen through the wrappers of
//! `registry_api::wrap`, stacked: a key prefix over a counted client link (healthy). The
//! wrappers must be invisible: every case passes as on the bare simulator.

use async_trait::async_trait;
use registry_api::wrap::{Counting, KeyPrefix};
use registry_api::Registry;
use registry_conformance::{Backend, Capabilities};
use registry_memory::MemoryRegistry;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PREFIX: &str = "tenant-a/";

#[derive(Debug, Default)]
struct Wrapped {
    current: Mutex<Option<MemoryRegistry>>,
    counting: Counting,
}

#[async_trait]
impl Backend for Wrapped {
    async fn registry(&self) -> Arc<dyn Registry> {
        let server = MemoryRegistry::with_manual_clock();
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(server.clone());
        // Other keys on the same server, outside the prefix, that the suite must never see.
        let _ = server
            .put(b"other-app/x", b"1", registry_api::PutOptions::default())
            .await;
        Arc::new(KeyPrefix::new(
            self.counting.wrap(server.client("suite")),
            PREFIX,
        ))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // The prefix's bytes count against the server's limit.
            max_value_bytes: Capabilities::simulator().max_value_bytes - PREFIX.len(),
            ..Capabilities::simulator()
        }
    }

    async fn advance(&self, by: Duration) {
        if let Some(registry) = &*self.current.lock().unwrap_or_else(|p| p.into_inner()) {
            registry.advance(by);
        }
    }
}

fn wrapped() -> Wrapped {
    Wrapped::default()
}

registry_conformance::conformance_suite!(wrapped);
