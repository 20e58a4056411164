//! What a backend author implements to run the suite: a way to get a registry, the backend's
//! declared capabilities, and (for simulated backends) a way to move time.

use async_trait::async_trait;
use registry_api::{limits, Registry};
use std::sync::Arc;
use std::time::Duration;

/// How the backend's lease clock moves (`registry_testing::Time`, shared with the service-layer
/// suite).
///
/// # The contract suite's clock and tokio's
///
/// The contract suite runs each case on a current-thread tokio runtime whose clock is *not*
/// paused ([`runtime`](crate::runtime)): tokio's clock is the wall clock there, and the suite
/// uses it only to bound how long it waits for a watch item (300 ms on virtual time).
/// `tokio::time::advance` therefore panics with "time is not frozen" inside a case.
///
/// A [`Time::Virtual`] backend keeps a clock of its own that moves only when the suite calls
/// [`Backend::advance`] (`MemoryRegistry::with_manual_clock` and `MemoryRegistry::advance`),
/// and no case sleeps. Do not pause tokio's clock to get one: a paused runtime moves its clock
/// forward by itself whenever every task waits, which the suite does while it waits for watch
/// items, so leases would expire at moments the model never chose. (The service-layer suite is
/// different: it runs each scenario on a paused runtime, and its backends read tokio's clock.)
/// On [`Time::Real`] time passes on its own; expiry cases sleep for real, and generated
/// sequences use TTLs long enough never to expire while they run.
pub use registry_testing::Time;

/// A backend under test.
///
/// The suite calls [`registry`](Backend::registry) once per case (and once per generated
/// sequence in `model_check` and `public_api_survives_arbitrary_input`), always inside the
/// tokio runtime that runs the case, so a backend may connect a fresh client each time.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// A registry to run one case against. For an [exclusive](Sharing::Exclusive) backend this
    /// is a fresh, empty store; for a [shared](Sharing::Shared) one it may hold other data (the
    /// suite works under a fresh unique key prefix and never reads outside it). The registry
    /// must take calls from several tasks at once: `concurrent_clients_are_linearizable` shares
    /// it between its clients.
    async fn registry(&self) -> Arc<dyn Registry>;

    /// What the backend supports and promises.
    fn capabilities(&self) -> Capabilities;

    /// Moves the clock of the registry last returned by [`registry`](Backend::registry)
    /// forward by `by`, running every lease expiry that falls due. Called only when
    /// [`Capabilities::time`] is [`Time::Virtual`]; real-time backends may do nothing.
    async fn advance(&self, by: Duration);
}

#[async_trait]
impl<B: Backend + ?Sized> Backend for Arc<B> {
    async fn registry(&self) -> Arc<dyn Registry> {
        (**self).registry().await
    }
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    async fn advance(&self, by: Duration) {
        (**self).advance(by).await
    }
}

/// How a backend reports the seconds a lease has left
/// ([`LeaseTimeToLive::ttl`](registry_api::LeaseTimeToLive::ttl)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TtlReporting {
    /// The time left, rounded down to whole seconds: the granted TTL itself just after a grant
    /// or a keep-alive (the simulator).
    Exact,
    /// Up to one second less than that, as etcd reports `granted - 1` just after a grant or a
    /// keep-alive (its lessor rounds the remaining time down from a moment after the renewal).
    UpToOneLess,
}

impl TtlReporting {
    /// The values a backend may report when `exact` is the time truly left.
    pub fn allowed(self, exact: Duration) -> std::ops::RangeInclusive<i64> {
        let floor = i64::try_from(exact.as_secs()).unwrap_or(i64::MAX);
        match self {
            TtlReporting::Exact => floor..=floor,
            TtlReporting::UpToOneLess => (floor - 1).max(0)..=floor,
        }
    }
}

/// Whether a registry from [`Backend::registry`] is the suite's alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sharing {
    /// A fresh store per call: cases run in parallel.
    Exclusive,
    /// One server shared by every case (a real etcd): cases run one at a time in the process,
    /// because revision accounting and compaction need the server to themselves.
    Shared,
}

/// What a backend declares about itself. The suite checks the backend against these numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Virtual or real time.
    pub time: Time,
    /// How long after its deadline a lease's keys may linger before the backend deletes them:
    /// zero for an exact simulator, about a second for etcd (its lessor checks every 500 ms).
    ///
    /// From the deadline on, a lease is gone for every call (no keep-alive succeeds, time-to-live
    /// reports it gone or with nothing left); only the deletion of its keys may come late, and
    /// then all of them in one revision, in deadline order with other late leases. On
    /// [`Time::Virtual`], `model_check` honours it: after each advance it accepts either state
    /// of a lease in that window and follows the backend's.
    pub expiry_lateness: Duration,
    /// How the remaining TTL is reported: exactly, or up to a second less as etcd does.
    pub ttl_reporting: TtlReporting,
    /// The smallest TTL the backend grants; smaller positive requests are raised to it.
    pub min_ttl: i64,
    /// The largest TTL the backend accepts.
    pub max_ttl: i64,
    /// The largest key plus value a put accepts.
    pub max_value_bytes: usize,
    /// Whether cases may run in parallel.
    pub sharing: Sharing,
}

impl Capabilities {
    /// An exact simulator with etcd's default limits: virtual time, no lateness, exclusive.
    pub fn simulator() -> Self {
        Capabilities {
            time: Time::Virtual,
            expiry_lateness: Duration::ZERO,
            ttl_reporting: TtlReporting::Exact,
            min_ttl: limits::DEFAULT_MIN_LEASE_TTL,
            max_ttl: limits::MAX_LEASE_TTL,
            max_value_bytes: limits::DEFAULT_MAX_VALUE_BYTES,
            sharing: Sharing::Exclusive,
        }
    }

    /// A real etcd with default settings: real time, a second of expiry lateness, TTLs reported
    /// up to a second short, shared.
    pub fn etcd() -> Self {
        Capabilities {
            time: Time::Real,
            expiry_lateness: Duration::from_secs(1),
            ttl_reporting: TtlReporting::UpToOneLess,
            sharing: Sharing::Shared,
            ..Self::simulator()
        }
    }

    /// The same, with another time mode.
    pub fn with_time(mut self, time: Time) -> Self {
        self.time = time;
        self
    }

    /// The same, with another expiry lateness.
    pub fn with_expiry_lateness(mut self, lateness: Duration) -> Self {
        self.expiry_lateness = lateness;
        self
    }

    /// The same, with another way of reporting TTLs.
    pub fn with_ttl_reporting(mut self, reporting: TtlReporting) -> Self {
        self.ttl_reporting = reporting;
        self
    }

    /// The same, with another sharing mode.
    pub fn with_sharing(mut self, sharing: Sharing) -> Self {
        self.sharing = sharing;
        self
    }

    /// How many generated sequences `model_check` runs when `PROPTEST_CASES` is not set.
    pub fn default_cases(&self) -> u32 {
        match self.time {
            Time::Virtual => 256,
            Time::Real => 24,
        }
    }

    /// How long to wait for a watch item that the model says must come.
    pub(crate) fn watch_timeout(&self) -> Duration {
        match self.time {
            Time::Virtual => Duration::from_millis(300),
            Time::Real => Duration::from_secs(5),
        }
    }
}
