//! The service layer against a real etcd that the tests stop and restart: a lease lost while
//! the process lives, an outage longer than the TTL, and a compaction while a cache is cut
//! off. Fewer and shorter than the simulator's scenarios (`registry-api/tests/`), on real time
//! with bounded waits; each test runs its own server on loopback.

use registry_api::{PutOptions, Registry};
use registry_etcd::testing::EtcdServer;
use registry_etcd::EtcdRegistry;
use registry_service::{
    Backoff, Discovery, DiscoveryEvent, DiscoveryEvents, DiscoveryOptions, Metadata, Registration,
    RegistrationOptions, RegistrationState, ServiceInstance,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// etcd's minimum TTL: keep-alives every ~667 ms.
const TTL: Duration = Duration::from_secs(2);

async fn connect(server: &EtcdServer) -> Arc<dyn Registry> {
    let registry = EtcdRegistry::builder(server.endpoints())
        .request_timeout(Duration::from_secs(1))
        .connect()
        .await
        .expect("connect to etcd");
    Arc::new(registry)
}

fn registration_options() -> RegistrationOptions {
    RegistrationOptions::default()
        .ttl(TTL)
        .backoff(Backoff::new(
            Duration::from_millis(100),
            Duration::from_millis(800),
        ))
        .request_timeout(Duration::from_secs(1))
}

fn discovery_options() -> DiscoveryOptions {
    DiscoveryOptions::default()
        .backoff(Backoff::new(
            Duration::from_millis(100),
            Duration::from_millis(800),
        ))
        .request_timeout(Duration::from_secs(1))
}

fn hello(id: &str) -> ServiceInstance {
    ServiceInstance::new("hello", id, format!("127.0.0.1:{}", 9000 + id.len()))
}

/// Polls `condition` every 20 ms until it holds; panics with `what` after `bound`.
async fn eventually(bound: Duration, what: &str, mut condition: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() <= bound, "{what}: not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

async fn lease_of(registry: &dyn Registry, key: &[u8]) -> Option<registry_api::LeaseId> {
    registry.get(key).await.ok()?.kv?.lease
}

fn drain(events: &mut DiscoveryEvents) -> Vec<DiscoveryEvent> {
    std::iter::from_fn(|| events.try_recv()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_and_a_deleted_key_are_healed_on_etcd() {
    let server = EtcdServer::start().expect("etcd");
    let registry = connect(&server).await;
    let discovery = Discovery::start(registry.clone(), "hello", discovery_options()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), discovery.wait_synced())
        .await
        .expect("synced");
    let registration = tokio::time::timeout(
        Duration::from_secs(5),
        Registration::start(registry.clone(), hello("a"), registration_options()),
    )
    .await
    .expect("registered in time")
    .unwrap();
    eventually(Duration::from_secs(2), "visible", || {
        discovery.get("a").is_some()
    })
    .await;

    // Someone revokes the lease (as `etcdctl lease revoke` would) while the process lives.
    let old = registration.lease().expect("registered");
    registry.lease_revoke(old).await.unwrap();
    let bound = TTL / 3 + registration_options().backoff.ceiling(1) + Duration::from_secs(1);
    eventually(
        bound,
        "re-registered with a new lease",
        || matches!(registration.lease(), Some(lease) if lease != old),
    )
    .await;
    let lease = registration.lease().unwrap();
    assert_eq!(lease_of(&*registry, b"services/hello/a").await, Some(lease));
    eventually(Duration::from_secs(2), "seen again", || {
        discovery.get("a").is_some()
    })
    .await;

    // An operator deletes the key: it is put back on the same lease.
    registry.delete(b"services/hello/a").await.unwrap();
    let start = Instant::now();
    while lease_of(&*registry, b"services/hello/a").await != Some(lease) {
        assert!(
            start.elapsed() <= TTL / 3 + Duration::from_secs(1),
            "not put back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(registration.lease(), Some(lease));
    // The cache must have applied the delete and the put-back before we listen, or their
    // events would arrive after the drain and be mistaken for the shutdown's.
    let put_back = registry
        .get(b"services/hello/a")
        .await
        .unwrap()
        .kv
        .expect("put back")
        .mod_revision;
    eventually(
        Duration::from_secs(2),
        "put-back applied by the cache",
        || discovery.revision() >= put_back,
    )
    .await;

    // Graceful shutdown: gone at once.
    let mut events = discovery.subscribe();
    drain(&mut events);
    registration.deregister().await.unwrap();
    assert!(registry
        .get(b"services/hello/a")
        .await
        .unwrap()
        .kv
        .is_none());
    let removed = tokio::time::timeout(Duration::from_secs(2), events.recv())
        .await
        .expect("removal seen");
    assert_eq!(removed, Some(DiscoveryEvent::Removed(hello("a"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_outage_longer_than_the_ttl_heals_by_itself() {
    let mut server = EtcdServer::start().expect("etcd");
    let registry = connect(&server).await;
    let discovery = Discovery::start(registry.clone(), "hello", discovery_options()).unwrap();
    let registration = tokio::time::timeout(
        Duration::from_secs(5),
        Registration::start(registry.clone(), hello("a"), registration_options()),
    )
    .await
    .expect("registered in time")
    .unwrap();
    eventually(Duration::from_secs(5), "visible", || {
        discovery.is_synced() && discovery.get("a").is_some()
    })
    .await;
    let old = registration.lease().unwrap();
    let states = registration.subscribe();

    tokio::task::block_in_place(|| server.stop());
    tokio::time::sleep(TTL + Duration::from_secs(1)).await;
    assert!(!discovery.is_synced(), "the cache knows it is stale");
    assert!(
        matches!(
            registration.state(),
            RegistrationState::LeaseLost | RegistrationState::ReRegistering { .. }
        ),
        "{:?}",
        registration.state()
    );
    assert!(states.has_changed().unwrap());

    tokio::task::block_in_place(|| server.restart()).expect("etcd restarts");
    // etcd-client reconnects about 1.5 s after the restart; then one backoff wait at most.
    eventually(Duration::from_secs(8), "back after the outage", || {
        matches!(registration.lease(), Some(lease) if lease != old)
            && discovery.is_synced()
            && discovery.get("a") == Some(hello("a"))
    })
    .await;
    let lease = registration.lease().unwrap();
    assert_eq!(lease_of(&*registry, b"services/hello/a").await, Some(lease));
    registration.deregister().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_while_the_cache_is_cut_off_is_resynced_by_diff_on_etcd() {
    let mut server = EtcdServer::start().expect("etcd");
    let registry = connect(&server).await;
    for id in ["a", "b"] {
        let key = format!("services/hello/{id}");
        registry
            .put(key.as_bytes(), &hello(id).to_json(), PutOptions::default())
            .await
            .unwrap();
    }
    let discovery = Discovery::start(registry.clone(), "hello", discovery_options()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), discovery.wait_synced())
        .await
        .expect("synced");
    let mut events = discovery.subscribe();
    assert_eq!(
        drain(&mut events),
        vec![
            DiscoveryEvent::Added(hello("a")),
            DiscoveryEvent::Added(hello("b"))
        ]
    );

    tokio::task::block_in_place(|| server.stop());
    eventually(Duration::from_secs(3), "stale", || !discovery.is_synced()).await;
    tokio::task::block_in_place(|| server.restart()).expect("etcd restarts");

    // Before the cache is back: a leaves, b changes, c arrives, history is compacted.
    let writer = connect(&server).await;
    writer.delete(b"services/hello/a").await.unwrap();
    let b_new = hello("b").with_metadata(Metadata::default().with_version("2"));
    writer
        .put(b"services/hello/b", &b_new.to_json(), PutOptions::default())
        .await
        .unwrap();
    let c = writer
        .put(
            b"services/hello/c",
            &hello("c").to_json(),
            PutOptions::default(),
        )
        .await
        .unwrap();
    writer.compact(c.revision).await.unwrap();

    eventually(Duration::from_secs(8), "resynced", || {
        discovery.is_synced() && discovery.revision() >= c.revision
    })
    .await;
    // Whether the cache re-listed before or after the writes, it tells each change once.
    assert_eq!(
        drain(&mut events),
        vec![
            DiscoveryEvent::Removed(hello("a")),
            DiscoveryEvent::Updated {
                old: hello("b"),
                new: b_new.clone()
            },
            DiscoveryEvent::Added(hello("c")),
        ]
    );
    assert_eq!(discovery.snapshot().to_vec(), vec![b_new, hello("c")]);
}
