//! Registration on the simulator, on virtual time, where only the simulator can show it: the
//! same seed replays the same recovery, and a leader change is not a lease loss. Every
//! backend-independent scenario (expiry, shutdown, outages, lost leases, operator deletes,
//! metadata, bad input) is in the service-layer suite of `registry-conformance`, which the
//! simulator runs in `registry-memory/tests/service_suite.rs`.

mod common;

use common::{hello, options, settle, truth, TTL};
use registry_api::Registry;
use registry_memory::MemoryRegistry;
use registry_service::{Registration, RegistrationState};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

fn memory() -> (MemoryRegistry, Arc<dyn Registry>) {
    let memory = MemoryRegistry::new();
    let registry: Arc<dyn Registry> = Arc::new(memory.clone());
    (memory, registry)
}

/// The same seed gives the same run, to the revision and the instant.
#[tokio::test(start_paused = true)]
async fn the_same_seed_gives_the_same_recovery() {
    async fn run() -> Vec<(Duration, RegistrationState)> {
        let (memory, registry) = memory();
        let origin = Instant::now();
        let registration = Registration::start(registry.clone(), hello("a"), options())
            .await
            .unwrap();
        let mut states = registration.subscribe();
        let mut seen = Vec::new();
        memory.set_unavailable(true);
        let restore = tokio::spawn(async move {
            settle(TTL * 2).await;
            memory.set_unavailable(false);
        });
        while !matches!(seen.last(), Some((_, RegistrationState::Registered { .. }))) {
            states.changed().await.unwrap();
            seen.push((origin.elapsed(), states.borrow_and_update().clone()));
        }
        restore.await.unwrap();
        seen
    }
    let first = run().await;
    assert!(first.len() > 3, "{first:?}");
    assert_eq!(first, run().await);
}

#[tokio::test(start_paused = true)]
async fn a_leader_change_is_not_a_lease_loss() {
    let (memory, registry) = memory();
    let registration = Registration::start(registry.clone(), hello("a"), options())
        .await
        .unwrap();
    let lease = registration.lease().unwrap();
    let mut states = registration.subscribe();
    memory.leader_change(Duration::from_secs(1));
    settle(TTL * 3).await;
    assert!(
        !states.has_changed().unwrap(),
        "{:?}",
        *states.borrow_and_update()
    );
    assert_eq!(registration.lease(), Some(lease));
    assert_eq!(truth(&*registry, "hello").await, vec![hello("a")]);
}
