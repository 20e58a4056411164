//! What a backend author implements to run the suite: a way to get a registry, the backend's
//! declared capabilities, and (for simulated backends) a way to move time.

use async_trait::async_trait;
use registry_api::{limits, Registry};
use std::sync::Arc;
use std::time::Duration;

/// A backend under test.
///
/// The suite calls [`registry`](Backend::registry) once per case (and once per generated
/// sequence in `model_check` and `public_api_survives_arbitrary_input`), always inside the
/// tokio runtime that runs the case, so a backend may connect a fresh client each time.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// A registry to run one case against. For an [exclusive](Sharing::Exclusive) backend this
    /// is a fresh, empty store; for a [shared](Sharing::Shared) one it may hold other data (the
    /// suite works under a fresh unique key prefix and never reads outside it).
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

/// How the backend's lease clock moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Time {
    /// The suite moves time with [`Backend::advance`]; no case sleeps.
    Virtual,
    /// Time passes on its own; expiry cases sleep for real, and generated sequences use TTLs
    /// long enough never to expire while they run.
    Real,
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
    /// How long after its deadline a lease may still be alive: zero for an exact simulator,
    /// about a second for etcd (its lessor checks every 500 ms).
    pub expiry_lateness: Duration,
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
            min_ttl: limits::DEFAULT_MIN_LEASE_TTL,
            max_ttl: limits::MAX_LEASE_TTL,
            max_value_bytes: limits::DEFAULT_MAX_VALUE_BYTES,
            sharing: Sharing::Exclusive,
        }
    }

    /// A real etcd with default settings: real time, a second of expiry lateness, shared.
    pub fn etcd() -> Self {
        Capabilities {
            time: Time::Real,
            expiry_lateness: Duration::from_secs(1),
            sharing: Sharing::Shared,
            ..Self::simulator()
        }
    }

    /// The same, with another time mode.
    pub fn with_time(mut self, time: Time) -> Self {
        self.time = time;
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
