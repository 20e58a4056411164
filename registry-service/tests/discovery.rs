//! Discovery caches on the simulator, on virtual time: resync by diff after a partition with
//! compaction, a compacted watch, outages, malformed values, and one watch shared by many.

mod common;

use common::{drain, hello, settle, truth, Partitioned};
use futures::FutureExt;
use registry_api::{PutOptions, Registry};
use registry_memory::MemoryRegistry;
use registry_service::{
    Backoff, Discovery, DiscoveryEvent, DiscoveryHub, DiscoveryOptions, Metadata, Registration,
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
async fn after_a_partition_and_a_compaction_the_cache_emits_exactly_the_differences() {
    let memory = MemoryRegistry::new();
    let registry: Arc<dyn Registry> = Arc::new(memory.clone());
    let a = register(&registry, "a").await;
    let b = register(&registry, "b").await;
    let _c = register(&registry, "c").await;

    let link = Partitioned::new(registry.clone());
    let discovery = Discovery::start(link.clone(), "hello", options()).unwrap();
    discovery.wait_synced().await;
    let mut events = discovery.subscribe();
    assert_eq!(
        drain(&mut events),
        ["a", "b", "c"].map(|id| DiscoveryEvent::Added(hello(id)))
    );

    link.cut();
    settle(Duration::from_millis(1)).await;
    assert!(!discovery.is_synced());
    let held_revision = discovery.revision();

    // While the cache is cut off: a leaves, b changes, d arrives, e comes and goes, and the
    // history the cache would need to catch up is compacted away.
    a.deregister().await.unwrap();
    let b_new = hello("b").with_metadata(Metadata::default().with_zone("z2"));
    b.update_metadata(b_new.metadata.clone()).await.unwrap();
    let _d = register(&registry, "d").await;
    let e = register(&registry, "e").await;
    e.deregister().await.unwrap();
    let now = memory.current_revision();
    registry.compact(now).await.unwrap();
    assert!(held_revision < now);
    settle(Duration::from_secs(5)).await;
    assert_eq!(
        drain(&mut events),
        vec![],
        "nothing can be seen while cut off"
    );
    assert_eq!(discovery.len(), 3, "a stale cache keeps what it last knew");

    link.restore();
    settle(Duration::from_secs(2)).await;
    assert!(discovery.is_synced());
    assert_eq!(
        drain(&mut events),
        vec![
            DiscoveryEvent::Removed(hello("a")),
            DiscoveryEvent::Updated {
                old: hello("b"),
                new: b_new.clone()
            },
            DiscoveryEvent::Added(hello("d")),
        ]
    );
    assert_eq!(
        discovery.snapshot().to_vec(),
        truth(&*registry, "hello").await
    );
    assert!(discovery.revision() >= now);
}

#[tokio::test(start_paused = true)]
async fn a_watch_that_starts_compacted_re_lists_without_duplicates() {
    let memory = MemoryRegistry::new();
    let registry: Arc<dyn Registry> = Arc::new(memory.clone());
    let a = register(&registry, "a").await;
    let _b = register(&registry, "b").await;

    // Between the cache's list and its watch: a leaves, c arrives, history is compacted.
    let link = Partitioned::new(registry.clone());
    let server = registry.clone();
    let (c_tx, c_rx) = tokio::sync::oneshot::channel();
    link.before_next_watch(
        async move {
            a.deregister().await.unwrap();
            c_tx.send(register(&server, "c").await).unwrap();
            let now = server.list(b"", Default::default()).await.unwrap().revision;
            server.compact(now).await.unwrap();
        }
        .boxed(),
    );
    let discovery = Discovery::start(link.clone(), "hello", options()).unwrap();
    let mut events = discovery.subscribe();
    let _c = c_rx.await.unwrap();
    settle(Duration::from_secs(2)).await;

    assert!(discovery.is_synced());
    assert_eq!(
        drain(&mut events),
        vec![
            DiscoveryEvent::Added(hello("a")),
            DiscoveryEvent::Added(hello("b")),
            DiscoveryEvent::Removed(hello("a")),
            DiscoveryEvent::Added(hello("c")),
        ]
    );
    assert_eq!(
        discovery.snapshot().to_vec(),
        truth(&*registry, "hello").await
    );
    assert_eq!(memory.compact_revision(), discovery.revision());
}

#[tokio::test(start_paused = true)]
async fn a_server_outage_marks_the_cache_stale_and_it_resyncs_after() {
    let memory = MemoryRegistry::new();
    let registry: Arc<dyn Registry> = Arc::new(memory.clone());
    let discovery = Discovery::start(registry.clone(), "hello", options()).unwrap();
    discovery.wait_synced().await;
    let _a = register(&registry, "a").await;
    settle(Duration::from_millis(10)).await;
    let revision = discovery.revision();

    memory.set_unavailable(true);
    settle(Duration::from_millis(10)).await;
    assert!(!discovery.is_synced());
    assert_eq!(discovery.revision(), revision);
    settle(Duration::from_secs(3)).await;
    assert_eq!(discovery.len(), 1);

    memory.set_unavailable(false);
    tokio::time::timeout(Duration::from_secs(2), discovery.wait_synced())
        .await
        .expect("resynced within the backoff ceiling");
    assert_eq!(
        discovery.snapshot().to_vec(),
        truth(&*registry, "hello").await
    );
}

#[tokio::test(start_paused = true)]
async fn malformed_values_are_skipped_counted_and_never_fatal() {
    let memory = MemoryRegistry::new();
    let registry: Arc<dyn Registry> = Arc::new(memory.clone());
    registry
        .put(b"services/hello/junk", b"{not json", PutOptions::default())
        .await
        .unwrap();
    let discovery = Discovery::start(registry.clone(), "hello", options()).unwrap();
    discovery.wait_synced().await;
    assert!(discovery.is_empty());
    assert_eq!(discovery.malformed(), 1);
    let mut events = discovery.subscribe();

    let put = |key: &'static str, value: Vec<u8>| {
        let registry = registry.clone();
        async move {
            registry
                .put(key.as_bytes(), &value, PutOptions::default())
                .await
                .unwrap()
        }
    };
    // An instance whose JSON names another id, garbage, a key too deep to be an instance.
    put("services/hello/x", hello("y").to_json()).await;
    put("services/hello/z", b"[]".to_vec()).await;
    put("services/hello/a/b", hello("a").to_json()).await;
    put("services/hello/a", hello("a").to_json()).await;
    settle(Duration::from_millis(1)).await;
    assert_eq!(drain(&mut events), vec![DiscoveryEvent::Added(hello("a"))]);
    assert_eq!(discovery.malformed(), 3);

    // Garbage over a live instance removes it; a good value brings it back.
    put("services/hello/a", b"oops".to_vec()).await;
    put("services/hello/a", hello("a").to_json()).await;
    settle(Duration::from_millis(1)).await;
    assert_eq!(
        drain(&mut events),
        vec![
            DiscoveryEvent::Removed(hello("a")),
            DiscoveryEvent::Added(hello("a"))
        ]
    );
    assert!(discovery.is_synced());
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
    // Left: the other service's cache, and the registrar's key watch on `hello`.
    assert_eq!(memory.watcher_count(), 2, "the last handle stops the watch");
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

#[tokio::test(start_paused = true)]
async fn the_cache_is_synced_only_once_its_watch_is_up() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let _a = register(&registry, "a").await;
    let link = Partitioned::new(registry.clone());
    let (open, opened) = tokio::sync::oneshot::channel::<()>();
    link.before_next_watch(
        async move {
            opened.await.ok();
        }
        .boxed(),
    );
    let discovery = Discovery::start(link.clone(), "hello", options()).unwrap();

    // Listed, but the watch that continues the list is not up yet.
    settle(Duration::from_secs(1)).await;
    assert_eq!(discovery.get("a"), Some(hello("a")));
    assert!(!discovery.is_synced());
    let waited = tokio::time::timeout(Duration::from_secs(1), discovery.wait_synced()).await;
    assert!(waited.is_err(), "synced before the watch was up");

    open.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(1), discovery.wait_synced())
        .await
        .expect("synced once the watch is up");
    assert!(discovery.is_synced());
}
