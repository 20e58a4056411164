//! The backend on tokio's paused clock: refused with an error that names it, never a
//! misleading "Timeout expired".

use futures::StreamExt;
use registry_api::{Error, Registry, WatchOptions};
use registry_etcd::testing::{self, ProxyMode, TcpProxy};
use registry_etcd::EtcdRegistry;
use std::time::{Duration, Instant};

fn names_the_paused_clock(err: &Error) -> bool {
    matches!(err, Error::NotSupported { what } if what.contains("paused") && what.contains("real time"))
}

#[tokio::test(start_paused = true)]
async fn connecting_on_a_paused_clock_fails_at_once_naming_it() {
    let endpoints = testing::shared_endpoints().expect("etcd");
    let started = Instant::now();
    let err = EtcdRegistry::connect(endpoints).await.unwrap_err();
    println!(
        "connect on a paused clock failed in {:?}: {err}",
        started.elapsed()
    );
    assert!(names_the_paused_clock(&err), "{err:?}");
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn a_timeout_on_a_clock_paused_after_connecting_names_the_paused_clock() {
    let endpoint = testing::shared_endpoints().expect("etcd").remove(0);
    let proxy = TcpProxy::for_endpoint(&endpoint).expect("proxy");
    let r = EtcdRegistry::builder([proxy.endpoint()])
        .key_prefix(testing::unique_key_prefix("paused"))
        .connect()
        .await
        .unwrap();
    let mut watch = r.watch(b"k", WatchOptions::default()).await.unwrap();
    // Nothing answers from now on, and the clock stops: the request timeout (5 s) and the
    // watch's HTTP/2 ping (10 s, 5 s for its answer) fire on virtual time at once.
    proxy.set_mode(ProxyMode::BlackHole);
    tokio::time::pause();
    let started = Instant::now();
    let err = r.get(b"k").await.unwrap_err();
    println!(
        "a read on a paused clock failed in {:?}: {err}",
        started.elapsed()
    );
    assert!(names_the_paused_clock(&err), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    let item = watch.next().await;
    println!(
        "the watch on a paused clock ended in {:?}: {item:?}",
        started.elapsed()
    );
    assert!(
        matches!(&item, Some(Err(e)) if names_the_paused_clock(e)),
        "{item:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}
