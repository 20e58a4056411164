//! A lease's timing, shared between the registrar's task, which writes it at each renewal, and
//! the handles, which read it without asking the task.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// A lease's timing, written by the registrar at each keep-alive and read by handles without
/// asking the task: atomics, so a round over thousands of leases costs a store each.
#[derive(Debug)]
pub(crate) struct LeaseClock {
    epoch: Instant,
    /// Nanoseconds from `epoch` to when the last good keep-alive was sent, plus one; 0: none.
    last_ok: AtomicU64,
    ttl_nanos: AtomicU64,
    /// Nanoseconds from sending the last good keep-alive (or grant) to its answer, plus one.
    round_trip: AtomicU64,
}

impl LeaseClock {
    pub(crate) fn new(epoch: Instant) -> Self {
        LeaseClock {
            epoch,
            last_ok: AtomicU64::new(0),
            ttl_nanos: AtomicU64::new(0),
            round_trip: AtomicU64::new(0),
        }
    }

    /// Records how long the last good keep-alive (or grant) took to be answered.
    pub(crate) fn answered_after(&self, round_trip: Duration) {
        self.store_round_trip(Self::encode_round_trip(round_trip));
    }

    /// The stored form of a round trip: computed once for a round's leases answered together.
    pub(crate) fn encode_round_trip(round_trip: Duration) -> u64 {
        u64::try_from(round_trip.as_nanos()).unwrap_or(u64::MAX - 1) + 1
    }

    pub(crate) fn store_round_trip(&self, encoded: u64) {
        self.round_trip.store(encoded, Ordering::Relaxed);
    }

    pub(crate) fn round_trip(&self) -> Option<Duration> {
        match self.round_trip.load(Ordering::Relaxed) {
            0 => None,
            n => Some(Duration::from_nanos(n - 1)),
        }
    }

    pub(crate) fn renewed(&self, sent_at: Instant, ttl: Duration) {
        self.store(self.encode(sent_at, ttl));
    }

    /// The stored form of a renewal. Every clock of one registrar has the registrar's epoch,
    /// so a round encodes its instant once for all its leases.
    pub(crate) fn encode(&self, sent_at: Instant, ttl: Duration) -> (u64, u64) {
        let nanos = u64::try_from(sent_at.saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(u64::MAX - 1);
        (nanos + 1, u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX))
    }

    pub(crate) fn store(&self, (last_ok, ttl_nanos): (u64, u64)) {
        self.last_ok.store(last_ok, Ordering::Relaxed);
        self.ttl_nanos.store(ttl_nanos, Ordering::Relaxed);
    }

    pub(crate) fn read(&self) -> Option<(Instant, Instant)> {
        let last = self.last_ok.load(Ordering::Relaxed);
        if last == 0 {
            return None;
        }
        let sent = self.epoch + Duration::from_nanos(last - 1);
        let ttl = Duration::from_nanos(self.ttl_nanos.load(Ordering::Relaxed));
        Some((sent, sent.checked_add(ttl).unwrap_or(sent)))
    }
}
