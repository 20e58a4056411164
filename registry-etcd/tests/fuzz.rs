//! Fuzzing the etcd backend's public API with arbitrary input, against a real etcd: keys and
//! prefixes of any bytes (empty, NUL, 0xff), TTLs, lease ids and revisions from the whole `i64`
//! range, values around the size limit. Every call must return a result or one of the
//! contract's typed errors, never panic, and a call that fails must change nothing: the
//! revision, every key and every lease stay as they were. And connecting: any endpoint string
//! gives a typed error quickly (malformed: `InvalidArgument::Config`; unreachable or refused:
//! `Unavailable`), never a panic or a hang. (Wrong credentials are checked in `faults.rs`.)
//!
//! The fuzz runs on a private server, one namespace per case. Deterministic inputs (fixed
//! proptest seed); `PROPTEST_CASES` sets the case count, else `REGISTRY_FAULTS_FULL=1` runs
//! more; failures are saved under `proptest-regressions/`.

use futures::StreamExt;
use proptest::prelude::*;
use proptest::test_runner::{
    Config, FileFailurePersistence, RngAlgorithm, TestCaseError, TestRng, TestRunner,
};
use registry_api::limits::{DEFAULT_MAX_VALUE_BYTES, MAX_LEASE_TTL};
use registry_api::{
    Error, InvalidArgument, LeaseId, ListOptions, PutOptions, Registry, Revision, WatchOptions,
};
use registry_etcd::testing::{unique_namespace, EtcdServer};
use registry_etcd::EtcdRegistry;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn full_mode() -> bool {
    std::env::var_os("REGISTRY_FAULTS_FULL").is_some_and(|v| !v.is_empty() && v != "0")
}

/// `PROPTEST_CASES` if set, else the CI or full count.
fn cases(ci: u32, full: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(if full_mode() { full } else { ci })
}

fn runner(ci_cases: u32, full_cases: u32, file: &'static str) -> TestRunner {
    let config = Config {
        cases: cases(ci_cases, full_cases),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(file))),
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha))
}

/// A key or prefix: mostly short paths over a small alphabet (so that calls meet each other's
/// keys), sometimes empty, sometimes any bytes.
fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => proptest::collection::vec(
            prop_oneof![Just(b'a'), Just(b'b'), Just(b'/'), Just(0u8), Just(0xffu8)],
            0..5
        ),
        1 => proptest::collection::vec(any::<u8>(), 0..40),
        1 => Just(Vec::new()),
    ]
}

/// A value: small, or sized around the limit (built from its length, so it stays cheap).
fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        30 => proptest::collection::vec(any::<u8>(), 0..16),
        1 => (0usize..16).prop_map(|below| vec![b'v'; DEFAULT_MAX_VALUE_BYTES - 8 - below]),
        1 => (0usize..4096).prop_map(|above| vec![b'v'; DEFAULT_MAX_VALUE_BYTES + above]),
    ]
}

/// Extremes and ordinary numbers alike.
fn number() -> impl Strategy<Value = i64> {
    prop_oneof![
        3 => -3i64..12,
        1 => Just(i64::MIN),
        1 => Just(i64::MAX),
        1 => Just(MAX_LEASE_TTL),
        1 => Just(MAX_LEASE_TTL + 1),
        1 => any::<i64>(),
    ]
}

/// A lease id: one granted earlier (by index), or any number.
#[derive(Clone, Debug)]
enum LeaseRef {
    Granted(usize),
    Raw(i64),
}

fn lease_ref() -> impl Strategy<Value = LeaseRef> {
    prop_oneof![
        3 => any::<usize>().prop_map(LeaseRef::Granted),
        1 => number().prop_map(LeaseRef::Raw),
    ]
}

/// A revision: near the current one, or any number.
#[derive(Clone, Debug)]
enum RevRef {
    Near(i64),
    Raw(i64),
}

fn rev_ref() -> impl Strategy<Value = RevRef> {
    prop_oneof![
        3 => (-4i64..3).prop_map(RevRef::Near),
        1 => number().prop_map(RevRef::Raw),
    ]
}

#[derive(Clone, Debug)]
enum Op {
    Grant {
        ttl: i64,
        id: Option<i64>,
    },
    KeepAlive(LeaseRef),
    Revoke(LeaseRef),
    TimeToLive(LeaseRef),
    Leases,
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: Option<LeaseRef>,
        prev_kv: bool,
    },
    Get(Vec<u8>),
    List {
        prefix: Vec<u8>,
        at: Option<RevRef>,
    },
    Delete(Vec<u8>),
    DeletePrefix(Vec<u8>),
    Compact(RevRef),
    Watch {
        prefix: Vec<u8>,
        from: Option<RevRef>,
        prev_kv: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (number(), proptest::option::weighted(0.2, number())).prop_map(|(ttl, id)| {
            // Short TTLs would expire mid-case on a real clock and look like a change.
            let ttl = if (1..60).contains(&ttl) { ttl + 60 } else { ttl };
            Op::Grant { ttl, id }
        }),
        1 => lease_ref().prop_map(Op::KeepAlive),
        1 => lease_ref().prop_map(Op::Revoke),
        1 => lease_ref().prop_map(Op::TimeToLive),
        1 => Just(Op::Leases),
        4 => (key(), value(), proptest::option::of(lease_ref()), any::<bool>())
            .prop_map(|(key, value, lease, prev_kv)| Op::Put { key, value, lease, prev_kv }),
        1 => key().prop_map(Op::Get),
        1 => (key(), proptest::option::of(rev_ref())).prop_map(|(prefix, at)| Op::List { prefix, at }),
        1 => key().prop_map(Op::Delete),
        1 => key().prop_map(Op::DeletePrefix),
        1 => rev_ref().prop_map(Op::Compact),
        1 => (key(), proptest::option::of(rev_ref()), any::<bool>())
            .prop_map(|(prefix, from, prev_kv)| Op::Watch { prefix, from, prev_kv }),
    ]
}

/// Everything a call could change, read through the public API. (The compaction point is left
/// out: etcd tells it only through a watch that waits for a cancel. A failed compaction is
/// checked through the revision and the keys.)
#[derive(Debug, PartialEq)]
struct State {
    revision: Revision,
    kvs: Vec<registry_api::KeyValue>,
    /// Granted TTL and keys of every lease; the remaining TTL ticks on its own.
    leases: BTreeMap<LeaseId, (i64, Vec<Vec<u8>>)>,
}

async fn state(r: &EtcdRegistry) -> State {
    let list = r.list(b"", ListOptions::default()).await.expect("list all");
    let mut leases = BTreeMap::new();
    for id in r.leases().await.expect("leases") {
        if let Ok(ttl) = r.lease_time_to_live(id).await {
            leases.insert(id, (ttl.granted_ttl, ttl.keys));
        }
    }
    State {
        revision: list.revision,
        kvs: list.kvs,
        leases,
    }
}

/// What one call did, for the figures.
#[derive(Default)]
struct Tally {
    calls: AtomicU64,
    failed: AtomicU64,
    bad_input: AtomicU64,
}

static TALLY: Tally = Tally {
    calls: AtomicU64::new(0),
    failed: AtomicU64::new(0),
    bad_input: AtomicU64::new(0),
};

fn lease_id(r: &LeaseRef, granted: &[LeaseId]) -> LeaseId {
    match r {
        LeaseRef::Granted(i) if !granted.is_empty() => granted[i % granted.len()],
        LeaseRef::Granted(i) => LeaseId(*i as i64),
        LeaseRef::Raw(raw) => LeaseId(*raw),
    }
}

fn revision(r: &RevRef, current: Revision) -> Revision {
    match r {
        RevRef::Near(delta) => Revision(current.0.saturating_add(*delta)),
        RevRef::Raw(raw) => Revision(*raw),
    }
}

/// Input the contract says must be refused before the store is touched, with the error kind it
/// must be refused with.
fn expected_refusal(op: &Op, granted: &[LeaseId], current: Revision) -> Option<&'static str> {
    let bad_lease = |l: &LeaseRef| lease_id(l, granted).0 <= 0;
    let bad_rev = |r: &RevRef| revision(r, current).0 <= 0;
    match op {
        Op::Grant { ttl, .. } if *ttl <= 0 || *ttl > MAX_LEASE_TTL => Some("ttl"),
        Op::Grant { id: Some(id), .. } if *id <= 0 => Some("lease id"),
        Op::KeepAlive(l) | Op::Revoke(l) | Op::TimeToLive(l) if bad_lease(l) => Some("lease id"),
        Op::Put { key, .. } | Op::Get(key) | Op::Delete(key) if key.is_empty() => Some("empty key"),
        Op::Put { key, value, .. } if key.len() + value.len() > DEFAULT_MAX_VALUE_BYTES => {
            Some("too large")
        }
        Op::Put { lease: Some(l), .. } if bad_lease(l) => Some("lease id"),
        Op::List { at: Some(r), .. } | Op::Compact(r) | Op::Watch { from: Some(r), .. }
            if bad_rev(r) =>
        {
            Some("revision")
        }
        _ => None,
    }
}

fn matches_refusal(err: &Error, what: &str) -> bool {
    match what {
        "ttl" => matches!(
            err,
            Error::InvalidArgument(
                InvalidArgument::TtlNotPositive(_) | InvalidArgument::TtlTooLarge { .. }
            )
        ),
        "lease id" => matches!(err, Error::InvalidArgument(InvalidArgument::LeaseId(_))),
        "empty key" => matches!(err, Error::InvalidArgument(InvalidArgument::EmptyKey)),
        "too large" => matches!(err, Error::TooLarge { .. }),
        "revision" => matches!(err, Error::InvalidArgument(InvalidArgument::Revision(_))),
        _ => false,
    }
}

/// Runs one call; `Ok(true)` when it succeeded.
async fn call(
    r: &EtcdRegistry,
    op: &Op,
    granted: &mut Vec<LeaseId>,
) -> Result<bool, TestCaseError> {
    let current = state(r).await.revision;
    let outcome: Result<(), Error> = match op {
        Op::Grant { ttl, id } => r.lease_grant(*ttl, id.map(LeaseId)).await.map(|grant| {
            granted.push(grant.id);
        }),
        Op::KeepAlive(l) => r.lease_keep_alive(lease_id(l, granted)).await.map(drop),
        Op::Revoke(l) => r.lease_revoke(lease_id(l, granted)).await.map(drop),
        Op::TimeToLive(l) => r.lease_time_to_live(lease_id(l, granted)).await.map(drop),
        Op::Leases => r.leases().await.map(drop),
        Op::Put {
            key,
            value,
            lease,
            prev_kv,
        } => {
            let mut opts = PutOptions {
                lease: lease.as_ref().map(|l| lease_id(l, granted)),
                prev_kv: false,
            };
            if *prev_kv {
                opts = opts.prev_kv();
            }
            match r.put(key, value, opts).await {
                Ok(put) => {
                    prop_assert_eq!(put.revision, current.next(), "a put bumps by exactly one");
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
        Op::Get(key) => r.get(key).await.map(drop),
        Op::List { prefix, at } => {
            let opts = ListOptions {
                revision: at.as_ref().map(|at| revision(at, current)),
            };
            r.list(prefix, opts).await.map(drop)
        }
        Op::Delete(key) => r.delete(key).await.map(drop),
        Op::DeletePrefix(prefix) => r.delete_prefix(prefix).await.map(drop),
        Op::Compact(at) => r.compact(revision(at, current)).await.map(drop),
        Op::Watch {
            prefix,
            from,
            prev_kv,
        } => {
            let opts = WatchOptions {
                start_revision: from.as_ref().map(|from| revision(from, current)),
                prev_kv: *prev_kv,
                progress_notify: false,
            };
            match r.watch(prefix, opts).await {
                Ok(mut stream) => {
                    // Whatever comes first (a replayed batch, Compacted, nothing yet), it comes
                    // without panicking, and an error is one a watch may end with.
                    if let Ok(Some(Err(e))) =
                        tokio::time::timeout(Duration::from_millis(20), stream.next()).await
                    {
                        prop_assert!(
                            matches!(e, Error::Compacted { .. }),
                            "unexpected watch error {e:?}"
                        );
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
    };
    TALLY.calls.fetch_add(1, Ordering::Relaxed);
    let refusal = expected_refusal(op, granted, current);
    match (outcome, refusal) {
        (Ok(()), None) => Ok(true),
        (Ok(()), Some(what)) => Err(TestCaseError::fail(format!(
            "{op:?} should have been refused ({what})"
        ))),
        (Err(e), refusal) => {
            TALLY.failed.fetch_add(1, Ordering::Relaxed);
            if let Some(what) = refusal {
                TALLY.bad_input.fetch_add(1, Ordering::Relaxed);
                prop_assert!(matches_refusal(&e, what), "{op:?}: {e:?}, expected {what}");
            }
            // Only the typed, caller-actionable kinds: no catch-all from the simulator.
            prop_assert!(
                matches!(
                    e,
                    Error::LeaseNotFound(_)
                        | Error::LeaseExists(_)
                        | Error::Compacted { .. }
                        | Error::FutureRevision { .. }
                        | Error::InvalidArgument(_)
                        | Error::TooLarge { .. }
                ),
                "{op:?} failed with an untyped error: {e:?}"
            );
            prop_assert!(!e.to_string().is_empty());
            Ok(false)
        }
    }
}

#[test]
fn every_call_returns_a_typed_result_and_a_failed_call_changes_nothing() {
    let server = EtcdServer::start().expect("etcd");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut runner = runner(32, 256, "proptest-regressions/fuzz-calls.txt");
    let ops = proptest::collection::vec(op(), 1..24);
    let result = runner.run(&ops, |ops| {
        rt.block_on(async {
            let r = EtcdRegistry::builder(server.endpoints())
                .namespace(unique_namespace("fuzz"))
                .connect()
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut granted = Vec::new();
            let mut outcome = Ok(());
            for op in &ops {
                let before = state(&r).await;
                let ok = match call(&r, op, &mut granted).await {
                    Ok(ok) => ok,
                    Err(e) => {
                        outcome = Err(e);
                        break;
                    }
                };
                let after = state(&r).await;
                if after.revision < before.revision {
                    outcome = Err(TestCaseError::fail("the revision went down"));
                    break;
                }
                if !ok && after != before {
                    outcome = Err(TestCaseError::fail(format!(
                        "failed call {op:?} changed the store: {before:?} -> {after:?}"
                    )));
                    break;
                }
            }
            // Leave no lease behind for the next case (they are not namespaced).
            for id in granted {
                r.lease_revoke(id).await.ok();
            }
            outcome
        })
    });
    println!(
        "FIGURE fuzz-etcd: {} calls, {} failed with a typed error, {} of them bad input refused; 0 panics",
        TALLY.calls.load(Ordering::Relaxed),
        TALLY.failed.load(Ordering::Relaxed),
        TALLY.bad_input.load(Ordering::Relaxed),
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Endpoint strings: well-formed ones to nowhere, near misses, and any text.
fn endpoint() -> impl Strategy<Value = String> {
    prop_oneof![
        "(http|https|ftp|)(://|:/|//|)(127\\.0\\.0\\.1|localhost|\\[::1\\]|\\[::1|)(:[0-9]{0,6}|:x|)(/|/p|\\?q|@|)",
        "[ -~]{0,24}",
        any::<String>(),
    ]
}

#[test]
fn any_endpoint_fails_fast_with_a_typed_error() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut runner = runner(48, 512, "proptest-regressions/fuzz-connect.txt");
    let tried = AtomicU64::new(0);
    let result = runner.run(&proptest::collection::vec(endpoint(), 0..3), |endpoints| {
        rt.block_on(async {
            tried.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            let connected = EtcdRegistry::builder(endpoints.clone())
                .connect_timeout(Duration::from_millis(300))
                .request_timeout(Duration::from_millis(300))
                .connect()
                .await;
            let took = started.elapsed();
            // Nothing listens on these ports: every attempt fails, and says why.
            match connected {
                Ok(r) => Err(TestCaseError::fail(format!(
                    "{endpoints:?} connected: {r:?}"
                ))),
                Err(Error::InvalidArgument(InvalidArgument::Config(why))) => {
                    prop_assert!(!why.is_empty());
                    Ok(())
                }
                Err(e @ Error::Unavailable { .. }) => {
                    prop_assert!(!e.to_string().is_empty());
                    prop_assert!(took < Duration::from_secs(3), "{endpoints:?} took {took:?}");
                    Ok(())
                }
                Err(e) => Err(TestCaseError::fail(format!("{endpoints:?}: untyped {e:?}"))),
            }
        })
    });
    println!(
        "FIGURE fuzz-etcd-connect: {} endpoint lists tried, none panicked or hung",
        tried.load(Ordering::Relaxed)
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Values someone else wrote under a service prefix: skipped and counted by discovery, never
/// fatal, and the real instances around them are still found, before and after the first list.
#[test]
fn malformed_instances_under_a_service_prefix_are_skipped_and_counted() {
    use registry_api::service::{Discovery, DiscoveryOptions, ServiceInstance};
    let garbage: [&[u8]; 8] = [
        b"",
        b"not json",
        b"{}",
        b"null",
        br#"{"service":"hello","id":"x"}"#,
        br#"{"service":"other","id":"g3","address":"a"}"#,
        br#"{"service":"hello","id":"g6","address":7}"#,
        &[0xff, 0xfe, 0x00, 0x7b],
    ];
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let r = registry_etcd::testing::isolated_registry("malformed")
            .await
            .expect("etcd");
        let good = ServiceInstance::new("hello", "good", "127.0.0.1:1");
        r.put(b"services/hello/good", &good.to_json(), PutOptions::default())
            .await
            .unwrap();
        for (i, value) in garbage[..4].iter().enumerate() {
            let key = format!("services/hello/g{i}");
            r.put(key.as_bytes(), value, PutOptions::default())
                .await
                .unwrap();
        }
        let registry: std::sync::Arc<dyn Registry> = std::sync::Arc::new(r.clone());
        let discovery = Discovery::start(registry, "hello", DiscoveryOptions::default()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), discovery.wait_synced())
            .await
            .expect("synced despite garbage");
        for (i, value) in garbage[4..].iter().enumerate() {
            let key = format!("services/hello/g{}", 4 + i);
            r.put(key.as_bytes(), value, PutOptions::default())
                .await
                .unwrap();
        }
        let late = ServiceInstance::new("hello", "late", "127.0.0.1:2");
        r.put(b"services/hello/late", &late.to_json(), PutOptions::default())
            .await
            .unwrap();
        let started = Instant::now();
        while discovery.get("late").is_none() {
            assert!(started.elapsed() < Duration::from_secs(5), "late instance not seen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(discovery.is_synced(), "garbage must not break the watch");
        assert_eq!(discovery.snapshot().to_vec(), vec![good, late]);
        assert_eq!(discovery.malformed(), garbage.len() as u64);
        println!(
            "FIGURE fuzz-etcd-discovery: {} malformed values skipped and counted, the watch kept going",
            discovery.malformed()
        );
    });
}
