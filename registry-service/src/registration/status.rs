//! Where a registration stands, as its handles read it: the state, the status snapshot, and
//! what the registrar's task shares with the handles to publish them.

use super::lease_clock::LeaseClock;
use crate::instance::Status;
use crate::Error;
use registry_api::{LeaseId, Revision};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Where a registration stands. Watch it with [`Registration::subscribe`]; the details (lease
/// timing, counters, last error) are in [`Registration::status`].
///
/// [`Registration::subscribe`]: super::Registration::subscribe
/// [`Registration::status`]: super::Registration::status
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistrationState {
    /// Started with [`Registration::start_when_ready`](super::Registration::start_when_ready);
    /// the app is not ready yet, so nothing is in the registry.
    WaitingForReady,
    /// The first registration is under way.
    Registering,
    /// The instance is in the registry, attached to `lease`.
    Registered {
        /// The live lease.
        lease: LeaseId,
        /// The revision of the last put of the instance's key.
        revision: Revision,
    },
    /// The lease is gone (expired, revoked by someone else, or not renewed for a whole TTL);
    /// the instance is probably no longer visible. Re-registration follows.
    LeaseLost,
    /// Re-registering with a new lease; `attempt` counts from 1 since the lease was lost.
    ReRegistering {
        /// Which attempt this is.
        attempt: u32,
    },
    /// Deregistered (or the handle dropped): the registration has stopped.
    Deregistered,
    /// Ended by a failure that no retry can fix, with the error as
    /// [`RegistrationStatus::last_error`]: the registry refused the registration for good
    /// (permission denied, not supported, an invalid argument or a value too large), or the
    /// registrar's task died (a panic, or its runtime shut down). Terminal: nothing is retried,
    /// and the instance is not in the registry (its lease revoked or its key deleted where that
    /// could be done; else it expires within a TTL).
    Failed,
}

/// A snapshot of a registration: its state, its lease's timing, its counters and its last
/// error, for apps and metrics. Read it with [`Registration::status`](super::Registration::status).
#[derive(Clone, Debug)]
pub struct RegistrationStatus {
    /// The state, as [`Registration::state`](super::Registration::state) gives it.
    pub state: RegistrationState,
    /// The status written in the instance's value (serving or draining).
    pub status: Status,
    /// The lease the instance is attached to, when registered.
    pub lease: Option<LeaseId>,
    /// The revision of the last put of the instance's key, when registered.
    pub revision: Option<Revision>,
    /// When the last keep-alive (or grant) of the lease that succeeded was *sent*: the server
    /// renewed the lease no earlier, so it lives at least until `lease_deadline`.
    pub last_keep_alive: Option<Instant>,
    /// How long the last successful keep-alive (or grant) took from sending to its answer.
    pub last_keep_alive_round_trip: Option<Duration>,
    /// `last_keep_alive` + the granted TTL: when the server deletes the instance if no
    /// keep-alive succeeds before (and when the registration declares the lease lost).
    pub lease_deadline: Option<Instant>,
    /// How many times the lease was lost.
    pub lease_losses: u64,
    /// How many times the instance was registered again after losing its lease.
    pub re_registrations: u64,
    /// How many times the registry's revision went back under the registration's key watch
    /// (a store restored from an older backup), after which its key was checked again and put
    /// back if the restore lost it.
    pub regressions: u64,
    /// The last error a registry call of this registration returned (kept after recovery; it
    /// says what went wrong last, not that something is wrong now). In the
    /// [`Failed`](RegistrationState::Failed) state, what ended the registration.
    pub last_error: Option<Arc<Error>>,
}

/// Reads a [`Registration`](super::Registration)'s status from anywhere; see
/// [`Registration::status_reader`](super::Registration::status_reader). Once the registration
/// is dropped it reports [`RegistrationState::Deregistered`].
#[derive(Clone, Debug)]
pub struct RegistrationStatusReader {
    pub(super) state: watch::Receiver<RegistrationState>,
    pub(super) shared: Arc<Shared>,
}

impl RegistrationStatusReader {
    /// The registration's status now.
    pub fn status(&self) -> RegistrationStatus {
        self.shared.status(&self.state)
    }
}

/// What a registration shares between its handle and the registrar's task.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) state: watch::Sender<RegistrationState>,
    pub(crate) details: Mutex<Details>,
    pub(crate) clock: Arc<LeaseClock>,
    /// The registration's series, for the handles made by a registrar.
    #[cfg(feature = "metrics")]
    series: Option<crate::metrics::RegistrationSeries>,
}

/// The parts of [`RegistrationStatus`] that change only on transitions and errors.
#[derive(Debug, Default)]
pub(crate) struct Details {
    pub(crate) status: Status,
    pub(crate) lease: Option<LeaseId>,
    pub(crate) revision: Option<Revision>,
    pub(crate) lease_losses: u64,
    pub(crate) re_registrations: u64,
    pub(crate) regressions: u64,
    pub(crate) last_error: Option<Arc<Error>>,
}

impl Shared {
    pub(crate) fn new(initial: RegistrationState, status: Status, clock: Arc<LeaseClock>) -> Self {
        Shared {
            state: watch::channel(initial).0,
            details: Mutex::new(Details {
                status,
                ..Details::default()
            }),
            clock,
            #[cfg(feature = "metrics")]
            series: None,
        }
    }

    /// The same, emitting its series labelled with `service` and `instance`.
    #[cfg(feature = "metrics")]
    pub(crate) fn with_series(mut self, service: &str, instance: &str) -> Self {
        self.series = Some(crate::metrics::RegistrationSeries::new(service, instance));
        self.state_changed();
        self
    }

    /// After every change of state (with the details it changed already written): the
    /// metrics, when the feature is on; nothing otherwise.
    #[inline]
    pub(crate) fn state_changed(&self) {
        #[cfg(feature = "metrics")]
        if let Some(series) = &self.series {
            series.state_changed(&self.status(&self.state.subscribe()));
        }
    }

    /// After a counter changed without a change of state: the metrics, when the feature is
    /// on; nothing otherwise.
    #[inline]
    pub(crate) fn counted(&self) {
        #[cfg(feature = "metrics")]
        if let Some(series) = &self.series {
            series.observe(&self.status(&self.state.subscribe()));
        }
    }

    /// The two series a renewal changes, for the lease's slot to set on every renewal.
    #[cfg(feature = "metrics")]
    pub(crate) fn renewal_gauges(&self) -> Option<crate::metrics::RenewalGauges> {
        self.series
            .as_ref()
            .map(crate::metrics::RegistrationSeries::renewal_gauges)
    }

    pub(crate) fn details(&self) -> MutexGuard<'_, Details> {
        // A panic while holding this lock leaves plain data behind; keep using it.
        self.details.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `error` as the last one.
    pub(crate) fn record(&self, error: &Arc<Error>) {
        self.details().last_error = Some(error.clone());
    }

    /// Ends the registration with `error`: the terminal state, the error as the last one,
    /// no lease. A registration already deregistered stays so.
    pub(crate) fn fail(&self, error: Arc<Error>) {
        {
            let mut details = self.details();
            details.last_error = Some(error);
            details.lease = None;
        }
        let failed = self.state.send_if_modified(|state| {
            if matches!(
                state,
                RegistrationState::Deregistered | RegistrationState::Failed
            ) {
                return false;
            }
            *state = RegistrationState::Failed;
            true
        });
        if failed {
            self.state_changed();
        }
    }

    /// The error that ended the registration, when it failed.
    pub(crate) fn failure(&self) -> Option<Error> {
        if *self.state.borrow() != RegistrationState::Failed {
            return None;
        }
        let error = self.details().last_error.clone();
        Some(error.map_or_else(
            || Error::Stopped("registration"),
            |error| Error::clone(&error),
        ))
    }

    pub(crate) fn status(&self, state: &watch::Receiver<RegistrationState>) -> RegistrationStatus {
        let state = state.borrow().clone();
        let details = self.details();
        let registered = matches!(state, RegistrationState::Registered { .. });
        let timing = if registered { self.clock.read() } else { None };
        RegistrationStatus {
            status: details.status,
            lease: if registered { details.lease } else { None },
            revision: if registered { details.revision } else { None },
            last_keep_alive: timing.map(|(sent, _)| sent),
            last_keep_alive_round_trip: if registered {
                self.clock.round_trip()
            } else {
                None
            },
            lease_deadline: timing.map(|(_, deadline)| deadline),
            lease_losses: details.lease_losses,
            re_registrations: details.re_registrations,
            regressions: details.regressions,
            last_error: details.last_error.clone(),
            state,
        }
    }
}
