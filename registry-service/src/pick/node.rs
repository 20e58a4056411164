//! What a picker knows about one node: its calls in flight, when it was last picked, its
//! latency estimate and where it stands with the ejection rules.

use super::ejection::Outlier;
use super::ewma::{EwmaOptions, PeakEwma};
use crate::instance::ServiceInstance;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use tokio::time::Instant;

/// What the picker knows about one node; shared with the guards of its calls.
#[derive(Debug)]
pub(super) struct Node {
    pub(super) id: String,
    pub(super) in_flight: AtomicU64,
    /// True while ejected, awaiting a probe or probing. Written under the picker's lock.
    pub(super) out: AtomicBool,
    /// When it was last picked, in nanoseconds after the picker's epoch plus one; 0: never.
    pub(super) last_pick: AtomicU64,
    record: Mutex<Record>,
    #[cfg(feature = "metrics")]
    pub(super) series: crate::metrics::NodeSeries,
}

#[derive(Debug, Default)]
pub(super) struct Record {
    pub(super) ewma: PeakEwma,
    pub(super) outlier: Outlier,
}

impl Node {
    pub(super) fn new(instance: &ServiceInstance) -> Self {
        Node {
            id: instance.id.clone(),
            in_flight: AtomicU64::new(0),
            out: AtomicBool::new(false),
            last_pick: AtomicU64::new(0),
            record: Mutex::new(Record::default()),
            #[cfg(feature = "metrics")]
            series: crate::metrics::NodeSeries::new(&instance.service, &instance.id),
        }
    }

    pub(super) fn record(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Its cost in a comparison with `rival`: its latency estimate (its rival's when it has no
    /// sample yet, the default when neither has) times its calls in flight plus one.
    pub(super) fn cost(&self, rival: &Node, now: Instant, options: &EwmaOptions) -> f64 {
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        let own = self.record().ewma.measured(now, options);
        let estimate = own
            .or_else(|| rival.record().ewma.measured(now, options))
            .unwrap_or(options.default_rtt.as_nanos() as f64);
        // At least a nanosecond: answers measured as instant (virtual time, a local cache)
        // still leave the calls in flight to tell nodes apart.
        estimate.max(1.0) * (in_flight as f64 + 1.0)
    }

    /// A call picked on it ended with `outcome` (`None`: dropped unmarked): its series.
    #[cfg(feature = "metrics")]
    pub(super) fn ended(&self, outcome: Option<bool>, now: Instant, options: &EwmaOptions) {
        use crate::metrics::Outcome;
        let (ended, latency) = match outcome {
            Some(true) => (Outcome::Success, self.record().ewma.measured(now, options)),
            Some(false) => (Outcome::Failure, self.record().ewma.measured(now, options)),
            None => (Outcome::Dropped, None),
        };
        self.series.ended(ended, latency);
    }
}
