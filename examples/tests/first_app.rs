//! A first app's tests, to copy: an `orders` service registers itself; a `checkout` client
//! discovers it, picks an instance per request and retries once on another. Every scenario runs
//! twice, with no backend written by hand: on the simulator, under tokio's paused clock (TTLs and
//! outages take no real time), and on a throwaway etcd on 127.0.0.1 (real time). Each process
//! of the app gets its own client (`etcd.client(name)`), which a scenario can cut off alone.
//!
//! The simulator answers calls and delivers events with etcd's delays, drawn from a seed, and
//! each scenario runs on it over 20 seeds (`simulator(seeds = 20)`): the orders etcd can
//! produce (a reply after the event of its own write, a watch established after later calls)
//! are tried here, not found in production. A failing seed prints the line that replays it
//! (`REGISTRY_SEED=<n> cargo test ...`).

use registry_service::{
    Discovery, DiscoveryOptions, Picker, PickerOptions, Registration, RegistrationOptions,
    ServiceInstance, Status,
};
use registry_testing::ServiceBackend;
use std::time::Duration;
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(3);
const WAIT: Duration = Duration::from_secs(60);

registry_testing::scenarios! {
    a_registered_instance_is_discovered,
    a_crashed_instance_leaves_one_ttl_after_its_last_keep_alive,
    a_graceful_shutdown_stops_picks_before_the_instance_leaves,
    a_client_cut_off_keeps_its_last_view_and_catches_up,
    an_instance_cut_off_longer_than_its_ttl_comes_back_by_itself,
    an_outage_keeps_the_last_view_and_heals_by_itself,
    a_failed_call_is_retried_on_another_instance;
    simulator(seeds = 20): registry_memory::testing::backend(),
    etcd: registry_etcd::testing::backend(),
}

/// One `orders` process: its own client of etcd, registered under its id.
async fn orders(etcd: &dyn ServiceBackend, id: &str) -> Registration {
    let instance = ServiceInstance::new("orders", id, format!("10.0.0.{}:8080", id.len()));
    let options = RegistrationOptions::default().ttl(TTL).seed(7);
    // Keep the handle: dropping a Registration deregisters the instance.
    Registration::start(etcd.client(id).await, instance, options)
        .await
        .unwrap()
}

/// The `checkout` process: a live view of `orders` and a picker over it.
async fn checkout(etcd: &dyn ServiceBackend) -> (Discovery, Picker) {
    let client = etcd.client("checkout").await;
    let orders = Discovery::start(client, "orders", DiscoveryOptions::default().seed(11)).unwrap();
    let picker = Picker::new(orders.clone(), PickerOptions::default().seed(3));
    (orders, picker)
}

async fn a_registered_instance_is_discovered(etcd: &dyn ServiceBackend) {
    let (orders_view, picker) = checkout(etcd).await;
    let a = orders(etcd, "a").await;
    a.wait_registered(WAIT).await.unwrap();
    let seen = orders_view.wait_for_instance("a", WAIT).await.unwrap();
    assert_eq!(seen.address, "10.0.0.1:8080");
    assert_eq!(picker.pick().unwrap().id, "a");
}

async fn a_crashed_instance_leaves_one_ttl_after_its_last_keep_alive(etcd: &dyn ServiceBackend) {
    let (orders_view, _picker) = checkout(etcd).await;
    let a = orders(etcd, "a").await;
    orders_view.wait_for_len(1, WAIT).await.unwrap();
    etcd.sleep(TTL / 2).await; // between two keep-alives (every TTL/3)
    let deadline = a.status().lease_deadline.unwrap();
    a.abandon(); // the process dies: no more keep-alives, no revoke
    orders_view.wait_for_len(0, WAIT).await.unwrap();
    // Exactly at the deadline on the simulator; etcd may be late by its declared lateness.
    let caps = etcd.capabilities();
    assert!(Instant::now() >= deadline, "never before its lease ran out");
    assert!(Instant::now() - deadline <= caps.expiry_lateness + caps.allowance());
}

async fn a_graceful_shutdown_stops_picks_before_the_instance_leaves(etcd: &dyn ServiceBackend) {
    let (orders_view, picker) = checkout(etcd).await;
    let (a, _b) = (orders(etcd, "a").await, orders(etcd, "b").await);
    orders_view.wait_for_len(2, WAIT).await.unwrap();
    let shutdown = tokio::spawn(async move { a.shutdown(Duration::from_secs(1)).await });
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
}

async fn a_client_cut_off_keeps_its_last_view_and_catches_up(etcd: &dyn ServiceBackend) {
    let (orders_view, _picker) = checkout(etcd).await;
    let _a = orders(etcd, "a").await;
    orders_view.wait_for_len(1, WAIT).await.unwrap();
    etcd.partition("checkout", true).await; // only this process is cut off
    let b = orders(etcd, "b").await;
    b.wait_registered(WAIT).await.unwrap(); // registered while checkout cannot see it
    etcd.sleep(Duration::from_secs(1)).await;
    assert!(orders_view.is_stale());
    assert_eq!(orders_view.len(), 1, "stale, not empty");
    etcd.partition("checkout", false).await;
    orders_view.wait_for_len(2, WAIT).await.unwrap();
}

async fn an_instance_cut_off_longer_than_its_ttl_comes_back_by_itself(etcd: &dyn ServiceBackend) {
    let (orders_view, _picker) = checkout(etcd).await;
    let a = orders(etcd, "a").await;
    orders_view.wait_for_len(1, WAIT).await.unwrap();
    etcd.partition("a", true).await;
    orders_view.wait_for_len(0, WAIT).await.unwrap(); // its lease expired on the server
    etcd.partition("a", false).await;
    orders_view.wait_for_instance("a", WAIT).await.unwrap();
    assert_eq!(a.status().lease_losses, 1);
}

async fn an_outage_keeps_the_last_view_and_heals_by_itself(etcd: &dyn ServiceBackend) {
    let (orders_view, picker) = checkout(etcd).await;
    let a = orders(etcd, "a").await;
    orders_view.wait_for_len(1, WAIT).await.unwrap();
    etcd.outage(true).await; // etcd is gone, for every process
    etcd.sleep(TTL + Duration::from_secs(1)).await;
    assert!(orders_view.is_stale());
    assert_eq!(picker.pick().unwrap().id, "a", "the last view still routes");
    etcd.outage(false).await; // back, with its data: nothing is restarted by hand
    let _b = orders(etcd, "b").await;
    orders_view.wait_for_len(2, WAIT).await.unwrap();
    a.wait_registered(WAIT).await.unwrap();
}

async fn a_failed_call_is_retried_on_another_instance(etcd: &dyn ServiceBackend) {
    let (orders_view, picker) = checkout(etcd).await;
    let (_a, _b) = (orders(etcd, "a").await, orders(etcd, "b").await);
    orders_view.wait_for_len(2, WAIT).await.unwrap();
    for _ in 0..20 {
        let first = picker.pick().unwrap();
        let failed = first.id.clone();
        first.failure(); // the call failed: try once more, elsewhere
        let retry = picker.pick_excluding(&[failed.as_str()]).unwrap();
        assert_ne!(retry.id, failed);
        retry.success();
    }
}
