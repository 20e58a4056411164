//! Registering an instance and keeping it registered, whatever happens to its lease.
//!
//! [`Registration::start`] grants a lease, puts the instance under its key with that lease and
//! returns; the process's [`Registrar`] then keeps the lease alive every TTL/3 and heals:
//!
//! - the lease is lost when a keep-alive answers "not found" or no keep-alive has succeeded for
//!   a whole TTL; the registrar then grants a *new* lease (a dead lease id is never used again)
//!   and puts the instance again, retrying for ever with jittered exponential backoff;
//! - the registrar watches each registered service's prefix: a key deleted or overwritten while
//!   its lease lives is put back as soon as the watch shows it (no read per keep-alive round);
//! - re-registration writes the latest metadata and status given to the handle, not the ones
//!   it started with (Curator's CURATOR-181).
//!
//! # One scheduler per process
//!
//! Every registration of a process on one registry goes through one [`Registrar`]: one task,
//! one timer per instant at which leases are due, not one task and timer per registration.
//! [`Registration::start`] uses a default registrar per registry (per `Arc` pointer), created on
//! first use and gone when its last registration is; [`Registrar::new`] makes one with other
//! options, e.g. [`RegistrarOptions::shared_lease`]: every registration on one lease, one
//! keep-alive per TTL/3 for all of them (as etcd's `concurrency.Session` does).
//!
//! # Readiness and draining
//!
//! [`Registration::start_when_ready`] returns at once and puts the instance only once the app's
//! readiness future completes: an instance that is not ready is never visible.
//! [`Registration::shutdown`] drains: it writes the instance with [`Status::Draining`] (pickers
//! stop choosing it), waits a grace period and until its own watch has seen the change, then
//! revokes the lease. [`Registration::set_status`] changes the status at any time.
//!
//! # Keep the handle
//!
//! Dropping a [`Registration`] deregisters (revokes the lease) at once: `let _ =
//! Registration::start(..)` registers nothing for long. Keep the handle for as long as the
//! instance should stay registered.
//!
//! # How long recovery takes
//!
//! While the registry is unreachable the lease is declared lost one TTL after the last
//! keep-alive that succeeded, and re-registration retries after waits that grow from
//! `backoff.initial` up to `backoff.max`. A registration is back at most
//! `backoff.max + request_timeout` after the registry is reachable again (plus the grant and put
//! themselves): the wait it is in when the registry comes back is at most `backoff.max`, and an
//! attempt sent just before may hang for up to `request_timeout`. With the default options
//! (backoff 500 ms doubling to 30 s, request timeout 5 s) that is **35 s**; on the simulator,
//! where a call to an unreachable registry fails at once, 30 s. An outage shorter than the TTL
//! loses nothing: the next keep-alive round (at most TTL/3 later) renews the lease.

mod registrar;
mod task;
mod wheel;

pub use registrar::{Registrar, RegistrarOptions};

use crate::backoff::Backoff;
use crate::instance::{Metadata, ServiceInstance, Status, DEFAULT_NAMESPACE};
use crate::{Error, Result};
use registry_api::limits::MAX_LEASE_TTL;
use registry_api::{LeaseId, Revision};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use task::{Command, Stop};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

/// Where a registration stands. Watch it with [`Registration::subscribe`]; the details (lease
/// timing, counters, last error) are in [`Registration::status`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistrationState {
    /// Started with [`Registration::start_when_ready`]; the app is not ready yet, so nothing is
    /// in the registry.
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
}

/// A snapshot of a registration: its state, its lease's timing, its counters and its last
/// error, for apps and metrics. Read it with [`Registration::status`].
#[derive(Clone, Debug)]
pub struct RegistrationStatus {
    /// The state, as [`Registration::state`] gives it.
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
    /// The last error a registry call of this registration returned (kept after recovery; it
    /// says what went wrong last, not that something is wrong now).
    pub last_error: Option<Arc<registry_api::Error>>,
}

/// How a [`Registration`] behaves. `Default` gives a 10 s TTL under `services`.
#[derive(Clone, Debug, PartialEq)]
pub struct RegistrationOptions {
    /// The lease TTL asked for, rounded up to whole seconds. The server may grant more (etcd's
    /// minimum is 2 s); keep-alives follow the granted TTL. Ignored on a registrar with a
    /// shared lease, whose TTL is the registrar's.
    pub ttl: Duration,
    /// The key namespace (see [`KeyLayout`](crate::KeyLayout)).
    pub namespace: String,
    /// Waits between re-registration attempts.
    pub backoff: Backoff,
    /// Seeds the jitter. Mixed with the service name and instance id, so a fleet sharing one
    /// seed still spreads out; the same seed gives the same waits.
    pub seed: u64,
    /// How long one registry call may take before it counts as failed.
    pub request_timeout: Duration,
}

impl Default for RegistrationOptions {
    fn default() -> Self {
        RegistrationOptions {
            ttl: Duration::from_secs(10),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            backoff: Backoff::default(),
            seed: 0,
            request_timeout: Duration::from_secs(5),
        }
    }
}

impl RegistrationOptions {
    /// Sets the TTL.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets the namespace.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Sets the backoff.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the jitter seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets the per-call timeout.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The longest time a registration takes to come back after the registry is reachable
    /// again, with these options: `backoff.max + request_timeout` (see the module docs).
    pub fn worst_case_recovery(&self) -> Duration {
        self.backoff.max.saturating_add(self.request_timeout)
    }
}

/// A TTL in whole seconds, checked.
pub(crate) fn ttl_secs(ttl: Duration) -> Result<i64> {
    let mut secs = ttl.as_secs();
    if ttl.subsec_nanos() > 0 {
        secs = secs.saturating_add(1);
    }
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
    // etcd raises a zero TTL to its minimum, but a registration that asks for no time at all
    // is a mistake in the options, not a request for the minimum.
    if secs == 0 {
        return Err(Error::InvalidOption(
            "the registration TTL must be at least one second".to_owned(),
        ));
    }
    if secs > MAX_LEASE_TTL {
        return Err(Error::InvalidOption(format!(
            "the registration TTL of {secs} s exceeds etcd's maximum of {MAX_LEASE_TTL} s"
        )));
    }
    Ok(secs)
}

/// A lease's timing, written by the registrar at each keep-alive and read by handles without
/// asking the task: atomics, so a round over thousands of leases costs a store each.
#[derive(Debug)]
pub(crate) struct LeaseClock {
    epoch: Instant,
    /// Nanoseconds from `epoch` to when the last good keep-alive was sent, plus one; 0: none.
    last_ok: AtomicU64,
    ttl_nanos: AtomicU64,
    /// Nanoseconds from sending the last good keep-alive (or grant) to its answer, plus one.
    round_trip: AtomicU64,
}

impl LeaseClock {
    pub(crate) fn new(epoch: Instant) -> Self {
        LeaseClock {
            epoch,
            last_ok: AtomicU64::new(0),
            ttl_nanos: AtomicU64::new(0),
            round_trip: AtomicU64::new(0),
        }
    }

    /// Records how long the last good keep-alive (or grant) took to be answered.
    pub(crate) fn answered_after(&self, round_trip: Duration) {
        let nanos = u64::try_from(round_trip.as_nanos()).unwrap_or(u64::MAX - 1);
        self.round_trip.store(nanos + 1, Ordering::Relaxed);
    }

    fn round_trip(&self) -> Option<Duration> {
        match self.round_trip.load(Ordering::Relaxed) {
            0 => None,
            n => Some(Duration::from_nanos(n - 1)),
        }
    }

    pub(crate) fn renewed(&self, sent_at: Instant, ttl: Duration) {
        self.store(self.encode(sent_at, ttl));
    }

    /// The stored form of a renewal. Every clock of one registrar has the registrar's epoch,
    /// so a round encodes its instant once for all its leases.
    pub(crate) fn encode(&self, sent_at: Instant, ttl: Duration) -> (u64, u64) {
        let nanos = u64::try_from(sent_at.saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(u64::MAX - 1);
        (nanos + 1, u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX))
    }

    pub(crate) fn store(&self, (last_ok, ttl_nanos): (u64, u64)) {
        self.last_ok.store(last_ok, Ordering::Relaxed);
        self.ttl_nanos.store(ttl_nanos, Ordering::Relaxed);
    }

    fn read(&self) -> Option<(Instant, Instant)> {
        let last = self.last_ok.load(Ordering::Relaxed);
        if last == 0 {
            return None;
        }
        let sent = self.epoch + Duration::from_nanos(last - 1);
        let ttl = Duration::from_nanos(self.ttl_nanos.load(Ordering::Relaxed));
        Some((sent, sent.checked_add(ttl).unwrap_or(sent)))
    }
}

/// Reads a [`Registration`]'s [`status`](Registration::status) from anywhere; see
/// [`Registration::status_reader`]. Once the registration is dropped it reports
/// [`RegistrationState::Deregistered`].
#[derive(Clone, Debug)]
pub struct RegistrationStatusReader {
    state: watch::Receiver<RegistrationState>,
    shared: Arc<Shared>,
}

impl RegistrationStatusReader {
    /// The registration's status now.
    pub fn status(&self) -> RegistrationStatus {
        status_of(&self.state, &self.shared)
    }
}

fn status_of(state: &watch::Receiver<RegistrationState>, shared: &Shared) -> RegistrationStatus {
    let state = state.borrow().clone();
    let details = shared.details();
    let registered = matches!(state, RegistrationState::Registered { .. });
    let timing = if registered {
        shared.clock.read()
    } else {
        None
    };
    RegistrationStatus {
        status: details.status,
        lease: if registered { details.lease } else { None },
        revision: if registered { details.revision } else { None },
        last_keep_alive: timing.map(|(sent, _)| sent),
        last_keep_alive_round_trip: if registered {
            shared.clock.round_trip()
        } else {
            None
        },
        lease_deadline: timing.map(|(_, deadline)| deadline),
        lease_losses: details.lease_losses,
        re_registrations: details.re_registrations,
        last_error: details.last_error.clone(),
        state,
    }
}

/// What a registration shares between its handle and the registrar's task.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) state: watch::Sender<RegistrationState>,
    pub(crate) details: Mutex<Details>,
    pub(crate) clock: Arc<LeaseClock>,
}

/// The parts of [`RegistrationStatus`] that change only on transitions and errors.
#[derive(Debug, Default)]
pub(crate) struct Details {
    pub(crate) status: Status,
    pub(crate) lease: Option<LeaseId>,
    pub(crate) revision: Option<Revision>,
    pub(crate) lease_losses: u64,
    pub(crate) re_registrations: u64,
    pub(crate) last_error: Option<Arc<registry_api::Error>>,
}

impl Shared {
    pub(crate) fn details(&self) -> std::sync::MutexGuard<'_, Details> {
        // A panic while holding this lock leaves plain data behind; keep using it.
        self.details
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A live registration: the handle that keeps an instance registered.
///
/// Dropping it deregisters (best effort, on the runtime its registrar runs on); call
/// [`deregister`](Registration::deregister) to wait for the revoke and see its outcome, or
/// [`shutdown`](Registration::shutdown) to drain first.
#[derive(Debug)]
#[must_use = "dropping a Registration deregisters the instance at once; keep the handle for as long as the instance should stay registered"]
pub struct Registration {
    id: u64,
    key: String,
    state: watch::Receiver<RegistrationState>,
    shared: Arc<Shared>,
    registrar: Registrar,
    abandoned: bool,
}

impl Registration {
    /// Registers `instance` and keeps it registered until deregistered or dropped, on the
    /// default [`Registrar`] of `registry`.
    ///
    /// Returns once the instance is first in the registry. A registry that cannot be reached
    /// is retried for ever with backoff (wrap the call in a timeout to bound it); bad input
    /// (service name, id, namespace, TTL, a value over the size limit) fails at once with a
    /// typed error and writes nothing. Must be called within a tokio runtime, which runs the
    /// registrar's task.
    ///
    /// ```
    /// use registry_service::{Registration, RegistrationOptions, RegistrationState, ServiceInstance};
    /// use registry_api::Registry;
    /// use registry_memory::MemoryRegistry;
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> registry_service::Result<()> {
    /// let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    /// let instance = ServiceInstance::new("hello", "a", "127.0.0.1:8080");
    /// let registration = Registration::start(
    ///     registry.clone(),
    ///     instance,
    ///     RegistrationOptions::default().ttl(Duration::from_secs(5)),
    /// )
    /// .await?;
    /// assert!(matches!(registration.state(), RegistrationState::Registered { .. }));
    /// assert!(registry.get(b"services/hello/a").await?.kv.is_some());
    ///
    /// // Graceful shutdown: marked draining, a grace period for caches to see it, then the
    /// // lease is revoked and the key is gone.
    /// registration.shutdown(Duration::from_millis(500)).await?;
    /// assert!(registry.get(b"services/hello/a").await?.kv.is_none());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start(
        registry: Arc<dyn registry_api::Registry>,
        instance: ServiceInstance,
        options: RegistrationOptions,
    ) -> Result<Registration> {
        Registrar::default_for(&registry)?
            .register(instance, options)
            .await
    }

    /// Like [`start`](Self::start), but puts the instance only once `ready` completes, and
    /// returns at once (state [`RegistrationState::WaitingForReady`]): an instance that is not
    /// ready is never visible. Bad input fails at once, as with `start`; use
    /// [`wait_registered`](Self::wait_registered) to wait for the first put.
    pub async fn start_when_ready(
        registry: Arc<dyn registry_api::Registry>,
        instance: ServiceInstance,
        options: RegistrationOptions,
        ready: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Registration> {
        Registrar::default_for(&registry)?
            .register_when_ready(instance, options, ready)
            .await
    }

    pub(crate) fn new(
        id: u64,
        key: String,
        shared: Arc<Shared>,
        registrar: Registrar,
    ) -> Registration {
        Registration {
            id,
            key,
            state: shared.state.subscribe(),
            shared,
            registrar,
            abandoned: false,
        }
    }

    /// The current state.
    pub fn state(&self) -> RegistrationState {
        self.state.borrow().clone()
    }

    /// The state with the lease's timing, the counters and the last error.
    pub fn status(&self) -> RegistrationStatus {
        status_of(&self.state, &self.shared)
    }

    /// A cheap, cloneable reader of [`status`](Self::status) that does not keep the
    /// registration alive: for a metrics sampler or a health endpoint on another task.
    pub fn status_reader(&self) -> RegistrationStatusReader {
        RegistrationStatusReader {
            state: self.state.clone(),
            shared: self.shared.clone(),
        }
    }

    /// A receiver of the state: `borrow` reads it, `changed` waits for the next change (a
    /// `watch` channel keeps only the latest state, so quick successions may be seen as one).
    pub fn subscribe(&self) -> watch::Receiver<RegistrationState> {
        let mut receiver = self.state.clone();
        receiver.mark_unchanged();
        receiver
    }

    /// The live lease, when registered.
    pub fn lease(&self) -> Option<LeaseId> {
        match *self.state.borrow() {
            RegistrationState::Registered { lease, .. } => Some(lease),
            _ => None,
        }
    }

    /// Waits until the instance is in the registry (at once when it is) and returns its lease.
    /// Fails with [`Error::Timeout`] after `timeout` (on tokio's clock, so virtual time in
    /// tests) and with [`Error::Stopped`] when the registration has stopped.
    pub async fn wait_registered(&self, timeout: Duration) -> Result<LeaseId> {
        let mut state = self.state.clone();
        let wait = async move {
            let seen = state.wait_for(|s| {
                matches!(
                    s,
                    RegistrationState::Registered { .. } | RegistrationState::Deregistered
                )
            });
            match seen.await {
                Ok(s) => match *s {
                    RegistrationState::Registered { lease, .. } => Some(lease),
                    _ => None,
                },
                Err(_) => None,
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Some(lease)) => Ok(lease),
            Ok(None) => Err(stopped()),
            Err(_) => Err(Error::Timeout {
                what: format!("registration of {}", self.key),
                after: timeout,
            }),
        }
    }

    /// The instance's key in the registry.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Replaces the instance's metadata, in the registry and for every later re-registration.
    ///
    /// Oversized metadata fails with a `TooLarge` registry error and changes nothing. Otherwise
    /// the new metadata is kept: when registered it is written now, and a failed write is
    /// returned as the error but retried after the next keep-alive that succeeds; when
    /// re-registering it is written with the next registration and this returns `Ok`.
    pub async fn update_metadata(&self, metadata: Metadata) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.registrar
            .send(Command::Metadata {
                id: self.id,
                metadata,
                reply,
            })
            .await?;
        answer.await.map_err(|_| stopped())?
    }

    /// Sets the status written in the instance's value ([`Status::Draining`]: pickers stop
    /// choosing it; [`Status::Serving`]: they pick it again), now and for every later
    /// re-registration. Failures are reported as with [`update_metadata`](Self::update_metadata).
    pub async fn set_status(&self, status: Status) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.registrar
            .send(Command::Status {
                id: self.id,
                status,
                reply,
            })
            .await?;
        answer.await.map_err(|_| stopped())?
    }

    /// Revokes the lease, so the instance disappears at once, and stops. Returns the revoke's
    /// error if the registry could not be reached (the entry then expires within a TTL).
    /// Calling it again, or after the registration stopped, returns `Ok`.
    pub async fn deregister(&self) -> Result<()> {
        self.stop(Stop::Now).await
    }

    /// A graceful shutdown: writes the instance as [`Status::Draining`] so that pickers stop
    /// choosing it, waits `grace` (keep serving meanwhile: caches need that long to see the
    /// change) and until the registrar's own watch has shown the draining value (at most one
    /// `request_timeout` longer), then revokes the lease as
    /// [`deregister`](Self::deregister) does. When the instance is not in the registry it stops
    /// at once.
    pub async fn shutdown(&self, grace: Duration) -> Result<()> {
        self.stop(Stop::Drain(grace)).await
    }

    async fn stop(&self, how: Stop) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        if self
            .registrar
            .send(Command::Stop {
                id: self.id,
                how,
                reply,
            })
            .await
            .is_err()
        {
            return Ok(());
        }
        answer.await.unwrap_or(Ok(()))
    }

    /// Stops keeping the lease alive WITHOUT revoking it, as if the process had crashed: the
    /// entry stays until its lease expires, one TTL after the last keep-alive. Meant for tests
    /// and demos of failure handling; a real shutdown should [`shutdown`](Self::shutdown) or
    /// [`deregister`](Self::deregister). On a registrar with a shared lease, which other
    /// registrations keep alive, the entry stays until that lease ends.
    pub fn abandon(mut self) {
        self.abandoned = true;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // The registrar, still on its runtime, revokes the lease (or, when abandoned, only
        // forgets the registration). Nothing happens when it already stopped.
        tracing::debug!(key = %self.key, abandoned = self.abandoned, "registration handle dropped");
        self.registrar.dropped(self.id, self.abandoned);
    }
}

fn stopped() -> Error {
    Error::Stopped("registration")
}
