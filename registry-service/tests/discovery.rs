//! Discovery on the simulator, where only the simulator can show it: a thousand handles share
//! one cache and one watch of the store, and bad service names are refused. The
//! backend-independent scenarios (resync after a partition and a compaction, a compacted watch,
//! outages, malformed values, sync only once the watch is up) are in the service-layer suite of
//! `registry-conformance`, which the simulator runs in `registry-memory/tests/service_suite.rs`.

mod common;

use common::{drain, hello, settle};
use registry_api::Registry;
use registry_memory::MemoryRegistry;
use registry_service::{
    Backoff, Discovery, DiscoveryEvent, DiscoveryHub, DiscoveryOptions, Registration,
    RegistrationOptions,
};
use std::sync::Arc;
use std::time::Duration;

fn options() -> DiscoveryOptions {
    DiscoveryOptions::default()
        .backoff(Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(1),
        ))
        .seed(3)
}

async fn register(registry: &Arc<dyn Registry>, id: &str) -> Registration {
    Registration::start(
        registry.clone(),
        hello(id),
        RegistrationOptions::default().ttl(Duration::from_secs(6)),
    )
    .await
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_thousand_handles_share_one_watch() {
    let memory = MemoryRegistry::new();
    let registry: Arc<dyn Registry> = Arc::new(memory.clone());
    let hub = DiscoveryHub::new(registry.clone(), options());
    let handles: Vec<Discovery> = (0..1_000)
        .map(|_| hub.discovery("hello").unwrap())
        .collect();
    let other = hub.discovery("other").unwrap();
    assert_eq!(hub.live_caches(), 2);
    assert!(handles[0].shares_cache_with(&handles[999]));
    assert!(!handles[0].shares_cache_with(&other));
    handles[0].wait_synced().await;
    settle(Duration::from_millis(1)).await;
    assert_eq!(memory.watcher_count(), 2);

    let mut streams: Vec<_> = handles.iter().map(Discovery::subscribe).collect();
    let _a = register(&registry, "a").await;
    settle(Duration::from_millis(1)).await;
    for (handle, stream) in handles.iter().zip(&mut streams) {
        assert_eq!(drain(stream), vec![DiscoveryEvent::Added(hello("a"))]);
        assert_eq!(handle.snapshot().to_vec(), vec![hello("a")]);
    }
    assert!(other.is_empty());

    drop(streams);
    drop(handles);
    settle(Duration::from_millis(1)).await;
    assert_eq!(hub.live_caches(), 1);
    assert_eq!(memory.watcher_count(), 1, "the last handle stops the watch");
    let again = hub.discovery("hello").unwrap();
    again.wait_synced().await;
    assert_eq!(again.snapshot().to_vec(), vec![hello("a")]);
}

#[tokio::test(start_paused = true)]
async fn a_bad_service_name_is_refused() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    assert!(Discovery::start(registry.clone(), "a/b", options()).is_err());
    assert!(Discovery::start(registry.clone(), "", options()).is_err());
    assert!(DiscoveryHub::new(registry, options())
        .discovery("x/")
        .is_err());
}
