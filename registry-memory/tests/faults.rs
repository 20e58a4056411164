//! Fault injection (outage, forced expiry, leader change) and determinism.

use futures::{FutureExt, StreamExt};
use registry_api::{
    Error, EventKind, LeaseId, ListOptions, PutOptions, Registry, Revision, WatchOptions,
};
use registry_memory::MemoryRegistry;
use std::time::Duration;

fn registry() -> MemoryRegistry {
    MemoryRegistry::with_manual_clock()
}

fn unavailable<T: std::fmt::Debug>(result: Result<T, Error>) -> bool {
    matches!(&result, Err(e @ Error::Unavailable { .. }) if e.is_retryable())
}

#[tokio::test]
async fn an_outage_fails_every_call_and_cuts_watches_until_it_ends() {
    let r = registry();
    let lease = r.lease_grant(60, None).await.unwrap().id;
    r.put(b"k", b"v", PutOptions::with_lease(lease))
        .await
        .unwrap();
    let mut watch = r.watch(b"", WatchOptions::default()).await.unwrap();
    assert!(watch.next().now_or_never().is_none());

    r.set_unavailable(true);
    assert!(r.is_unavailable());
    assert!(unavailable(r.put(b"k", b"w", PutOptions::default()).await));
    assert!(unavailable(r.get(b"k").await));
    assert!(unavailable(r.list(b"", ListOptions::default()).await));
    assert!(unavailable(r.delete(b"k").await));
    assert!(unavailable(r.delete_prefix(b"").await));
    assert!(unavailable(r.lease_grant(5, None).await));
    assert!(unavailable(r.lease_keep_alive(lease).await));
    assert!(unavailable(r.lease_time_to_live(lease).await));
    assert!(unavailable(r.lease_revoke(lease).await));
    assert!(unavailable(r.leases().await));
    assert!(unavailable(r.compact(Revision(1)).await));
    assert!(unavailable(
        r.watch(b"", WatchOptions::default()).await.map(|_| ())
    ));
    assert!(matches!(
        watch.next().await,
        Some(Err(Error::Unavailable { .. }))
    ));
    assert!(watch.next().await.is_none(), "a cut watch ends");
    assert_eq!(r.current_revision(), Revision(2), "nothing was written");

    r.set_unavailable(false);
    assert!(!r.is_unavailable());
    assert_eq!(&r.get(b"k").await.unwrap().kv.unwrap().value[..], b"v");
    // Resume from the last delivered revision + 1, as a client would.
    let mut resumed = r
        .watch(b"", WatchOptions::from_revision(Revision(3)))
        .await
        .unwrap();
    r.put(b"k", b"w", PutOptions::default()).await.unwrap();
    assert_eq!(resumed.next().await.unwrap().unwrap().revision, Revision(3));
}

#[tokio::test]
async fn an_outage_that_ends_before_the_watch_is_polled_still_cuts_it() {
    let r = registry();
    let mut watch = r.watch(b"", WatchOptions::default()).await.unwrap();
    r.set_unavailable(true);
    r.set_unavailable(false);
    r.put(b"k", b"v", PutOptions::default()).await.unwrap();
    assert!(matches!(
        watch.next().await,
        Some(Err(Error::Unavailable { .. }))
    ));
}

#[tokio::test]
async fn leases_keep_expiring_during_an_outage() {
    let r = registry();
    let lease = r.lease_grant(5, None).await.unwrap().id;
    r.put(b"k", b"v", PutOptions::with_lease(lease))
        .await
        .unwrap();
    r.set_unavailable(true);
    r.advance(Duration::from_secs(5));
    assert_eq!(
        r.current_revision(),
        Revision(3),
        "the server expired the lease"
    );
    r.set_unavailable(false);
    assert!(r.get(b"k").await.unwrap().kv.is_none());
    assert!(matches!(
        r.lease_keep_alive(lease).await,
        Err(Error::LeaseNotFound(_))
    ));
}

#[tokio::test]
async fn expire_lease_expires_now_as_the_server_would() {
    let r = registry();
    let lease = r.lease_grant(3600, None).await.unwrap().id;
    let other = r.lease_grant(3600, None).await.unwrap().id;
    r.put(b"a/2", b"v", PutOptions::with_lease(lease))
        .await
        .unwrap();
    r.put(b"a/1", b"v", PutOptions::with_lease(lease))
        .await
        .unwrap();
    r.put(b"b", b"v", PutOptions::with_lease(other))
        .await
        .unwrap();
    let mut watch = r.watch(b"", WatchOptions::default()).await.unwrap();
    assert_eq!(r.expire_lease(lease).unwrap(), Revision(5));
    let batch = watch.next().await.unwrap().unwrap();
    let keys: Vec<_> = batch.events.iter().map(|e| e.kv.key.clone()).collect();
    assert_eq!(keys, vec![b"a/1".to_vec(), b"a/2".to_vec()]);
    assert!(batch.events.iter().all(|e| e.kind == EventKind::Delete));
    assert!(matches!(
        r.lease_time_to_live(lease).await,
        Err(Error::LeaseNotFound(_))
    ));
    assert!(r.get(b"b").await.unwrap().kv.is_some());
    assert!(matches!(r.expire_lease(lease), Err(Error::LeaseNotFound(id)) if id == lease));
    assert!(matches!(
        r.expire_lease(LeaseId(404)),
        Err(Error::LeaseNotFound(_))
    ));
    let empty = r.lease_grant(10, None).await.unwrap().id;
    assert_eq!(
        r.expire_lease(empty).unwrap(),
        Revision(5),
        "no keys, no revision"
    );
}

#[tokio::test]
async fn a_leader_change_extends_every_lease() {
    let r = registry();
    let short = r.lease_grant(2, None).await.unwrap().id;
    let long = r.lease_grant(10, None).await.unwrap().id;
    r.put(b"short", b"v", PutOptions::with_lease(short))
        .await
        .unwrap();
    r.put(b"long", b"v", PutOptions::with_lease(long))
        .await
        .unwrap();
    r.advance(Duration::from_secs(1));
    r.leader_change(Duration::from_secs(3));
    // Each restarts from now with its whole TTL + 3 s, not its 1 s less remaining.
    assert_eq!(r.lease_time_to_live(short).await.unwrap().ttl, 5);
    assert_eq!(r.lease_time_to_live(long).await.unwrap().ttl, 13);
    r.advance(Duration::from_millis(4_999));
    assert!(
        r.get(b"short").await.unwrap().kv.is_some(),
        "outlives its TTL across the failover"
    );
    r.advance(Duration::from_millis(1));
    assert!(r.get(b"short").await.unwrap().kv.is_none());
    r.advance(Duration::from_secs(7));
    assert!(r.get(b"long").await.unwrap().kv.is_some());
    r.advance(Duration::from_secs(1));
    assert!(r.get(b"long").await.unwrap().kv.is_none());
    // A lease granted later is not extended.
    let fresh = r.lease_grant(2, None).await.unwrap().id;
    assert_eq!(r.lease_time_to_live(fresh).await.unwrap().ttl, 2);
}

/// A scripted scenario touching every kind of change, returning the full event log as text.
async fn scenario(r: &MemoryRegistry) -> Vec<String> {
    let mut all = r
        .watch(b"", WatchOptions::default().with_prev_kv())
        .await
        .unwrap();
    let mut leases = Vec::new();
    for ttl in [3, 5, 7] {
        leases.push(r.lease_grant(ttl, None).await.unwrap().id);
    }
    for i in 0..60u32 {
        let key = format!("svc/{}/{}", i % 3, i % 5);
        let lease = leases[(i % 3) as usize];
        match i % 6 {
            0 | 1 => {
                r.put(
                    key.as_bytes(),
                    format!("{i}").as_bytes(),
                    PutOptions::with_lease(lease),
                )
                .await
                .map(|_| ())
                .ok();
            }
            2 => {
                r.put(key.as_bytes(), b"free", PutOptions::default())
                    .await
                    .unwrap();
            }
            3 => {
                r.delete(key.as_bytes()).await.unwrap();
            }
            4 => {
                r.lease_keep_alive(lease).await.ok();
            }
            _ => r.advance(Duration::from_millis(700)),
        }
        if i == 30 {
            r.delete_prefix(b"svc/1/").await.unwrap();
            r.expire_lease(leases[2]).ok();
        }
    }
    r.advance(Duration::from_secs(10));
    let mut log = Vec::new();
    while let Some(Some(batch)) = all.next().now_or_never() {
        log.push(format!("{:?}", batch.unwrap()));
    }
    log
}

#[tokio::test]
async fn the_same_scenario_gives_the_same_events() {
    let first = scenario(&registry()).await;
    let second = scenario(&registry()).await;
    assert!(
        first.len() > 25,
        "the scenario writes: {} batches",
        first.len()
    );
    assert!(first.iter().any(|b| b.contains("Delete")));
    assert_eq!(first, second);
}
