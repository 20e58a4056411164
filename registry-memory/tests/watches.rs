//! Watches: history replay, batches, previous values, compaction, cleanup, many and slow
//! watchers, progress notifications.

use futures::{FutureExt, StreamExt};
use registry_api::{
    Error, EventKind, LeaseId, PutOptions, Registry, Revision, WatchBatch, WatchOptions,
    WatchStream,
};
use registry_memory::MemoryRegistry;

fn registry() -> MemoryRegistry {
    MemoryRegistry::with_manual_clock()
}

/// Every batch available now, without waiting.
fn drain(watch: &mut WatchStream) -> Vec<WatchBatch> {
    let mut batches = Vec::new();
    while let Some(Some(item)) = watch.next().now_or_never() {
        batches.push(item.unwrap());
    }
    batches
}

fn summary(batches: &[WatchBatch]) -> Vec<(i64, Vec<(EventKind, String)>)> {
    batches
        .iter()
        .map(|b| {
            let events = b
                .events
                .iter()
                .map(|e| (e.kind, e.kv.key_str().into_owned()))
                .collect();
            (b.revision.0, events)
        })
        .collect()
}

async fn put(r: &MemoryRegistry, key: &str, value: &str) -> Revision {
    r.put(key.as_bytes(), value.as_bytes(), PutOptions::default())
        .await
        .unwrap()
        .revision
}

#[tokio::test]
async fn a_watch_from_a_past_revision_replays_from_there_inclusive() {
    let r = registry();
    put(&r, "a/1", "x").await; // 2
    put(&r, "b/1", "x").await; // 3
    put(&r, "a/2", "x").await; // 4
    r.delete(b"a/1").await.unwrap(); // 5
    let mut watch = r
        .watch(b"a/", WatchOptions::from_revision(Revision(4)))
        .await
        .unwrap();
    assert_eq!(
        summary(&drain(&mut watch)),
        vec![
            (4, vec![(EventKind::Put, "a/2".into())]),
            (5, vec![(EventKind::Delete, "a/1".into())]),
        ]
    );
    put(&r, "a/3", "x").await; // 6
    assert_eq!(
        summary(&drain(&mut watch)),
        vec![(6, vec![(EventKind::Put, "a/3".into())])]
    );
}

#[tokio::test]
async fn a_watch_without_a_start_sees_only_later_writes() {
    let r = registry();
    put(&r, "k", "before").await;
    let mut watch = r.watch(b"k", WatchOptions::default()).await.unwrap();
    assert!(drain(&mut watch).is_empty());
    put(&r, "k", "after").await;
    let batches = drain(&mut watch);
    assert_eq!(batches.len(), 1);
    assert_eq!(&batches[0].events[0].kv.value[..], b"after");
}

#[tokio::test]
async fn the_events_of_one_revision_come_in_one_batch() {
    let r = registry();
    let lease = r.lease_grant(10, None).await.unwrap().id;
    for key in ["s/c", "s/a", "s/b"] {
        r.put(key.as_bytes(), b"v", PutOptions::with_lease(lease))
            .await
            .unwrap();
    }
    let mut watch = r.watch(b"s/", WatchOptions::default()).await.unwrap();
    r.lease_revoke(lease).await.unwrap();
    put(&r, "s/a", "again").await;
    r.delete_prefix(b"s/").await.unwrap();
    assert_eq!(
        summary(&drain(&mut watch)),
        vec![
            (
                5,
                vec![
                    (EventKind::Delete, "s/a".into()),
                    (EventKind::Delete, "s/b".into()),
                    (EventKind::Delete, "s/c".into()),
                ]
            ),
            (6, vec![(EventKind::Put, "s/a".into())]),
            (7, vec![(EventKind::Delete, "s/a".into())]),
        ]
    );
}

#[tokio::test]
async fn previous_values_come_only_when_asked() {
    let r = registry();
    put(&r, "k", "1").await;
    let mut plain = r.watch(b"k", WatchOptions::default()).await.unwrap();
    let mut with_prev = r
        .watch(b"k", WatchOptions::default().with_prev_kv())
        .await
        .unwrap();
    put(&r, "k", "2").await;
    r.delete(b"k").await.unwrap();
    put(&r, "k", "3").await;
    let plain = drain(&mut plain);
    assert!(plain
        .iter()
        .flat_map(|b| &b.events)
        .all(|e| e.prev_kv.is_none()));
    let with_prev = drain(&mut with_prev);
    let prevs: Vec<_> = with_prev
        .iter()
        .flat_map(|b| &b.events)
        .map(|e| {
            e.prev_kv
                .as_ref()
                .map(|p| (p.value.to_vec(), p.mod_revision.0))
        })
        .collect();
    assert_eq!(
        prevs,
        vec![Some((b"1".to_vec(), 2)), Some((b"2".to_vec(), 3)), None]
    );
    let recreated = &with_prev[2].events[0];
    assert!(recreated.is_create());
    assert_eq!(recreated.kv.create_revision, Revision(5));
}

#[tokio::test]
async fn a_watch_at_the_compaction_point_gets_its_events_without_previous_values() {
    let r = registry();
    put(&r, "k", "1").await; // 2
    put(&r, "k", "2").await; // 3
    r.delete(b"k").await.unwrap(); // 4
    put(&r, "k", "3").await; // 5
    r.compact(Revision(4)).await.unwrap();
    let mut watch = r
        .watch(b"", WatchOptions::from_revision(Revision(4)).with_prev_kv())
        .await
        .unwrap();
    let batches = drain(&mut watch);
    assert_eq!(
        summary(&batches),
        vec![
            (4, vec![(EventKind::Delete, "k".into())]),
            (5, vec![(EventKind::Put, "k".into())]),
        ]
    );
    assert!(
        batches[0].events[0].prev_kv.is_none(),
        "etcd 3.5.16 gives none at the compact revision"
    );
    assert!(
        batches[1].events[0].prev_kv.is_none(),
        "the key did not exist at 4"
    );
    put(&r, "k", "4").await;
    let later = drain(&mut watch);
    assert_eq!(
        &later[0].events[0].prev_kv.as_ref().unwrap().value[..],
        b"3"
    );
}

#[tokio::test]
async fn a_watch_below_the_compaction_point_yields_only_compacted() {
    let r = registry();
    for i in 0..4 {
        put(&r, "k", &i.to_string()).await;
    }
    r.compact(Revision(4)).await.unwrap();
    let mut watch = r
        .watch(b"k", WatchOptions::from_revision(Revision(3)))
        .await
        .unwrap();
    assert!(matches!(
        watch.next().await,
        Some(Err(Error::Compacted {
            compact_revision: Revision(4)
        }))
    ));
    assert!(watch.next().await.is_none());
    assert_eq!(r.watcher_count(), 0);
}

#[tokio::test]
async fn a_watch_from_the_future_waits_for_its_revision() {
    let r = registry();
    let mut watch = r
        .watch(b"", WatchOptions::from_revision(Revision(4)))
        .await
        .unwrap();
    put(&r, "a", "x").await; // 2
    put(&r, "b", "x").await; // 3
    assert!(drain(&mut watch).is_empty());
    put(&r, "c", "x").await; // 4
    assert_eq!(
        summary(&drain(&mut watch)),
        vec![(4, vec![(EventKind::Put, "c".into())])]
    );
}

#[tokio::test]
async fn a_watch_sees_only_its_prefix() {
    let r = registry();
    let mut watch = r.watch(b"svc/a/", WatchOptions::default()).await.unwrap();
    for key in ["svc/a/1", "svc/a", "svc/ab", "svc/a/2", "other"] {
        put(&r, key, "v").await;
    }
    let keys: Vec<_> = drain(&mut watch)
        .iter()
        .flat_map(|b| b.events.iter().map(|e| e.kv.key_str().into_owned()))
        .collect();
    assert_eq!(keys, vec!["svc/a/1", "svc/a/2"]);
}

#[tokio::test]
async fn dropping_a_stream_cancels_its_watch() {
    let r = registry();
    let watches: Vec<_> = futures::future::join_all(
        (0..10).map(|_| r.watch(b"", WatchOptions::from_revision(Revision(1)))),
    )
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect();
    assert_eq!(r.watcher_count(), 10);
    put(&r, "k", "v").await;
    drop(watches);
    assert_eq!(r.watcher_count(), 0);

    // A parked watch too, and one cut by an outage.
    let mut parked = r.watch(b"", WatchOptions::default()).await.unwrap();
    assert!(parked.next().now_or_never().is_none());
    assert_eq!(r.watcher_count(), 1);
    drop(parked);
    assert_eq!(r.watcher_count(), 0);
    let mut cut = r.watch(b"", WatchOptions::default()).await.unwrap();
    r.set_unavailable(true);
    assert!(matches!(
        cut.next().await,
        Some(Err(Error::Unavailable { .. }))
    ));
    assert_eq!(r.watcher_count(), 0);
}

#[tokio::test]
async fn many_watchers_each_see_every_change_once_in_order() {
    let r = registry();
    let mut watches = Vec::new();
    for i in 0..50 {
        // Half from the start of history, half from now on; both must see everything below.
        let opts = if i % 2 == 0 {
            WatchOptions::from_revision(Revision(1))
        } else {
            WatchOptions::default()
        };
        watches.push(r.watch(b"", opts).await.unwrap());
    }
    let lease = r.lease_grant(10, None).await.unwrap().id;
    for i in 0..100 {
        let opts = if i % 3 == 0 {
            PutOptions::with_lease(lease)
        } else {
            PutOptions::default()
        };
        r.put(format!("k/{}", i % 7).as_bytes(), b"v", opts)
            .await
            .unwrap();
        if i % 10 == 0 {
            r.delete(format!("k/{}", i % 5).as_bytes()).await.unwrap();
        }
    }
    r.lease_revoke(lease).await.unwrap();
    let last = r.current_revision().0;
    for watch in &mut watches {
        let revisions: Vec<i64> = drain(watch).iter().map(|b| b.revision.0).collect();
        assert_eq!(revisions, (2..=last).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn a_slow_watcher_loses_nothing_even_across_a_compaction() {
    let r = registry();
    let mut slow = r
        .watch(b"", WatchOptions::default().with_prev_kv())
        .await
        .unwrap();
    for i in 0..10_000 {
        put(&r, &format!("k/{}", i % 100), &i.to_string()).await;
    }
    r.compact(r.current_revision()).await.unwrap();
    for i in 10_000..10_100 {
        put(&r, &format!("k/{}", i % 100), &i.to_string()).await;
    }
    let batches = drain(&mut slow);
    assert_eq!(batches.len(), 10_100);
    for (i, batch) in batches.iter().enumerate() {
        assert_eq!(batch.revision.0, i as i64 + 2);
        assert_eq!(batch.events[0].kv.value, i.to_string().as_bytes());
        assert_eq!(batch.events[0].prev_kv.is_some(), i >= 100);
    }
    // A new watch from before the compaction is refused all the same.
    let mut late = r
        .watch(b"", WatchOptions::from_revision(Revision(2)))
        .await
        .unwrap();
    assert!(matches!(
        late.next().await,
        Some(Err(Error::Compacted { .. }))
    ));
}

#[tokio::test]
async fn progress_notifications_report_the_revision_caught_up_to() {
    let r = registry();
    put(&r, "a/1", "x").await; // 2
    put(&r, "b/1", "x").await; // 3
    let mut watch = r
        .watch(
            b"a/",
            WatchOptions::from_revision(Revision(2)).with_progress_notify(),
        )
        .await
        .unwrap();
    let first = drain(&mut watch);
    assert_eq!(first.len(), 2);
    assert_eq!(
        (first[0].revision, first[0].is_progress()),
        (Revision(2), false)
    );
    assert_eq!(
        (first[1].revision, first[1].is_progress()),
        (Revision(3), true)
    );
    put(&r, "b/2", "x").await; // 4: not ours
    let quiet = drain(&mut watch);
    assert_eq!(quiet.len(), 1);
    assert!(quiet[0].is_progress());
    assert_eq!(quiet[0].revision, Revision(4));
    put(&r, "a/2", "x").await; // 5
    let ours = drain(&mut watch);
    assert_eq!(
        summary(&ours),
        vec![(5, vec![(EventKind::Put, "a/2".into())])]
    );
    // Without the option, no empty batch ever comes.
    let mut plain = r.watch(b"a/", WatchOptions::default()).await.unwrap();
    put(&r, "b/3", "x").await;
    assert!(drain(&mut plain).is_empty());
}

#[tokio::test]
async fn an_expiry_reaches_a_parked_watcher() {
    let r = registry();
    let lease = r.lease_grant(2, None).await.unwrap().id;
    r.put(b"k", b"v", PutOptions::with_lease(lease))
        .await
        .unwrap();
    let mut watch = r.watch(b"k", WatchOptions::default()).await.unwrap();
    let next = tokio::spawn(async move { watch.next().await });
    tokio::task::yield_now().await;
    r.advance(std::time::Duration::from_secs(2));
    let batch = next.await.unwrap().unwrap().unwrap();
    assert_eq!(batch.events[0].kind, EventKind::Delete);
    assert!(matches!(
        r.lease_keep_alive(lease).await,
        Err(Error::LeaseNotFound(LeaseId(1)))
    ));
}

#[tokio::test]
async fn a_progress_request_is_answered_at_the_current_revision_once_caught_up() {
    let r = registry();
    put(&r, "a/1", "x").await; // 2
    put(&r, "a/2", "x").await; // 3
    let mut watch = r
        .watch(b"a/", WatchOptions::from_revision(Revision(2)))
        .await
        .unwrap();
    assert!(watch.supports_progress_requests());
    // Asked before the replay is read: the answer comes after every event up to the current
    // revision, never before.
    watch.request_progress().await.unwrap();
    put(&r, "b/1", "x").await; // 4, outside the prefix
    let got = drain(&mut watch);
    assert_eq!(
        summary(&got),
        vec![
            (2, vec![(EventKind::Put, "a/1".into())]),
            (3, vec![(EventKind::Put, "a/2".into())]),
            (4, vec![]),
        ]
    );
    // One request, one answer.
    assert!(drain(&mut watch).is_empty());
}

/// Counts wake-ups, to see a parked watch being woken.
#[derive(Default)]
struct CountingWaker(std::sync::atomic::AtomicUsize);

impl futures::task::ArcWake for CountingWaker {
    fn wake_by_ref(arc_self: &std::sync::Arc<Self>) {
        arc_self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_parked_watch_is_woken_by_a_progress_request_even_at_a_revision_it_reported() {
    use std::sync::atomic::Ordering;
    use std::task::{Context, Poll};
    let r = registry();
    let rev = put(&r, "a/1", "x").await;
    let mut watch = r
        .watch(
            b"a/",
            WatchOptions::from_revision(rev).with_progress_notify(),
        )
        .await
        .unwrap();
    let first = drain(&mut watch);
    // The event reported `rev`: progress notifications alone would say nothing more.
    assert_eq!(
        first
            .iter()
            .map(|b| (b.revision, b.is_progress()))
            .collect::<Vec<_>>(),
        vec![(rev, false)]
    );
    let counter = std::sync::Arc::new(CountingWaker::default());
    let waker = futures::task::waker(counter.clone());
    let mut cx = Context::from_waker(&waker);
    assert!(watch.poll_next_unpin(&mut cx).is_pending());
    watch.request_progress().await.unwrap();
    assert_eq!(
        counter.0.load(Ordering::SeqCst),
        1,
        "the request wakes the parked watch"
    );
    match watch.poll_next_unpin(&mut cx) {
        Poll::Ready(Some(Ok(batch))) => {
            assert_eq!((batch.revision, batch.is_progress()), (rev, true));
        }
        other => panic!("expected the progress answer, got {other:?}"),
    }
    assert!(watch.poll_next_unpin(&mut cx).is_pending());
}

#[tokio::test]
async fn an_outage_fails_progress_requests_with_unavailable() {
    let r = registry();
    let mut watch = r.watch(b"a/", WatchOptions::default()).await.unwrap();
    r.set_unavailable(true);
    assert!(matches!(
        watch.request_progress().await,
        Err(Error::Unavailable { .. })
    ));
    // Still refused once the server is back: the outage cut this watch.
    r.set_unavailable(false);
    assert!(matches!(
        watch.request_progress().await,
        Err(Error::Unavailable { .. })
    ));
    assert!(matches!(
        drain_errors(&mut watch),
        Some(Error::Unavailable { .. })
    ));
}

#[tokio::test]
async fn a_progress_request_on_an_ended_watch_fails() {
    let r = registry();
    let mut watch = r.watch(b"a/", WatchOptions::default()).await.unwrap();
    r.set_unavailable(true);
    r.set_unavailable(false);
    assert!(matches!(
        drain_errors(&mut watch),
        Some(Error::Unavailable { .. })
    ));
    assert!(watch.request_progress().await.is_err());
}

/// The error item the watch yields now, if any.
fn drain_errors(watch: &mut WatchStream) -> Option<Error> {
    match watch.next().now_or_never() {
        Some(Some(Err(e))) => Some(e),
        _ => None,
    }
}
