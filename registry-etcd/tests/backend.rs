//! Every operation of the etcd backend against a real etcd: one server shared by the whole
//! binary, one namespace per test.
//!
//! Tests run in parallel on one server, so the store revision moves under each test's feet:
//! revisions are compared with what etcd returned for the same keys, never counted. The exact
//! revision accounting is checked on a private server in `faults.rs`.

mod common;

use common::{next_batch, registry, stays_quiet};
use futures::future::join_all;
use registry_api::limits::{DEFAULT_MAX_VALUE_BYTES, DEFAULT_MIN_LEASE_TTL, MAX_LEASE_TTL};
use registry_api::{
    Error, EventKind, InvalidArgument, LeaseId, ListOptions, PutOptions, Registry, Revision,
    WatchOptions,
};
use std::time::Duration;

#[tokio::test]
async fn put_get_list_delete_carry_etcd_revisions() {
    let r = registry("crud").await;
    let first = r.put(b"svc/a", b"1", PutOptions::default()).await.unwrap();
    let second = r
        .put(b"svc/a", b"2", PutOptions::default().prev_kv())
        .await
        .unwrap();
    assert!(second.revision > first.revision);
    let prev = second.prev_kv.expect("prev_kv asked for");
    assert_eq!((&prev.key[..], &prev.value[..]), (&b"svc/a"[..], &b"1"[..]));
    assert_eq!(prev.mod_revision, first.revision);

    let got = r.get(b"svc/a").await.unwrap();
    let kv = got.kv.expect("key exists");
    assert_eq!(&kv.key[..], b"svc/a");
    assert_eq!(&kv.value[..], b"2");
    assert_eq!(kv.create_revision, first.revision);
    assert_eq!(kv.mod_revision, second.revision);
    assert_eq!(kv.version, 2);
    assert_eq!(kv.lease, None);
    assert!(got.revision >= second.revision);
    assert!(r.get(b"svc/missing").await.unwrap().kv.is_none());

    let third = r.put(b"svc/b", b"3", PutOptions::default()).await.unwrap();
    r.put(b"other", b"x", PutOptions::default()).await.unwrap();
    let list = r.list(b"svc/", ListOptions::default()).await.unwrap();
    let keys: Vec<&[u8]> = list.kvs.iter().map(|kv| &kv.key[..]).collect();
    assert_eq!(keys, vec![&b"svc/a"[..], &b"svc/b"[..]]);
    let all = r.list(b"", ListOptions::default()).await.unwrap();
    assert_eq!(all.kvs.len(), 3);

    // A read at a past revision sees the past.
    let past = r
        .list(b"svc/", ListOptions::at(first.revision))
        .await
        .unwrap();
    assert_eq!(past.kvs.len(), 1);
    assert_eq!(&past.kvs[0].value[..], b"1");

    let deleted = r.delete(b"svc/a").await.unwrap();
    assert_eq!(deleted.deleted, 1);
    assert!(deleted.revision > third.revision);
    assert_eq!(deleted.prev_kvs.len(), 1);
    assert_eq!(&deleted.prev_kvs[0].value[..], b"2");

    let nothing = r.delete(b"svc/a").await.unwrap();
    assert_eq!(nothing.deleted, 0);
    assert!(nothing.prev_kvs.is_empty());
    let nothing = r.delete_prefix(b"nope/").await.unwrap();
    assert_eq!(nothing.deleted, 0);

    r.put(b"svc/c", b"4", PutOptions::default()).await.unwrap();
    let prefix = r.delete_prefix(b"svc/").await.unwrap();
    assert_eq!(prefix.deleted, 2);
    let keys: Vec<&[u8]> = prefix.prev_kvs.iter().map(|kv| &kv.key[..]).collect();
    assert_eq!(keys, vec![&b"svc/b"[..], &b"svc/c"[..]]);
    assert!(r
        .list(b"svc/", ListOptions::default())
        .await
        .unwrap()
        .kvs
        .is_empty());
}

#[tokio::test]
async fn a_lease_lives_renews_and_takes_its_keys_with_it() {
    let r = registry("lease-life").await;
    let lease = r.lease_grant(1, None).await.unwrap();
    assert!(
        lease.ttl >= 2,
        "etcd raises TTLs to its minimum: {}",
        lease.ttl
    );
    assert!(r.leases().await.unwrap().contains(&lease.id));

    let put = r
        .put(b"svc/x", b"1", PutOptions::with_lease(lease.id))
        .await
        .unwrap();
    assert_eq!(
        r.get(b"svc/x").await.unwrap().kv.unwrap().lease,
        Some(lease.id)
    );
    let ttl = r.lease_time_to_live(lease.id).await.unwrap();
    assert_eq!(ttl.id, lease.id);
    assert_eq!(ttl.granted_ttl, lease.ttl);
    assert!(ttl.ttl <= lease.ttl && ttl.ttl >= 0, "{ttl:?}");
    assert_eq!(ttl.keys, vec![b"svc/x".to_vec()]);

    assert_eq!(r.lease_keep_alive(lease.id).await.unwrap(), lease.ttl);

    let mut watch = r
        .watch(b"svc/", WatchOptions::from_revision(put.revision.next()))
        .await
        .unwrap();
    let revoked_at = r.lease_revoke(lease.id).await.unwrap();
    assert!(revoked_at > put.revision);
    assert!(r.get(b"svc/x").await.unwrap().kv.is_none());
    assert!(!r.leases().await.unwrap().contains(&lease.id));
    // The revoke's revision is the one its delete happened at.
    let batch = next_batch(&mut watch).await;
    assert_eq!(batch.revision, revoked_at);
    assert_eq!(batch.events[0].kind, EventKind::Delete);
}

#[tokio::test]
async fn a_gone_lease_is_lease_not_found_everywhere() {
    let r = registry("lease-gone").await;
    let lease = r.lease_grant(10, None).await.unwrap();
    r.lease_revoke(lease.id).await.unwrap();
    let id = lease.id;

    assert!(matches!(r.lease_keep_alive(id).await, Err(Error::LeaseNotFound(x)) if x == id));
    assert!(matches!(r.lease_time_to_live(id).await, Err(Error::LeaseNotFound(x)) if x == id));
    assert!(matches!(r.lease_revoke(id).await, Err(Error::LeaseNotFound(x)) if x == id));
    assert!(matches!(
        r.put(b"k", b"v", PutOptions::with_lease(id)).await,
        Err(Error::LeaseNotFound(x)) if x == id
    ));
    // Nothing was written.
    assert!(r.get(b"k").await.unwrap().kv.is_none());

    // A lease that never existed, too.
    let never = LeaseId(0x7fff_0000_1234);
    assert!(matches!(r.lease_keep_alive(never).await, Err(Error::LeaseNotFound(x)) if x == never));
    assert!(matches!(
        r.lease_time_to_live(never).await,
        Err(Error::LeaseNotFound(_))
    ));
}

#[tokio::test]
async fn explicit_lease_ids_and_duplicates() {
    let r = registry("lease-ids").await;
    // Leases are server-wide: pick an id no other test uses.
    let id = LeaseId(0x5eed_0000 + i64::from(std::process::id()));
    let lease = r.lease_grant(30, Some(id)).await.unwrap();
    assert_eq!(lease.id, id);
    assert_eq!(lease.ttl, 30);
    assert!(matches!(r.lease_grant(30, Some(id)).await, Err(Error::LeaseExists(x)) if x == id));
    r.lease_revoke(id).await.unwrap();
}

#[tokio::test]
async fn bad_input_is_refused_before_anything_is_sent() {
    let r = registry("bad-input").await;
    let empty_key = |e: Error| matches!(e, Error::InvalidArgument(InvalidArgument::EmptyKey));
    assert!(empty_key(
        r.put(b"", b"v", PutOptions::default()).await.unwrap_err()
    ));
    assert!(empty_key(r.get(b"").await.unwrap_err()));
    assert!(empty_key(r.delete(b"").await.unwrap_err()));

    let big = vec![7u8; DEFAULT_MAX_VALUE_BYTES];
    assert!(matches!(
        r.put(b"k", &big, PutOptions::default()).await,
        Err(Error::TooLarge { size, limit }) if size == Some(big.len() + 1) && limit == Some(DEFAULT_MAX_VALUE_BYTES)
    ));
    assert!(r.get(b"k").await.unwrap().kv.is_none());

    assert!(matches!(
        r.lease_grant(MAX_LEASE_TTL + 1, None).await,
        Err(Error::InvalidArgument(InvalidArgument::TtlTooLarge { .. }))
    ));
    for id in [0, -1] {
        let lease = LeaseId(id);
        let bad_id =
            |e: Error| matches!(e, Error::InvalidArgument(InvalidArgument::LeaseId(x)) if x == id);
        assert!(bad_id(r.lease_keep_alive(lease).await.unwrap_err()));
        assert!(bad_id(r.lease_revoke(lease).await.unwrap_err()));
        assert!(bad_id(r.lease_time_to_live(lease).await.unwrap_err()));
        assert!(bad_id(r.lease_grant(5, Some(lease)).await.unwrap_err()));
        assert!(bad_id(
            r.put(b"k", b"v", PutOptions::with_lease(lease))
                .await
                .unwrap_err()
        ));
    }
    assert!(matches!(
        r.list(b"", ListOptions::at(Revision(0))).await,
        Err(Error::InvalidArgument(InvalidArgument::Revision(0)))
    ));
    assert!(matches!(
        r.watch(b"", WatchOptions::from_revision(Revision(-1)))
            .await,
        Err(Error::InvalidArgument(InvalidArgument::Revision(-1)))
    ));
    assert!(matches!(
        r.compact(Revision(0)).await,
        Err(Error::InvalidArgument(InvalidArgument::Revision(0)))
    ));
    assert!(r
        .list(b"", ListOptions::default())
        .await
        .unwrap()
        .kvs
        .is_empty());
}

#[tokio::test]
async fn etcd_size_limits_map_to_too_large() {
    // Lift the client-side check to see what the server itself answers.
    let endpoints = registry_etcd::testing::shared_endpoints().unwrap();
    let r = registry_etcd::EtcdRegistry::builder(endpoints)
        .key_prefix(registry_etcd::testing::unique_key_prefix("server-size"))
        .max_value_bytes(8 << 20)
        .connect()
        .await
        .unwrap();
    // Over etcd's --max-request-bytes (1.5 MiB): "etcdserver: request is too large", which
    // names no figure: our size, the server's limit unknown (not our 8 MiB).
    let over_request = vec![1u8; 1_600_000];
    let refused = r.put(b"k", &over_request, PutOptions::default()).await;
    println!("1.6 MB put: {refused:?}");
    assert!(
        matches!(
            refused,
            Err(Error::TooLarge {
                size: Some(1_600_001),
                limit: None
            })
        ),
        "{refused:?}"
    );
    // Over gRPC's message limit (--max-request-bytes plus etcd's 512 KiB of gRPC overhead:
    // 2 MiB): ResourceExhausted with both figures, the encoded message and the server's limit.
    for len in [2 << 20, 2_500_000] {
        let over_grpc = vec![1u8; len];
        let refused = r.put(b"k", &over_grpc, PutOptions::default()).await;
        println!("{len}-byte put: {refused:?}");
        match refused {
            Err(Error::TooLarge {
                size: Some(size),
                limit: Some(limit),
            }) => {
                assert!(size > len, "the message is bigger than its value: {size}");
                assert_eq!(limit, 2 << 20);
            }
            other => panic!("expected TooLarge with the server's figures, got {other:?}"),
        }
    }
    assert!(r.get(b"k").await.unwrap().kv.is_none());
    // Just under the default limit is accepted.
    let fits = vec![1u8; 1_400_000];
    r.put(b"k", &fits, PutOptions::default()).await.unwrap();
}

#[tokio::test]
async fn future_revisions_are_reported_with_the_current_one() {
    let r = registry("future").await;
    let now = r
        .put(b"k", b"v", PutOptions::default())
        .await
        .unwrap()
        .revision;
    let ahead = Revision(now.0 + 1_000_000);
    match r.list(b"", ListOptions::at(ahead)).await {
        Err(Error::FutureRevision { requested, current }) => {
            assert_eq!(requested, ahead);
            assert!(current >= now && current < ahead, "current {current}");
        }
        other => panic!("expected FutureRevision, got {other:?}"),
    }
}

#[tokio::test]
async fn namespaces_isolate_registries_on_one_server() {
    let a = registry("ns-a").await;
    let b = registry("ns-b").await;
    assert_ne!(a.key_prefix(), b.key_prefix());
    let mut watch_b = b.watch(b"", WatchOptions::default()).await.unwrap();

    let lease = a.lease_grant(30, None).await.unwrap();
    a.put(b"svc/one", b"a", PutOptions::with_lease(lease.id))
        .await
        .unwrap();
    let b_put = b
        .put(b"svc/one", b"b", PutOptions::with_lease(lease.id))
        .await
        .unwrap();

    assert_eq!(
        &a.get(b"svc/one").await.unwrap().kv.unwrap().value[..],
        b"a"
    );
    assert_eq!(
        &b.get(b"svc/one").await.unwrap().kv.unwrap().value[..],
        b"b"
    );
    let a_all = a.list(b"", ListOptions::default()).await.unwrap();
    assert_eq!(a_all.kvs.len(), 1);
    assert_eq!(&a_all.kvs[0].key[..], b"svc/one");
    // A shared lease shows each registry only its own keys, without the prefix.
    assert_eq!(
        a.lease_time_to_live(lease.id).await.unwrap().keys,
        vec![b"svc/one".to_vec()]
    );

    // b's watch sees b's put only, with b's key as b wrote it.
    let batch = next_batch(&mut watch_b).await;
    assert_eq!(batch.revision, b_put.revision);
    assert_eq!(batch.events.len(), 1);
    assert_eq!(&batch.events[0].kv.key[..], b"svc/one");
    assert_eq!(&batch.events[0].kv.value[..], b"b");

    let gone = a.delete_prefix(b"").await.unwrap();
    assert_eq!(gone.deleted, 1);
    assert_eq!(&gone.prev_kvs[0].key[..], b"svc/one");
    assert!(b.get(b"svc/one").await.unwrap().kv.is_some());
    assert!(stays_quiet(&mut watch_b, Duration::from_millis(300)).await);
    a.lease_revoke(lease.id).await.unwrap();
}

#[tokio::test]
async fn watch_delivers_puts_deletes_and_previous_values() {
    let r = registry("watch-basic").await;
    let mut watch = r
        .watch(b"svc/", WatchOptions::default().with_prev_kv())
        .await
        .unwrap();
    let p1 = r.put(b"svc/a", b"1", PutOptions::default()).await.unwrap();
    r.put(b"elsewhere", b"x", PutOptions::default())
        .await
        .unwrap();
    let p2 = r.put(b"svc/a", b"2", PutOptions::default()).await.unwrap();
    let d = r.delete(b"svc/a").await.unwrap();

    let b1 = next_batch(&mut watch).await;
    assert_eq!(b1.revision, p1.revision);
    assert_eq!(b1.events[0].kind, EventKind::Put);
    assert!(b1.events[0].is_create());
    assert!(b1.events[0].prev_kv.is_none());

    let b2 = next_batch(&mut watch).await;
    assert_eq!(b2.revision, p2.revision);
    assert!(!b2.events[0].is_create());
    assert_eq!(&b2.events[0].prev_kv.as_ref().unwrap().value[..], b"1");

    let b3 = next_batch(&mut watch).await;
    assert_eq!(b3.revision, d.revision);
    let event = &b3.events[0];
    assert_eq!(event.kind, EventKind::Delete);
    assert_eq!(&event.kv.key[..], b"svc/a");
    assert_eq!(event.kv.mod_revision, d.revision);
    assert_eq!(
        (event.kv.create_revision, event.kv.version, event.kv.lease),
        (Revision(0), 0, None)
    );
    assert_eq!(&event.prev_kv.as_ref().unwrap().value[..], b"2");
    assert!(stays_quiet(&mut watch, Duration::from_millis(200)).await);
}

#[tokio::test]
async fn a_revoke_of_three_keys_is_one_batch_in_key_order() {
    let r = registry("watch-revoke").await;
    let lease = r.lease_grant(30, None).await.unwrap();
    for key in [&b"svc/c"[..], b"svc/a", b"svc/b"] {
        r.put(key, b"v", PutOptions::with_lease(lease.id))
            .await
            .unwrap();
    }
    let mut watch = r.watch(b"svc/", WatchOptions::default()).await.unwrap();
    let revoked_at = r.lease_revoke(lease.id).await.unwrap();
    let batch = next_batch(&mut watch).await;
    assert_eq!(batch.revision, revoked_at);
    let keys: Vec<&[u8]> = batch.events.iter().map(|e| &e.kv.key[..]).collect();
    assert_eq!(keys, vec![&b"svc/a"[..], b"svc/b", b"svc/c"]);
    assert!(batch
        .events
        .iter()
        .all(|e| e.kind == EventKind::Delete && e.kv.mod_revision == revoked_at));
    assert!(stays_quiet(&mut watch, Duration::from_millis(200)).await);
}

#[tokio::test]
async fn a_watch_from_the_past_gets_one_batch_per_revision() {
    let r = registry("watch-past").await;
    let mut revisions = Vec::new();
    for i in 0..5 {
        let key = format!("svc/{i}");
        revisions.push(
            r.put(key.as_bytes(), b"v", PutOptions::default())
                .await
                .unwrap()
                .revision,
        );
    }
    let lease = r.lease_grant(30, None).await.unwrap();
    r.put(b"svc/x", b"1", PutOptions::with_lease(lease.id))
        .await
        .unwrap();
    r.put(b"svc/y", b"1", PutOptions::with_lease(lease.id))
        .await
        .unwrap();
    let revoked_at = r.lease_revoke(lease.id).await.unwrap();

    // etcd replays the whole backlog in one response; the stream cuts it per revision.
    let mut watch = r
        .watch(b"svc/", WatchOptions::from_revision(revisions[2]))
        .await
        .unwrap();
    for (i, revision) in revisions[2..].iter().enumerate() {
        let batch = next_batch(&mut watch).await;
        assert_eq!(batch.revision, *revision);
        assert_eq!(batch.events.len(), 1);
        assert_eq!(
            batch.events[0].kv.key,
            format!("svc/{}", i + 2).into_bytes()
        );
    }
    next_batch(&mut watch).await; // svc/x
    next_batch(&mut watch).await; // svc/y
    let revoke = next_batch(&mut watch).await;
    assert_eq!(revoke.revision, revoked_at);
    assert_eq!(revoke.events.len(), 2);
    assert!(stays_quiet(&mut watch, Duration::from_millis(200)).await);
}

#[tokio::test]
async fn two_hundred_leases_share_few_keep_alive_streams() {
    let r = registry("keepalive-many").await;
    let grants = join_all((0..200).map(|_| r.lease_grant(20, None))).await;
    let leases: Vec<_> = grants.into_iter().map(|g| g.unwrap()).collect();
    let before = r.keep_alive_streams_opened();

    for _ in 0..2 {
        let replies = join_all(leases.iter().map(|l| r.lease_keep_alive(l.id))).await;
        for (lease, reply) in leases.iter().zip(replies) {
            assert_eq!(reply.unwrap(), lease.ttl);
        }
    }
    let opened = r.keep_alive_streams_opened() - before;
    assert!(
        (1..=2).contains(&opened),
        "opened {opened} streams for 400 keep-alives"
    );

    // A gone lease answers on the open stream (ttl 0) without breaking it for the others.
    r.lease_revoke(leases[0].id).await.unwrap();
    assert!(
        matches!(r.lease_keep_alive(leases[0].id).await, Err(Error::LeaseNotFound(x)) if x == leases[0].id)
    );
    assert_eq!(
        r.lease_keep_alive(leases[1].id).await.unwrap(),
        leases[1].ttl
    );
    assert_eq!(r.keep_alive_streams_opened() - before, opened);

    // Clones share the stream.
    let clone = r.clone();
    assert_eq!(
        clone.lease_keep_alive(leases[2].id).await.unwrap(),
        leases[2].ttl
    );
    assert_eq!(clone.keep_alive_streams_opened() - before, opened);

    join_all(leases[1..].iter().map(|l| r.lease_revoke(l.id))).await;
}

#[tokio::test]
async fn lists_and_catch_ups_above_grpc_default_message_size_work() {
    let r = registry("big-list").await;
    let value = vec![b'x'; 1_400_000];
    let mut first = None;
    for i in 0..4 {
        let put = r
            .put(format!("big/{i}").as_bytes(), &value, PutOptions::default())
            .await
            .unwrap();
        first.get_or_insert(put.revision);
    }
    // 5.6 MB in one response: above gRPC's default 4 MiB decoding limit.
    let list = r.list(b"big/", ListOptions::default()).await.unwrap();
    assert_eq!(list.kvs.len(), 4);
    assert!(list.kvs.iter().all(|kv| kv.value.len() == value.len()));
    let mut watch = r
        .watch(b"big/", WatchOptions::from_revision(first.unwrap()))
        .await
        .unwrap();
    for i in 0..4 {
        let batch = next_batch(&mut watch).await;
        assert_eq!(batch.events[0].kv.key, format!("big/{i}").into_bytes());
    }
    r.delete_prefix(b"big/").await.unwrap();
}

#[tokio::test]
async fn a_progress_request_is_answered_at_the_current_revision() {
    let r = registry("progress-request").await;
    let mut watch = r.watch(b"quiet/", WatchOptions::default()).await.unwrap();
    assert!(watch.supports_progress_requests());
    assert!(stays_quiet(&mut watch, Duration::from_millis(200)).await);
    for round in 0..2 {
        // The second round first writes outside the prefix: the answer must cover it.
        let before = if round == 0 {
            r.get(b"quiet/none").await.unwrap().revision
        } else {
            r.put(b"elsewhere/k", b"v", PutOptions::default())
                .await
                .unwrap()
                .revision
        };
        let asked = std::time::Instant::now();
        watch.request_progress().await.unwrap();
        let answer = match common::next_item(&mut watch, Duration::from_secs(1)).await {
            Some(Ok(batch)) => batch,
            other => panic!("expected a progress answer, got {other:?}"),
        };
        println!("progress answer {round} in {:?}", asked.elapsed());
        let after = r.get(b"quiet/none").await.unwrap().revision;
        assert!(answer.is_progress(), "{answer:?}");
        assert!(
            before <= answer.revision && answer.revision <= after,
            "answer at {} outside [{before}, {after}]",
            answer.revision
        );
    }
    // Events still come after the answers, above them.
    let put = r
        .put(b"quiet/k", b"v", PutOptions::default())
        .await
        .unwrap();
    let batch = next_batch(&mut watch).await;
    assert_eq!(batch.revision, put.revision);
    assert_eq!(batch.events.len(), 1);
}

#[tokio::test]
async fn ttls_of_zero_and_below_reach_etcd_and_are_granted_its_minimum() {
    let r = registry("ttl-minimum").await;
    for ttl in [0, -5, 1, i64::MIN] {
        let grant = r.lease_grant(ttl, None).await.unwrap();
        let left = r.lease_time_to_live(grant.id).await.unwrap();
        println!(
            "etcd grants TTL {ttl} as {} (time-to-live {} of {})",
            grant.ttl, left.ttl, left.granted_ttl
        );
        assert_eq!(grant.ttl, DEFAULT_MIN_LEASE_TTL, "granted for {ttl}");
        assert_eq!(left.granted_ttl, DEFAULT_MIN_LEASE_TTL);
        assert!((0..=DEFAULT_MIN_LEASE_TTL).contains(&left.ttl), "{left:?}");
        r.lease_revoke(grant.id).await.unwrap();
    }
}
