//! Revision accounting, keys, reads at past revisions, compaction and input checks.

use futures::{FutureExt, StreamExt};
use registry_api::{
    limits, Error, EventKind, InvalidArgument, LeaseId, ListOptions, PutOptions, Registry,
    Revision, WatchOptions,
};
use registry_memory::MemoryRegistry;

fn registry() -> MemoryRegistry {
    MemoryRegistry::with_manual_clock()
}

async fn keys(registry: &MemoryRegistry, prefix: &[u8]) -> Vec<Vec<u8>> {
    let list = registry.list(prefix, ListOptions::default()).await.unwrap();
    list.kvs.into_iter().map(|kv| kv.key.to_vec()).collect()
}

#[tokio::test]
async fn a_fresh_store_is_at_revision_1_and_its_first_write_at_2() {
    let r = registry();
    assert_eq!(r.current_revision(), Revision(1));
    assert_eq!(r.compact_revision(), Revision(0));
    let put = r.put(b"a", b"1", PutOptions::default()).await.unwrap();
    assert_eq!(put.revision, Revision(2));
    let got = r.get(b"a").await.unwrap();
    assert_eq!(got.revision, Revision(2));
    let kv = got.kv.unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version, kv.lease),
        (Revision(2), Revision(2), 1, None)
    );
}

#[tokio::test]
async fn every_put_bumps_the_revision_even_with_the_same_value() {
    let r = registry();
    for expected in 2..=5 {
        let put = r
            .put(b"k", b"same", PutOptions::default().prev_kv())
            .await
            .unwrap();
        assert_eq!(put.revision, Revision(expected));
        assert_eq!(put.prev_kv.is_some(), expected > 2);
    }
    let kv = r.get(b"k").await.unwrap().kv.unwrap();
    assert_eq!(kv.version, 4);
    assert_eq!(kv.create_revision, Revision(2));
    assert_eq!(kv.mod_revision, Revision(5));
    let prev = r
        .put(b"k", b"new", PutOptions::default().prev_kv())
        .await
        .unwrap()
        .prev_kv
        .unwrap();
    assert_eq!(
        (&prev.value[..], prev.mod_revision),
        (&b"same"[..], Revision(5))
    );
}

#[tokio::test]
async fn deleting_nothing_uses_no_revision() {
    let r = registry();
    r.put(b"svc/a", b"1", PutOptions::default()).await.unwrap();
    let missing = r.delete(b"nope").await.unwrap();
    assert_eq!((missing.deleted, missing.revision), (0, Revision(2)));
    let empty = r.delete_prefix(b"other/").await.unwrap();
    assert_eq!((empty.deleted, empty.revision), (0, Revision(2)));
    assert!(empty.prev_kvs.is_empty());
    assert_eq!(r.current_revision(), Revision(2));
}

#[tokio::test]
async fn a_prefix_delete_takes_one_revision_with_events_in_key_order() {
    let r = registry();
    for key in [&b"svc/c"[..], b"svc/a", b"svc/b", b"svd"] {
        r.put(key, b"v", PutOptions::default()).await.unwrap();
    }
    let mut watch = r.watch(b"", WatchOptions::default()).await.unwrap();
    let deleted = r.delete_prefix(b"svc/").await.unwrap();
    assert_eq!((deleted.deleted, deleted.revision), (3, Revision(6)));
    let prev: Vec<_> = deleted.prev_kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(
        prev,
        vec![b"svc/a".to_vec(), b"svc/b".to_vec(), b"svc/c".to_vec()]
    );
    let batch = watch.next().await.unwrap().unwrap();
    assert_eq!(batch.revision, Revision(6));
    let events: Vec<_> = batch.events.iter().map(|e| e.kv.key.clone()).collect();
    assert_eq!(events, prev);
    for event in &batch.events {
        assert_eq!(event.kind, EventKind::Delete);
        assert_eq!(event.kv.mod_revision, Revision(6));
        assert_eq!(
            (event.kv.create_revision, event.kv.version, event.kv.lease),
            (Revision(0), 0, None)
        );
        assert!(event.kv.value.is_empty());
    }
    assert_eq!(keys(&r, b"").await, vec![b"svd".to_vec()]);
}

#[tokio::test]
async fn lease_operations_without_keys_use_no_revision() {
    let r = registry();
    let lease = r.lease_grant(10, None).await.unwrap();
    r.lease_keep_alive(lease.id).await.unwrap();
    r.lease_time_to_live(lease.id).await.unwrap();
    assert_eq!(r.lease_revoke(lease.id).await.unwrap(), Revision(1));
    assert_eq!(r.current_revision(), Revision(1));
}

#[tokio::test]
async fn revoking_a_lease_deletes_its_keys_in_one_revision() {
    let r = registry();
    let lease = r.lease_grant(10, None).await.unwrap();
    for key in [&b"s/3"[..], b"s/1", b"s/2"] {
        r.put(key, b"v", PutOptions::with_lease(lease.id))
            .await
            .unwrap();
    }
    r.put(b"s/free", b"v", PutOptions::default()).await.unwrap();
    let mut watch = r
        .watch(b"s/", WatchOptions::default().with_prev_kv())
        .await
        .unwrap();
    assert_eq!(r.lease_revoke(lease.id).await.unwrap(), Revision(6));
    let batch = watch.next().await.unwrap().unwrap();
    assert_eq!(batch.revision, Revision(6));
    let deleted: Vec<_> = batch.events.iter().map(|e| e.kv.key.clone()).collect();
    assert_eq!(
        deleted,
        vec![b"s/1".to_vec(), b"s/2".to_vec(), b"s/3".to_vec()]
    );
    assert!(batch.events.iter().all(
        |e| e.kind == EventKind::Delete && e.prev_kv.as_ref().unwrap().lease == Some(lease.id)
    ));
    assert_eq!(keys(&r, b"s/").await, vec![b"s/free".to_vec()]);
    assert!(watch.next().now_or_never().is_none(), "one batch only");
}

#[tokio::test]
async fn an_empty_prefix_lists_watches_and_deletes_everything() {
    let r = registry();
    for key in [&b"a"[..], b"b/c", b"\xff"] {
        r.put(key, b"v", PutOptions::default()).await.unwrap();
    }
    assert_eq!(keys(&r, b"").await.len(), 3);
    let mut watch = r
        .watch(b"", WatchOptions::from_revision(Revision(1)))
        .await
        .unwrap();
    for _ in 0..3 {
        watch.next().await.unwrap().unwrap();
    }
    let deleted = r.delete_prefix(b"").await.unwrap();
    assert_eq!((deleted.deleted, deleted.revision), (3, Revision(5)));
    assert!(keys(&r, b"").await.is_empty());
    assert_eq!(watch.next().await.unwrap().unwrap().events.len(), 3);
}

#[tokio::test]
async fn a_list_at_a_past_revision_reads_history() {
    let r = registry();
    r.put(b"p/a", b"1", PutOptions::default()).await.unwrap(); // 2
    r.put(b"p/b", b"1", PutOptions::default()).await.unwrap(); // 3
    r.put(b"p/a", b"2", PutOptions::default()).await.unwrap(); // 4
    r.delete(b"p/b").await.unwrap(); // 5
    r.put(b"p/c", b"1", PutOptions::default()).await.unwrap(); // 6
    r.put(b"q", b"1", PutOptions::default()).await.unwrap(); // 7

    let at = |rev| r.list(b"p/", ListOptions::at(Revision(rev)));
    let past = at(3).await.unwrap();
    assert_eq!(
        past.revision,
        Revision(7),
        "etcd answers with the current revision"
    );
    let seen: Vec<_> = past
        .kvs
        .iter()
        .map(|kv| (kv.key.to_vec(), kv.value.to_vec(), kv.version))
        .collect();
    assert_eq!(
        seen,
        vec![
            (b"p/a".to_vec(), b"1".to_vec(), 1),
            (b"p/b".to_vec(), b"1".to_vec(), 1)
        ]
    );
    let at4: Vec<_> = at(4)
        .await
        .unwrap()
        .kvs
        .into_iter()
        .map(|kv| kv.value)
        .collect();
    assert_eq!(at4, vec![b"2".to_vec(), b"1".to_vec()]);
    let at5: Vec<_> = at(5)
        .await
        .unwrap()
        .kvs
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(at5, vec![b"p/a".to_vec()]);
    assert!(at(1).await.unwrap().kvs.is_empty());
    assert_eq!(
        at(7).await.unwrap().kvs,
        r.list(b"p/", ListOptions::default()).await.unwrap().kvs
    );
}

#[tokio::test]
async fn reads_below_the_compaction_point_or_in_the_future_fail() {
    let r = registry();
    for i in 0..5 {
        r.put(b"k", format!("{i}").as_bytes(), PutOptions::default())
            .await
            .unwrap();
    }
    r.compact(Revision(4)).await.unwrap();
    assert!(matches!(
        r.list(b"", ListOptions::at(Revision(3))).await,
        Err(Error::Compacted {
            compact_revision: Revision(4)
        })
    ));
    let at_compact = r.list(b"", ListOptions::at(Revision(4))).await.unwrap();
    assert_eq!(&at_compact.kvs[0].value[..], b"2");
    assert!(matches!(
        r.list(b"", ListOptions::at(Revision(7))).await,
        Err(Error::FutureRevision {
            requested: Revision(7),
            current: Revision(6)
        })
    ));
    assert!(matches!(
        r.list(b"", ListOptions::at(Revision(0))).await,
        Err(Error::InvalidArgument(InvalidArgument::Revision(0)))
    ));
}

#[tokio::test]
async fn compaction_answers_as_etcd_does() {
    let r = registry();
    assert_eq!(
        r.compact(Revision(1)).await.unwrap(),
        Revision(1),
        "at the current revision"
    );
    for _ in 0..4 {
        r.put(b"k", b"v", PutOptions::default()).await.unwrap();
    }
    assert_eq!(r.compact(Revision(3)).await.unwrap(), Revision(5));
    assert_eq!(
        r.current_revision(),
        Revision(5),
        "compaction uses no revision"
    );
    assert_eq!(r.compact_revision(), Revision(3));
    for again in [3, 2] {
        assert!(matches!(
            r.compact(Revision(again)).await,
            Err(Error::Compacted {
                compact_revision: Revision(3)
            })
        ));
    }
    assert!(matches!(
        r.compact(Revision(6)).await,
        Err(Error::FutureRevision {
            requested: Revision(6),
            current: Revision(5)
        })
    ));
    assert_eq!(r.compact_revision(), Revision(3));
    r.compact(Revision(5)).await.unwrap();
    assert_eq!(r.compact_revision(), Revision(5));
}

#[tokio::test]
async fn bad_input_fails_typed_and_writes_nothing() {
    let r = MemoryRegistry::builder()
        .manual_clock()
        .max_value_bytes(10)
        .max_ttl(100)
        .build();
    let lease = r.lease_grant(10, None).await.unwrap();
    r.put(b"k", b"v", PutOptions::default()).await.unwrap();
    let before = r.list(b"", ListOptions::default()).await.unwrap();

    let empty = |res: Result<_, Error>| {
        matches!(res, Err(Error::InvalidArgument(InvalidArgument::EmptyKey)))
    };
    assert!(empty(
        r.put(b"", b"v", PutOptions::default()).await.map(|_| ())
    ));
    assert!(empty(r.get(b"").await.map(|_| ())));
    assert!(empty(r.delete(b"").await.map(|_| ())));
    assert!(matches!(
        r.put(b"k", &[0; 10], PutOptions::default()).await,
        Err(Error::TooLarge {
            size: Some(11),
            limit: Some(10)
        })
    ));
    assert!(r.put(b"k", &[0; 9], PutOptions::default()).await.is_ok());
    r.put(b"k", b"v", PutOptions::default()).await.unwrap();
    let before = (before.kvs.len(), r.current_revision());
    assert!(matches!(
        r.lease_grant(101, None).await,
        Err(Error::InvalidArgument(InvalidArgument::TtlTooLarge {
            ttl: 101,
            max: 100
        }))
    ));
    for bad in [LeaseId(0), LeaseId(-1)] {
        let invalid = |res: Result<(), Error>| matches!(res, Err(Error::InvalidArgument(InvalidArgument::LeaseId(id))) if id == bad.0);
        assert!(invalid(
            r.put(b"k", b"v", PutOptions::with_lease(bad))
                .await
                .map(|_| ())
        ));
        assert!(invalid(r.lease_grant(5, Some(bad)).await.map(|_| ())));
        assert!(invalid(r.lease_keep_alive(bad).await.map(|_| ())));
        assert!(invalid(r.lease_revoke(bad).await.map(|_| ())));
        assert!(invalid(r.lease_time_to_live(bad).await.map(|_| ())));
    }
    assert!(matches!(
        r.watch(b"", WatchOptions::from_revision(Revision(0)))
            .await
            .map(|_| ()),
        Err(Error::InvalidArgument(InvalidArgument::Revision(0)))
    ));
    assert!(matches!(
        r.compact(Revision(-1)).await,
        Err(Error::InvalidArgument(InvalidArgument::Revision(-1)))
    ));
    let after = r.list(b"", ListOptions::default()).await.unwrap();
    assert_eq!((after.kvs.len(), r.current_revision()), before);
    assert_eq!(r.leases().await.unwrap(), vec![lease.id]);
}

#[tokio::test]
async fn the_default_size_limit_is_the_contracts() {
    let r = registry();
    let value = vec![0; limits::DEFAULT_MAX_VALUE_BYTES - 1];
    assert!(r.put(b"k", &value, PutOptions::default()).await.is_ok());
    let value = vec![0; limits::DEFAULT_MAX_VALUE_BYTES];
    assert!(matches!(
        r.put(b"k", &value, PutOptions::default()).await,
        Err(Error::TooLarge { .. })
    ));
    assert_eq!(r.current_revision(), Revision(2));
}

#[tokio::test]
async fn clones_share_one_store() {
    let a = registry();
    let b = a.clone();
    let lease = a.lease_grant(5, None).await.unwrap();
    b.put(b"k", b"v", PutOptions::with_lease(lease.id))
        .await
        .unwrap();
    assert_eq!(&a.get(b"k").await.unwrap().kv.unwrap().value[..], b"v");
    assert_eq!(a.current_revision(), b.current_revision());
    b.advance(std::time::Duration::from_secs(5));
    assert!(a.get(b"k").await.unwrap().kv.is_none(), "one clock too");
    let separate = registry();
    assert_eq!(separate.current_revision(), Revision(1));
}

#[tokio::test]
async fn a_history_limit_compacts_as_writes_come_in() {
    let r = MemoryRegistry::builder()
        .manual_clock()
        .history_limit(10)
        .build();
    for i in 0..100 {
        r.put(b"k", format!("{i}").as_bytes(), PutOptions::default())
            .await
            .unwrap();
    }
    assert_eq!(r.current_revision(), Revision(101));
    assert_eq!(
        r.compact_revision(),
        Revision(92),
        "the last 10 revisions stay readable"
    );
    let oldest = r.list(b"k", ListOptions::at(Revision(92))).await.unwrap();
    assert_eq!(&oldest.kvs[0].value[..], b"90");
    assert!(matches!(
        r.list(b"k", ListOptions::at(Revision(91))).await,
        Err(Error::Compacted {
            compact_revision: Revision(92)
        })
    ));
    let unlimited = registry();
    for _ in 0..100 {
        unlimited
            .put(b"k", b"v", PutOptions::default())
            .await
            .unwrap();
    }
    assert_eq!(unlimited.compact_revision(), Revision(0), "off by default");
}
