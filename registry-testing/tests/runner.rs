//! The runner and the macro: a scenario that fails fails its test, virtual time costs nothing,
//! every scenario gets a fresh backend, and a seeded run times each seed's server by that seed.

use registry_api::seeding;
use registry_api::{PutOptions, Registry};
use registry_memory::testing::Simulator;
use registry_testing::{run, run_seeded, ServiceBackend, Time};
use std::sync::Mutex;
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
    seeded(seeds = 3): registry_memory::testing::backend(),
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

/// What each scenario of a seeded run saw: its server's seed, and whether it was timed.
static SEEN: Mutex<Vec<(u64, bool)>> = Mutex::new(Vec::new());

async fn records_its_server_s_seed(etcd: &Simulator) {
    let server = etcd.server();
    let timed = !server.timing().is_instant();
    SEEN.lock().unwrap().push((server.seed(), timed));
}

#[test]
fn a_seeded_run_gives_each_seed_a_fresh_server_timed_by_it() {
    run_seeded(
        registry_memory::testing::backend,
        |b| Box::pin(records_its_server_s_seed(b)),
        0..5,
    );
    // `REGISTRY_SEEDS` or `REGISTRY_SEED` in the environment change the seeds run.
    let expected: Vec<(u64, bool)> = seeding::seeds_from_env(0..5).map(|s| (s, true)).collect();
    assert_eq!(*SEEN.lock().unwrap(), expected);
}
