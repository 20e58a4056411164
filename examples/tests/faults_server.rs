//! A single etcd server that crashes and restarts under a registered fleet and watching caches:
//! kill -9 and restart on the same data dir, an outage longer than the TTL, and aggressive
//! compaction while the caches are cut off. Real etcd processes on loopback, started by the
//! tests; `REGISTRY_FAULTS_FULL=1` runs 50 instances and 10 caches (CI: 12 and 3).

mod faults_support;

use faults_support::*;
use registry_api::Revision;
use registry_etcd::testing::{EtcdServer, ProxyMode, TcpProxy};
use std::time::Duration;
use tokio::time::Instant;

fn sizes() -> (usize, usize) {
    (scale(12, 50), scale(3, 10))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_on_the_same_data_dir() {
    let mut server = blocking(EtcdServer::start).expect("etcd");
    let endpoints = server.endpoints();
    let (instances, caches) = sizes();
    let mut setup = Setup::start(
        "kill9", &endpoints, &endpoints, &endpoints, instances, caches,
    )
    .await;

    // Two processes die just before the server does; their leases outlive the crash.
    setup.fleet.kill_some(2);
    let crashed = Instant::now();
    blocking(|| server.stop());
    tokio::time::sleep(scale(Duration::from_millis(500), Duration::from_secs(1))).await;
    blocking(|| server.restart()).expect("etcd restarts on its data dir");
    let outage = crashed.elapsed();

    // A restarted etcd gives every lease its whole TTL again (plus about a second).
    setup
        .after_heal(
            "server-kill-9",
            TTL + BACKOFF_MAX + RECONNECT,
            outage + TTL + Duration::from_secs(1) + EXPIRY_LATENESS + RECONNECT,
        )
        .await;
    setup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_ttl() {
    let mut server = blocking(EtcdServer::start).expect("etcd");
    let endpoints = server.endpoints();
    let (instances, caches) = sizes();
    let mut setup = Setup::start(
        "outage", &endpoints, &endpoints, &endpoints, instances, caches,
    )
    .await;

    setup.fleet.kill_some(1);
    let crashed = Instant::now();
    blocking(|| server.stop());
    let down = TTL + scale(Duration::from_secs(1), Duration::from_secs(4));
    tokio::time::sleep(down / 2).await;
    setup.all_stale(down / 2, "caches notice the outage").await;
    tokio::time::sleep(down.saturating_sub(crashed.elapsed())).await;
    // Every registration has given its lease up by now: no keep-alive for a whole TTL.
    let lost = setup.fleet.unregistered();
    assert_eq!(lost, setup.fleet.live.len(), "every lease counts as lost");
    blocking(|| server.restart()).expect("etcd restarts on its data dir");
    let outage = crashed.elapsed();
    figure(
        "server-outage",
        format!("etcd down {outage:.2?} (TTL {TTL:?}): {lost} registrations declared their lease lost and re-registered"),
    );
    setup
        .after_heal(
            "server-outage",
            TTL + BACKOFF_MAX + RECONNECT,
            outage + TTL + Duration::from_secs(1) + EXPIRY_LATENESS + RECONNECT,
        )
        .await;
    setup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggressive_compaction_while_the_caches_are_cut_off() {
    let server = blocking(EtcdServer::start).expect("etcd");
    let direct = server.endpoints();
    let proxy = TcpProxy::for_endpoint(&server.endpoint()).expect("proxy");
    let through_proxy = vec![proxy.endpoint()];
    let (instances, caches) = sizes();
    let mut setup = Setup::start(
        "compact",
        &direct,
        &direct,
        &through_proxy,
        instances,
        caches,
    )
    .await;

    proxy.set_mode(ProxyMode::Reset);
    let cut = Instant::now();
    setup
        .all_stale(Duration::from_secs(3), "caches notice the cut")
        .await;

    // While they are away: some leave, some die, some arrive, and history is compacted after
    // every step, so no cache can resume its watch where it stopped.
    let mut compacted = Revision(0);
    let mut compactions = 0;
    let ids: Vec<String> = setup.fleet.live.keys().skip(2).take(2).cloned().collect();
    for id in ids {
        setup.fleet.leave(&id).await;
        compactions += usize::from(setup.compact_now(&mut compacted).await);
    }
    setup.fleet.kill_some(2);
    setup.fleet.grow(3).await;
    compactions += usize::from(setup.compact_now(&mut compacted).await);
    // The dead expire while the caches are still away; compact their deletes away too.
    tokio::time::sleep(TTL + EXPIRY_LATENESS).await;
    compactions += usize::from(setup.compact_now(&mut compacted).await);
    assert!(compactions >= 3, "{compactions} compactions");
    assert!(
        setup.caches.iter().all(|c| !c.discovery.is_synced()),
        "the caches were cut off throughout"
    );

    proxy.set_mode(ProxyMode::Pass);
    let partition = cut.elapsed();
    figure(
        "server-compaction",
        format!("{compactions} compactions (last at {compacted}) while {} caches were cut off for {partition:.2?}", setup.caches.len()),
    );
    setup
        .after_heal(
            "server-compaction",
            BACKOFF_MAX + RECONNECT,
            partition + BACKOFF_MAX + RECONNECT,
        )
        .await;
    setup.shutdown().await;
}

/// The history check must be able to fail: each mistake a cache could make is caught.
#[test]
fn the_history_check_catches_every_kind_of_mistake() {
    use registry_service::{Metadata, ServiceInstance, StoreEvent::*};
    let a = ServiceInstance::new("hello", "a", "x");
    let a2 = a
        .clone()
        .with_metadata(Metadata::default().with_version("2"));
    let b = ServiceInstance::new("hello", "b", "y");
    // etcd: a put, a updated, a deleted, a put again; b put.
    let truth: Histories = [
        (
            "a".to_owned(),
            vec![
                None,
                Some(a.clone()),
                Some(a2.clone()),
                None,
                Some(a.clone()),
            ],
        ),
        ("b".to_owned(), vec![None, Some(b.clone())]),
    ]
    .into_iter()
    .collect();
    let end = [a.clone(), b.clone()];
    let upd = |old: &ServiceInstance, new: &ServiceInstance| Updated {
        old: old.clone(),
        new: new.clone(),
    };
    // Everything, or with a re-list skipping the middle: fine.
    let full = [
        Added(a.clone()),
        upd(&a, &a2),
        Removed(a2.clone()),
        Added(a.clone()),
        Added(b.clone()),
    ];
    assert_eq!(check_log(&full, &end, &truth), Ok(()));
    assert_eq!(
        check_log(&[Added(b.clone()), Added(a.clone())], &end, &truth),
        Ok(())
    );
    for (mistake, log, snapshot) in [
        (
            "applied twice",
            vec![Added(a.clone()), Added(a.clone()), Added(b.clone())],
            &end[..],
        ),
        (
            "out of order",
            vec![
                Added(a2.clone()),
                upd(&a2, &a),
                Removed(a.clone()),
                Added(a.clone()),
                Added(b.clone()),
            ],
            &end[..],
        ),
        (
            "never in etcd",
            vec![
                Added(a.clone()),
                Added(b.clone()),
                Added(ServiceInstance::new("hello", "c", "z")),
            ],
            &end[..],
        ),
        (
            "stopped early",
            vec![Added(a.clone()), upd(&a, &a2), Added(b.clone())],
            &[a2.clone(), b.clone()][..],
        ),
        ("missed b", vec![Added(a.clone())], &[a.clone()][..]),
        (
            "snapshot disagrees",
            vec![Added(a.clone()), Added(b.clone())],
            &[a.clone()][..],
        ),
    ] {
        assert!(
            check_log(&log, snapshot, &truth).is_err(),
            "{mistake} not caught"
        );
    }
    // etcd deleted b in the end; a cache still holding it missed the removal.
    let mut b_gone = truth.clone();
    b_gone.insert("b".to_owned(), vec![None, Some(b.clone()), None]);
    assert!(
        check_log(&full, &end, &b_gone).is_err(),
        "missed removal not caught"
    );
    // A re-list after the delete and the re-put may show a2 -> a as one update: fine.
    let relisted = [Added(a2.clone()), upd(&a2, &a), Added(b.clone())];
    assert_eq!(check_log(&relisted, &end, &truth), Ok(()));
}
