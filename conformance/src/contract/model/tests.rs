//! The model against the rules of `etcd-semantics.md`, and against a recorded etcd trace.

use super::*;
use registry_api::{EventKind, LeaseId};

fn model() -> Model {
    Model::new(
        Revision(1),
        ModelLimits {
            min_ttl: 2,
            max_ttl: limits::MAX_LEASE_TTL,
            max_value_bytes: 100,
        },
    )
}

#[test]
fn puts_bump_by_one_and_no_op_deletes_do_not() {
    let mut m = model();
    assert_eq!(
        m.put(b"a", b"1", None, false).unwrap().revision,
        Revision(2)
    );
    let again = m.put(b"a", b"1", None, true).unwrap();
    assert_eq!(again.revision, Revision(3));
    assert_eq!(again.prev_kv.unwrap().version, 1);
    let missing = m.delete(b"zz").unwrap();
    assert_eq!((missing.deleted, missing.revision), (0, Revision(3)));
    assert_eq!(m.delete_prefix(b"q").unwrap().revision, Revision(3));
    let kv = m.get(b"a").unwrap().kv.unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (Revision(2), Revision(3), 2)
    );
}

#[test]
fn grants_of_zero_and_below_get_the_minimum_and_above_the_maximum_fail() {
    let mut m = model();
    for (i, ttl) in [0, -5, i64::MIN].into_iter().enumerate() {
        let id = LeaseId(10 + i as i64);
        assert_eq!(m.lease_grant(ttl, id).unwrap().ttl, 2, "{ttl}");
    }
    assert!(matches!(
        m.lease_grant(limits::MAX_LEASE_TTL + 1, LeaseId(20)),
        Err(Error::InvalidArgument(
            registry_api::InvalidArgument::TtlTooLarge { .. }
        ))
    ));
}

#[test]
fn revoke_and_expiry_delete_all_keys_in_one_revision() {
    let mut m = model();
    assert_eq!(m.lease_grant(1, LeaseId(7)).unwrap().ttl, 2);
    assert_eq!(m.lease_grant(5, LeaseId(8)).unwrap().ttl, 5);
    for k in [b"c", b"a", b"b"] {
        m.put(k, b"v", Some(LeaseId(7)), false).unwrap();
    }
    m.put(b"d", b"v", Some(LeaseId(8)), false).unwrap();
    let before = m.revision();
    m.advance(Duration::from_millis(1999));
    assert_eq!(m.revision(), before);
    m.advance(Duration::from_millis(1));
    assert_eq!(m.revision(), before.next());
    let batches = m.watch(b"", before.next(), true).unwrap();
    let keys: Vec<&[u8]> = batches[0].events.iter().map(|e| &e.kv.key[..]).collect();
    assert_eq!(keys, vec![&b"a"[..], b"b", b"c"]);
    assert!(batches[0]
        .events
        .iter()
        .all(|e| e.kind == EventKind::Delete));
    assert!(matches!(
        m.lease_keep_alive(LeaseId(7)),
        Err(Error::LeaseNotFound(_))
    ));
    assert_eq!(m.lease_revoke(LeaseId(8)).unwrap(), before.next().next());
    assert_eq!(
        m.lease_revoke(LeaseId(8)).map_err(|e| e.to_string()),
        Err("lease 8 not found".into())
    );
}

#[test]
fn keep_alive_many_answers_each_id_in_order_and_refuses_an_oversized_batch_whole() {
    let mut m = model();
    m.lease_grant(4, LeaseId(1)).unwrap();
    m.lease_grant(6, LeaseId(2)).unwrap();
    m.lease_grant(8, LeaseId(3)).unwrap();
    m.lease_revoke(LeaseId(2)).unwrap();
    m.advance(Duration::from_secs(1));
    let ids = [LeaseId(3), LeaseId(2), LeaseId(0), LeaseId(1), LeaseId(3)];
    let answers = m.lease_keep_alive_many(&ids).unwrap();
    assert_eq!(answers.len(), ids.len());
    assert!(matches!(answers[0], Ok(8)));
    assert!(matches!(answers[1], Err(Error::LeaseNotFound(LeaseId(2)))));
    assert!(matches!(
        answers[2],
        Err(Error::InvalidArgument(
            registry_api::InvalidArgument::LeaseId(0)
        ))
    ));
    assert!(matches!(answers[3], Ok(4)));
    assert!(matches!(answers[4], Ok(8)));
    for (id, ttl) in [(1, 4), (3, 8)] {
        assert_eq!(m.lease_time_to_live(LeaseId(id)).unwrap().ttl, ttl, "{id}");
    }
    assert!(m.lease_keep_alive_many(&[]).unwrap().is_empty());

    m.advance(Duration::from_secs(1));
    let max = limits::MAX_KEEP_ALIVE_BATCH;
    assert_eq!(
        m.lease_keep_alive_many(&vec![LeaseId(1); max])
            .unwrap()
            .len(),
        max
    );
    let oversized = vec![LeaseId(3); max + 1];
    assert!(matches!(
        m.lease_keep_alive_many(&oversized),
        Err(Error::InvalidArgument(
            registry_api::InvalidArgument::BatchTooLarge { len, max: m }
        )) if len == max + 1 && m == max
    ));
    // Renewed at 1 s to 9 s, not again at 2 s.
    assert_eq!(m.lease_time_to_live(LeaseId(3)).unwrap().ttl, 7);
}

#[test]
fn put_moves_and_detaches() {
    let mut m = model();
    m.lease_grant(10, LeaseId(1)).unwrap();
    m.lease_grant(10, LeaseId(2)).unwrap();
    m.put(b"k", b"v", Some(LeaseId(1)), false).unwrap();
    m.put(b"k", b"v", Some(LeaseId(2)), false).unwrap();
    assert!(m.lease_time_to_live(LeaseId(1)).unwrap().keys.is_empty());
    m.put(b"k", b"v", None, false).unwrap();
    let rev = m.revision();
    assert_eq!(m.lease_revoke(LeaseId(2)).unwrap(), rev);
    assert!(m.get(b"k").unwrap().kv.is_some());
    assert!(matches!(
        m.put(b"x", b"v", Some(LeaseId(9)), false),
        Err(Error::LeaseNotFound(_))
    ));
    assert_eq!(m.revision(), rev);
}

#[test]
fn compaction_and_reads_outside_history() {
    let mut m = model();
    for i in 0..5u8 {
        m.put(&[b'k', i], b"v", None, false).unwrap();
    }
    assert!(m.compact(Revision(4)).is_ok());
    assert!(matches!(
        m.compact(Revision(4)),
        Err(Error::Compacted { .. })
    ));
    assert!(matches!(
        m.compact(Revision(9)),
        Err(Error::FutureRevision { .. })
    ));
    assert!(matches!(
        m.list(b"k", Some(Revision(3))),
        Err(Error::Compacted {
            compact_revision: Revision(4)
        })
    ));
    assert_eq!(m.list(b"k", Some(Revision(4))).unwrap().kvs.len(), 3);
    assert!(matches!(
        m.list(b"k", Some(Revision(7))),
        Err(Error::FutureRevision { .. })
    ));
    assert!(matches!(
        m.watch(b"k", Revision(3), false),
        Err(Error::Compacted { .. })
    ));
    let from_compact = m.watch(b"k", Revision(4), true).unwrap();
    assert!(from_compact[0].events[0].prev_kv.is_none());
    assert_eq!(from_compact.len(), 3);
}

#[test]
fn bad_input_is_rejected() {
    let mut m = model();
    assert!(matches!(
        m.put(b"", b"v", None, false),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        m.put(b"k", &[0; 100], None, false),
        Err(Error::TooLarge {
            size: Some(101),
            ..
        })
    ));
    assert!(matches!(
        m.lease_grant(limits::MAX_LEASE_TTL + 1, LeaseId(1)),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(m.revision(), Revision(1));
    assert!(m.leases().is_empty());
}
