//! The ready-made scenario backend on a real etcd: a fresh key prefix per scenario, a partition
//! that cuts one client alone, and a server that is back for the next scenario even when one
//! panicked in the middle of an outage.

use registry_api::{PutOptions, Registry};
use registry_testing::{run, ServiceBackend, Time};

async fn partition_cuts_one_client(etcd: &dyn ServiceBackend) {
    assert_eq!(etcd.capabilities().time, Time::Real);
    let (app, other) = (etcd.client("app").await, etcd.client("other").await);
    assert!(
        app.get(b"k").await.unwrap().kv.is_none(),
        "a fresh key prefix"
    );
    app.put(b"k", b"v", PutOptions::default()).await.unwrap();
    etcd.partition("app", true).await;
    assert!(app.get(b"k").await.unwrap_err().is_retryable());
    assert!(other.get(b"k").await.unwrap().kv.is_some());
    etcd.partition("app", false).await;
    assert!(app.get(b"k").await.unwrap().kv.is_some());
}

async fn panics_during_an_outage(etcd: &dyn ServiceBackend) {
    let app = etcd.client("app").await;
    etcd.outage(true).await;
    assert!(app.get(b"k").await.is_err(), "the server is down");
    panic!("the scenario fails mid-outage");
}

async fn finds_the_server_serving(etcd: &dyn ServiceBackend) {
    let app = etcd.client("app").await;
    app.put(b"k", b"v", PutOptions::default()).await.unwrap();
}

#[test]
fn a_partition_cuts_one_client_and_each_scenario_has_its_own_prefix() {
    for _ in 0..2 {
        run(registry_etcd::testing::backend, |b| {
            Box::pin(partition_cuts_one_client(b))
        });
    }
}

#[test]
fn a_scenario_that_panics_mid_outage_leaves_the_server_serving() {
    let failed = std::panic::catch_unwind(|| {
        run(registry_etcd::testing::backend, |b| {
            Box::pin(panics_during_an_outage(b))
        });
    });
    assert!(failed.is_err(), "the scenario failed");
    run(registry_etcd::testing::backend, |b| {
        Box::pin(finds_the_server_serving(b))
    });
}
