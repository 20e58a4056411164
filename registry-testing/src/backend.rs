//! What a backend offers to scenarios (an app's own, the service-layer suite's, the seeded fleet
//! search's): named clients of one server, the faults the backend can stage, and time.

use registry_api::async_trait;
use registry_api::wrap::Link;
use registry_api::{LeaseId, Registry};
use std::sync::Arc;
use std::time::Duration;

use crate::journal::ServerJournal;
use crate::time::Time;

/// A backend as the service-layer scenarios see it: one server, any number of named clients.
///
/// Every method is called inside the tokio runtime that runs the scenario. For a backend on
/// [`Time::Virtual`] that runtime's clock is paused, so the backend must read tokio's clock
/// (`MemoryRegistry::new()` does) and [`sleep`](ServiceBackend::sleep) is a virtual sleep.
#[async_trait]
pub trait ServiceBackend: Send + Sync + 'static {
    /// A client of the backend's server whose link is named `name`. Clients with different
    /// names fail independently ([`partition`](ServiceBackend::partition)); asking again for a
    /// name gives a client on the same link. Each scenario gets a fresh server (or, for a shared
    /// real server, a fresh key prefix) the first time it asks.
    async fn client(&self, name: &str) -> Arc<dyn Registry>;

    /// What the backend can stage; scenarios that need more are skipped only where the
    /// capability is declared absent, and say so in their output.
    fn capabilities(&self) -> ServiceCapabilities;

    /// Cuts (`true`) or restores (`false`) the link of client `name` alone: its calls fail with
    /// `Unavailable` and its open watches end, while the server and every other client go on
    /// (its leases expire if the cut lasts longer than their TTL).
    async fn partition(&self, name: &str, cut: bool);

    /// Takes the whole server away (`true`) or brings it back with its data (`false`): every
    /// client's calls fail meanwhile and every watch ends.
    async fn outage(&self, down: bool);

    /// Expires `lease` now, as the server does at its deadline (its keys go in one revision).
    /// The default does nothing: a backend that cannot expire a lease on demand (a real etcd)
    /// declares [`ServiceCapabilities::expire_lease`] false and keeps it.
    async fn expire_lease(&self, lease: LeaseId) {
        let _ = lease;
    }

    /// The control handle of client `name`'s link, for the faults beyond a partition: latency,
    /// hold and release, lost replies, stalled watches (see [`Link`]). `None` (the default)
    /// when the backend's clients have no such link; the fleet search then stages partitions
    /// through [`partition`](ServiceBackend::partition) and skips the other link faults.
    fn link(&self, name: &str) -> Option<Link> {
        let _ = name;
        None
    }

    /// Stages a leader change that extends every live lease by `extra`, as etcd's new leader
    /// does. Returns false (the default) when the backend cannot stage one.
    async fn leader_change(&self, extra: Duration) -> bool {
        let _ = extra;
        false
    }

    /// The server's own journal of what it committed, stamped with its virtual time: the truth
    /// the fleet search checks against, read without a client so that no fault delays it.
    /// `None` (the default) when the backend keeps none; the fleet search then fails at once,
    /// saying so.
    fn journal(&self) -> Option<Arc<dyn ServerJournal>> {
        None
    }

    /// Lets `by` pass: a virtual sleep on [`Time::Virtual`], a real one on [`Time::Real`].
    async fn sleep(&self, by: Duration) {
        tokio::time::sleep(by).await;
    }
}

/// What a [`ServiceBackend`] can do and promises.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceCapabilities {
    /// Virtual (a paused tokio clock) or real time.
    pub time: Time,
    /// How long after its deadline a lease may still be alive (zero for the simulator, 1.5 s for
    /// etcd, whose lessor checks for expired leases every 500 ms).
    pub expiry_lateness: Duration,
    /// The smallest TTL the backend grants, in seconds.
    pub min_ttl: i64,
    /// [`ServiceBackend::partition`] works.
    pub partition: bool,
    /// [`ServiceBackend::outage`] works.
    pub outage: bool,
    /// [`ServiceBackend::expire_lease`] works.
    pub expire_lease: bool,
    /// The longest one round trip (a call, a watch's opening, a keep-alive) or one watch
    /// delivery takes on [`Time::Virtual`]: zero for an instant simulator, its timing
    /// profile's bound for a timed one. Bounds on virtual time allow a few of these.
    pub latency: Duration,
}

impl ServiceCapabilities {
    /// The simulator: virtual time, exact expiry, every fault, instant calls (set the latency of
    /// a timed one with [`with_latency`](Self::with_latency)).
    pub fn simulator() -> Self {
        ServiceCapabilities {
            time: Time::Virtual,
            expiry_lateness: Duration::ZERO,
            min_ttl: registry_api::limits::DEFAULT_MIN_LEASE_TTL,
            partition: true,
            outage: true,
            expire_lease: true,
            latency: Duration::ZERO,
        }
    }

    /// The same, with `latency` as the longest round trip or delivery.
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Scheduling and delivery slack to add to a stated bound: on [`Time::Virtual`], the few
    /// round trips one step of a scenario makes (a registration's grant and put and the delivery
    /// of its event), nothing on an instant simulator (instants are exact); a second on
    /// [`Time::Real`] (a real server on a loaded machine).
    pub fn allowance(&self) -> Duration {
        match self.time {
            Time::Virtual => self.latency * 4,
            Time::Real => Duration::from_secs(1),
        }
    }

    /// A real etcd started by the test: real time, 1.5 s of expiry lateness.
    pub fn etcd() -> Self {
        ServiceCapabilities {
            time: Time::Real,
            expiry_lateness: Duration::from_millis(1_500),
            ..Self::simulator()
        }
    }
}
