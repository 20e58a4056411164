//! Jittered exponential backoff, shared by re-registration and discovery resync.

use crate::seed::SplitMix64;
use std::time::Duration;
use tokio::time::Instant;

/// How long to wait between retries: `initial × multiplier^(attempt-1)`, capped at `max`, then
/// shortened by a random fraction of up to `jitter` so that a fleet recovering from the same
/// outage does not retry in lockstep.
///
/// The wait before attempt `n` (1-based) always lies in
/// `[ceiling(n) × (1 - jitter), ceiling(n)]`, and never exceeds `max`.
#[derive(Clone, Debug, PartialEq)]
pub struct Backoff {
    /// The ceiling of the first wait.
    pub initial: Duration,
    /// The largest wait.
    pub max: Duration,
    /// Growth per attempt; values below 1 (or not a number) count as 1.
    pub multiplier: f64,
    /// The fraction of each wait that is random, from 0 (none) to 1 (anywhere from zero to the
    /// ceiling); clamped to that range.
    pub jitter: f64,
}

impl Default for Backoff {
    /// 500 ms doubling to 30 s, half of each wait random.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.5,
        }
    }
}

impl Backoff {
    /// A backoff from `initial` to `max` with the default multiplier and jitter.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            ..Self::default()
        }
    }

    /// Sets the growth per attempt.
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// Sets the random fraction of each wait.
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// The longest wait before attempt `attempt` (1-based; 0 counts as 1), before jitter.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        if self.initial.is_zero() {
            return Duration::ZERO;
        }
        // NaN fails the comparison and so counts as 1, like values below 1.
        let multiplier = if self.multiplier >= 1.0 {
            self.multiplier
        } else {
            1.0
        };
        let exponent = attempt.saturating_sub(1).min(1024) as i32;
        let secs = self.initial.as_secs_f64() * multiplier.powi(exponent);
        // An overflowing or non-finite product simply means "the cap".
        match Duration::try_from_secs_f64(secs) {
            Ok(d) => d.min(self.max),
            Err(_) => self.max,
        }
    }

    pub(crate) fn jitter_fraction(&self) -> f64 {
        if self.jitter.is_nan() {
            0.0
        } else {
            self.jitter.clamp(0.0, 1.0)
        }
    }

    /// The wait before attempt `attempt`, drawn from `rng`.
    pub(crate) fn delay(&self, attempt: u32, rng: &mut SplitMix64) -> Duration {
        let ceiling = self.ceiling(attempt);
        let cut = self.jitter_fraction() * rng.next_f64();
        ceiling.mul_f64((1.0 - cut).clamp(0.0, 1.0))
    }
}

/// `now + after`, or a point decades away when that overflows: durations come from options,
/// and an absurd one must mean "never", not a panic.
pub(crate) fn deadline_after(after: Duration) -> Instant {
    deadline_after_from(Instant::now(), after)
}

/// `from + after`, saturating like [`deadline_after`].
pub(crate) fn deadline_after_from(from: Instant, after: Duration) -> Instant {
    from.checked_add(after)
        .or_else(|| from.checked_add(Duration::from_secs(86_400 * 365 * 30)))
        .unwrap_or(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_stays_within_jitter_bounds() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
        assert_eq!(b.ceiling(1), Duration::from_millis(100));
        assert_eq!(b.ceiling(2), Duration::from_millis(200));
        assert_eq!(b.ceiling(4), Duration::from_millis(800));
        assert_eq!(b.ceiling(5), Duration::from_secs(1));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(1));
        let mut rng = SplitMix64::new(3);
        let mut distinct = std::collections::BTreeSet::new();
        for attempt in 1..50 {
            let d = b.delay(attempt, &mut rng);
            assert!(d <= b.ceiling(attempt));
            assert!(d >= b.ceiling(attempt).mul_f64(0.5));
            distinct.insert(d);
        }
        assert!(distinct.len() > 10, "jitter must vary the waits");
    }

    #[test]
    fn nonsense_settings_do_not_panic() {
        let b = Backoff {
            initial: Duration::from_secs(u64::MAX),
            max: Duration::from_secs(5),
            multiplier: f64::NAN,
            jitter: -3.0,
        };
        let mut rng = SplitMix64::new(0);
        assert_eq!(b.delay(1_000, &mut rng), Duration::from_secs(5));
        let b = Backoff::default()
            .multiplier(f64::INFINITY)
            .jitter(f64::NAN);
        assert_eq!(b.delay(3, &mut rng), b.max);
    }
}
