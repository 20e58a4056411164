//! Virtual time: either tokio's clock (paused in tests, so time jumps to the next timer) or a
//! manual clock that moves only when the test calls `advance`.

use std::time::Duration;

/// Where the store reads the time from. All deadlines are kept as durations since the clock's
/// start, so both kinds share one lease table.
#[derive(Debug)]
pub(crate) enum Clock {
    /// Time moves only by `MemoryRegistry::advance`; the current value lives in the state.
    Manual,
    /// `tokio::time::Instant`, measured from when the registry was built.
    Tokio {
        /// The instant that counts as time zero.
        start: tokio::time::Instant,
    },
}

impl Clock {
    pub(crate) fn tokio() -> Self {
        Clock::Tokio {
            start: tokio::time::Instant::now(),
        }
    }

    /// Elapsed virtual time; `manual_now` is the manual clock's reading.
    pub(crate) fn now(&self, manual_now: Duration) -> Duration {
        match self {
            Clock::Manual => manual_now,
            Clock::Tokio { start } => tokio::time::Instant::now().saturating_duration_since(*start),
        }
    }

    pub(crate) fn is_manual(&self) -> bool {
        matches!(self, Clock::Manual)
    }

    /// The tokio instant of a deadline, if the clock is tokio's and the instant is representable.
    pub(crate) fn instant_at(&self, deadline: Duration) -> Option<tokio::time::Instant> {
        match self {
            Clock::Manual => None,
            Clock::Tokio { start } => start.checked_add(deadline),
        }
    }
}
