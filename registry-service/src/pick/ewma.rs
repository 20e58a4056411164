//! Peak EWMA latency, as tower's `PeakEwma` and linkerd2-proxy measure it.
//!
//! A sample above the estimate replaces it at once (the peak), so a node that turns slow is
//! avoided after one slow answer; a sample below it pulls the estimate down with an
//! exponential weight that depends on the time since the last sample, `exp(-elapsed / decay)`.
//! With no samples the estimate decays toward zero, so a node avoided for being slow is tried
//! again after a while rather than never.
//!
//! A node with no answer yet has no estimate of its own. Compared with a measured node it takes
//! that node's estimate, so only the calls in flight tell them apart: it is neither flooded (a
//! zero cost would win every comparison) nor starved behind a default far above its peers (a
//! first call dropped without an outcome leaves it unmeasured, and with a fixed default it would
//! lose every comparison until [`force_pick_after`](EwmaOptions::force_pick_after)). Compared
//! with another unmeasured node, both cost `default_rtt`.

use std::time::Duration;
use tokio::time::Instant;

/// How the latency estimate behind power-of-two-choices moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EwmaOptions {
    /// The estimate of a node not measured yet when its rival is not measured either (against a
    /// measured node it takes that node's estimate).
    pub default_rtt: Duration,
    /// The time constant of the decay: after `decay` without samples the estimate has fallen
    /// to 1/e of itself.
    pub decay: Duration,
    /// A failed call counts as at least this long, so a node that fails fast does not look
    /// fast and attract more calls.
    pub failure_penalty: Duration,
    /// When the loser of a comparison has not been picked for this long, it is picked anyway
    /// (go-zero's forced pick): a node never picked yet, or avoided for being slow, gets a
    /// call now and then to measure it again, rather than starving behind a stale estimate.
    /// Zero turns this off.
    pub force_pick_after: Duration,
}

impl Default for EwmaOptions {
    /// 30 ms for unmeasured nodes and a 10 s decay (linkerd2-proxy's defaults); failures count
    /// as 1 s; a node not picked for 1 s is picked when drawn (go-zero's default).
    fn default() -> Self {
        EwmaOptions {
            default_rtt: Duration::from_millis(30),
            decay: Duration::from_secs(10),
            failure_penalty: Duration::from_secs(1),
            force_pick_after: Duration::from_secs(1),
        }
    }
}

/// One node's latency estimate, in nanoseconds.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PeakEwma {
    estimate_ns: f64,
    /// When the last sample came; `None` before the first.
    updated: Option<Instant>,
}

fn weight(elapsed: Duration, decay: Duration) -> f64 {
    let decay_ns = decay.as_nanos() as f64;
    if decay_ns <= 0.0 {
        return 0.0;
    }
    (-(elapsed.as_nanos() as f64) / decay_ns).exp()
}

impl PeakEwma {
    /// The estimate at `now`, decayed toward zero since the last sample.
    pub(crate) fn estimate(&self, now: Instant, options: &EwmaOptions) -> f64 {
        self.measured(now, options)
            .unwrap_or(options.default_rtt.as_nanos() as f64)
    }

    /// The estimate at `now`, or `None` before the first sample.
    pub(crate) fn measured(&self, now: Instant, options: &EwmaOptions) -> Option<f64> {
        let at = self.updated?;
        Some(self.estimate_ns * weight(now.saturating_duration_since(at), options.decay))
    }

    /// Takes one sample.
    pub(crate) fn observe(&mut self, rtt: Duration, now: Instant, options: &EwmaOptions) {
        let rtt_ns = rtt.as_nanos() as f64;
        self.estimate_ns = match self.updated {
            // The first answer replaces the placeholder.
            None => rtt_ns,
            Some(_) if rtt_ns > self.estimate_ns => rtt_ns,
            Some(at) => {
                let w = weight(now.saturating_duration_since(at), options.decay);
                self.estimate_ns * w + rtt_ns * (1.0 - w)
            }
        };
        self.updated = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_at_once_and_falls_slowly() {
        let options = EwmaOptions::default();
        let t0 = Instant::now();
        let mut ewma = PeakEwma::default();
        assert_eq!(ewma.estimate(t0, &options), 30e6);
        ewma.observe(Duration::from_millis(1), t0, &options);
        assert_eq!(ewma.estimate(t0, &options), 1e6);
        ewma.observe(Duration::from_millis(50), t0, &options);
        assert_eq!(ewma.estimate(t0, &options), 50e6);
        // A fast answer right after barely moves it; one a decay later moves it most of the way.
        ewma.observe(
            Duration::from_millis(1),
            t0 + Duration::from_millis(1),
            &options,
        );
        assert!(ewma.estimate(t0, &options) > 49e6);
        let later = t0 + Duration::from_secs(10);
        let decayed = ewma.estimate(later, &options);
        assert!(
            (decayed - 50e6 / std::f64::consts::E).abs() < 0.1e6,
            "{decayed}"
        );
    }
}
