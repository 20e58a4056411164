//! The two modes a seed runs in, after TigerBeetle's VOPR: safety (faults all the way) and
//! liveness (faults stop, then the fleet must converge within a stated bound).

use registry_api::wrap::SplitMix64;
use std::fmt;
use std::time::Duration;

/// What one seed's run checks. Safety is checked throughout in both modes: no gateway whose
/// cache claims to be synced routes to an instance the server deleted more than
/// [`stale_bound`](super::FleetOptions::stale_bound) ago (or never held), and every cache's
/// events replay to its view (none applied twice or skipped).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mode {
    /// Faults for the whole run. Then everything is healed and the fleet must settle within
    /// [`settle_within`](super::FleetOptions::settle_within): "eventually", not a timing claim.
    Safety,
    /// Faults stop at a point drawn from the seed ([`Mode::quiet_at`]) and everything is
    /// healed there. From then on every registration and every cache must converge within
    /// [`liveness_bound`](super::FleetOptions::liveness_bound), and stay converged, with the
    /// same leases, for [`hold_converged`](super::FleetOptions::hold_converged).
    Liveness,
}

impl Mode {
    /// The mode seed `seed` runs when the options force none: drawn from the seed, about half
    /// the seeds each.
    ///
    /// ```
    /// use registry_conformance::fleet::Mode;
    ///
    /// assert_eq!(Mode::of_seed(7), Mode::of_seed(7));
    /// let liveness = (0..1000).filter(|s| Mode::of_seed(*s) == Mode::Liveness).count();
    /// assert!((400..600).contains(&liveness));
    /// ```
    pub fn of_seed(seed: u64) -> Mode {
        if SplitMix64::derive(seed, "fleet-mode") & 1 == 1 {
            Mode::Liveness
        } else {
            Mode::Safety
        }
    }

    /// When the faults stop and everything is healed, counted from the start of the plan: the
    /// end of the run (`duration`) in safety mode; in liveness mode a point drawn from the seed,
    /// uniformly from a quarter of the way in to its end, so a liveness run sees a good stretch
    /// of faults first.
    pub fn quiet_at(self, seed: u64, duration: Duration) -> Duration {
        match self {
            Mode::Safety => duration,
            Mode::Liveness => {
                let mut rng = SplitMix64::new(SplitMix64::derive(seed, "fleet-quiet"));
                rng.duration(duration / 4, duration)
            }
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Safety => "safety",
            Mode::Liveness => "liveness",
        })
    }
}
