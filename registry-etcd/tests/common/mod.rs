//! Helpers shared by this crate's integration tests.

#![allow(dead_code, unreachable_pub)]

use futures::StreamExt;
use registry_api::{Result, WatchBatch, WatchStream};
use registry_etcd::testing;
use registry_etcd::EtcdRegistry;
use std::time::Duration;

/// A registry on this test binary's shared etcd, in its own namespace.
pub async fn registry(label: &str) -> EtcdRegistry {
    testing::isolated_registry(label)
        .await
        .unwrap_or_else(|e| panic!("etcd for {label}: {e}"))
}

/// The next watch item, failing the test if none comes within `wait`.
pub async fn next_item(stream: &mut WatchStream, wait: Duration) -> Option<Result<WatchBatch>> {
    tokio::time::timeout(wait, stream.next())
        .await
        .expect("the watch yielded nothing in time")
}

/// The next batch, which must be there and be Ok.
pub async fn next_batch(stream: &mut WatchStream) -> WatchBatch {
    match next_item(stream, Duration::from_secs(5)).await {
        Some(Ok(batch)) => batch,
        other => panic!("expected a batch, got {other:?}"),
    }
}

/// True when nothing arrives within `wait`.
pub async fn stays_quiet(stream: &mut WatchStream, wait: Duration) -> bool {
    tokio::time::timeout(wait, stream.next()).await.is_err()
}
