//! How a [`watcher`](super::watcher) behaves.

use crate::backoff::Backoff;
use std::time::Duration;

/// How a [`watcher`](super::watcher) lists, watches, detects a silent watch and retries.
/// `Default`: 500 ms → 30 s backoff, 5 s per call, 30 s idle, 5 s for a progress answer, a seed
/// of the process's own (see [`seed`](Self::seed)).
#[derive(Clone, Debug, PartialEq)]
pub struct WatcherConfig {
    /// Waits between re-list attempts after a failure.
    pub backoff: Backoff,
    /// Seeds the backoff jitter. `None` (the default) derives one from the process id, the
    /// time the process first started a watcher and the prefix, so a fleet's re-lists after a
    /// shared outage spread out even when every process is pid 1 in its container. Set one to
    /// get the same waits on every run (tests that assert timings do).
    pub seed: Option<u64>,
    /// How long one list, watch or progress request may take before it counts as failed.
    pub request_timeout: Duration,
    /// How long a watch may deliver nothing before it is asked for progress. A healthy watch
    /// answers; a watch on a member cut off from its cluster (etcd #8980) does not.
    pub idle_timeout: Duration,
    /// How long the answer to a progress request may take before the watch is treated as dead
    /// and the prefix is listed again.
    pub progress_timeout: Duration,
}

impl Default for WatcherConfig {
    fn default() -> Self {
        WatcherConfig {
            backoff: Backoff::default(),
            seed: None,
            request_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            progress_timeout: Duration::from_secs(5),
        }
    }
}

impl WatcherConfig {
    /// Sets the backoff.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the jitter seed: the same seed gives the same waits.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Sets the per-call timeout.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets how long a watch may be silent before it is asked for progress.
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = idle;
        self
    }

    /// Sets how long a progress request may go unanswered.
    pub fn progress_timeout(mut self, timeout: Duration) -> Self {
        self.progress_timeout = timeout;
        self
    }

    /// The longest a dead-but-connected watch goes unnoticed: idle period plus the progress
    /// deadline (the re-list follows after one backoff wait).
    pub fn stall_bound(&self) -> Duration {
        self.idle_timeout.saturating_add(self.progress_timeout)
    }
}
