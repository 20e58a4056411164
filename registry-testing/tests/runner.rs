//! The runner and the macro: a scenario that fails fails its test, virtual time costs nothing,
//! and every scenario gets a fresh backend.

use registry_api::{PutOptions, Registry};
use registry_testing::{run, ServiceBackend, Time};
use std::time::Duration;

async fn sleeps_an_hour_in_no_time(etcd: &dyn ServiceBackend) {
    assert_eq!(etcd.capabilities().time, Time::Virtual);
    let started = std::time::Instant::now();
    let virtual_start = tokio::time::Instant::now();
    etcd.sleep(Duration::from_secs(3600)).await;
    assert_eq!(virtual_start.elapsed(), Duration::from_secs(3600));
    assert!(started.elapsed() < Duration::from_secs(5));
}

async fn writes_a_key(etcd: &dyn ServiceBackend) {
    let client = etcd.client("app").await;
    assert!(
        client.get(b"k").await.unwrap().kv.is_none(),
        "a fresh server"
    );
    client.put(b"k", b"v", PutOptions::default()).await.unwrap();
}

registry_testing::scenarios! {
    sleeps_an_hour_in_no_time,
    writes_a_key;
    simulator: registry_memory::testing::backend(),
    again: registry_memory::testing::backend(),
}

async fn fails(etcd: &dyn ServiceBackend) {
    let client = etcd.client("app").await;
    etcd.partition("app", true).await;
    client.get(b"k").await.expect("a cut client reads nothing");
}

#[test]
#[should_panic(expected = "a cut client reads nothing")]
fn a_failing_scenario_fails_its_test() {
    run(registry_memory::testing::backend, |b| Box::pin(fails(b)));
}
