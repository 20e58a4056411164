//! A first app's tests, to copy: an `orders` service registers itself; a `checkout` client
//! discovers it, picks an instance per request and retries once on another. Everything runs on
//! the simulator under tokio's paused clock, so TTLs and outages take no real time, and each
//! process of the fleet gets its own client link (`MemoryRegistry::client`) to cut.
//!
//! The simulator answers calls and delivers events with etcd's delays, drawn from a seed: each
//! test runs over several seeds ([`seeded`]), so the orders etcd can produce (a reply after the
//! event of its own write, a watch established after later calls) are all tried. A failing
//! seed prints the line that replays it (`REGISTRY_SEED=<n> cargo test ...`).

use registry_api::seeding;
use registry_memory::MemoryRegistry;
use registry_service::{
    Discovery, DiscoveryOptions, Picker, PickerOptions, Registration, RegistrationOptions,
    ServiceInstance, Status,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(5);
const WAIT: Duration = Duration::from_secs(60);

/// Seeds each test runs over (`REGISTRY_SEEDS=<n>` for more, `REGISTRY_SEED=<n>` to replay one).
const SEEDS: u64 = 20;

/// Runs `test` once per seed, each on a fresh paused runtime with its seed in scope: every
/// `MemoryRegistry` built meanwhile draws its delays from it.
fn seeded<F: std::future::Future<Output = ()>>(test: impl Fn() -> F) {
    for seed in seeding::seeds_from_env(0..SEEDS) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        seeding::with_seed(seed, || runtime.block_on(test()));
    }
}

/// One `orders` process: its own client of the simulated etcd, registered under its id.
async fn orders(etcd: &MemoryRegistry, id: &str) -> Registration {
    let instance = ServiceInstance::new("orders", id, format!("10.0.0.{}:8080", id.len()));
    let options = RegistrationOptions::default().ttl(TTL).seed(7);
    let client = Arc::new(etcd.client(id));
    // Keep the handle: dropping a Registration deregisters the instance.
    Registration::start(client, instance, options)
        .await
        .unwrap()
}

/// The `checkout` process: a live view of `orders` and a picker over it.
fn checkout(etcd: &MemoryRegistry) -> (Discovery, Picker) {
    let client = Arc::new(etcd.client("checkout"));
    let options = DiscoveryOptions::default().seed(11);
    let orders = Discovery::start(client, "orders", options).unwrap();
    let picker = Picker::new(orders.clone(), PickerOptions::default().seed(3));
    (orders, picker)
}

#[test]
fn a_registered_instance_is_discovered() {
    seeded(|| async {
        let etcd = MemoryRegistry::new();
        let (orders_view, picker) = checkout(&etcd);
        let a = orders(&etcd, "a").await;
        a.wait_registered(WAIT).await.unwrap();
        let seen = orders_view.wait_for_instance("a", WAIT).await.unwrap();
        assert_eq!(seen.address, "10.0.0.1:8080");
        assert_eq!(picker.pick().unwrap().id, "a");
    });
}

#[test]
fn a_crashed_instance_leaves_exactly_one_ttl_after_its_last_keep_alive() {
    seeded(|| async {
        let etcd = MemoryRegistry::new();
        let (orders_view, _picker) = checkout(&etcd);
        let a = orders(&etcd, "a").await;
        orders_view.wait_for_len(1, WAIT).await.unwrap();
        tokio::time::sleep(Duration::from_secs(4)).await;
        let deadline = a.status().lease_deadline.unwrap();
        a.abandon(); // the process dies: no more keep-alives, no revoke
        orders_view.wait_for_len(0, WAIT).await.unwrap();
        // One TTL after the last keep-alive was sent; the server renewed the lease when the
        // keep-alive arrived, and the delete reached checkout a delivery later.
        let gone = Instant::now();
        assert!(gone >= deadline, "gone {:?} early", deadline - gone);
        assert!(
            gone - deadline <= etcd.timing().bound() * 2,
            "{:?}",
            gone - deadline
        );
    });
}

#[test]
fn a_graceful_shutdown_stops_picks_before_the_instance_leaves() {
    seeded(|| async {
        let etcd = MemoryRegistry::new();
        let (orders_view, picker) = checkout(&etcd);
        let (a, _b) = (orders(&etcd, "a").await, orders(&etcd, "b").await);
        orders_view.wait_for_len(2, WAIT).await.unwrap();
        let shutdown = tokio::spawn(async move { a.shutdown(Duration::from_secs(2)).await });
        let draining = |all: &[ServiceInstance]| all.iter().any(|i| i.status == Status::Draining);
        orders_view.wait_until(draining, WAIT).await.unwrap();
        for _ in 0..20 {
            assert_eq!(
                picker.pick().unwrap().id,
                "b",
                "a draining instance is not picked"
            );
        }
        shutdown.await.unwrap().unwrap();
        orders_view.wait_for_len(1, WAIT).await.unwrap();
    });
}

#[test]
fn a_client_cut_off_keeps_its_last_view_and_catches_up() {
    seeded(|| async {
        let etcd = MemoryRegistry::new();
        let (orders_view, _picker) = checkout(&etcd);
        let _a = orders(&etcd, "a").await;
        orders_view.wait_for_len(1, WAIT).await.unwrap();
        etcd.link("checkout").partition();
        let _b = orders(&etcd, "b").await; // registered while checkout cannot see it
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(orders_view.is_stale());
        assert_eq!(orders_view.len(), 1, "stale, not empty");
        etcd.link("checkout").heal();
        orders_view.wait_for_len(2, WAIT).await.unwrap();
    });
}

#[test]
fn an_instance_cut_off_longer_than_its_ttl_comes_back_by_itself() {
    seeded(|| async {
        let etcd = MemoryRegistry::new();
        let (orders_view, _picker) = checkout(&etcd);
        let a = orders(&etcd, "a").await;
        orders_view.wait_for_len(1, WAIT).await.unwrap();
        etcd.link("a").partition();
        orders_view.wait_for_len(0, WAIT).await.unwrap(); // its lease expired on the server
        etcd.link("a").heal();
        orders_view.wait_for_instance("a", WAIT).await.unwrap();
        assert_eq!(a.status().lease_losses, 1);
    });
}

#[test]
fn a_failed_call_is_retried_on_another_instance() {
    seeded(|| async {
        let etcd = MemoryRegistry::new();
        let (orders_view, picker) = checkout(&etcd);
        let (_a, _b) = (orders(&etcd, "a").await, orders(&etcd, "b").await);
        orders_view.wait_for_len(2, WAIT).await.unwrap();
        for _ in 0..20 {
            let first = picker.pick().unwrap();
            let failed = first.id.clone();
            first.failure(); // the call failed: try once more, elsewhere
            let retry = picker.pick_excluding(&[failed.as_str()]).unwrap();
            assert_ne!(retry.id, failed);
            retry.success();
        }
    });
}
