//! The server's journal: every commit with the server's virtual time, bounded, readable during
//! an outage, and changing nothing about the run it records.

use registry_api::{EventKind, LeaseId, PutOptions, Registry, Revision};
use registry_memory::{Commit, Latencies, MemoryRegistry};
use std::time::Duration;

fn kinds(commits: &[Commit]) -> Vec<(i64, u64, EventKind, String)> {
    commits
        .iter()
        .flat_map(|c| {
            c.batch.events.iter().map(|e| {
                (
                    c.batch.revision.get(),
                    c.at.as_millis() as u64,
                    e.kind,
                    e.kv.key_str().into_owned(),
                )
            })
        })
        .collect()
}

/// Every leg takes 1 ms: the server applies a call 1 ms after it was made, and stamps it then.
#[tokio::test(start_paused = true)]
async fn every_commit_is_stamped_with_server_time_and_an_expiry_with_its_deadline() {
    let server = MemoryRegistry::builder()
        .journal(100)
        .timing(Latencies::fixed(Duration::from_millis(1)))
        .build();
    let lease = server.lease_grant(3, None).await.unwrap().id;
    server
        .put(b"svc/a", b"1", PutOptions::with_lease(lease))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    server
        .put(b"svc/b", b"2", PutOptions::default())
        .await
        .unwrap();
    server.delete(b"svc/b").await.unwrap();
    // The lease, granted on the server at 1 ms, expires at 3.001 s while nobody calls: the
    // background task carries it out.
    tokio::time::sleep(Duration::from_secs(10)).await;

    let commits = server.journal_after(Revision(1)).expect("all kept");
    assert_eq!(
        kinds(&commits),
        vec![
            // Granted at 1 ms, answered at 2; the put arrives at 3, answered at 4.
            (2, 3, EventKind::Put, "svc/a".into()),
            // Asleep until 1.504 s: the put arrives at 1.505, the delete at 1.507.
            (3, 1_505, EventKind::Put, "svc/b".into()),
            (4, 1_507, EventKind::Delete, "svc/b".into()),
            (5, 3_001, EventKind::Delete, "svc/a".into()),
        ]
    );
    assert_eq!(commits[0].batch.events[0].kv.lease, Some(lease));
    // With prev_kv: a deletion says what it deleted.
    let prev = commits[3].batch.events[0].prev_kv.as_ref().expect("prev");
    assert_eq!(&prev.value[..], b"1");
    assert_eq!(
        server.journal_after(Revision(3)).unwrap(),
        commits[2..].to_vec()
    );
    assert_eq!(server.journal_after(Revision(5)), Some(Vec::new()));
}

#[tokio::test]
async fn on_the_manual_clock_an_advance_past_a_deadline_stamps_the_deadline() {
    let server = MemoryRegistry::builder().manual_clock().journal(10).build();
    let early = server.lease_grant(2, None).await.unwrap().id;
    let late = server.lease_grant(4, None).await.unwrap().id;
    server
        .put(b"k/early", b"", PutOptions::with_lease(early))
        .await
        .unwrap();
    server
        .put(b"k/late", b"", PutOptions::with_lease(late))
        .await
        .unwrap();
    server.advance(Duration::from_secs(60));
    let commits = server.journal_after(Revision(3)).unwrap();
    let at: Vec<Duration> = commits.iter().map(|c| c.at).collect();
    assert_eq!(at, [Duration::from_secs(2), Duration::from_secs(4)]);
}

#[tokio::test]
async fn the_journal_is_a_ring_and_says_when_it_no_longer_holds_what_was_asked() {
    let server = MemoryRegistry::builder().manual_clock().journal(3).build();
    for i in 0..5u8 {
        server
            .put(&[b'k', i], b"v", PutOptions::default())
            .await
            .unwrap();
    }
    // Revisions 2..=6 were committed; the ring holds 4, 5 and 6.
    assert_eq!(
        server.journal_after(Revision(1)),
        None,
        "2 and 3 were let go"
    );
    assert_eq!(server.journal_after(Revision(2)), None, "3 was let go");
    let kept = server.journal_after(Revision(3)).expect("4, 5, 6 are kept");
    let revisions: Vec<i64> = kept.iter().map(|c| c.batch.revision.get()).collect();
    assert_eq!(revisions, [4, 5, 6]);
    assert_eq!(server.journal_after(Revision(6)), Some(Vec::new()));
}

#[tokio::test]
async fn off_by_default_it_answers_none_rather_than_an_empty_history() {
    let server = MemoryRegistry::with_manual_clock();
    server.put(b"k", b"v", PutOptions::default()).await.unwrap();
    assert_eq!(server.journal_after(Revision(1)), None);
}

#[tokio::test]
async fn it_is_read_during_an_outage_and_records_the_expiries_of_the_outage() {
    let server = MemoryRegistry::builder().manual_clock().journal(10).build();
    let lease = server.lease_grant(5, None).await.unwrap().id;
    server
        .put(b"svc/a", b"1", PutOptions::with_lease(lease))
        .await
        .unwrap();
    server.set_unavailable(true);
    server.advance(Duration::from_secs(6));
    let commits = server
        .journal_after(Revision(2))
        .expect("readable in an outage");
    assert_eq!(
        kinds(&commits),
        vec![(3, 5_000, EventKind::Delete, "svc/a".into())]
    );
    assert!(server.get(b"svc/a").await.is_err(), "clients still cannot");
}

/// A scenario whose responses are compared with and without a journal (read after every step
/// when `read`).
async fn scenario(server: &MemoryRegistry, read: bool) -> Vec<String> {
    let mut seen = Vec::new();
    let peek = |server: &MemoryRegistry| {
        if read {
            let _ = server.journal_after(Revision(1));
        }
    };
    let a = server.lease_grant(2, None).await.unwrap().id;
    let b = server.lease_grant(3, Some(LeaseId(77))).await.unwrap().id;
    for (i, lease) in [a, b, a].into_iter().enumerate() {
        let put = server
            .put(
                format!("k/{i}").as_bytes(),
                b"v",
                PutOptions::with_lease(lease),
            )
            .await;
        seen.push(format!("{put:?}"));
        peek(server);
        tokio::time::sleep(Duration::from_millis(900)).await;
        peek(server);
        seen.push(format!("{:?}", server.lease_keep_alive(b).await));
    }
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        peek(server);
    }
    seen.push(format!("{:?}", server.current_revision()));
    seen.push(format!("{:?}", server.leases().await));
    seen
}

#[tokio::test(start_paused = true)]
async fn keeping_a_journal_changes_nothing_about_the_run() {
    let plain = scenario(&MemoryRegistry::new(), false).await;
    let journaled = MemoryRegistry::builder().journal(2).build();
    assert_eq!(scenario(&journaled, false).await, plain);
    // And reading it does not either: a journaled run read after every step.
    let read = MemoryRegistry::builder().journal(100).build();
    let seen = scenario(&read, true).await;
    assert_eq!(seen, plain);
    let commits = read.journal_after(Revision(1)).unwrap();
    assert_eq!(
        commits.last().unwrap().batch.revision,
        read.current_revision()
    );
}
