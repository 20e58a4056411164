//! `registry_service::tower::changes` over a real (in-memory) registry, on virtual time:
//! the snapshot first, then inserts, updates and removals, including an expiry.

use futures::StreamExt;
use registry_api::Registry;
use registry_memory::MemoryRegistry;
use registry_service::tower::{changes, InstanceChanges};
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
    discovery.wait_synced().await;
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
    discovery.wait_synced().await;
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
    discovery.wait_synced().await;
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
