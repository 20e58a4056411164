//! Leases: TTL bounds, ids, keys moving between leases, time-to-live, expiry on both clocks.

use futures::{FutureExt, StreamExt};
use registry_api::{
    limits, Error, EventKind, InvalidArgument, LeaseId, PutOptions, Registry, Revision,
    WatchOptions,
};
use registry_memory::MemoryRegistry;
use std::time::Duration;

fn registry() -> MemoryRegistry {
    MemoryRegistry::with_manual_clock()
}

/// On tokio's clock, without the timing model: these tests time the server's own expiry to the
/// instant, which a call's delays would move.
fn instant_on_tokio_time() -> MemoryRegistry {
    MemoryRegistry::builder().instant().build()
}

#[tokio::test]
async fn a_grant_below_the_minimum_ttl_is_raised() {
    let r = registry();
    assert_eq!(r.lease_grant(1, None).await.unwrap().ttl, 2);
    assert_eq!(r.lease_grant(2, None).await.unwrap().ttl, 2);
    assert_eq!(r.lease_grant(3, None).await.unwrap().ttl, 3);
    let r = MemoryRegistry::builder().manual_clock().min_ttl(5).build();
    // Zero and below too, as etcd 3.5 grants them: not refused, raised, and they expire at
    // the minimum like any other lease.
    for ttl in [0, -5, i64::MIN] {
        let lease = r.lease_grant(ttl, None).await.unwrap();
        assert_eq!(lease.ttl, 5, "granted for {ttl}");
        let left = r.lease_time_to_live(lease.id).await.unwrap();
        assert_eq!((left.ttl, left.granted_ttl), (5, 5));
        r.advance(std::time::Duration::from_secs(5));
        assert!(matches!(
            r.lease_time_to_live(lease.id).await,
            Err(registry_api::Error::LeaseNotFound(_))
        ));
    }
    let lease = r.lease_grant(1, None).await.unwrap();
    assert_eq!(lease.ttl, 5);
    assert_eq!(r.lease_keep_alive(lease.id).await.unwrap(), 5);
    assert_eq!(r.lease_time_to_live(lease.id).await.unwrap().granted_ttl, 5);
}

#[tokio::test]
async fn a_grant_above_the_maximum_ttl_fails() {
    let r = registry();
    let max = r.lease_grant(limits::MAX_LEASE_TTL, None).await.unwrap();
    assert_eq!(max.ttl, limits::MAX_LEASE_TTL);
    assert!(matches!(
        r.lease_grant(limits::MAX_LEASE_TTL + 1, None).await,
        Err(Error::InvalidArgument(InvalidArgument::TtlTooLarge { .. }))
    ));
    let r = MemoryRegistry::builder().manual_clock().max_ttl(60).build();
    assert!(r.lease_grant(60, None).await.is_ok());
    assert!(matches!(
        r.lease_grant(61, None).await,
        Err(Error::InvalidArgument(InvalidArgument::TtlTooLarge {
            ttl: 61,
            max: 60
        }))
    ));
    assert_eq!(
        r.leases().await.unwrap().len(),
        1,
        "the refused grant left nothing"
    );
}

#[tokio::test]
async fn lease_ids_come_from_a_counter_and_explicit_ids_are_honoured() {
    let r = registry();
    let first = r.lease_grant(10, None).await.unwrap().id;
    assert_eq!(first, LeaseId(1));
    let explicit = r.lease_grant(10, Some(LeaseId(2))).await.unwrap();
    assert_eq!(explicit.id, LeaseId(2));
    assert!(matches!(
        r.lease_grant(10, Some(LeaseId(2))).await,
        Err(Error::LeaseExists(LeaseId(2)))
    ));
    // The counter skips the live explicit id.
    assert_eq!(r.lease_grant(10, None).await.unwrap().id, LeaseId(3));
    r.lease_revoke(LeaseId(2)).await.unwrap();
    assert_eq!(
        r.lease_grant(10, Some(LeaseId(2))).await.unwrap().id,
        LeaseId(2),
        "a revoked id can be granted again"
    );
    assert_eq!(
        r.leases().await.unwrap(),
        vec![LeaseId(1), LeaseId(2), LeaseId(3)]
    );
}

#[tokio::test]
async fn a_put_without_a_lease_detaches_and_with_another_moves() {
    let r = registry();
    let a = r.lease_grant(10, None).await.unwrap().id;
    let b = r.lease_grant(10, None).await.unwrap().id;
    r.put(b"x", b"1", PutOptions::with_lease(a)).await.unwrap();
    r.put(b"y", b"1", PutOptions::with_lease(a)).await.unwrap();
    // Detach x, move y to b.
    r.put(b"x", b"2", PutOptions::default()).await.unwrap();
    r.put(b"y", b"2", PutOptions::with_lease(b)).await.unwrap();
    assert!(r.lease_time_to_live(a).await.unwrap().keys.is_empty());
    assert_eq!(
        r.lease_time_to_live(b).await.unwrap().keys,
        vec![b"y".to_vec()]
    );
    assert_eq!(r.get(b"x").await.unwrap().kv.unwrap().lease, None);
    assert_eq!(r.get(b"y").await.unwrap().kv.unwrap().lease, Some(b));

    let before = r.current_revision();
    assert_eq!(
        r.lease_revoke(a).await.unwrap(),
        before,
        "a no longer has keys"
    );
    assert!(
        r.get(b"x").await.unwrap().kv.is_some(),
        "the detached key survives"
    );
    r.lease_revoke(b).await.unwrap();
    assert!(r.get(b"y").await.unwrap().kv.is_none());
    assert!(r.get(b"x").await.unwrap().kv.is_some());
}

#[tokio::test]
async fn a_put_with_an_unknown_or_expired_lease_fails_and_writes_nothing() {
    let r = registry();
    r.put(b"k", b"old", PutOptions::default()).await.unwrap();
    assert!(matches!(
        r.put(b"k", b"new", PutOptions::with_lease(LeaseId(77)))
            .await,
        Err(Error::LeaseNotFound(LeaseId(77)))
    ));
    let lease = r.lease_grant(2, None).await.unwrap().id;
    r.advance(Duration::from_secs(2));
    assert!(matches!(
        r.put(b"k", b"new", PutOptions::with_lease(lease)).await,
        Err(Error::LeaseNotFound(id)) if id == lease
    ));
    assert_eq!(r.current_revision(), Revision(2));
    assert_eq!(&r.get(b"k").await.unwrap().kv.unwrap().value[..], b"old");
}

#[tokio::test]
async fn keep_alive_time_to_live_and_revoke_of_a_gone_lease_are_not_found() {
    let r = registry();
    let unknown = LeaseId(99);
    assert!(
        matches!(r.lease_keep_alive(unknown).await, Err(Error::LeaseNotFound(id)) if id == unknown)
    );
    assert!(
        matches!(r.lease_time_to_live(unknown).await, Err(Error::LeaseNotFound(id)) if id == unknown)
    );
    assert!(
        matches!(r.lease_revoke(unknown).await, Err(Error::LeaseNotFound(id)) if id == unknown)
    );

    let revoked = r.lease_grant(10, None).await.unwrap().id;
    r.lease_revoke(revoked).await.unwrap();
    let expired = r.lease_grant(3, None).await.unwrap().id;
    r.advance(Duration::from_secs(3));
    for gone in [revoked, expired] {
        assert!(
            matches!(r.lease_keep_alive(gone).await, Err(Error::LeaseNotFound(id)) if id == gone)
        );
        assert!(
            matches!(r.lease_time_to_live(gone).await, Err(Error::LeaseNotFound(id)) if id == gone)
        );
        assert!(matches!(r.lease_revoke(gone).await, Err(Error::LeaseNotFound(id)) if id == gone));
    }
    assert!(r.leases().await.unwrap().is_empty());
}

#[tokio::test]
async fn time_to_live_rounds_the_remaining_time_down() {
    let r = registry();
    let lease = r.lease_grant(10, None).await.unwrap().id;
    r.put(b"b", b"", PutOptions::with_lease(lease))
        .await
        .unwrap();
    r.put(b"a", b"", PutOptions::with_lease(lease))
        .await
        .unwrap();
    let r = &r;
    let ttl = |expected| async move {
        let got = r.lease_time_to_live(lease).await.unwrap();
        assert_eq!((got.id, got.ttl, got.granted_ttl), (lease, expected, 10));
        assert_eq!(got.keys, vec![b"a".to_vec(), b"b".to_vec()]);
    };
    ttl(10).await;
    r.advance(Duration::from_millis(1));
    ttl(9).await;
    r.advance(Duration::from_millis(8_998));
    ttl(1).await;
    r.advance(Duration::from_millis(2));
    ttl(0).await;
    // Keep-alive renews for the whole granted TTL and returns it, not the time left.
    assert_eq!(r.lease_keep_alive(lease).await.unwrap(), 10);
    ttl(10).await;
}

#[tokio::test]
async fn keep_alive_moves_the_deadline() {
    let r = registry();
    let lease = r.lease_grant(5, None).await.unwrap().id;
    r.put(b"k", b"v", PutOptions::with_lease(lease))
        .await
        .unwrap();
    for _ in 0..10 {
        r.advance(Duration::from_secs(4));
        r.lease_keep_alive(lease).await.unwrap();
    }
    assert_eq!(r.now(), Duration::from_secs(40));
    r.advance(Duration::from_millis(4_999));
    assert!(r.get(b"k").await.unwrap().kv.is_some());
    r.advance(Duration::from_millis(1));
    assert!(r.get(b"k").await.unwrap().kv.is_none());
}

#[tokio::test]
async fn leases_expire_in_deadline_order_each_in_one_revision() {
    let r = registry();
    let long = r.lease_grant(7, None).await.unwrap().id;
    let short = r.lease_grant(3, None).await.unwrap().id;
    let tie = r.lease_grant(3, None).await.unwrap().id;
    for (key, lease) in [
        (&b"l/2"[..], long),
        (b"l/1", long),
        (b"s/1", short),
        (b"t/1", tie),
    ] {
        r.put(key, b"v", PutOptions::with_lease(lease))
            .await
            .unwrap();
    }
    let mut watch = r.watch(b"", WatchOptions::default()).await.unwrap();
    // One jump past every deadline still expires them one by one, earliest first.
    r.advance(Duration::from_secs(60));
    let mut order = Vec::new();
    while let Some(Some(batch)) = watch.next().now_or_never() {
        let batch = batch.unwrap();
        assert!(batch.events.iter().all(|e| e.kind == EventKind::Delete));
        order.push((
            batch.revision.0,
            batch
                .events
                .iter()
                .map(|e| e.kv.key.to_vec())
                .collect::<Vec<_>>(),
        ));
    }
    assert_eq!(
        order,
        vec![
            (6, vec![b"s/1".to_vec()]),
            (7, vec![b"t/1".to_vec()]),
            (8, vec![b"l/1".to_vec(), b"l/2".to_vec()]),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn on_tokio_time_a_key_lives_until_exactly_its_deadline() {
    let r = instant_on_tokio_time();
    let lease = r.lease_grant(5, None).await.unwrap().id;
    r.put(b"svc/a", b"v", PutOptions::with_lease(lease))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    r.lease_keep_alive(lease).await.unwrap();
    let kept_alive_at = tokio::time::Instant::now();
    let mut watch = r.watch(b"svc/", WatchOptions::default()).await.unwrap();

    tokio::time::sleep(Duration::from_millis(4_999)).await;
    assert!(
        r.get(b"svc/a").await.unwrap().kv.is_some(),
        "alive at 4.999 s"
    );
    assert!(watch.next().now_or_never().is_none(), "no event yet");
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(r.get(b"svc/a").await.unwrap().kv.is_none(), "gone at 5 s");

    let batch = watch.next().await.unwrap().unwrap();
    assert_eq!(kept_alive_at.elapsed(), Duration::from_secs(5));
    assert_eq!(batch.events[0].kind, EventKind::Delete);
    assert_eq!(&batch.events[0].kv.key[..], b"svc/a");
    assert_eq!(r.now(), Duration::from_secs(8));
}

#[tokio::test(start_paused = true)]
async fn on_tokio_time_the_expiry_task_tells_watchers_without_any_call() {
    let r = instant_on_tokio_time();
    let late = r.lease_grant(30, None).await.unwrap().id;
    let early = r.lease_grant(10, None).await.unwrap().id;
    r.put(b"k/late", b"v", PutOptions::with_lease(late))
        .await
        .unwrap();
    r.put(b"k/early", b"v", PutOptions::with_lease(early))
        .await
        .unwrap();
    let start = tokio::time::Instant::now();
    let mut watch = r.watch(b"k/", WatchOptions::default()).await.unwrap();
    // Nothing but the watch runs: the background task must wake at each deadline.
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(&first.events[0].kv.key[..], b"k/early");
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    let second = watch.next().await.unwrap().unwrap();
    assert_eq!(&second.events[0].kv.key[..], b"k/late");
    assert_eq!(start.elapsed(), Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn on_tokio_time_an_earlier_grant_wakes_the_expiry_task() {
    let r = instant_on_tokio_time();
    r.lease_grant(100, None).await.unwrap();
    let start = tokio::time::Instant::now();
    let mut watch = r.watch(b"", WatchOptions::default()).await.unwrap();
    // Let the expiry task go to sleep until 100 s first.
    tokio::task::yield_now().await;
    let short = r.lease_grant(2, None).await.unwrap().id;
    r.put(b"k", b"v", PutOptions::with_lease(short))
        .await
        .unwrap();
    watch.next().await.unwrap().unwrap(); // the put
    let gone = watch.next().await.unwrap().unwrap();
    assert_eq!(gone.events[0].kind, EventKind::Delete);
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

#[test]
fn advance_on_tokio_time_does_nothing() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let r = instant_on_tokio_time();
        let lease = r.lease_grant(2, None).await.unwrap().id;
        r.advance(Duration::from_secs(10));
        assert_eq!(r.now(), Duration::ZERO);
        assert!(r.lease_time_to_live(lease).await.is_ok());
    });
}

#[tokio::test]
async fn leases_due_at_the_same_instant_expire_in_id_order() {
    let r = registry();
    for id in [5, 3, 4, 1, 2] {
        let lease = r.lease_grant(4, Some(LeaseId(id))).await.unwrap().id;
        r.put(
            format!("k/{id}").as_bytes(),
            b"v",
            PutOptions::with_lease(lease),
        )
        .await
        .unwrap();
    }
    let mut watch = r.watch(b"k/", WatchOptions::default()).await.unwrap();
    r.advance(Duration::from_secs(4));
    let mut order = Vec::new();
    while let Some(Some(batch)) = watch.next().now_or_never() {
        order.push(batch.unwrap().events[0].kv.key_str().into_owned());
    }
    assert_eq!(order, vec!["k/1", "k/2", "k/3", "k/4", "k/5"]);
}

#[tokio::test]
async fn a_keep_alive_after_a_leader_change_can_shorten_the_deadline() {
    let r = registry();
    let lease = r.lease_grant(10, None).await.unwrap().id;
    r.put(b"k", b"v", PutOptions::with_lease(lease))
        .await
        .unwrap();
    r.leader_change(Duration::from_secs(100));
    // Renewing gives the plain TTL again, from now: 10 s, not the 110 s left.
    r.lease_keep_alive(lease).await.unwrap();
    r.advance(Duration::from_millis(9_999));
    assert!(r.get(b"k").await.unwrap().kv.is_some());
    r.advance(Duration::from_millis(1));
    assert!(r.get(b"k").await.unwrap().kv.is_none());
}

#[tokio::test]
async fn a_regranted_id_keeps_its_new_deadline() {
    let r = registry();
    r.lease_grant(5, Some(LeaseId(7))).await.unwrap();
    r.lease_revoke(LeaseId(7)).await.unwrap();
    r.lease_grant(20, Some(LeaseId(7))).await.unwrap();
    r.put(b"k", b"v", PutOptions::with_lease(LeaseId(7)))
        .await
        .unwrap();
    r.advance(Duration::from_secs(5));
    assert!(
        r.get(b"k").await.unwrap().kv.is_some(),
        "the old grant's deadline is gone"
    );
    r.advance(Duration::from_secs(15));
    assert!(r.get(b"k").await.unwrap().kv.is_none());
}

#[tokio::test]
async fn many_revoked_long_leases_do_not_slow_expiry() {
    let r = registry();
    for _ in 0..5_000 {
        let lease = r.lease_grant(3_600, None).await.unwrap().id;
        r.lease_revoke(lease).await.unwrap();
    }
    let lease = r.lease_grant(2, None).await.unwrap().id;
    r.put(b"k", b"v", PutOptions::with_lease(lease))
        .await
        .unwrap();
    r.advance(Duration::from_secs(2));
    assert!(r.get(b"k").await.unwrap().kv.is_none());
    assert!(r.leases().await.unwrap().is_empty());
}
