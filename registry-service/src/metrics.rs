//! The series the service layer emits through the [`metrics`](https://docs.rs/metrics) facade
//! (feature `metrics`): what every [`Registration`](crate::Registration),
//! [`Discovery`](crate::Discovery) and [`Picker`](crate::Picker) of the process is doing, with
//! nothing to call. The app installs a recorder (an exporter, such as
//! `metrics-exporter-prometheus`) before it starts them; without the feature none of this is
//! compiled and the crate does not depend on `metrics`.
//!
//! | series | type | labels | meaning |
//! |---|---|---|---|
//! | `registry_registration_state` | gauge | `service`, `instance`, `state` | 1 for the current state (`waiting_for_ready`, `registering`, `registered`, `lease_lost`, `re_registering`, `deregistered`, `failed`), 0 for states it left |
//! | `registry_registration_state_changed_timestamp_seconds` | gauge | `service`, `instance` | when the state last changed (Unix time) |
//! | `registry_registration_lease_losses_total` | counter | `service`, `instance` | leases lost (expired, revoked) and replaced |
//! | `registry_registration_reregistrations_total` | counter | `service`, `instance` | registrations again under a new lease |
//! | `registry_registration_keep_alive_round_trip_seconds` | gauge | `service`, `instance` | how long the last successful keep-alive (or grant) took to be answered |
//! | `registry_registration_lease_deadline_timestamp_seconds` | gauge | `service`, `instance` | when the lease runs out unless a keep-alive succeeds first (Unix time; 0 without a lease): the time left is this minus `time()` |
//! | `registry_discovery_instances` | gauge | `service`, `status` | instances in the cache by status (`serving`, `draining`, `unknown`) |
//! | `registry_discovery_revision` | gauge | `service` | the store revision the cache reflects |
//! | `registry_discovery_synced` | gauge | `service` | 1 while the cache is listed and watching |
//! | `registry_discovery_stale_since_timestamp_seconds` | gauge | `service` | when the cache was last seen synced, while it is not (Unix time; 0 while synced): the staleness is `time()` minus this |
//! | `registry_discovery_resyncs_total` | counter | `service` | times the cache became synced again after losing its watch |
//! | `registry_discovery_watch_restarts_total` | counter | `service` | times the cache's watch failed and restarted |
//! | `registry_discovery_events_total` | counter | `service`, `event` | changes applied (`added`, `updated`, `removed`) |
//! | `registry_balancer_picks_total` | counter | `service`, `instance`, `outcome` | calls picked on a node that ended, by outcome (`success`, `failure`, `dropped`: ended unmarked) |
//! | `registry_balancer_in_flight` | gauge | `service`, `instance` | calls picked on the node and not finished |
//! | `registry_balancer_ejected` | gauge | `service`, `instance` | 1 while the node is ejected after consecutive failures |
//! | `registry_balancer_ejections_total` | counter | `service`, `instance` | times the node was ejected |
//! | `registry_balancer_latency_seconds` | gauge | `service`, `instance` | the picker's peak-EWMA latency estimate of the node, as of its last answer |
//!
//! Every value is set when it changes (a state change, a keep-alive, a feed event, a pick), never
//! sampled: no task and no timer exists for metrics. Two times are exported as Unix timestamps
//! rather than ages, as Prometheus advises, so they are exact at any scrape. Pickers and caches
//! of one service in one process add up into the same series (their calls in flight, their
//! picks); a [`DiscoveryHub`](crate::DiscoveryHub) keeps one cache per service.
//!
//! Without the feature this module does not exist, nor does any field or call that feeds it:
//! the hooks in the registrar, the discovery feed and the picker are `#[cfg]`'d out.
//!
//! Inside, each family reads the same status the handles give
//! ([`RegistrationStatus`](crate::RegistrationStatus), [`StoreStatus`](crate::StoreStatus) and
//! the feed's counters) through a table of one line per series: a counter added to a status is
//! exported by adding its line.

mod balancer;
mod discovery;
mod registration;

pub(crate) use balancer::{NodeSeries, Outcome};
pub(crate) use discovery::{DiscoveryReading, DiscoverySeries};
pub(crate) use registration::{renewal_values, RegistrationSeries, RenewalGauges, RenewalValues};

use ::metrics::{Counter, Gauge, Label, Unit};

/// Describes every series (help text, unit) to the installed recorder. Done by the service
/// layer each time it makes a registration, discovery cache or picker; call it yourself to have
/// the descriptions before any exists.
pub fn describe() {
    for (name, help, unit) in registration::DESCRIPTIONS
        .iter()
        .chain(discovery::DESCRIPTIONS)
        .chain(balancer::DESCRIPTIONS)
    {
        let help: ::metrics::SharedString = (*help).into();
        match (name.ends_with("_total"), unit) {
            (true, _) => ::metrics::describe_counter!(*name, help),
            (false, Some(unit)) => ::metrics::describe_gauge!(*name, *unit, help),
            (false, None) => ::metrics::describe_gauge!(*name, help),
        }
    }
}

/// A name, its help text and its unit: what [`describe`] tells the recorder.
type Description = (&'static str, &'static str, Option<Unit>);

/// One series read from a status `R`: its name and how to read its value (`None`: leave the
/// series as it is). A name ending in `_total` is a counter set to the value read (the statuses
/// count from the start); any other is a gauge.
struct Series<R> {
    name: &'static str,
    read: fn(&R) -> Option<f64>,
}

/// The handle of one [`Series`] under one set of labels.
enum Handle {
    Counter(Counter),
    Gauge(Gauge),
}

/// The handles of a table of series under one set of labels, registered once so that setting a
/// value costs what the recorder's handle costs (an atomic store for Prometheus).
struct Table<R: 'static> {
    series: &'static [Series<R>],
    handles: Vec<Handle>,
}

impl<R> Table<R> {
    fn new(series: &'static [Series<R>], labels: &[Label]) -> Self {
        let handles = series
            .iter()
            .map(|s| {
                if s.name.ends_with("_total") {
                    Handle::Counter(::metrics::counter!(s.name, labels.iter()))
                } else {
                    Handle::Gauge(::metrics::gauge!(s.name, labels.iter()))
                }
            })
            .collect();
        Table { series, handles }
    }

    /// Sets every series from `reading`.
    fn set(&self, reading: &R) {
        for (series, handle) in self.series.iter().zip(&self.handles) {
            let Some(value) = (series.read)(reading) else {
                continue;
            };
            match handle {
                // Counts fit f64 exactly far beyond anything a process reaches.
                Handle::Counter(c) => c.absolute(value as u64),
                Handle::Gauge(g) => g.set(value),
            }
        }
    }
}

/// `instant` on tokio's clock as a Unix time in seconds: the wall clock at the first series
/// the process made, plus tokio's time since. On a running clock that is the wall clock (up to
/// the adjustments the wall clock gets meanwhile); on a paused one (tests on the simulator)
/// timestamps move with virtual time, as everything else there does.
fn unix_seconds(instant: tokio::time::Instant) -> f64 {
    static ANCHOR: std::sync::OnceLock<(tokio::time::Instant, f64)> = std::sync::OnceLock::new();
    let (anchor, wall) = *ANCHOR.get_or_init(|| {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        (tokio::time::Instant::now(), wall)
    });
    if instant >= anchor {
        wall + (instant - anchor).as_secs_f64()
    } else {
        wall - (anchor - instant).as_secs_f64()
    }
}

/// Now, as a Unix time in seconds (see [`unix_seconds`]).
fn unix_now() -> f64 {
    unix_seconds(tokio::time::Instant::now())
}
