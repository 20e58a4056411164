//! Outlier ejection that stays bounded, after Envoy's outlier detection: the rules are on
//! [`EjectionOptions`].

use std::time::Duration;
use tokio::time::Instant;

/// Outlier ejection that stays bounded, after Envoy's outlier detection.
///
/// - A node failing `consecutive_failures` calls in a row is ejected (picked no more) for
///   `base_ejection_time` × the number of times it has been ejected, capped at
///   `max_ejection_time`. Each `base_ejection_time` it then spends healthy takes one off that
///   count, as Envoy decrements its multiplier while a host stays healthy.
/// - At most `max_ejection_percent` of the nodes are out at once (at least one, unless the
///   percentage is 0); a node that reaches the threshold when the cap is full stays in.
/// - When its ejection time is over, the next pick sends it one trial call (a probe) and no
///   other call until that one ends: a success brings it back to full traffic, a failure
///   ejects it again for longer, a probe dropped without an outcome is tried again.
/// - When fewer than `panic_threshold_percent` of the nodes are healthy, ejection is ignored
///   and every node is a candidate (Envoy's panic threshold, Nacos's protection threshold):
///   spreading the load over all nodes beats overloading the few left.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EjectionOptions {
    /// Failures in a row that eject a node; 0 never ejects.
    pub consecutive_failures: u32,
    /// The first ejection's length; each further one adds as much.
    pub base_ejection_time: Duration,
    /// The longest ejection.
    pub max_ejection_time: Duration,
    /// The largest share of the nodes out at once, in percent (at least one node unless 0).
    pub max_ejection_percent: u8,
    /// Below this share of healthy nodes, in percent, every node is a candidate.
    pub panic_threshold_percent: u8,
}

impl Default for EjectionOptions {
    /// Envoy's defaults: 5 failures in a row, 30 s growing to at most 300 s, at most 10 % of
    /// the nodes out, panic below 50 % healthy.
    fn default() -> Self {
        EjectionOptions {
            consecutive_failures: 5,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            panic_threshold_percent: 50,
        }
    }
}

impl EjectionOptions {
    /// Sets the failures in a row that eject a node (0: never).
    pub fn consecutive_failures(mut self, failures: u32) -> Self {
        self.consecutive_failures = failures;
        self
    }

    /// Sets the first ejection's length and the longest.
    pub fn ejection_time(mut self, base: Duration, max: Duration) -> Self {
        self.base_ejection_time = base;
        self.max_ejection_time = max;
        self
    }

    /// Sets the largest share of nodes out at once, in percent (values above 100 count as 100).
    pub fn max_ejection_percent(mut self, percent: u8) -> Self {
        self.max_ejection_percent = percent;
        self
    }

    /// Sets the healthy share, in percent, below which every node is a candidate.
    pub fn panic_threshold_percent(mut self, percent: u8) -> Self {
        self.panic_threshold_percent = percent;
        self
    }

    /// The length of the `times`-th ejection.
    pub fn ejection_time_for(&self, times: u32) -> Duration {
        self.base_ejection_time
            .saturating_mul(times.max(1))
            .min(self.max_ejection_time)
    }

    /// How many of `total` nodes may be out at once.
    pub(crate) fn max_out(&self, total: usize) -> usize {
        let percent = usize::from(self.max_ejection_percent.min(100));
        if percent == 0 {
            return 0;
        }
        (total.saturating_mul(percent) / 100).max(1)
    }

    /// True when `healthy` of `total` is below the panic threshold.
    pub(crate) fn panics(&self, healthy: usize, total: usize) -> bool {
        let threshold = usize::from(self.panic_threshold_percent.min(100));
        healthy.saturating_mul(100) < total.saturating_mul(threshold)
    }
}

/// Where a node stands with the ejection rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Takes its full share of calls.
    Healthy,
    /// Picked by no one until `until` (unless the picker panics).
    Ejected {
        /// When its ejection ends.
        until: Instant,
    },
    /// Its ejection is over: the next pick sends it a trial call.
    AwaitingProbe,
    /// A trial call is in flight; it takes no other call until that one ends.
    Probing,
}

/// One node's record.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Outlier {
    pub(crate) health: Health,
    pub(crate) consecutive_failures: u32,
    pub(crate) times_ejected: u32,
    /// Since when it has been healthy after its last ejection.
    healthy_since: Option<Instant>,
}

impl Default for Outlier {
    fn default() -> Self {
        Outlier {
            health: Health::Healthy,
            consecutive_failures: 0,
            times_ejected: 0,
            healthy_since: None,
        }
    }
}

impl Outlier {
    /// Ejects the node from `now`; returns when the ejection ends.
    pub(crate) fn eject(&mut self, now: Instant, options: &EjectionOptions) -> Instant {
        if let Some(since) = self.healthy_since.take() {
            let healthy = now.saturating_duration_since(since).as_nanos();
            if let Some(periods) = healthy.checked_div(options.base_ejection_time.as_nanos()) {
                self.times_ejected = self
                    .times_ejected
                    .saturating_sub(u32::try_from(periods).unwrap_or(u32::MAX));
            }
        }
        self.times_ejected = self.times_ejected.saturating_add(1);
        self.consecutive_failures = 0;
        let length = options.ejection_time_for(self.times_ejected);
        let until = now
            .checked_add(length)
            .unwrap_or(now + Duration::from_secs(86_400 * 365));
        self.health = Health::Ejected { until };
        until
    }

    /// A probe succeeded: full traffic again.
    pub(crate) fn restore(&mut self, now: Instant) {
        self.health = Health::Healthy;
        self.consecutive_failures = 0;
        self.healthy_since = Some(now);
    }

    /// Where the node stands at `now`: an ejection that is over awaits its probe.
    pub(crate) fn health_at(&mut self, now: Instant) -> Health {
        if let Health::Ejected { until } = self.health {
            if until <= now {
                self.health = Health::AwaitingProbe;
            }
        }
        self.health
    }

    /// A call on the node ended: `outcome` is `Some(true)` for a success, `Some(false)` for a
    /// failure, `None` when it ended without one (cancelled, panicked); `probe` when it was the
    /// node's trial call. `room` says whether the cap on nodes out leaves room for one more,
    /// asked only when the failures reach the threshold. Returns what changed.
    pub(crate) fn call_ended(
        &mut self,
        outcome: Option<bool>,
        probe: bool,
        now: Instant,
        options: &EjectionOptions,
        room: impl FnOnce() -> bool,
    ) -> Verdict {
        match outcome {
            None => {
                // No sample; a trial call is owed again.
                if probe && self.health == Health::Probing {
                    self.health = Health::AwaitingProbe;
                }
                Verdict::Unchanged
            }
            Some(true) if probe => {
                self.restore(now);
                Verdict::Restored
            }
            Some(true) => {
                self.consecutive_failures = 0;
                Verdict::Unchanged
            }
            Some(false) => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                if probe {
                    return Verdict::EjectedAgain {
                        until: self.eject(now, options),
                    };
                }
                let threshold = options.consecutive_failures;
                if threshold == 0
                    || self.consecutive_failures < threshold
                    || self.health != Health::Healthy
                {
                    return Verdict::Unchanged;
                }
                if !room() {
                    return Verdict::CapReached;
                }
                Verdict::Ejected {
                    until: self.eject(now, options),
                }
            }
        }
    }
}

/// What the end of a call changed for its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing the picker keeps track of.
    Unchanged,
    /// Its trial call succeeded: back to full traffic.
    Restored,
    /// Failed enough calls in a row: out until `until`.
    Ejected { until: Instant },
    /// Its trial call failed: out again, for longer.
    EjectedAgain { until: Instant },
    /// Failed enough calls, but as many nodes as the cap allows are out already: it stays in.
    CapReached,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_thresholds() {
        let options = EjectionOptions::default();
        assert_eq!(options.max_out(3), 1, "at least one");
        assert_eq!(options.max_out(100), 10);
        assert_eq!(options.max_ejection_percent(0).max_out(100), 0);
        assert_eq!(options.max_ejection_percent(255).max_out(7), 7);
        assert!(!options.panics(1, 2));
        assert!(options.panics(1, 3));
        assert_eq!(options.ejection_time_for(1), Duration::from_secs(30));
        assert_eq!(options.ejection_time_for(4), Duration::from_secs(120));
        assert_eq!(options.ejection_time_for(40), Duration::from_secs(300));
    }

    #[test]
    fn failures_in_a_row_eject_within_the_cap_and_a_probe_decides_the_return() {
        let options = EjectionOptions::default().consecutive_failures(2);
        let t0 = Instant::now();
        let mut outlier = Outlier::default();
        let fail = |o: &mut Outlier, room| o.call_ended(Some(false), false, t0, &options, || room);
        assert_eq!(fail(&mut outlier, true), Verdict::Unchanged);
        assert_eq!(fail(&mut outlier, false), Verdict::CapReached);
        let until = t0 + Duration::from_secs(30);
        assert_eq!(fail(&mut outlier, true), Verdict::Ejected { until });
        assert_eq!(outlier.health_at(t0), Health::Ejected { until });
        assert_eq!(outlier.health_at(until), Health::AwaitingProbe);
        outlier.health = Health::Probing;
        let dropped = outlier.call_ended(None, true, until, &options, || true);
        assert_eq!(dropped, Verdict::Unchanged);
        assert_eq!(
            outlier.health,
            Health::AwaitingProbe,
            "a trial is owed again"
        );
        outlier.health = Health::Probing;
        let failed = outlier.call_ended(Some(false), true, until, &options, || false);
        assert!(
            matches!(failed, Verdict::EjectedAgain { .. }),
            "whatever the cap"
        );
        outlier.health = Health::Probing;
        let later = until + Duration::from_secs(60);
        let back = outlier.call_ended(Some(true), true, later, &options, || true);
        assert_eq!(back, Verdict::Restored);
        assert_eq!(outlier.health, Health::Healthy);
    }

    #[test]
    fn time_healthy_shortens_the_next_ejection() {
        let options = EjectionOptions::default();
        let t0 = Instant::now();
        let mut outlier = Outlier::default();
        outlier.eject(t0, &options);
        outlier.restore(t0);
        let until = outlier.eject(t0, &options);
        assert_eq!(until - t0, Duration::from_secs(60));
        outlier.restore(t0);
        // Two base times healthy: two off the count of 2, so this is a first ejection again.
        let later = t0 + Duration::from_secs(60);
        let until = outlier.eject(later, &options);
        assert_eq!(until - later, Duration::from_secs(30));
    }
}
