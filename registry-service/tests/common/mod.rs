//! Helpers shared by the service-layer tests: ways to read the truth from the store. (A client
//! cut off from the server is `MemoryRegistry::client`, with its `link` partitioned.)

#![allow(dead_code, unreachable_pub)]

use registry_api::{ListOptions, Registry};
use registry_service::{
    Backoff, DiscoveryEvent, DiscoveryEvents, RegistrationOptions, ServiceInstance,
};
use std::time::Duration;

/// The instances of `service` in the store now, parsed, in id order: the truth.
pub async fn truth(registry: &dyn Registry, service: &str) -> Vec<ServiceInstance> {
    let prefix = format!("services/{service}/");
    let list = registry
        .list(prefix.as_bytes(), ListOptions::default())
        .await
        .expect("list the truth");
    list.kvs
        .iter()
        .filter_map(|kv| ServiceInstance::from_json(&kv.value).ok())
        .collect()
}

/// Lets every ready task run and virtual time move by `by`.
pub async fn settle(by: Duration) {
    tokio::time::sleep(by).await;
}

/// How long a change takes to reach a cache on the simulator's default timing: every call and
/// delivery in flight has landed after this long.
pub fn delivered() -> Duration {
    registry_memory::Latencies::etcd().bound()
}

/// Every event waiting in `events` now.
pub fn drain(events: &mut DiscoveryEvents) -> Vec<DiscoveryEvent> {
    std::iter::from_fn(|| events.try_recv()).collect()
}

/// The instance named `id` of service `hello`, at a port derived from the id.
pub fn hello(id: &str) -> ServiceInstance {
    ServiceInstance::new("hello", id, format!("10.0.0.1:{}", 8000 + id.len()))
}

/// The TTL of the registrations of these tests.
pub const TTL: Duration = Duration::from_secs(6);

/// The registrations' options in these tests: TTL 6 s, backoff 200 ms to 2 s, seed 7.
pub fn options() -> RegistrationOptions {
    RegistrationOptions::default()
        .ttl(TTL)
        .backoff(Backoff::new(
            Duration::from_millis(200),
            Duration::from_secs(2),
        ))
        .seed(7)
}
