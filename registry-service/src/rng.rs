//! A tiny seeded random source for jitter and random picks.
//!
//! Written out here rather than taken from `rand` so that a seed means the same sequence in
//! every build and on every platform: the tests pin exact outcomes to seeds, and `rand`'s small
//! generators promise no stability across versions.

/// SplitMix64: fast, statistically fine for jitter and load spreading, not for cryptography.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn next_f64(&mut self) -> f64 {
        // The top 53 bits fill an f64's mantissa exactly.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n`; 0 when `n` is 0.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        // Multiply-shift instead of modulo: no bias worth measuring and no division.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Mixes a user seed with a name, so that instances sharing one configured seed still draw
/// different jitter (identical jitter across a fleet would bring the stampede back).
pub(crate) fn seed_for(seed: u64, parts: &[&str]) -> u64 {
    // FNV-1a: stable, dependency-free, good enough to separate names.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    seed ^ hash
}

/// A seed of this process's own, for jitter when the options give none: the process id mixed
/// with the wall-clock time of the first call, so that processes of a fleet (even ones that are
/// all pid 1 in their containers) draw different waits and their re-lists spread out.
pub(crate) fn process_seed() -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since| since.as_nanos() as u64)
            .unwrap_or(0);
        let mut rng = SplitMix64::new(nanos ^ u64::from(std::process::id()).rotate_left(32));
        rng.next_u64()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_ranges_hold() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut r = SplitMix64::new(1);
        for _ in 0..10_000 {
            let f = r.next_f64();
            assert!((0.0..1.0).contains(&f));
            assert!(r.below(3) < 3);
        }
        assert_eq!(r.below(0), 0);
    }

    #[test]
    fn names_separate_seeds() {
        assert_ne!(seed_for(0, &["svc", "a"]), seed_for(0, &["svc", "b"]));
        assert_ne!(seed_for(0, &["sv", "ca"]), seed_for(0, &["svc", "a"]));
        assert_eq!(seed_for(5, &["x"]), seed_for(5, &["x"]));
    }
}
