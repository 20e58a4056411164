//! A registration's series: its state, its lease's losses and timing.

use super::{unix_now, unix_seconds, Description, Series, Table};
use crate::registration::{RegistrationState, RegistrationStatus};
use metrics::{Gauge, Label, Unit};
use std::sync::Mutex;

/// Every series read from a [`RegistrationStatus`], one line each.
const SERIES: &[Series<RegistrationStatus>] = &[
    Series {
        name: "registry_registration_lease_losses_total",
        read: |s| Some(s.lease_losses as f64),
    },
    Series {
        name: "registry_registration_reregistrations_total",
        read: |s| Some(s.re_registrations as f64),
    },
    Series {
        name: "registry_registration_regressions_total",
        read: |s| Some(s.regressions as f64),
    },
    Series {
        name: ROUND_TRIP,
        read: |s| s.last_keep_alive_round_trip.map(|d| d.as_secs_f64()),
    },
    Series {
        name: DEADLINE,
        read: |s| Some(s.lease_deadline.map_or(0.0, unix_seconds)),
    },
];

/// The two series a renewal changes, set on their own after each renewal.
const ROUND_TRIP: &str = "registry_registration_keep_alive_round_trip_seconds";
const DEADLINE: &str = "registry_registration_lease_deadline_timestamp_seconds";

/// The state's series, set on changes of state.
const STATE: &str = "registry_registration_state";
const STATE_CHANGED: &str = "registry_registration_state_changed_timestamp_seconds";

pub(super) const DESCRIPTIONS: &[Description] = &[
    (
        STATE,
        "1 for the registration's current state, 0 for states it left",
        None,
    ),
    (
        STATE_CHANGED,
        "When the registration's state last changed, as a Unix time",
        Some(Unit::Seconds),
    ),
    (
        "registry_registration_lease_losses_total",
        "Leases the registration lost (expired or revoked) and had to replace",
        None,
    ),
    (
        "registry_registration_reregistrations_total",
        "Times the instance was registered again under a new lease",
        None,
    ),
    (
        "registry_registration_regressions_total",
        "Times the registry's revision went back under the registration's key watch (a store restored from an older backup) and its key was checked again",
        None,
    ),
    (
        "registry_registration_keep_alive_round_trip_seconds",
        "How long the last successful keep-alive (or grant) took to be answered",
        Some(Unit::Seconds),
    ),
    (
        "registry_registration_lease_deadline_timestamp_seconds",
        "When the lease runs out unless a keep-alive succeeds first, as a Unix time; 0 without a lease",
        Some(Unit::Seconds),
    ),
];

/// The series of one registration, labelled with its service and instance id.
pub(crate) struct RegistrationSeries {
    labels: Vec<Label>,
    table: Table<RegistrationStatus>,
    /// The table's round-trip and deadline series again, for renewals.
    round_trip: Gauge,
    deadline: Gauge,
    changed: Gauge,
    /// The state the gauges show, and its gauge.
    shown: Mutex<Option<(&'static str, Gauge)>>,
}

impl std::fmt::Debug for RegistrationSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrationSeries")
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

impl RegistrationSeries {
    pub(crate) fn new(service: &str, instance: &str) -> Self {
        super::describe();
        let labels = vec![
            Label::new("service", service.to_owned()),
            Label::new("instance", instance.to_owned()),
        ];
        RegistrationSeries {
            table: Table::new(SERIES, &labels),
            round_trip: metrics::gauge!(ROUND_TRIP, labels.iter()),
            deadline: metrics::gauge!(DEADLINE, labels.iter()),
            changed: metrics::gauge!(STATE_CHANGED, labels.iter()),
            labels,
            shown: Mutex::new(None),
        }
    }

    /// After a change of state: the state's gauges when it is another state, then the rest.
    pub(crate) fn state_changed(&self, status: &RegistrationStatus) {
        let name = state_name(&status.state);
        {
            let mut shown = self.shown.lock().unwrap_or_else(|p| p.into_inner());
            if shown.as_ref().map(|(shown, _)| *shown) != Some(name) {
                if let Some((_, old)) = shown.take() {
                    old.set(0.0);
                }
                let mut labels = self.labels.clone();
                labels.push(Label::new("state", name));
                let gauge = metrics::gauge!(STATE, labels.iter());
                gauge.set(1.0);
                self.changed.set(unix_now());
                *shown = Some((name, gauge));
            }
        }
        self.table.set(status);
    }

    /// After a change of the status's counters.
    pub(crate) fn observe(&self, status: &RegistrationStatus) {
        self.table.set(status);
    }

    /// The two gauges a renewal changes, for the lease's slot to hold.
    pub(crate) fn renewal_gauges(&self) -> RenewalGauges {
        RenewalGauges {
            round_trip: self.round_trip.clone(),
            deadline: self.deadline.clone(),
        }
    }
}

/// The two series a renewal changes (its round trip, the lease's new deadline), held by the
/// lease's slot: a round sets them from what it already holds, without reaching into each
/// registration's state, which at thousands of leases cost several cache misses per renewal.
#[derive(Clone, Debug)]
pub(crate) struct RenewalGauges {
    round_trip: Gauge,
    deadline: Gauge,
}

impl RenewalGauges {
    /// After a renewal: `round_trip` and `deadline` as the table would set them.
    pub(crate) fn set(&self, (round_trip, deadline): RenewalValues) {
        self.round_trip.set(round_trip);
        self.deadline.set(deadline);
    }
}

/// A renewal's round trip in seconds and its lease's deadline as a Unix time, computed once
/// per round for all the round's leases.
pub(crate) type RenewalValues = (f64, f64);

/// What [`RenewalGauges::set`] takes for a renewal sent at `sent_at`, answered at `now`, that
/// keeps the lease until `deadline`.
pub(crate) fn renewal_values(
    sent_at: tokio::time::Instant,
    now: tokio::time::Instant,
    deadline: tokio::time::Instant,
) -> RenewalValues {
    (
        now.saturating_duration_since(sent_at).as_secs_f64(),
        unix_seconds(deadline),
    )
}

/// The state's label: its variant's name in snake case.
fn state_name(state: &RegistrationState) -> &'static str {
    match state {
        RegistrationState::WaitingForReady => "waiting_for_ready",
        RegistrationState::Registering => "registering",
        RegistrationState::Registered { .. } => "registered",
        RegistrationState::LeaseLost => "lease_lost",
        RegistrationState::ReRegistering { .. } => "re_registering",
        RegistrationState::Deregistered => "deregistered",
        RegistrationState::Failed => "failed",
    }
}
