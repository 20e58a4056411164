//! Unique key prefixes, so that every case and sequence has keys of its own on a shared server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A prefix no other run uses: the label, the process, the time and a counter.
pub(crate) fn unique_prefix(label: &str) -> Vec<u8> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "conformance/{label}/{:x}-{nanos:x}-{n}/",
        std::process::id()
    )
    .into_bytes()
}
