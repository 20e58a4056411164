//! Latency samples and the figures quoted from them: median, p99, ratios.

use std::time::Duration;

/// Latencies of one measured operation.
#[derive(Debug, Default, Clone)]
pub(crate) struct Samples {
    values: Vec<Duration>,
}

impl Samples {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Samples {
            values: Vec::with_capacity(n),
        }
    }

    pub(crate) fn push(&mut self, value: Duration) {
        self.values.push(value);
    }

    pub(crate) fn len(&self) -> usize {
        self.values.len()
    }

    /// The `q`-quantile (0.0..=1.0) by nearest rank; zero when empty.
    pub(crate) fn quantile(&self, q: f64) -> Duration {
        if self.values.is_empty() {
            return Duration::ZERO;
        }
        let mut sorted = self.values.clone();
        sorted.sort_unstable();
        // Nearest rank: the smallest value with at least q of the samples at or below it.
        let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    pub(crate) fn p50(&self) -> Duration {
        self.quantile(0.50)
    }

    pub(crate) fn p99(&self) -> Duration {
        self.quantile(0.99)
    }
}

/// `a / b`, or NaN when `b` is zero (printed as "n/a").
pub(crate) fn ratio(a: Duration, b: Duration) -> f64 {
    if b.is_zero() {
        f64::NAN
    } else {
        a.as_secs_f64() / b.as_secs_f64()
    }
}

/// A duration in the unit that suits it: ns, µs, ms or s.
pub(crate) fn fmt_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 10_000 {
        format!("{ns} ns")
    } else if ns < 10_000_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else if ns < 10_000_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else {
        format!("{:.3} s", ns as f64 / 1e9)
    }
}

/// A rate with a thousands suffix: 2.51M/s.
pub(crate) fn fmt_rate(per_second: f64) -> String {
    if per_second >= 1e6 {
        format!("{:.2}M/s", per_second / 1e6)
    } else if per_second >= 1e3 {
        format!("{:.1}k/s", per_second / 1e3)
    } else {
        format!("{per_second:.0}/s")
    }
}

/// A ratio with two decimals, or "n/a".
pub(crate) fn fmt_ratio(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.2}")
    } else {
        "n/a".to_owned()
    }
}

/// Bytes as KiB or MiB.
pub(crate) fn fmt_bytes(bytes: f64) -> String {
    if bytes.abs() >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
    } else if bytes.abs() >= 1024.0 {
        format!("{:.1} KiB", bytes / 1024.0)
    } else {
        format!("{bytes:.0} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(ms: &[u64]) -> Samples {
        let mut s = Samples::default();
        for v in ms {
            s.push(Duration::from_millis(*v));
        }
        s
    }

    #[test]
    fn nearest_rank_quantiles() {
        let s = samples(&(1..=100).rev().collect::<Vec<_>>());
        assert_eq!(s.p50(), Duration::from_millis(50));
        assert_eq!(s.p99(), Duration::from_millis(99));
        assert_eq!(s.quantile(1.0), Duration::from_millis(100));
        assert_eq!(s.quantile(0.0), Duration::from_millis(1));
        let one = samples(&[7]);
        assert_eq!(one.p99(), Duration::from_millis(7));
        assert_eq!(Samples::default().p50(), Duration::ZERO);
    }

    #[test]
    fn ratios_and_formats() {
        assert!(ratio(Duration::from_millis(1), Duration::ZERO).is_nan());
        assert_eq!(
            fmt_ratio(ratio(Duration::from_millis(3), Duration::from_millis(2))),
            "1.50"
        );
        assert_eq!(fmt_duration(Duration::from_micros(250)), "250.0 µs");
        assert_eq!(fmt_rate(2_500_000.0), "2.50M/s");
    }
}
