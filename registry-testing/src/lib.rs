#![doc = include_str!("../README.md")]

mod backend;
mod journal;
mod links;
mod scenario_runner;
mod time;

pub use backend::{ServiceBackend, ServiceCapabilities};
pub use journal::{ServerCommit, ServerJournal};
pub use links::Links;
/// What [`ServiceBackend::link`] returns, re-exported so that a backend needs no other import
/// for it (it is `registry_api::wrap::Link`).
pub use registry_api::wrap::Link;
pub use scenario_runner::{run, run_seeded, runtime, take_turn, Scenario, Turn};
pub use time::Time;

/// Stamps one `#[test]` per scenario and backend: for each `backend: constructor` pair, a
/// module named `backend` holding a test per scenario, each running that scenario on a fresh
/// backend from `constructor` (an expression giving a [`ServiceBackend`], evaluated once per
/// test) through [`run`]. A backend written `name(seeds = n): constructor` runs each scenario
/// over seeds `0..n` instead, through [`run_seeded`]: for the simulator, whose timing (how late
/// each reply and event comes) is drawn from the seed.
///
/// A scenario is an `async fn` of `&dyn ServiceBackend` (or of a generic `&B`) in the module
/// that calls the macro. `cargo test` then lists `simulator::a_scenario`, `etcd::a_scenario`,
/// and `cargo test simulator::` runs one backend's.
///
/// ```
/// use registry_testing::ServiceBackend;
/// use registry_api::{PutOptions, Registry};
///
/// async fn a_put_is_read_back(etcd: &dyn ServiceBackend) {
///     let client = etcd.client("app").await;
///     client.put(b"k", b"v", PutOptions::default()).await.unwrap();
///     assert_eq!(&client.get(b"k").await.unwrap().kv.unwrap().value[..], b"v");
/// }
///
/// async fn a_client_cut_off_fails_and_others_go_on(etcd: &dyn ServiceBackend) {
///     etcd.partition("app", true).await;
///     assert!(etcd.client("app").await.get(b"k").await.is_err());
///     assert!(etcd.client("other").await.get(b"k").await.is_ok());
/// }
///
/// registry_testing::scenarios! {
///     a_put_is_read_back,
///     a_client_cut_off_fails_and_others_go_on;
///     simulator: registry_memory::testing::backend(),
///     // etcd: registry_etcd::testing::backend(),
/// }
/// # fn main() {
/// #     // What the stamped tests do (a doctest compiles no `#[test]`).
/// #     use registry_testing::run;
/// #     run(registry_memory::testing::backend, |b| Box::pin(a_put_is_read_back(b)));
/// #     run(registry_memory::testing::backend, |b| {
/// #         Box::pin(a_client_cut_off_fails_and_others_go_on(b))
/// #     });
/// # }
/// ```
#[macro_export]
macro_rules! scenarios {
    ($($scenario:ident),+ $(,)? ; $($backends:tt)+) => {
        $crate::__scenarios!(@backends [$($scenario),+] $($backends)+);
    };
}

/// Implementation detail of [`scenarios!`]: one module per backend, one test per scenario.
#[doc(hidden)]
#[macro_export]
macro_rules! __scenarios {
    (@backends $scenarios:tt $($backend:ident $(($($seeds:tt)*))? : $make:expr),+ $(,)?) => {
        $( $crate::__scenarios!(@module $backend ($make) ($($($seeds)*)?) $scenarios); )+
    };
    (@module $backend:ident ($make:expr) (seeds = $seeds:expr) [$($scenario:ident),+]) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $scenario() {
                    $crate::run_seeded(
                        || $make,
                        |backend| ::std::boxed::Box::pin(super::$scenario(backend)),
                        0..$seeds,
                    );
                }
            )+
        }
    };
    (@module $backend:ident ($make:expr) () [$($scenario:ident),+]) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $scenario() {
                    $crate::run(
                        || $make,
                        |backend| ::std::boxed::Box::pin(super::$scenario(backend)),
                    );
                }
            )+
        }
    };
}
