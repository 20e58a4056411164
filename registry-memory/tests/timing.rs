//! The simulator's timing model: the orders etcd produces and only those, drawn from a seed that
//! replays them; the switch for the whole simulator and for one client; link faults on top.

use futures::StreamExt;
use registry_api::rng::Fnv64;
use registry_api::{PutOptions, Registry, Revision, WatchOptions};
use registry_memory::{Delay, Latencies, MemoryRegistry};
use registry_service::{
    Backoff, Discovery, DiscoveryEvent, DiscoveryOptions, Registration, RegistrationOptions,
    ServiceInstance,
};
use std::future::Future;
use std::hash::Hasher;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const SEEDS: u64 = 100;

/// Runs `body` on a fresh paused current-thread runtime.
fn paused<T>(body: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime")
        .block_on(body)
}

/// A simulator with etcd's measured delays, seeded.
fn timed(seed: u64) -> MemoryRegistry {
    MemoryRegistry::builder().seed(seed).journal(10_000).build()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn instance(id: &str) -> ServiceInstance {
    ServiceInstance::new("hello", id, format!("10.0.0.1:{}", 8000 + id.len()))
}

/// A small app on a timed simulator for 20 virtual seconds (three instances, one cache, one
/// instance leaving, one crashing, one coming back), hashed: the server's journal with the
/// time of each commit, and every event the cache saw with the time it saw it.
async fn app_log_hash(seed: u64) -> (u64, usize) {
    let server = timed(seed);
    let start = Instant::now();
    let options = |n: u64| {
        RegistrationOptions::default()
            .ttl(Duration::from_secs(3))
            .backoff(Backoff::new(ms(100), Duration::from_secs(1)))
            .seed(n)
    };
    let cache = Discovery::start(
        Arc::new(server.client("gateway")),
        "hello",
        DiscoveryOptions::default().seed(5),
    )
    .expect("a discovery");
    let mut events = cache.subscribe();
    let mut registrations = Vec::new();
    for (n, id) in ["a", "b", "c"].into_iter().enumerate() {
        let client = Arc::new(server.client(&format!("instance-{id}")));
        let started = Registration::start(client, instance(id), options(n as u64)).await;
        registrations.push(started.expect("registered"));
    }
    let mut log = Vec::new();
    let record = |log: &mut Vec<String>, events: &mut registry_service::DiscoveryEvents| {
        while let Some(event) = events.try_recv() {
            let id = match &event {
                DiscoveryEvent::Added(i) => format!("+{}", i.id),
                DiscoveryEvent::Updated { new, .. } => format!("~{}", new.id),
                DiscoveryEvent::Removed(i) => format!("-{}", i.id),
            };
            log.push(format!("{:?} cache {id}", start.elapsed()));
        }
    };
    for step in 0..200 {
        tokio::time::sleep(ms(100)).await;
        record(&mut log, &mut events);
        match step {
            10 => registrations
                .remove(0)
                .deregister()
                .await
                .expect("deregistered"),
            30 => registrations.remove(0).abandon(),
            120 => {
                let client = Arc::new(server.client("instance-d"));
                let started = Registration::start(client, instance("d"), options(9)).await;
                registrations.push(started.expect("registered"));
            }
            _ => {}
        }
    }
    for commit in server.journal_after(Revision(0)).expect("kept") {
        for event in &commit.batch.events {
            log.push(format!(
                "{:?} server {} {:?} {}",
                commit.at,
                commit.batch.revision,
                event.kind,
                event.kv.key_str()
            ));
        }
    }
    let mut hash = Fnv64::default();
    for line in &log {
        hash.write(line.as_bytes());
    }
    (hash.finish(), log.len())
}

#[test]
fn the_same_seed_gives_the_same_run_and_the_next_seed_another() {
    let (first, entries) = paused(app_log_hash(41));
    let (again, _) = paused(app_log_hash(41));
    let (next, _) = paused(app_log_hash(42));
    assert!(entries >= 12, "{entries} entries");
    assert_eq!(first, again, "seed 41 twice");
    assert_ne!(first, next, "seed 42 runs otherwise");
    println!("seed 41: {entries} entries, hash {first:016x} twice; seed 42: {next:016x}");
}

/// Both orders of a write's reply and its watch event, each at some seed.
#[test]
fn a_reply_comes_before_or_after_the_watch_event_of_its_own_write() {
    let mut event_first = None;
    let mut reply_first = None;
    for seed in 0..SEEDS {
        let event_came_first = paused(async {
            let server = timed(seed);
            let writer = server.client("writer");
            let mut watch = server
                .client("watcher")
                .watch(b"k", WatchOptions::default())
                .await
                .expect("a watch");
            let put = writer.put(b"k", b"v", PutOptions::default());
            tokio::pin!(put);
            tokio::select! {
                biased;
                _ = &mut put => false,
                batch = watch.next() => {
                    assert!(batch.is_some());
                    true
                }
            }
        });
        let slot = if event_came_first {
            &mut event_first
        } else {
            &mut reply_first
        };
        slot.get_or_insert(seed);
    }
    println!("the event first at seed {event_first:?}; the reply first at seed {reply_first:?}");
    assert!(event_first.is_some() && reply_first.is_some());
}

/// A watch opened with no start revision starts where the server is when its request arrives:
/// a put made after the watch call but applied first is not in it, and a put made later is,
/// though the watch's `created` answer may come after that put returned.
#[test]
fn a_watch_is_established_after_later_calls_and_sees_only_what_follows() {
    let mut created_after_a_later_put = None;
    for seed in 0..SEEDS {
        let (later_put_returned_first, revisions) = paused(async {
            let server = timed(seed);
            let watcher = server.client("watcher");
            let writer = server.client("writer");
            let opening = tokio::spawn(async move {
                let watch = watcher.watch(b"k", WatchOptions::default()).await;
                (watch, Instant::now())
            });
            tokio::task::yield_now().await;
            let put = writer.put(b"k", b"1", PutOptions::default()).await;
            let put_returned = Instant::now();
            let (watch, created) = opening.await.expect("the task");
            let mut watch = watch.expect("a watch");
            writer
                .put(b"k", b"2", PutOptions::default())
                .await
                .expect("put");
            let mut revisions = Vec::new();
            while let Ok(Some(Ok(batch))) = tokio::time::timeout(ms(50), watch.next()).await {
                revisions.push((batch.revision, put.as_ref().map(|p| p.revision).ok()));
            }
            (put_returned < created, revisions)
        });
        // The watch holds the second put; the first only if it came after the watch.
        let last = revisions.last().expect("the second put").0;
        assert_eq!(last, Revision(3), "seed {seed}: {revisions:?}");
        assert!(revisions.windows(2).all(|w| w[0].0 < w[1].0));
        if later_put_returned_first {
            created_after_a_later_put.get_or_insert(seed);
        }
    }
    println!("a watch answered `created` after a later put returned, first at seed {created_after_a_later_put:?}");
    assert!(created_after_a_later_put.is_some());
}

/// Concurrent calls complete in either order from seed to seed; calls awaited one after another
/// on one client stay in order; a call that returned is seen by every later call; one watch's
/// events come in revision order.
#[test]
fn only_the_orders_etcd_allows() {
    let mut orders = std::collections::BTreeSet::new();
    for seed in 0..SEEDS {
        paused(async {
            let server = timed(seed);
            let (a, b) = (server.client("a"), server.client("b"));
            let mut watch = server
                .client("w")
                .watch(b"k/", WatchOptions::default())
                .await
                .expect("a watch");
            let (ra, rb) = tokio::join!(
                a.put(b"k/a", b"1", PutOptions::default()),
                b.put(b"k/b", b"1", PutOptions::default())
            );
            let (ra, rb) = (ra.expect("a").revision, rb.expect("b").revision);
            orders.insert(ra < rb);
            // Awaited one after another: in order, and each visible to the next call anywhere.
            let mut last = ra.max(rb);
            for n in 0..5u8 {
                let put = a
                    .put(b"k/a", &[n], PutOptions::default())
                    .await
                    .expect("put");
                assert!(put.revision > last, "seed {seed}");
                last = put.revision;
                let read = b.get(b"k/a").await.expect("get").kv.expect("there");
                assert_eq!(
                    read.value.as_ref(),
                    &[n],
                    "seed {seed}: a returned put unseen"
                );
            }
            let mut seen = Vec::new();
            while seen.len() < 7 {
                seen.push(watch.next().await.expect("open").expect("a batch").revision);
            }
            assert!(
                seen.windows(2).all(|w| w[0] < w[1]),
                "seed {seed}: {seen:?}"
            );
        });
    }
    assert_eq!(orders.len(), 2, "both orders of two concurrent puts");
}

/// The race the service suite's `revoked_lease_is_replaced_with_the_latest_metadata` met on
/// etcd: a cache shows the re-registration's put before the registration has the put's answer.
/// Some seed within a hundred shows it; the registration has its new lease a round trip later.
#[test]
fn a_cache_can_show_a_re_registration_before_the_registration_knows_its_new_lease() {
    let mut witness = None;
    for seed in 0..SEEDS {
        let (old, new_at_event, new) = paused(async {
            let server = timed(seed);
            let cache = Discovery::start(
                Arc::new(server.client("cache")),
                "hello",
                DiscoveryOptions::default().seed(1),
            )
            .expect("a discovery");
            cache
                .wait_synced(Duration::from_secs(5))
                .await
                .expect("synced");
            let registration = Registration::start(
                Arc::new(server.client("app")),
                instance("a"),
                RegistrationOptions::default()
                    .ttl(Duration::from_secs(6))
                    .backoff(Backoff::new(ms(100), Duration::from_secs(1)))
                    .seed(7),
            )
            .await
            .expect("registered");
            let mut events = cache.subscribe();
            assert!(matches!(
                events.recv().await,
                Some(DiscoveryEvent::Added(_))
            ));
            let old = registration.lease().expect("a lease");
            server
                .client("operator")
                .lease_revoke(old)
                .await
                .expect("revoked");
            assert!(matches!(
                events.recv().await,
                Some(DiscoveryEvent::Removed(_))
            ));
            assert!(matches!(
                events.recv().await,
                Some(DiscoveryEvent::Added(_))
            ));
            let at_event = registration.lease();
            let new = registration
                .wait_registered(Duration::from_secs(1))
                .await
                .expect("registered again");
            (old, at_event, new)
        });
        assert_ne!(new, old, "seed {seed}");
        if new_at_event != Some(new) {
            witness.get_or_insert(seed);
        }
    }
    println!("the cache showed the new put before the registration had its answer, first at seed {witness:?}");
    assert!(witness.is_some());
}

#[test]
fn instant_handles_and_clients_take_no_time_and_timed_ones_do() {
    paused(async {
        let server = MemoryRegistry::builder()
            .timing(Latencies::fixed(ms(5)))
            .build();
        let started = Instant::now();
        server
            .put(b"k", b"v", PutOptions::default())
            .await
            .expect("put");
        assert_eq!(
            started.elapsed(),
            ms(10),
            "the request leg, then the reply leg"
        );
        server.instant().get(b"k").await.expect("get");
        assert_eq!(started.elapsed(), ms(10), "an instant handle");
        server.set_client_timing("quick", Some(Latencies::instant()));
        server.client("quick").get(b"k").await.expect("get");
        assert_eq!(started.elapsed(), ms(10), "a client made instant");
        let keep_alive_only = Latencies {
            keep_alive: Delay::Fixed(ms(1)),
            ..Latencies::instant()
        };
        server.set_timing(keep_alive_only);
        let lease = server.lease_grant(5, None).await.expect("grant").id;
        assert_eq!(started.elapsed(), ms(10), "a grant is no keep-alive");
        server.lease_keep_alive(lease).await.expect("renewed");
        assert_eq!(started.elapsed(), ms(12), "a keep-alive's two legs");
        server.set_timing(Latencies::instant());
        server.client("other").get(b"k").await.expect("get");
        assert_eq!(started.elapsed(), ms(12), "the whole simulator instant");
        assert!(MemoryRegistry::with_manual_clock().timing().is_instant());
    });
}

/// Link faults work on top of the timing: a partition while a put's reply is on its way loses
/// the reply, though the server applied the put; a held link holds the request before its leg.
#[test]
fn link_faults_on_top_of_the_timing() {
    paused(async {
        let server = MemoryRegistry::builder()
            .timing(Latencies::fixed(ms(10)))
            .build();
        let client = Arc::new(server.client("app"));
        let putting = tokio::spawn({
            let client = client.clone();
            async move { client.put(b"k", b"v", PutOptions::default()).await }
        });
        tokio::time::sleep(ms(15)).await;
        assert!(
            server.instant().get(b"k").await.expect("get").kv.is_some(),
            "applied at 10 ms"
        );
        server.link("app").partition();
        let answer = putting.await.expect("the task");
        assert!(
            matches!(answer, Err(registry_api::Error::Unavailable { .. })),
            "{answer:?}"
        );
        server.link("app").heal();

        server.link("app").hold();
        let started = Instant::now();
        let getting = tokio::spawn(async move { client.get(b"k").await });
        tokio::time::sleep(ms(100)).await;
        server.link("app").release();
        getting.await.expect("the task").expect("get");
        assert_eq!(
            started.elapsed(),
            ms(120),
            "held 100 ms, then two legs of 10"
        );
    });
}
