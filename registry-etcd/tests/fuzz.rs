//! Fuzzing what only the etcd backend has: connecting. Any endpoint string gives a typed error
//! quickly (malformed: `InvalidArgument::Config`; unreachable or refused: `Unavailable`), never
//! a panic or a hang. (Wrong credentials are checked in `faults.rs`; the arbitrary-input fuzz of
//! the API itself is the conformance suite's `public_api_survives_arbitrary_input`, in
//! `tests/conformance.rs`.) And discovery over a real etcd: values someone else wrote under a
//! service prefix are skipped and counted, never fatal.
//!
//! Deterministic inputs (fixed proptest seed); `PROPTEST_CASES` sets the case count, else
//! `REGISTRY_FAULTS_FULL=1` runs more; failures are saved under `proptest-regressions/`.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use registry_api::{Error, InvalidArgument, PutOptions, Registry};
use registry_conformance::fuzz_runner;
use registry_etcd::EtcdRegistry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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
    let mut runner = fuzz_runner(48, 512, "proptest-regressions/fuzz-connect.txt");
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
    use registry_service::{Discovery, DiscoveryOptions, ServiceInstance};
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
        discovery.wait_synced(Duration::from_secs(10))
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
