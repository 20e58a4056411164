//! The workspace's one seeded random source and its one stable hash.
//!
//! Every crate of the workspace draws from [`SplitMix64`] (`rand_xoshiro`'s generator) and
//! hashes names and event logs with FNV-1a ([`Fnv64`], the `fnv` crate's hasher), so that a
//! seed means the same sequence in every build, on every platform and in every crate: tests
//! pin outcomes to seeds, fault plans and failing runs are replayed from their seed, and
//! `rand`'s own small generators promise no stability across versions.
//!
//! One seed mixer, [`SplitMix64::derive`], gives each named thing (a registration, a prefix, a
//! client) a seed of its own drawn from a configured one.

use rand_core::{RngCore, SeedableRng};
use std::hash::Hasher;

/// FNV-1a, 64 bits (the `fnv` crate's): the same digest on every machine and Rust version,
/// for names mixed into seeds and for event logs whose digests are compared across runs. Feed
/// numbers as explicit little-endian bytes (`write(&n.to_le_bytes())`), not through
/// `Hasher::write_u64`, whose bytes follow the machine's endianness.
pub type Fnv64 = fnv::FnvHasher;

/// FNV-1a of `bytes`.
///
/// ```
/// assert_eq!(registry_api::rng::fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
/// ```
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hasher = Fnv64::default();
    hasher.write(bytes);
    hasher.finish()
}

/// SplitMix64 (`rand_xoshiro`'s): fast, statistically fine for jitter, load spreading and
/// fault schedules, not for cryptography. The same seed gives the same sequence everywhere.
///
/// ```
/// use registry_api::rng::SplitMix64;
///
/// let mut a = SplitMix64::new(7);
/// let mut b = SplitMix64::new(7);
/// assert_eq!(a.next_u64(), b.next_u64());
/// assert!(a.below(10) < 10);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitMix64(rand_xoshiro::SplitMix64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(rand_xoshiro::SplitMix64::seed_from_u64(seed))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
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
    /// different names give unrelated ones (so a fleet sharing one configured seed still
    /// spreads its jitter out). The workspace's one seed mixer: FNV-1a of the name, mixed into
    /// the seed by one SplitMix64 step.
    pub fn derive(seed: u64, name: impl AsRef<[u8]>) -> u64 {
        SplitMix64::new(seed ^ fnv1a(name.as_ref())).next_u64()
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
        assert_eq!(r.below(0), 0);
        assert!(!r.chance(0.0));
        assert!(r.chance(1.0));
        assert_ne!(SplitMix64::derive(0, "a"), SplitMix64::derive(0, "b"));
        assert_eq!(SplitMix64::derive(3, "a"), SplitMix64::derive(3, "a"));
    }

    #[test]
    fn the_sequence_and_the_hash_are_the_reference_ones() {
        // SplitMix64's reference output (Vigna's splitmix64.c) for this seed: a seeded run
        // replays only while these hold.
        let mut r = SplitMix64::new(1_477_776_061_723_855_037);
        assert_eq!(r.next_u64(), 1_985_237_415_132_408_290);
        assert_eq!(r.next_u64(), 2_979_275_885_539_914_483);
        // FNV-1a 64's reference values.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
