//! `registry_service::tower_discover::changes` over a real (in-memory) registry, on virtual time:
//! the snapshot first, then inserts, updates and removals, including an expiry.

use futures::StreamExt;
use registry_api::Registry;
use registry_memory::MemoryRegistry;
use registry_service::tower_discover::{changes, InstanceChanges};
use registry_service::{
    Discovery, DiscoveryOptions, Metadata, Registration, RegistrationOptions, ServiceInstance,
};
use std::sync::Arc;
use std::time::Duration;
use tower::discover::Change;

fn describe(change: &Change<String, ServiceInstance>) -> String {
    match change {
        Change::Insert(id, instance) => format!("insert {id} {}", instance.address),
        Change::Remove(id) => format!("remove {id}"),
    }
}

async fn next(changes: &mut InstanceChanges) -> String {
    let item = tokio::time::timeout(Duration::from_secs(30), changes.next())
        .await
        .expect("a change within 30 s of virtual time")
        .expect("the stream is open");
    match item {
        Ok(change) => describe(&change),
        Err(never) => match never {},
    }
}

async fn register(registry: &Arc<dyn Registry>, id: &str, address: &str) -> Registration {
    Registration::start(
        registry.clone(),
        ServiceInstance::new("hello", id, address),
        RegistrationOptions::default().ttl(Duration::from_secs(3)),
    )
    .await
    .expect("registers")
}

#[tokio::test(start_paused = true)]
async fn snapshot_first_then_inserts_updates_and_removals() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let a = register(&registry, "a", "10.0.0.1:80").await;
    let discovery = Discovery::start(registry.clone(), "hello", DiscoveryOptions::default())
        .expect("discovery starts");
    discovery
        .wait_synced(Duration::from_secs(5))
        .await
        .expect("synced");
    let mut changes = changes(&discovery);
    assert_eq!(next(&mut changes).await, "insert a 10.0.0.1:80");

    let b = register(&registry, "b", "10.0.0.2:80").await;
    assert_eq!(next(&mut changes).await, "insert b 10.0.0.2:80");

    // An update is an insert under the same key: balancers replace the endpoint.
    b.update_metadata(Metadata::default().with_zone("z1"))
        .await
        .expect("updates");
    assert_eq!(next(&mut changes).await, "insert b 10.0.0.2:80");

    a.deregister().await.expect("deregisters");
    assert_eq!(next(&mut changes).await, "remove a");

    // A crash: nobody deregisters, the lease runs out, the instance is removed.
    b.abandon();
    assert_eq!(next(&mut changes).await, "remove b");
    let quiet = tokio::time::timeout(Duration::from_secs(60), changes.next()).await;
    assert!(quiet.is_err(), "no further change: {quiet:?}");
}

#[tokio::test(start_paused = true)]
async fn map_instances_maps_inserts_and_passes_removals() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let discovery = Discovery::start(registry.clone(), "hello", DiscoveryOptions::default())
        .expect("discovery starts");
    discovery
        .wait_synced(Duration::from_secs(5))
        .await
        .expect("synced");
    let mut mapped = changes(&discovery).map_instances(|i| format!("http://{}", i.address));
    let a = register(&registry, "a", "10.0.0.1:80").await;
    match mapped.next().await {
        Some(Ok(Change::Insert(id, uri))) => {
            assert_eq!((id.as_str(), uri.as_str()), ("a", "http://10.0.0.1:80"));
        }
        other => panic!("expected an insert, got {other:?}"),
    }
    a.deregister().await.expect("deregisters");
    match mapped.next().await {
        Some(Ok(Change::Remove(id))) => assert_eq!(id, "a"),
        other => panic!("expected a removal, got {other:?}"),
    }
}

/// Sends `calls` requests through `service` and counts the answers per instance id.
async fn spread<S>(service: &mut S, calls: usize) -> std::collections::BTreeMap<String, usize>
where
    S: tower::Service<(), Response = String>,
    S::Error: std::fmt::Debug,
{
    use tower::ServiceExt;
    let mut per_node = std::collections::BTreeMap::new();
    for _ in 0..calls {
        let ready = service.ready().await.expect("the balancer has instances");
        let id = ready.call(()).await.expect("served");
        *per_node.entry(id).or_insert(0) += 1;
    }
    per_node
}

#[tokio::test(start_paused = true)]
async fn p2c_balance_spreads_over_discovered_instances_and_follows_removals() {
    use std::convert::Infallible;

    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let mut registrations = Vec::new();
    for id in ["a", "b", "c"] {
        registrations.push(register(&registry, id, &format!("{id}.example:80")).await);
    }
    let discovery = Discovery::start(registry.clone(), "hello", DiscoveryOptions::default())
        .expect("discovery starts");
    discovery
        .wait_synced(Duration::from_secs(5))
        .await
        .expect("synced");
    // Each instance becomes a service answering with its id; p2c needs a load measure, and a
    // constant one is enough to show which instances it balances over.
    let discover = changes(&discovery).map_instances(|instance| {
        let id = instance.id;
        tower::load::Constant::new(
            tower::service_fn(move |()| {
                let id = id.clone();
                async move { Ok::<_, Infallible>(id) }
            }),
            0,
        )
    });
    let mut balance = tower::balance::p2c::Balance::new(discover);

    let first = spread(&mut balance, 90).await;
    assert_eq!(
        first.keys().map(String::as_str).collect::<Vec<_>>(),
        ["a", "b", "c"],
        "every instance gets calls: {first:?}"
    );

    registrations
        .remove(1)
        .deregister()
        .await
        .expect("deregisters");
    // Let the discovery task apply the removal (virtual time: this costs nothing).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = spread(&mut balance, 60).await;
    assert_eq!(
        second.keys().map(String::as_str).collect::<Vec<_>>(),
        ["a", "c"],
        "the removed instance gets no call: {second:?}"
    );
    assert_eq!(second.values().sum::<usize>(), 60);
}

/// A service answering with its instance's id; its `poll_ready` fails while `down` holds the id
/// (a node that cannot be reached when the balancer checks it).
#[derive(Clone)]
struct Node {
    id: String,
    down: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
}

impl tower::Service<()> for Node {
    type Response = String;
    type Error = tower::BoxError;
    type Future = std::future::Ready<Result<String, tower::BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        let down = self.down.lock().unwrap().contains(&self.id);
        std::task::Poll::Ready(if down {
            Err(format!("{} is unreachable", self.id).into())
        } else {
            Ok(())
        })
    }

    fn call(&mut self, (): ()) -> Self::Future {
        std::future::ready(Ok(self.id.clone()))
    }
}

type Down = Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>;

fn nodes(
    discovery: &Discovery,
    options: registry_service::tower_discover::DiscoverOptions,
    down: &Down,
) -> registry_service::tower_discover::Discover<
    impl FnMut(&ServiceInstance) -> tower::load::Constant<Node, u32>,
> {
    let down = down.clone();
    registry_service::tower_discover::discover_with(discovery, options, move |instance| {
        tower::load::Constant::new(
            Node {
                id: instance.id.clone(),
                down: down.clone(),
            },
            0,
        )
    })
    .expect("in a runtime")
}

#[tokio::test(start_paused = true)]
async fn discover_drains_discovery_while_no_request_flows() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let mut kept = Vec::new();
    for id in ["a", "b"] {
        kept.push(register(&registry, id, &format!("{id}.example:80")).await);
    }
    let discovery = Discovery::start(registry.clone(), "hello", DiscoveryOptions::default())
        .expect("discovery starts");
    discovery
        .wait_synced(Duration::from_secs(5))
        .await
        .expect("synced");
    let down = Down::default();
    let discover = nodes(&discovery, Default::default(), &down);
    let handle = discover.handle();
    let mut balance = tower::balance::p2c::Balance::new(discover);
    assert_eq!(spread(&mut balance, 20).await.len(), 2);

    // No request for a while: c comes, d comes and goes 50 times, a leaves.
    let c = register(&registry, "c", "c.example:80").await;
    for _ in 0..50 {
        register(&registry, "d", "d.example:80")
            .await
            .deregister()
            .await
            .expect("deregisters");
    }
    kept.remove(0).deregister().await.expect("deregisters");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stats = handle.stats();
    // Every event was read (2 inserts at the start, then 1 + 100 + 1), none left waiting in
    // discovery; what the balancer has not taken is the latest change per instance: insert c,
    // remove d, remove a.
    assert_eq!(stats.events, 2 + 1 + 100 + 1, "{stats:?}");
    assert_eq!(stats.pending, 3, "{stats:?}");
    assert_eq!(
        stats.forwarded, 2,
        "the balancer took nothing meanwhile: {stats:?}"
    );

    // The first request after the lull sees the current set: b and c, never a or d.
    let after = spread(&mut balance, 60).await;
    assert_eq!(
        after.keys().map(String::as_str).collect::<Vec<_>>(),
        ["b", "c"]
    );
    drop(c);

    // The task is owned: stop it and wait for it.
    handle.stop();
    handle.stopped().await;
    assert!(!handle.is_running());
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_the_balancer_evicted_comes_back_while_listed() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let mut registrations = Vec::new();
    for id in ["a", "b", "c"] {
        registrations.push(register(&registry, id, &format!("{id}.example:80")).await);
    }
    let discovery = Discovery::start(registry.clone(), "hello", DiscoveryOptions::default())
        .expect("discovery starts");
    discovery
        .wait_synced(Duration::from_secs(5))
        .await
        .expect("synced");
    let down = Down::default();
    let options = registry_service::tower_discover::DiscoverOptions::default().reinsert(
        registry_service::Backoff::new(Duration::from_secs(1), Duration::from_secs(8)).jitter(0.0),
    );
    let discover = nodes(&discovery, options, &down);
    let handle = discover.handle();
    let mut balance = tower::balance::p2c::Balance::new(discover);
    assert_eq!(spread(&mut balance, 30).await.len(), 3);

    // b's readiness check fails once: tower's p2c drops b.
    down.lock().unwrap().insert("b".to_owned());
    let without_b = spread(&mut balance, 30).await;
    assert_eq!(
        without_b.keys().map(String::as_str).collect::<Vec<_>>(),
        ["a", "c"]
    );
    tokio::task::yield_now().await;
    assert_eq!(handle.stats().evicted, 1);
    down.lock().unwrap().clear();

    // Still listed, b is inserted again after the backoff (1 s), with no request in between.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(handle.stats().reinserted, 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(handle.stats().reinserted, 1);
    let back = spread(&mut balance, 60).await;
    assert_eq!(
        back.keys().map(String::as_str).collect::<Vec<_>>(),
        ["a", "b", "c"]
    );

    // Evicted again, then deregistered during the backoff: it does not come back.
    down.lock().unwrap().insert("b".to_owned());
    spread(&mut balance, 30).await;
    tokio::task::yield_now().await;
    assert_eq!(handle.stats().evicted, 2);
    registrations
        .remove(1)
        .deregister()
        .await
        .expect("deregisters");
    down.lock().unwrap().clear();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(handle.stats().reinserted, 1);
    let gone = spread(&mut balance, 30).await;
    assert_eq!(
        gone.keys().map(String::as_str).collect::<Vec<_>>(),
        ["a", "c"]
    );
}
