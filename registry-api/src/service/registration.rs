//! Registering an instance and keeping it registered, whatever happens to its lease.
//!
//! [`Registration::start`] grants a lease, puts the instance under its key with that lease and
//! returns; a background task then keeps the lease alive every TTL/3 and heals:
//!
//! - the lease is lost when a keep-alive answers "not found" or no keep-alive has succeeded for
//!   a whole TTL (L6); the task then grants a *new* lease (a dead lease id is never used again)
//!   and puts the instance again, retrying for ever with jittered exponential backoff;
//! - each keep-alive round also reads the instance's key: if someone deleted or overwrote it
//!   while the lease lives, it is put back;
//! - re-registration writes the latest metadata given to [`Registration::update_metadata`], not
//!   the one it started with (Curator's CURATOR-181).
//!
//! [`Registration::deregister`] revokes the lease, so the entry disappears at once; dropping the
//! handle does the same on the runtime the task runs on, as well as it can.

mod worker;

use super::backoff::Backoff;
use super::instance::{KeyLayout, Metadata, ServiceInstance, DEFAULT_NAMESPACE};
use super::rng::{seed_for, SplitMix64};
use crate::limits::{check_put, check_ttl_max, DEFAULT_MAX_VALUE_BYTES, MAX_LEASE_TTL};
use crate::{Error, InvalidArgument, LeaseId, Registry, Result, Revision};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use worker::{Command, Worker};

/// Where a registration stands. Watch it with [`Registration::subscribe`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistrationState {
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
    /// Deregistered (or the handle dropped): the task has stopped.
    Deregistered,
}

/// How a [`Registration`] behaves. `Default` gives a 10 s TTL under `services`.
#[derive(Clone, Debug, PartialEq)]
pub struct RegistrationOptions {
    /// The lease TTL asked for, rounded up to whole seconds. The server may grant more (etcd's
    /// minimum is 2 s); keep-alives follow the granted TTL.
    pub ttl: Duration,
    /// The key namespace (see [`KeyLayout`]).
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

    /// The TTL in whole seconds, checked.
    fn ttl_secs(&self) -> Result<i64> {
        let mut secs = self.ttl.as_secs();
        if self.ttl.subsec_nanos() > 0 {
            secs = secs.saturating_add(1);
        }
        let secs = i64::try_from(secs).unwrap_or(i64::MAX);
        // The backend would raise a zero TTL to its minimum; a registration asks for one.
        if secs == 0 {
            return Err(crate::InvalidArgument::TtlNotPositive(0).into());
        }
        check_ttl_max(secs, MAX_LEASE_TTL)?;
        Ok(secs)
    }
}

/// A live registration: the handle to the task that keeps an instance registered.
///
/// Dropping it deregisters (best effort, on the runtime the task runs on); call
/// [`deregister`](Registration::deregister) to wait for the revoke and see its outcome.
#[derive(Debug)]
pub struct Registration {
    key: String,
    state: watch::Receiver<RegistrationState>,
    commands: mpsc::UnboundedSender<Command>,
    abandoned: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Registration {
    /// Registers `instance` and keeps it registered until deregistered or dropped.
    ///
    /// Returns once the instance is first in the registry. A registry that cannot be reached
    /// is retried for ever with backoff (wrap the call in a timeout to bound it); bad input
    /// (service name, id, namespace, TTL, a value over the size limit) fails at once with a
    /// typed error and writes nothing. Must be called within a tokio runtime, which runs the
    /// keep-alive task.
    ///
    /// ```
    /// use registry_api::service::{Registration, RegistrationOptions, RegistrationState, ServiceInstance};
    /// use registry_api::Registry;
    /// use registry_memory::MemoryRegistry;
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> registry_api::Result<()> {
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
    /// // Graceful shutdown: the lease is revoked and the key is gone at once.
    /// registration.deregister().await?;
    /// assert!(registry.get(b"services/hello/a").await?.kv.is_none());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start(
        registry: Arc<dyn Registry>,
        instance: ServiceInstance,
        options: RegistrationOptions,
    ) -> Result<Registration> {
        instance.validate()?;
        let layout = KeyLayout::new(options.namespace.clone())?;
        let ttl = options.ttl_secs()?;
        let key = layout.instance_key(&instance.service, &instance.id);
        check_put(key.as_bytes(), &instance.to_json(), DEFAULT_MAX_VALUE_BYTES)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::from(InvalidArgument::Config(
                "Registration::start must run within a tokio runtime".to_owned(),
            ))
        })?;

        let (state_tx, state_rx) = watch::channel(RegistrationState::Registering);
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let (first_tx, first_rx) = oneshot::channel();
        let abandoned = Arc::new(AtomicBool::new(false));
        let rng = SplitMix64::new(seed_for(options.seed, &[&instance.service, &instance.id]));
        let span = tracing::info_span!(
            "registration",
            service = %instance.service,
            id = %instance.id
        );
        let worker = Worker::new(
            registry,
            key.clone(),
            instance,
            ttl,
            options,
            rng,
            state_tx,
            commands_rx,
            abandoned.clone(),
        );
        let task = runtime.spawn(tracing::Instrument::instrument(worker.run(first_tx), span));
        let registration = Registration {
            key,
            state: state_rx,
            commands: commands_tx,
            abandoned,
            task,
        };
        match first_rx.await {
            Ok(Ok(())) => Ok(registration),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::backend(
                "the registration task stopped before registering",
            )),
        }
    }

    /// The current state.
    pub fn state(&self) -> RegistrationState {
        self.state.borrow().clone()
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

    /// The instance's key in the registry.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Replaces the instance's metadata, in the registry and for every later re-registration.
    ///
    /// Oversized metadata fails with [`Error::TooLarge`] and changes nothing. Otherwise the new
    /// metadata is kept: when registered it is written now, and a failed write is returned as
    /// the error but retried by the next keep-alive round; when re-registering it is written
    /// with the next registration and this returns `Ok`.
    pub async fn update_metadata(&self, metadata: Metadata) -> Result<()> {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.commands
            .send(Command::Update {
                metadata,
                reply: reply_tx,
            })
            .map_err(|_| stopped())?;
        reply_rx.await.map_err(|_| stopped())?
    }

    /// Revokes the lease, so the instance disappears at once, and stops the task. Returns the
    /// revoke's error if the registry could not be reached (the entry then expires within a
    /// TTL). Calling it again, or after the task stopped, returns `Ok`.
    pub async fn deregister(&self) -> Result<()> {
        let (reply_tx, reply_rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Deregister { reply: reply_tx })
            .is_err()
        {
            return Ok(());
        }
        reply_rx.await.unwrap_or(Ok(()))
    }

    /// Stops keeping the lease alive WITHOUT revoking it, as if the process had crashed: the
    /// entry stays until its lease expires, one TTL after the last keep-alive. Meant for tests
    /// and demos of failure handling; a real shutdown should [`deregister`](Self::deregister).
    pub fn abandon(self) {
        self.abandoned.store(true, Ordering::SeqCst);
        self.task.abort();
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Dropping the command sender is the signal: the task, still on its runtime, revokes
        // the lease and stops. Nothing to do here when abandoned or already stopped.
        tracing::debug!(key = %self.key, "registration handle dropped");
    }
}

fn stopped() -> Error {
    Error::backend("the registration has stopped")
}
