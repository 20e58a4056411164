//! The seeded fleet search: a whole app (several registrations, several gateways with their
//! discovery caches and pickers, each on its own client) run under a seeded fault plan on
//! virtual time, healed, and checked at quiescence; and a one-line test that searches a
//! thousand seeds.
//!
//! - [`FaultPlan::generate`] draws a time-ordered list of [`Fault`]s (partitions, latency,
//!   hold and release, lost replies, stalled watches, outages, lease expiries, compactions,
//!   leader changes) from a seed and a [`Profile`]; the same seed gives the same plan.
//! - [`run_fleet`] runs the app of [`FleetOptions`] under one plan on any
//!   [`ServiceBackend`](crate::service::ServiceBackend) and returns a [`FleetReport`] whose
//!   `log_hash` is the same for the same seed.
//! - [`search`] runs many seeds in parallel; [`fleet_search!`](crate::fleet_search) stamps a
//!   test that does it, prints the wall time, and on failure prints the seed and the command
//!   that replays it ([`SEED_VAR`]).
//! - [`Mutant`]s are broken service layers the search must catch.
//!
//! App authors reuse the harness for their own apps through [`FleetOptions`]' layers (a wrapper
//! between the service layer and each client), or run their own app under a plan with [`play`]
//! and [`heal_all`] and check their own invariants.

mod checker;
mod harness;
mod log;
mod mode;
mod mutants;
mod plan;
mod play;
mod search;
mod seeds;
mod truth;

pub use harness::{run_fleet, ClientLayer, FleetOptions, FleetReport};
pub use mode::Mode;
pub use mutants::Mutant;
pub use plan::{Fault, FaultPlan, Profile, Step, Weights};
pub use play::{heal_all, play, stage};
/// Where the truth comes from (defined in `registry-testing`, beside `ServiceBackend::journal`).
pub use registry_testing::{ServerCommit, ServerJournal};
pub(crate) use search::threads;
pub use search::{run_seed, search, search_test, SearchReport, THREADS_VAR};
pub use seeds::{
    window_for, SeedPlan, WindowSource, COMMIT_VAR, FLEET_SEED_VAR, SEEDS_VAR, SEED_VAR, WINDOW_VAR,
};

/// Stamps a `#[test]` named `fleet_search` that runs the seeded fleet search over
/// `seeds` seeds (0 to `seeds - 1`) on fresh backends from `$backend` (a
/// `fn() -> impl ServiceBackend`, called inside each seed's paused runtime), or only the seed
/// in `REGISTRY_SEED` (or `REGISTRY_FLEET_SEED`) when it is set. It prints the wall time; a failing seed panics with
/// the seed, what broke, its fault plan and the replay command.
///
/// ```text
/// registry_conformance::fleet_search!(simulator, seeds = 1000);
/// // or with other options:
/// registry_conformance::fleet_search!(simulator, seeds = 200, options = my_options());
/// ```
#[macro_export]
macro_rules! fleet_search {
    ($backend:expr, seeds = $seeds:expr) => {
        $crate::fleet_search!(
            $backend,
            seeds = $seeds,
            options = $crate::fleet::FleetOptions::default()
        );
    };
    ($backend:expr, seeds = $seeds:expr, options = $options:expr) => {
        #[test]
        fn fleet_search() {
            $crate::fleet::search_test(
                concat!(module_path!(), "::fleet_search"),
                env!("CARGO_PKG_NAME"),
                file!(),
                $backend,
                $seeds,
                $options,
            );
        }
    };
}
