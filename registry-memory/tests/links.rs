//! One test per kind of link fault on a named client, on virtual time: the server and the
//! other clients go on while one client's link is cut, slow, held, lossy or stalled.

use futures::StreamExt;
use registry_api::wrap::{CallKind, Counting, Latency};
use registry_api::{Error, PutOptions, Registry, WatchOptions};
use registry_memory::MemoryRegistry;
use registry_service::{
    Backoff, Discovery, DiscoveryOptions, Picker, PickerOptions, Registration, RegistrationOptions,
    RegistrationState, ServiceInstance,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep, timeout, Instant};

/// A simulator without the timing model: for the tests that time a link's own latency, or a
/// lease's seconds, to the instant.
fn instant() -> MemoryRegistry {
    MemoryRegistry::builder().instant().build()
}

fn unavailable<T: std::fmt::Debug>(result: registry_api::Result<T>) -> bool {
    matches!(result, Err(Error::Unavailable { .. }))
}

#[tokio::test(start_paused = true)]
async fn a_partitioned_client_fails_alone_and_its_lease_expires_on_the_server() {
    let server = MemoryRegistry::new();
    let instance = server.client("instance");
    let gateway = server.client("gateway");
    let lease = instance.lease_grant(2, None).await.unwrap();
    instance
        .put(b"svc/a", b"1", PutOptions::with_lease(lease.id))
        .await
        .unwrap();
    let mut watch = instance
        .watch(b"svc/", WatchOptions::default())
        .await
        .unwrap();
    let mut gateway_watch = gateway
        .watch(b"svc/", WatchOptions::default())
        .await
        .unwrap();

    server.link("instance").partition();
    assert!(unavailable(instance.lease_keep_alive(lease.id).await));
    assert!(unavailable(instance.get(b"svc/a").await));
    // Its open watch ends with Unavailable; the gateway's does not.
    assert!(unavailable(watch.next().await.unwrap()));
    assert!(watch.next().await.is_none());
    assert!(gateway.get(b"svc/a").await.unwrap().kv.is_some());

    sleep(Duration::from_secs(2)).await;
    let expired = gateway_watch.next().await.unwrap().unwrap();
    assert_eq!(&expired.events[0].kv.key[..], b"svc/a");
    assert!(gateway.get(b"svc/a").await.unwrap().kv.is_none());

    server.link("instance").heal();
    assert!(matches!(
        instance.lease_keep_alive(lease.id).await,
        Err(Error::LeaseNotFound(_))
    ));
    assert!(!server.is_unavailable());
}

#[tokio::test(start_paused = true)]
async fn call_latency_is_fixed_or_seeded_and_costs_virtual_time_only() {
    let server = instant();
    let client = server.client("slow");
    let link = server.link("slow");
    link.set_call_latency(Latency::Fixed(Duration::from_millis(250)));
    let start = Instant::now();
    client.get(b"k").await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    // Another client is not slowed.
    let start = Instant::now();
    server.client("fast").get(b"k").await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);

    let uniform = Latency::Uniform {
        min: Duration::from_millis(10),
        max: Duration::from_millis(100),
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        let server = instant();
        let client = server.client("seeded");
        server.link("seeded").set_call_latency(uniform);
        let mut delays = Vec::new();
        for _ in 0..20 {
            let start = Instant::now();
            client.get(b"k").await.unwrap();
            delays.push(start.elapsed());
        }
        runs.push(delays);
    }
    assert_eq!(runs[0], runs[1], "the same link name gives the same delays");
    assert!(runs[0].iter().all(|d| (10..=100).contains(&d.as_millis())));
    assert!(
        runs[0].iter().any(|d| *d != runs[0][0]),
        "uniform, not fixed"
    );
}

#[tokio::test(start_paused = true)]
async fn watch_deliveries_are_delayed_on_the_slow_link_only() {
    let server = instant();
    let slow = server.client("slow");
    server
        .link("slow")
        .set_delivery_latency(Latency::Fixed(Duration::from_secs(1)));
    let mut slow_watch = slow.watch(b"k", WatchOptions::default()).await.unwrap();
    let mut fast_watch = server
        .client("fast")
        .watch(b"k", WatchOptions::default())
        .await
        .unwrap();
    let start = Instant::now();
    server.put(b"k", b"1", PutOptions::default()).await.unwrap();
    fast_watch.next().await.unwrap().unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    slow_watch.next().await.unwrap().unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn held_calls_wait_then_complete_in_the_order_they_were_made() {
    // Instant: the order tested is the link's; past it, calls in flight together may reach
    // the server in any order, as on etcd.
    let server = instant();
    let client = Arc::new(server.client("held"));
    let link = server.link("held");
    link.hold();
    let mut tasks = Vec::new();
    for i in 0..5u8 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            client
                .put(b"k", &[i], PutOptions::default())
                .await
                .unwrap()
                .revision
        }));
        // Each call is queued before the next is made.
        tokio::task::yield_now().await;
    }
    // A call dropped while held gives up its turn without blocking the ones behind it.
    let dropped = timeout(Duration::from_millis(10), client.get(b"k")).await;
    assert!(dropped.is_err());
    sleep(Duration::from_secs(5)).await;
    assert_eq!(link.queued_calls(), 5);
    assert!(
        server.get(b"k").await.unwrap().kv.is_none(),
        "nothing reached the server"
    );
    link.release();
    let mut revisions = Vec::new();
    for task in tasks {
        revisions.push(task.await.unwrap().get());
    }
    assert_eq!(
        revisions,
        vec![2, 3, 4, 5, 6],
        "in the order they were made"
    );
    assert_eq!(&server.get(b"k").await.unwrap().kv.unwrap().value[..], &[4]);
    assert_eq!(link.queued_calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_lost_reply_to_a_put_fails_the_client_but_the_key_is_written() {
    let server = MemoryRegistry::new();
    let client = server.client("lossy");
    server.link("lossy").lose_next_replies(1);
    assert!(unavailable(
        client.put(b"k", b"v", PutOptions::default()).await
    ));
    assert_eq!(&server.get(b"k").await.unwrap().kv.unwrap().value[..], b"v");
    assert_eq!(server.current_revision().get(), 2);
    // Only the next reply was lost.
    assert!(client.get(b"k").await.unwrap().kv.is_some());
    assert_eq!(server.link("lossy").lost_replies(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_lost_reply_to_a_keep_alive_still_renews_the_lease() {
    let server = MemoryRegistry::new();
    let client = server.client("lossy");
    let lease = client.lease_grant(2, None).await.unwrap();
    sleep(Duration::from_millis(1_500)).await;
    server.link("lossy").lose_next_replies(1);
    assert!(unavailable(client.lease_keep_alive(lease.id).await));
    // The keep-alive reached the server: the lease lives 2 s from the renewal, past its
    // original deadline.
    sleep(Duration::from_millis(1_000)).await;
    let ttl = server.lease_time_to_live(lease.id).await.unwrap();
    assert_eq!(ttl.granted_ttl, 2);
    sleep(Duration::from_millis(1_000)).await;
    assert!(server.lease_time_to_live(lease.id).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_keep_alive_batch_counts_as_its_leases_and_a_cut_link_fails_it_whole() {
    let server = instant();
    let counting = Counting::new();
    let client = counting.wrap(server.client("instance"));
    let mut ids = Vec::new();
    for ttl in [4, 6, 8] {
        ids.push(server.lease_grant(ttl, None).await.unwrap().id);
    }
    sleep(Duration::from_secs(2)).await;
    let answers = client.lease_keep_alive_many(&ids).await.unwrap();
    let ttls: Vec<i64> = answers.into_iter().map(Result::unwrap).collect();
    assert_eq!(ttls, [4, 6, 8]);
    let counts = counting.snapshot();
    assert_eq!(
        (counts.get(CallKind::LeaseKeepAlive), counts.total()),
        (3, 3)
    );

    sleep(Duration::from_secs(1)).await;
    server.link("instance").partition();
    assert!(unavailable(client.lease_keep_alive_many(&ids).await));
    // Counted as made, though the link cut it.
    assert_eq!(counting.snapshot().get(CallKind::LeaseKeepAlive), 6);
    // Not one of the batch reached the server: each lease has a second less than after the
    // first batch.
    for (id, left) in ids.iter().zip([3, 5, 7]) {
        assert_eq!(server.lease_time_to_live(*id).await.unwrap().ttl, left);
    }
    sleep(Duration::from_secs(3)).await;
    assert!(matches!(
        server.lease_time_to_live(ids[0]).await,
        Err(Error::LeaseNotFound(_))
    ));
    assert_eq!(server.leases().await.unwrap(), ids[1..].to_vec());
}

#[tokio::test(start_paused = true)]
async fn a_seeded_loss_rate_loses_the_same_replies_every_run() {
    let mut runs = Vec::new();
    for _ in 0..2 {
        let server = MemoryRegistry::new();
        let client = server.client("flaky");
        server.link("flaky").set_loss_rate(0.3);
        let mut outcomes = Vec::new();
        for i in 0..50u32 {
            let put = client
                .put(b"k", &i.to_be_bytes(), PutOptions::default())
                .await;
            outcomes.push(put.is_ok());
        }
        // Every put was applied, lost reply or not.
        assert_eq!(server.current_revision().get(), 51);
        runs.push(outcomes);
    }
    assert_eq!(runs[0], runs[1]);
    let lost = runs[0].iter().filter(|ok| !**ok).count();
    assert!((5..=30).contains(&lost), "about 30% lost, got {lost}");
}

#[tokio::test(start_paused = true)]
async fn injected_errors_never_reach_the_server() {
    let server = MemoryRegistry::new();
    let client = server.client("erring");
    server.link("erring").set_error_rate(0.5);
    let mut failed = 0;
    for i in 0..40u32 {
        if client
            .put(b"k", &i.to_be_bytes(), PutOptions::default())
            .await
            .is_err()
        {
            failed += 1;
        }
    }
    assert!((5..=35).contains(&failed));
    assert_eq!(server.current_revision().get(), 1 + 40 - failed);
    assert_eq!(server.link("erring").injected_errors(), failed as u64);
}

#[tokio::test(start_paused = true)]
async fn stalled_watches_deliver_nothing_answer_no_progress_and_do_not_end() {
    let server = MemoryRegistry::new();
    let client = server.client("member");
    let mut watch = client
        .watch(b"k", WatchOptions::default().with_progress_notify())
        .await
        .unwrap();
    // The opening progress notification.
    assert!(watch.next().await.unwrap().unwrap().is_progress());
    server.link("member").stall_watches(true);
    server.put(b"k", b"1", PutOptions::default()).await.unwrap();
    assert!(timeout(Duration::from_secs(30), watch.next())
        .await
        .is_err());
    if watch.supports_progress_requests() {
        assert!(watch.request_progress().await.is_err());
    }
    server.link("member").stall_watches(false);
    let batch = watch.next().await.unwrap().unwrap();
    assert_eq!(
        batch.events.len(),
        1,
        "what was held back comes after the stall"
    );
}

#[tokio::test(start_paused = true)]
async fn server_wide_outages_still_reach_every_client() {
    let server = MemoryRegistry::new();
    let a = server.client("a");
    server.set_unavailable(true);
    assert!(unavailable(a.get(b"k").await));
    server.set_unavailable(false);
    assert!(a.get(b"k").await.is_ok());
    assert_eq!(CallKind::Get.name(), "get");
}

/// An instance cut off for longer than its TTL: its lease expires on the server while it runs,
/// the gateway (on its own, healthy client) drops it within the bound, never routes to it
/// afterwards, and the instance re-registers once healed.
#[tokio::test(start_paused = true)]
async fn an_instance_partitioned_past_its_ttl_re_registers_and_is_never_routed_to_meanwhile() {
    const TTL: Duration = Duration::from_secs(3);
    const BOUND: Duration = Duration::from_millis(500);
    let server = MemoryRegistry::new();
    let registration = Registration::start(
        Arc::new(server.client("instance-a")),
        ServiceInstance::new("hello", "a", "10.0.0.1:80"),
        RegistrationOptions::default()
            .ttl(TTL)
            .backoff(Backoff::new(
                Duration::from_millis(100),
                Duration::from_secs(1),
            ))
            .request_timeout(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    let _b = Registration::start(
        Arc::new(server.client("instance-b")),
        ServiceInstance::new("hello", "b", "10.0.0.2:80"),
        RegistrationOptions::default().ttl(TTL),
    )
    .await
    .unwrap();
    let discovery = Discovery::start(
        Arc::new(server.client("gateway")),
        "hello",
        DiscoveryOptions::default(),
    )
    .unwrap();
    discovery
        .wait_synced(Duration::from_secs(5))
        .await
        .expect("synced");
    let picker = Picker::new(discovery.clone(), PickerOptions::default());
    let old_lease = registration.lease().unwrap();
    // The test's own probes take no time, so they run every 50 ms exactly.
    let probe = server.instant();

    server.link("instance-a").partition();
    let cut_at = Instant::now();
    let mut lease_ended = None;
    let mut routed_to_a_after_end = Vec::new();
    let mut seen_lost = false;
    while cut_at.elapsed() < TTL * 3 {
        sleep(Duration::from_millis(50)).await;
        if lease_ended.is_none() && probe.lease_time_to_live(old_lease).await.is_err() {
            lease_ended = Some(Instant::now());
        }
        if registration.state() == RegistrationState::LeaseLost
            || matches!(
                registration.state(),
                RegistrationState::ReRegistering { .. }
            )
        {
            seen_lost = true;
        }
        let pick = picker.pick().unwrap();
        if let Some(ended) = lease_ended {
            if pick.id == "a" && ended.elapsed() > BOUND {
                routed_to_a_after_end.push(ended.elapsed());
            }
        }
    }
    let ended = lease_ended.expect("the lease expired on the server during the partition");
    // A keep-alive already on its way when the link was cut still renews the lease, up to a
    // request leg later; the probe sees the end at its next 50 ms.
    assert!(ended - cut_at <= TTL + Duration::from_millis(50));
    assert!(
        routed_to_a_after_end.is_empty(),
        "{routed_to_a_after_end:?}"
    );
    assert!(discovery.get("a").is_none());
    assert!(seen_lost, "the instance saw its lease lost");

    server.link("instance-a").heal();
    sleep(Duration::from_secs(3)).await;
    let RegistrationState::Registered { lease, .. } = registration.state() else {
        panic!("not re-registered: {:?}", registration.state());
    };
    assert_ne!(lease, old_lease, "a new lease, never the dead one");
    assert!(discovery.get("a").is_some(), "the gateway sees it again");
    assert!(server.get(b"services/hello/a").await.unwrap().kv.is_some());
}

/// A gateway cut off while the instances are fine keeps its last view, flagged stale, and is
/// synced again after healing, with what changed meanwhile.
#[tokio::test(start_paused = true)]
async fn a_partitioned_gateway_keeps_its_last_view_flagged_stale() {
    let server = MemoryRegistry::new();
    let _a = Registration::start(
        Arc::new(server.client("instance-a")),
        ServiceInstance::new("hello", "a", "10.0.0.1:80"),
        RegistrationOptions::default().ttl(Duration::from_secs(3)),
    )
    .await
    .unwrap();
    let discovery = Discovery::start(
        Arc::new(server.client("gateway")),
        "hello",
        DiscoveryOptions::default().backoff(Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(1),
        )),
    )
    .unwrap();
    discovery
        .wait_synced(Duration::from_secs(5))
        .await
        .expect("synced");
    assert!(discovery.is_synced());

    server.link("gateway").partition();
    let b = Registration::start(
        Arc::new(server.client("instance-b")),
        ServiceInstance::new("hello", "b", "10.0.0.2:80"),
        RegistrationOptions::default().ttl(Duration::from_secs(3)),
    )
    .await
    .unwrap();
    sleep(Duration::from_secs(20)).await;
    assert!(!discovery.is_synced(), "flagged stale while cut off");
    let held: Vec<String> = discovery.snapshot().iter().map(|i| i.id.clone()).collect();
    assert_eq!(held, vec!["a"], "the last view, not an empty one");

    server.link("gateway").heal();
    discovery
        .wait_synced(Duration::from_secs(5))
        .await
        .expect("synced again after healing");
    let now: Vec<String> = discovery.snapshot().iter().map(|i| i.id.clone()).collect();
    assert_eq!(now, vec!["a", "b"]);
    drop(b);
}
