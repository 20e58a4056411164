//! Store resets: a restore from a backup behaves as `etcdutl snapshot restore` and a restart did
//! on etcd 3.5.16 (observations in `src/reset.rs`): revision, keys and history back, the
//! backup's leases alive with their whole TTL, later leases gone, open watches cut; bumped and
//! compacted on request.

use futures::StreamExt;
use registry_api::{
    Error, InvalidArgument, LeaseId, ListOptions, PutOptions, Registry, Revision, WatchOptions,
};
use registry_memory::{MemoryRegistry, RestoreOptions};
use std::time::Duration;

/// A store with a lease (30 s) holding `a`, a plain key `b`, a backup after those, then more:
/// a second lease holding `c`, `b` rewritten, `a` rewritten. Returns the store, the backup,
/// and the two leases.
async fn store_with_a_backup() -> (MemoryRegistry, registry_memory::Backup, LeaseId, LeaseId) {
    let r = MemoryRegistry::builder()
        .manual_clock()
        .journal(100)
        .build();
    let early = r.lease_grant(30, None).await.unwrap().id;
    r.put(b"a", b"1", PutOptions::with_lease(early))
        .await
        .unwrap();
    r.put(b"b", b"1", PutOptions::default()).await.unwrap();
    let backup = r.backup();
    assert_eq!(backup.revision(), Revision(3));
    r.advance(Duration::from_secs(11));
    let late = r.lease_grant(30, None).await.unwrap().id;
    r.put(b"c", b"1", PutOptions::with_lease(late))
        .await
        .unwrap();
    for v in [b"2", b"3", b"4", b"5", b"6"] {
        r.put(b"b", v, PutOptions::default()).await.unwrap();
    }
    r.put(b"a", b"2", PutOptions::with_lease(early))
        .await
        .unwrap();
    assert_eq!(r.current_revision(), Revision(10));
    (r, backup, early, late)
}

fn values(list: &registry_api::ListResponse) -> Vec<(String, String)> {
    list.kvs
        .iter()
        .map(|kv| {
            (
                kv.key_str().into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_plain_restore_brings_the_revision_keys_history_and_early_leases_back() {
    let (r, backup, early, late) = store_with_a_backup().await;
    let mut watch = r
        .watch(b"", WatchOptions::from_revision(Revision(11)))
        .await
        .unwrap();
    assert_eq!(
        r.restore(&backup, RestoreOptions::plain()).unwrap(),
        Revision(3)
    );

    // The open watch ends, as the restart cut it.
    assert!(matches!(
        watch.next().await,
        Some(Err(Error::Unavailable { .. }))
    ));
    assert!(watch.next().await.is_none());

    let list = r.list(b"", ListOptions::default()).await.unwrap();
    assert_eq!(list.revision, Revision(3));
    assert_eq!(
        values(&list),
        vec![("a".into(), "1".into()), ("b".into(), "1".into())]
    );
    assert_eq!(list.kvs[0].lease, Some(early));
    // History up to the backup replays.
    let mut replay = r
        .watch(b"", WatchOptions::from_revision(Revision(2)))
        .await
        .unwrap();
    let first = replay.next().await.unwrap().unwrap();
    assert_eq!(first.revision, Revision(2));

    // The early lease is back with its whole TTL (11 s had passed), the late one is gone and
    // so are its keys; its id is never handed out again.
    let left = r.lease_time_to_live(early).await.unwrap();
    assert_eq!((left.ttl, left.granted_ttl), (30, 30));
    assert!(matches!(
        r.lease_keep_alive(late).await,
        Err(Error::LeaseNotFound(id)) if id == late
    ));
    assert!(matches!(
        r.put(b"c", b"2", PutOptions::with_lease(late)).await,
        Err(Error::LeaseNotFound(_))
    ));
    let fresh = r.lease_grant(30, None).await.unwrap().id;
    assert!(fresh != early && fresh != late, "{fresh} repeats an id");

    // The next write is the backup's revision + 1, and the early lease still expires.
    assert_eq!(
        r.put(b"d", b"1", PutOptions::default())
            .await
            .unwrap()
            .revision,
        Revision(4)
    );
    r.advance(Duration::from_secs(30));
    assert!(r.get(b"a").await.unwrap().kv.is_none());

    // The journal starts over at the restored revision; the restore is recorded.
    assert!(r.journal_after(Revision(2)).is_none());
    let commits = r.journal_after(Revision(3)).unwrap();
    assert_eq!(commits.first().map(|c| c.batch.revision), Some(Revision(4)));
    let resets = r.resets();
    assert_eq!(resets.len(), 1);
    assert_eq!((resets[0].from, resets[0].to), (Revision(10), Revision(3)));
    assert!(!resets[0].compacted);
}

#[tokio::test]
async fn a_bumped_restore_is_compacted_at_the_raised_revision() {
    let (r, backup, early, _) = store_with_a_backup().await;
    assert_eq!(
        r.restore(&backup, RestoreOptions::bumped(1_000)).unwrap(),
        Revision(1_003)
    );
    assert_eq!(r.compact_revision(), Revision(1_003));
    let list = r.list(b"", ListOptions::default()).await.unwrap();
    assert_eq!(list.revision, Revision(1_003));
    // The keys keep their revisions.
    assert_eq!(list.kvs[1].mod_revision, Revision(3));
    assert!(matches!(
        r.list(b"", ListOptions::at(Revision(3))).await,
        Err(Error::Compacted { compact_revision }) if compact_revision == Revision(1_003)
    ));
    // A watcher resuming from what it held is told to list again rather than left waiting.
    let mut resumed = r
        .watch(b"", WatchOptions::from_revision(Revision(11)))
        .await
        .unwrap();
    assert!(matches!(
        resumed.next().await,
        Some(Err(Error::Compacted { .. }))
    ));
    assert!(r.lease_time_to_live(early).await.is_ok());
    assert_eq!(
        r.put(b"d", b"1", PutOptions::default())
            .await
            .unwrap()
            .revision,
        Revision(1_004)
    );
    assert!(r.resets()[0].compacted);
}

#[tokio::test]
async fn a_bump_without_compaction_or_the_reverse_is_refused_and_changes_nothing() {
    let (r, backup, _, _) = store_with_a_backup().await;
    for options in [
        RestoreOptions {
            bump_revision: 5,
            mark_compacted: false,
        },
        RestoreOptions {
            bump_revision: 0,
            mark_compacted: true,
        },
    ] {
        assert!(matches!(
            r.restore(&backup, options),
            Err(Error::InvalidArgument(InvalidArgument::Other(_)))
        ));
    }
    assert!(matches!(
        r.restore(&backup, RestoreOptions::bumped(u64::MAX)),
        Err(Error::InvalidArgument(InvalidArgument::Revision(_)))
    ));
    assert_eq!(r.current_revision(), Revision(10));
    assert!(r.resets().is_empty());
}
