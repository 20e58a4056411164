//! A tiny seeded random source for the wrappers' seeded faults and for fault plans.
//!
//! Written out rather than taken from `rand`, so that a seed means the same sequence in every
//! build and on every platform: fault plans and failing runs are replayed from their seed.

/// SplitMix64: fast, statistically fine for fault schedules, not for cryptography. The same
/// seed gives the same sequence everywhere.
///
/// ```
/// use registry_api::wrap::SplitMix64;
///
/// let mut a = SplitMix64::new(7);
/// let mut b = SplitMix64::new(7);
/// assert_eq!(a.next_u64(), b.next_u64());
/// assert!(a.below(10) < 10);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        // The top 53 bits fill an f64's mantissa exactly.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n`; 0 when `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        // Multiply-shift instead of modulo: no bias worth measuring and no division.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `p` (never for `p <= 0`, always for `p >= 1`).
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.next_f64() < p
    }

    /// Uniform in `[min, max]` at millisecond grain (`min` when `max <= min`).
    pub fn duration(
        &mut self,
        min: std::time::Duration,
        max: std::time::Duration,
    ) -> std::time::Duration {
        if max <= min {
            return min;
        }
        let span = u64::try_from((max - min).as_millis()).unwrap_or(u64::MAX);
        min + std::time::Duration::from_millis(self.below(span.saturating_add(1)))
    }

    /// A seed for something named `name` drawn from `seed`: the same pair gives the same seed,
    /// different names give unrelated ones.
    pub fn derive(seed: u64, name: &str) -> u64 {
        // FNV-1a over the name, mixed into the seed by one SplitMix64 step.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in name.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        SplitMix64::new(seed ^ hash).next_u64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ranges_hold_and_names_separate() {
        let mut r = SplitMix64::new(1);
        for _ in 0..10_000 {
            assert!((0.0..1.0).contains(&r.next_f64()));
            assert!(r.below(3) < 3);
            let d = r.duration(Duration::from_millis(5), Duration::from_millis(9));
            assert!(d >= Duration::from_millis(5) && d <= Duration::from_millis(9));
        }
        assert!(!r.chance(0.0));
        assert!(r.chance(1.0));
        assert_ne!(SplitMix64::derive(0, "a"), SplitMix64::derive(0, "b"));
        assert_eq!(SplitMix64::derive(3, "a"), SplitMix64::derive(3, "a"));
    }
}
