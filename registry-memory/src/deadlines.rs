//! The deadline index of the lease table: leases grouped by deadline in an ordered map, so the
//! next one due is at the front however many are alive, and leases renewed at the same instant
//! (the common case under a paused tokio clock) share one entry of the map.
//!
//! The index is lazy: an entry may be stale (its lease since revoked, or kept alive to a later
//! deadline), and the lease table checks each entry it pops against the lease itself. So revoke
//! and keep-alive never search the index. Stale entries are dropped as their time comes, or all
//! at once when they outnumber the live leases.

use registry_api::LeaseId;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Default)]
struct Bucket {
    /// Sorted in descending order when `sorted`, so that `pop` gives the smallest id.
    ids: Vec<LeaseId>,
    sorted: bool,
}

#[derive(Debug, Default)]
pub(crate) struct DeadlineIndex {
    buckets: BTreeMap<Duration, Bucket>,
    entries: usize,
}

impl DeadlineIndex {
    pub(crate) fn push(&mut self, at: Duration, id: LeaseId) {
        let bucket = self.buckets.entry(at).or_default();
        bucket.ids.push(id);
        bucket.sorted = false;
        self.entries += 1;
    }

    /// Entries, stale ones included.
    pub(crate) fn len(&self) -> usize {
        self.entries
    }

    /// The earliest deadline indexed (possibly stale: then early, never late).
    pub(crate) fn first_at(&self) -> Option<Duration> {
        self.buckets.keys().next().copied()
    }

    /// Takes the entry due first at `now`: the earliest deadline, ties by lease id.
    #[inline]
    pub(crate) fn pop_due(&mut self, now: Duration) -> Option<(Duration, LeaseId)> {
        let mut entry = self.buckets.first_entry()?;
        let at = *entry.key();
        if at > now {
            return None;
        }
        let bucket = entry.get_mut();
        if !bucket.sorted {
            bucket.ids.sort_unstable_by(|a, b| b.cmp(a));
            bucket.sorted = true;
        }
        let id = bucket.ids.pop();
        if bucket.ids.is_empty() {
            entry.remove();
        }
        let id = id?;
        self.entries -= 1;
        Some((at, id))
    }

    pub(crate) fn clear(&mut self) {
        self.buckets.clear();
        self.entries = 0;
    }
}
