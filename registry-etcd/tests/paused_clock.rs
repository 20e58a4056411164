//! The backend on tokio's paused clock: refused with an error that names it, on connect and on
//! every call of a registry connected before the clock stopped; never a misleading "Timeout
//! expired" nor an HTTP/2 GOAWAY (`too_many_pings`), and the connection survives the pause.

use futures::StreamExt;
use registry_api::{
    Error, LeaseId, ListOptions, PutOptions, Registry, Revision, WatchOptions, WatchStream,
};
use registry_etcd::testing::{self, ProxyMode, TcpProxy};
use registry_etcd::EtcdRegistry;
use registry_service::{Registration, RegistrationOptions, RegistrationState, ServiceInstance};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn names_the_paused_clock(err: &Error) -> bool {
    matches!(err, Error::NotSupported { what } if what.contains("paused") && what.contains("real time"))
}

/// A registry on the shared etcd through a proxy of its own (which counts its connections),
/// with HTTP/2 pings every 500 ms: on a paused clock they would go out as fast as the runtime
/// idles, and etcd answers a flood of pings with GOAWAY `too_many_pings`.
async fn connect_through_a_proxy(label: &str) -> (EtcdRegistry, TcpProxy) {
    let endpoint = testing::shared_endpoints().expect("etcd").remove(0);
    let proxy = TcpProxy::for_endpoint(&endpoint).expect("proxy");
    let registry = EtcdRegistry::builder([proxy.endpoint()])
        .key_prefix(testing::unique_key_prefix(label))
        .keep_alive(Duration::from_millis(500), Duration::from_millis(700))
        .connect()
        .await
        .unwrap();
    (registry, proxy)
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

/// Every call of the contract, each one on a clock paused after connecting.
async fn every_call(r: &EtcdRegistry, lease: LeaseId) -> Vec<(&'static str, Error)> {
    fn err<T>(result: registry_api::Result<T>) -> Error {
        match result {
            Ok(_) => Error::unavailable("the call succeeded on a paused clock"),
            Err(e) => e,
        }
    }
    let opts = PutOptions::default;
    vec![
        ("lease_grant", err(r.lease_grant(5, None).await)),
        ("lease_keep_alive", err(r.lease_keep_alive(lease).await)),
        (
            "lease_keep_alive_many",
            err(r.lease_keep_alive_many(&[lease]).await),
        ),
        ("lease_time_to_live", err(r.lease_time_to_live(lease).await)),
        ("leases", err(r.leases().await)),
        ("lease_revoke", err(r.lease_revoke(lease).await)),
        ("put", err(r.put(b"k", b"v", opts()).await)),
        ("get", err(r.get(b"k").await)),
        ("list", err(r.list(b"", ListOptions::default()).await)),
        ("delete", err(r.delete(b"k").await)),
        ("delete_prefix", err(r.delete_prefix(b"k").await)),
        ("compact", err(r.compact(Revision(1)).await)),
        ("compact_revision", err(r.compact_revision().await)),
        (
            "watch",
            err(r.watch(b"k", WatchOptions::default()).await.map(|_| ())),
        ),
    ]
}

#[tokio::test]
async fn every_call_after_the_clock_is_paused_fails_at_once_naming_it() {
    let (r, _proxy) = connect_through_a_proxy("paused-calls").await;
    let lease = r.lease_grant(30, None).await.unwrap().id;
    let watch = r.watch(b"k", WatchOptions::default()).await.unwrap();
    tokio::time::pause();
    let started = Instant::now();
    let mut puts_refused = 0;
    for i in 0..20 {
        let err = r
            .put(format!("k{i}").as_bytes(), b"v", PutOptions::default())
            .await
            .unwrap_err();
        assert!(names_the_paused_clock(&err), "put {i}: {err:?}");
        puts_refused += 1;
    }
    for (call, err) in every_call(&r, lease).await {
        assert!(names_the_paused_clock(&err), "{call}: {err:?}");
    }
    let err = watch.request_progress().await.unwrap_err();
    assert!(names_the_paused_clock(&err), "request_progress: {err:?}");
    println!(
        "{puts_refused} of 20 puts and every other call refused in {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn a_paused_clock_sends_no_pings_so_the_connection_and_its_watch_survive_it() {
    let (r, proxy) = connect_through_a_proxy("paused-pings").await;
    let mut watch: WatchStream = r.watch(b"k", WatchOptions::default()).await.unwrap();
    let connections = proxy.stats().accepted;
    tokio::time::pause();
    // An hour of virtual time: the runtime idles, and its paused clock jumps from timer to
    // timer. Pings that slept on it would go out back to back (or time out before their
    // answer) for the two seconds of real time this takes.
    let real = Instant::now();
    while real.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(10));
    }
    tokio::time::resume();
    r.put(b"k", b"after the pause", PutOptions::default())
        .await
        .expect("the same registry works once the clock runs again");
    let item = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("the watch delivers");
    let batch = item.expect("the watch is open").expect("no error ended it");
    assert_eq!(&batch.events[0].kv.value[..], b"after the pause");
    assert_eq!(
        proxy.stats().accepted,
        connections,
        "the connection was never dropped (no GOAWAY, no ping timeout)"
    );
}

#[tokio::test]
async fn a_keep_alive_in_flight_when_the_clock_stops_names_the_paused_clock() {
    let (r, proxy) = connect_through_a_proxy("paused-in-flight").await;
    let lease = r.lease_grant(30, None).await.unwrap().id;
    r.lease_keep_alive(lease).await.unwrap(); // the shared keep-alive stream is open
                                              // Nothing answers from now on, and the clock stops while the keep-alive waits for its
                                              // reply: its reply timeout (the backend's own, on the caller's clock) fires at once.
    proxy.set_mode(ProxyMode::BlackHole);
    let renewal = tokio::spawn({
        let r = r.clone();
        async move { r.lease_keep_alive(lease).await }
    });
    tokio::task::yield_now().await;
    tokio::time::pause();
    let started = Instant::now();
    let err = renewal.await.unwrap().unwrap_err();
    println!(
        "a keep-alive in flight on a paused clock failed in {:?}: {err}",
        started.elapsed()
    );
    assert!(names_the_paused_clock(&err), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// `wait_registered`'s error and the status's last error both name the paused clock, and the
/// state is `Failed`.
async fn ended_naming_the_paused_clock(registration: &Registration) {
    let err = registration
        .wait_registered(Duration::from_secs(600))
        .await
        .unwrap_err();
    assert!(
        err.as_registry().is_some_and(names_the_paused_clock),
        "{err:?}"
    );
    let status = registration.status();
    assert_eq!(status.state, RegistrationState::Failed);
    let last = status.last_error.expect("the error in the status");
    assert!(
        last.as_registry().is_some_and(names_the_paused_clock),
        "{last:?}"
    );
}

#[tokio::test]
async fn a_registration_started_on_a_paused_clock_ends_at_once_with_the_error() {
    let registry = testing::isolated_registry("paused-registration")
        .await
        .expect("etcd");
    let registry: Arc<dyn Registry> = Arc::new(registry);
    let instance = |id: &str| ServiceInstance::new("hello", id, "127.0.0.1:8080");
    tokio::time::pause();
    let started = Instant::now();
    // `start` returns once registered, or with what refuses it for good.
    let err = Registration::start(registry.clone(), instance("a"), Default::default())
        .await
        .unwrap_err();
    assert!(
        err.as_registry().is_some_and(names_the_paused_clock),
        "{err:?}"
    );
    // A handle that registers once ready ends, with the error in its status.
    let ready = Registration::start_when_ready(
        registry,
        instance("b"),
        RegistrationOptions::default(),
        async {},
    )
    .await
    .unwrap();
    ended_naming_the_paused_clock(&ready).await;
    println!(
        "both registrations ended in {:?} of real time",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_registration_whose_clock_stops_ends_at_its_next_keep_alive() {
    let registry = testing::isolated_registry("paused-keep-alive")
        .await
        .expect("etcd");
    let registration = Registration::start(
        Arc::new(registry),
        ServiceInstance::new("hello", "a", "127.0.0.1:8080"),
        RegistrationOptions::default().ttl(Duration::from_secs(3)),
    )
    .await
    .unwrap();
    tokio::time::pause();
    let started = Instant::now();
    let mut states = registration.subscribe();
    let ended = states.wait_for(|s| {
        matches!(
            s,
            RegistrationState::Failed | RegistrationState::Deregistered
        )
    });
    let state = tokio::time::timeout(Duration::from_secs(600), ended)
        .await
        .expect("ends within ten virtual minutes")
        .expect("the registrar reports")
        .clone();
    assert_eq!(state, RegistrationState::Failed);
    ended_naming_the_paused_clock(&registration).await;
    println!(
        "the registration ended in {:?} of real time",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}
