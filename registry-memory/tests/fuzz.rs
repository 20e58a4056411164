//! Discovery over the simulator, fuzzed: garbage written under a service prefix by someone
//! else is skipped and counted, never fatal, and real instances around it are still found.
//! (Discovery reads a fixed `services/<name>/` layout, so this cannot run under the conformance
//! suite's per-case prefixes; the arbitrary-input fuzz of the API itself is the suite's
//! `public_api_survives_arbitrary_input`, in `tests/conformance.rs`.)
//!
//! Deterministic: the proptest seed is fixed and time is tokio's paused clock. `PROPTEST_CASES`
//! sets the case count, else `REGISTRY_FAULTS_FULL=1` runs more; failures are saved under
//! `proptest-regressions/`.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use registry_api::{PutOptions, Registry};
use registry_conformance::fuzz_runner;
use registry_memory::MemoryRegistry;
use registry_service::{Discovery, DiscoveryOptions, ServiceInstance};
use std::sync::Arc;
use std::time::Duration;

/// A value someone else may write under a service prefix.
fn garbage() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        Just(b"{}".to_vec()),
        Just(b"null".to_vec()),
        Just(br#"{"service":"hello","id":"x"}"#.to_vec()),
        Just(br#"{"service":"other","id":"g0","address":"a"}"#.to_vec()),
        Just(br#"{"service":"hello","id":"g0","address":7}"#.to_vec()),
        "[ -~]{0,40}".prop_map(String::into_bytes),
    ]
}

#[test]
fn malformed_instances_are_skipped_and_counted_not_fatal() {
    let mut runner = fuzz_runner(48, 256, "proptest-regressions/fuzz-discovery.txt");
    let strategy = proptest::collection::vec(garbage(), 1..6);
    let skipped = std::cell::Cell::new(0u64);
    let result = runner.run(&strategy, |values| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let seen = rt.block_on(async {
            let r = MemoryRegistry::new();
            let good = ServiceInstance::new("hello", "good", "127.0.0.1:1");
            r.put(
                b"services/hello/good",
                &good.to_json(),
                PutOptions::default(),
            )
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
            // Garbage before the first list, then garbage arriving through the watch.
            let half = values.len() / 2;
            for (i, value) in values[..half].iter().enumerate() {
                let key = format!("services/hello/g{i}");
                r.put(key.as_bytes(), value, PutOptions::default())
                    .await
                    .ok();
            }
            let discovery =
                Discovery::start(Arc::new(r.clone()), "hello", DiscoveryOptions::default())
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
            discovery
                .wait_synced(Duration::from_secs(5))
                .await
                .expect("synced");
            for (i, value) in values[half..].iter().enumerate() {
                let key = format!("services/hello/g{}", half + i);
                r.put(key.as_bytes(), value, PutOptions::default())
                    .await
                    .ok();
            }
            let late = ServiceInstance::new("hello", "late", "127.0.0.1:2");
            r.put(
                b"services/hello/late",
                &late.to_json(),
                PutOptions::default(),
            )
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
            tokio::time::sleep(Duration::from_millis(50)).await;
            prop_assert!(discovery.is_synced(), "garbage must not break the watch");
            prop_assert_eq!(discovery.revision(), r.current_revision());
            // Only values that really are instances of their key count.
            let mut expected = vec![good, late];
            for (i, value) in values.iter().enumerate() {
                if let Ok(instance) = ServiceInstance::from_json(value) {
                    if instance.service == "hello" && instance.id == format!("g{i}") {
                        expected.push(instance);
                    }
                }
            }
            expected.sort_by(|a, b| a.id.cmp(&b.id));
            let malformed = (values.len() + 2 - expected.len()) as u64;
            prop_assert_eq!(discovery.snapshot().to_vec(), expected);
            prop_assert_eq!(discovery.malformed(), malformed);
            Ok(malformed)
        })?;
        skipped.set(skipped.get() + seen);
        Ok(())
    });
    println!(
        "FIGURE fuzz-memory-discovery: {} malformed instance values skipped and counted",
        skipped.get()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}
