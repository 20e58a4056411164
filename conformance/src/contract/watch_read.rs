//! Reading watch streams with a bound on waiting, and the watch properties that hold whatever
//! the history was (W1 ordered, W2 unique, W3 atomic, W5's lower bound, W6, W7).

use crate::failure::{ensure, Check};
use futures::{FutureExt, StreamExt};
use registry_api::{Bytes, Error, EventKind, Revision, WatchBatch, WatchStream};
use std::collections::HashSet;
use std::time::Duration;

/// What a watch delivered before the reader stopped.
#[derive(Debug, Default)]
pub(crate) struct Received {
    /// Every batch, progress notifications included, in arrival order.
    pub(crate) batches: Vec<WatchBatch>,
    /// The error item, if the stream yielded one.
    pub(crate) error: Option<Error>,
    /// The stream ended without an error.
    pub(crate) ended: bool,
    /// The reader gave up waiting.
    pub(crate) timed_out: bool,
}

impl Received {
    /// The batches that carry events.
    pub(crate) fn event_batches(&self) -> Vec<WatchBatch> {
        self.batches
            .iter()
            .filter(|b| !b.is_progress())
            .cloned()
            .collect()
    }
}

/// Reads until a batch at or above `until` arrives (or, with `None`, until the first item), the
/// stream fails or ends, or `timeout` passes without an item.
pub(crate) async fn read_until(
    stream: &mut WatchStream,
    until: Option<Revision>,
    timeout: Duration,
) -> Received {
    let mut got = Received::default();
    loop {
        match tokio::time::timeout(timeout, stream.next()).await {
            Err(_) => {
                got.timed_out = true;
                return got;
            }
            Ok(None) => {
                got.ended = true;
                return got;
            }
            Ok(Some(Err(e))) => {
                got.error = Some(e);
                return got;
            }
            Ok(Some(Ok(batch))) => {
                let reached = until.map_or(true, |u| batch.revision >= u && !batch.is_progress());
                got.batches.push(batch);
                if reached {
                    return got;
                }
            }
        }
    }
}

/// Items the stream has ready now, without waiting: what a correct watch must not have after
/// delivering everything the model knows of.
pub(crate) fn ready_now(stream: &mut WatchStream) -> Received {
    let mut got = Received::default();
    for _ in 0..64 {
        match stream.next().now_or_never() {
            None => return got,
            Some(None) => {
                got.ended = true;
                return got;
            }
            Some(Some(Err(e))) => {
                got.error = Some(e);
                return got;
            }
            Some(Some(Ok(batch))) => got.batches.push(batch),
        }
    }
    got
}

/// The properties every watch on `prefix` from `start` has, whatever was written.
pub(crate) fn check_properties(batches: &[WatchBatch], prefix: &[u8], start: Revision) -> Check {
    let mut last_event_rev: Option<Revision> = None;
    let mut last_progress: Option<Revision> = None;
    let mut seen: HashSet<(Revision, Bytes)> = HashSet::new();
    for batch in batches {
        if batch.is_progress() {
            last_progress = Some(batch.revision);
            continue;
        }
        ensure!(
            batch.revision >= start,
            "W5 resumable: a watch from revision {start} delivered revision {}",
            batch.revision
        );
        if let Some(p) = last_progress {
            ensure!(
                batch.revision > p,
                "W6 bookmarkable: event at revision {} after a progress notification at {p}",
                batch.revision
            );
        }
        if let Some(last) = last_event_rev {
            ensure!(
                batch.revision >= last,
                "W1 ordered: revision {} delivered after revision {last}",
                batch.revision
            );
            ensure!(
                batch.revision != last,
                "W3 atomic: revision {} split across two batches",
                batch.revision
            );
        }
        last_event_rev = Some(batch.revision);
        for event in &batch.events {
            ensure!(
                event.kv.mod_revision == batch.revision,
                "W3 atomic: event on {:?} with mod_revision {} in the batch of revision {}",
                event.kv.key_str(),
                event.kv.mod_revision,
                batch.revision
            );
            ensure!(
                event.kv.key.starts_with(prefix),
                "W7 filtered: event on {:?} outside the watched prefix {:?}",
                event.kv.key_str(),
                String::from_utf8_lossy(prefix)
            );
            ensure!(
                seen.insert((batch.revision, event.kv.key.clone())),
                "W2 unique: key {:?} at revision {} delivered twice",
                event.kv.key_str(),
                batch.revision
            );
            if event.kind == EventKind::Delete {
                ensure!(
                    event.kv.create_revision.0 == 0 && event.kv.version == 0,
                    "W8: a delete event's kv carries only the key and mod_revision, got {:?}",
                    event.kv
                );
            }
        }
        let keys: Vec<&[u8]> = batch.events.iter().map(|e| &e.kv.key[..]).collect();
        ensure!(
            keys.windows(2).all(|w| w[0] < w[1]),
            "a batch's events are in key order, got {:?} at revision {}",
            keys.iter()
                .map(|k| String::from_utf8_lossy(k))
                .collect::<Vec<_>>(),
            batch.revision
        );
    }
    Ok(())
}

/// Watch batches for the unit tests of the watch checks.
#[cfg(test)]
pub(crate) mod tests_support {
    use registry_api::{Bytes, EventKind, KeyValue, Revision, WatchBatch, WatchEvent};

    /// A put of `key` at `rev`, creating it.
    pub(crate) fn put(key: &str, rev: i64) -> WatchEvent {
        WatchEvent {
            kind: EventKind::Put,
            kv: KeyValue {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: Bytes::from_static(b"v"),
                create_revision: Revision(rev),
                mod_revision: Revision(rev),
                version: 1,
                lease: None,
            },
            prev_kv: None,
        }
    }

    /// A batch at `rev` of puts of `keys` (none: a progress notification).
    pub(crate) fn batch(rev: i64, keys: &[&str]) -> WatchBatch {
        WatchBatch {
            revision: Revision(rev),
            events: keys.iter().map(|k| put(k, rev)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check_properties;
    use super::tests_support::batch;
    use registry_api::{Revision, WatchBatch};

    fn broken(batches: &[WatchBatch]) -> String {
        check_properties(batches, b"p/", Revision(2)).expect_err("a broken watch passed")
    }

    #[test]
    fn a_correct_watch_passes() {
        let ok = [batch(2, &["p/a", "p/b"]), batch(4, &[]), batch(5, &["p/a"])];
        assert_eq!(check_properties(&ok, b"p/", Revision(2)), Ok(()));
    }

    #[test]
    fn each_broken_property_is_named() {
        assert!(broken(&[batch(3, &["p/a"]), batch(2, &["p/a"])]).starts_with("W1"));
        assert!(broken(&[batch(3, &["p/a"]), batch(3, &["p/b"])]).starts_with("W3"));
        assert!(broken(&[batch(3, &["p/a", "p/a"])]).starts_with("W2"));
        assert!(broken(&[batch(1, &["p/a"])]).starts_with("W5"));
        assert!(broken(&[batch(5, &[]), batch(4, &["p/a"])]).starts_with("W6"));
        assert!(broken(&[batch(3, &["q/a"])]).starts_with("W7"));
        let mut moved = batch(3, &["p/a"]);
        moved.events[0].kv.mod_revision = Revision(2);
        assert!(broken(&[moved]).starts_with("W3"));
    }
}
