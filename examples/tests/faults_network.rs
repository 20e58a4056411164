//! Network faults between the clients and etcd, through a loopback TCP proxy: delay, reset and
//! black-hole (no reply, no reset). Unlike a crashed server these break nothing cleanly, so
//! they exercise the clients' own deadlines: the registration's keep-alive deadline (a lease
//! counts as lost when no keep-alive succeeded for a TTL), the HTTP/2 pings that end a silent
//! connection, and the caches' staleness detection. The checker and the oracle talk to etcd
//! directly; registrations and caches go through the proxy.

mod faults_support;

use faults_support::*;
use registry_etcd::testing::{EtcdServer, ProxyMode, TcpProxy};
use registry_service::RegistrationState;
use std::time::Duration;
use tokio::time::Instant;

/// How long a cache may take to notice a silent connection: the HTTP/2 ping interval and
/// timeout (0.5 + 0.7 s), the request timeout of the re-list (1 s), and slack.
const NOTICE_SILENCE: Duration = Duration::from_secs(4);

async fn start(label: &str) -> (EtcdServer, TcpProxy, Setup) {
    let server = blocking(EtcdServer::start).expect("etcd");
    let proxy = TcpProxy::for_endpoint(&server.endpoint()).expect("proxy");
    let direct = server.endpoints();
    let through = vec![proxy.endpoint()];
    let setup = Setup::start(
        label,
        &direct,
        &through,
        &through,
        scale(12, 50),
        scale(3, 10),
    )
    .await;
    (server, proxy, setup)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_mild_is_lossless_and_severe_heals() {
    let (_server, proxy, mut setup) = start("delay").await;
    let leases: Vec<_> = setup.fleet.live.values().map(|r| r.lease()).collect();

    // 150 ms each way: keep-alives and pings still answer well within their deadlines.
    proxy.set_mode(ProxyMode::Delay(Duration::from_millis(150)));
    tokio::time::sleep(scale(Duration::from_secs(3), Duration::from_secs(10))).await;
    let kept: Vec<_> = setup.fleet.live.values().map(|r| r.lease()).collect();
    assert_eq!(kept, leases, "a slow network alone must not cost a lease");
    assert!(setup.caches.iter().all(|c| c.discovery.is_synced()));
    setup.fleet.grow(1).await;
    converge(
        &*setup.checker,
        &setup.fleet,
        &setup.caches,
        TTL,
        "a new instance propagates through a slow network",
    )
    .await;

    // 1.2 s each way: a keep-alive round trip takes longer than the TTL, so leases are lost
    // and the pings give up on the connections. A process dies meanwhile.
    proxy.set_mode(ProxyMode::Delay(Duration::from_millis(1_200)));
    let severe = Instant::now();
    setup.fleet.kill_some(1);
    tokio::time::sleep(TTL + scale(Duration::from_secs(1), Duration::from_secs(5))).await;
    // No keep-alive can come back within a TTL: the deadline declared the leases lost.
    let lost = setup.fleet.unregistered();
    assert!(
        lost > 0,
        "a 2.4 s round trip must cost leases of TTL {TTL:?}"
    );
    figure(
        "network-delay",
        format!(
            "150 ms each way for the mild phase: no lease lost, no cache stale; 1.2 s each way: {lost} of {} registrations declared their lease lost by the keep-alive deadline",
            setup.fleet.live.len()
        ),
    );
    proxy.set_mode(ProxyMode::Pass);
    let fault = severe.elapsed();
    setup
        .after_heal(
            "network-delay",
            TTL + BACKOFF_MAX + RECONNECT,
            fault + TTL + EXPIRY_LATENESS + BACKOFF_MAX + RECONNECT,
        )
        .await;
    setup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_connections_heal() {
    let (_server, proxy, mut setup) = start("reset").await;
    proxy.set_mode(ProxyMode::Reset);
    let cut = Instant::now();
    setup.fleet.kill_some(1);
    let noticed = setup
        .all_stale(Duration::from_secs(2), "caches notice the reset")
        .await;
    tokio::time::sleep(scale(Duration::from_millis(1_500), Duration::from_secs(5))).await;
    assert!(proxy.stats().reset > 0, "{:?}", proxy.stats());
    proxy.set_mode(ProxyMode::Pass);
    let fault = cut.elapsed();
    figure(
        "network-reset",
        format!("connections reset for {fault:.2?}; every cache knew it was stale after {noticed:.2?}; {:?}", proxy.stats()),
    );
    setup
        .after_heal(
            "network-reset",
            TTL + BACKOFF_MAX + RECONNECT,
            fault + TTL + EXPIRY_LATENESS + BACKOFF_MAX + RECONNECT,
        )
        .await;
    setup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_hole_is_detected_by_deadlines_and_heals() {
    let (_server, proxy, mut setup) = start("blackhole").await;
    proxy.set_mode(ProxyMode::BlackHole);
    let cut = Instant::now();
    setup.fleet.kill_some(1);

    // Nothing is refused or closed: only the clients' own deadlines can tell.
    let noticed = setup
        .all_stale(NOTICE_SILENCE, "caches detect the silent connection")
        .await;
    // The keep-alive deadline: no keep-alive succeeded for a TTL, so the lease counts as lost.
    eventually(
        (TTL + Duration::from_secs(1)).saturating_sub(cut.elapsed()),
        "leases declared lost a TTL after the last keep-alive",
        || async {
            match setup
                .fleet
                .live
                .iter()
                .find(|(_, r)| matches!(r.state(), RegistrationState::Registered { .. }))
            {
                Some((id, r)) => Err(format!("{id} still {:?}", r.state())),
                None => Ok(()),
            }
        },
    )
    .await;
    let lost = cut.elapsed();
    // etcd, which heard no keep-alive either, expires every lease: the truth empties.
    eventually(
        TTL + EXPIRY_LATENESS + Duration::from_secs(1),
        "etcd expires the leases",
        || async {
            let (now, _) = truth(&*setup.checker, "hello").await?;
            if now.is_empty() {
                Ok(())
            } else {
                Err(format!("{} still registered", now.len()))
            }
        },
    )
    .await;
    let stats = proxy.stats();
    assert!(
        stats.black_holed > 0 && stats.swallowed_bytes > 0,
        "{stats:?}"
    );
    assert_eq!(stats.reset, 0, "a black hole never resets");
    proxy.set_mode(ProxyMode::Pass);
    let fault = cut.elapsed();
    figure(
        "network-black-hole",
        format!(
            "black hole for {fault:.2?}: every cache knew it was stale after {noticed:.2?} (bound {NOTICE_SILENCE:?}), every registration declared its lease lost after {lost:.2?} (TTL {TTL:?}); {stats:?}"
        ),
    );
    setup
        .after_heal(
            "network-black-hole",
            TTL + BACKOFF_MAX + RECONNECT,
            fault + BACKOFF_MAX + RECONNECT,
        )
        .await;
    setup.shutdown().await;
}

/// The same silence, on an `EtcdRegistry` built with nothing but its defaults: its HTTP/2 pings
/// (10 s, then 5 s for the answer) end the connection, the cache's watch fails, and the cache
/// says it is stale instead of looking healthy for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_hole_is_noticed_with_default_settings() {
    use registry_api::{PutOptions, Registry};
    use registry_etcd::{EtcdRegistry, DEFAULT_KEEP_ALIVE_INTERVAL, DEFAULT_KEEP_ALIVE_TIMEOUT};
    use registry_service::{Discovery, DiscoveryOptions, ServiceInstance};
    use std::sync::Arc;

    let server = blocking(EtcdServer::start).expect("etcd");
    let proxy = TcpProxy::for_endpoint(&server.endpoint()).expect("proxy");
    let namespace = registry_etcd::testing::unique_key_prefix("default-pings");
    let registry = EtcdRegistry::builder([proxy.endpoint()])
        .key_prefix(namespace.clone())
        .connect()
        .await
        .expect("connect through the proxy");
    let direct = EtcdRegistry::builder(server.endpoints())
        .key_prefix(namespace)
        .connect()
        .await
        .expect("connect directly");
    let discovery = Discovery::start(Arc::new(registry), "hello", DiscoveryOptions::default())
        .expect("discovery");
    // A put seen through the cache proves its watch is established before the cut, so the
    // silence has to be noticed on an open watch, not by a call that times out.
    let instance = ServiceInstance::new("hello", "a", "127.0.0.1:1");
    direct
        .put(
            b"services/hello/a",
            &instance.to_json(),
            PutOptions::default(),
        )
        .await
        .expect("put");
    eventually(
        Duration::from_secs(10),
        "the cache sees the put",
        || async {
            match discovery.get("a") {
                Some(_) if discovery.is_synced() => Ok(()),
                _ => Err("not yet".to_owned()),
            }
        },
    )
    .await;

    proxy.set_mode(ProxyMode::BlackHole);
    let cut = Instant::now();
    let bound = DEFAULT_KEEP_ALIVE_INTERVAL + DEFAULT_KEEP_ALIVE_TIMEOUT + Duration::from_secs(5);
    eventually(bound, "the cache notices the silent connection", || async {
        if discovery.is_synced() {
            Err("still claims to be synced".to_owned())
        } else {
            Ok(())
        }
    })
    .await;
    figure(
        "network-black-hole-defaults",
        format!(
            "default settings: the cache knew it was stale {:.2?} after the black hole (bound {bound:?})",
            cut.elapsed()
        ),
    );
    proxy.set_mode(ProxyMode::Pass);
}
