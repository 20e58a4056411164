//! The registrar: one task per registry and process that keeps every registration alive.

use super::commands::{Command, Inbox, Mailbox, Start};
use super::driver;
use super::handle::Registration;
use super::lease_clock::LeaseClock;
use super::machines::{Machines, SharedLease};
use super::options::{ttl_secs, RegistrarOptions, RegistrationOptions};
use super::roster::Roster;
use super::status::{RegistrationState, Shared};
use crate::instance::{KeyLayout, ServiceInstance};
use crate::owned::OwnedTask;
use crate::{Error, Result};
use futures::future::BoxFuture;
use registry_api::limits::{check_put, DEFAULT_MAX_VALUE_BYTES};
use registry_api::Registry;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Commands waiting for the registrar's task. The task never sends to this channel and never
/// waits on a handle, so it always gets back to receiving: a full channel only makes callers
/// wait their turn, it cannot deadlock. Drops and abandons, which cannot wait, go through the
/// task's inbox instead.
const COMMAND_CAPACITY: usize = 1024;

/// Keeps the registrations of a process alive, all in one task: one timer per instant at which
/// leases are due, one watch per registered service (which puts back a key someone deleted or
/// overwrote), in-flight calls polled together.
///
/// [`Registration::start`] uses a default registrar per registry (per `Arc` pointer); make one
/// with [`Registrar::new`] for other options, such as a shared lease. The task stops once the
/// registrar and all its registrations are dropped and their leases revoked. It is owned by its
/// handles: if it ends any other way (a panic, even one inside a backend's call, or its runtime
/// shutting down), every registration on it reports [`RegistrationState::Failed`] with the
/// cause at once.
///
/// ```
/// use registry_service::{Registrar, RegistrarOptions, RegistrationOptions, ServiceInstance};
/// use registry_api::Registry;
/// use registry_memory::MemoryRegistry;
/// use std::sync::Arc;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> registry_service::Result<()> {
/// let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
/// let shared = RegistrarOptions::default().shared_lease(RegistrationOptions::default());
/// let registrar = Registrar::new(registry.clone(), shared)?;
/// let a = registrar
///     .register(ServiceInstance::new("hello", "a", "127.0.0.1:8080"), RegistrationOptions::default())
///     .await?;
/// let b = registrar
///     .register(ServiceInstance::new("hello", "b", "127.0.0.1:8081"), RegistrationOptions::default())
///     .await?;
/// assert_eq!(a.lease(), b.lease(), "one lease, one keep-alive for both");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Registrar {
    inner: Arc<Mailbox>,
}

/// The default registrar of each registry, by `Arc` pointer. Weak: a registrar lives as long
/// as its handles and registrations, not as long as the process. It holds its registry, so a
/// live entry's pointer cannot be reused by another registry.
type Defaults = Mutex<HashMap<usize, Weak<Mailbox>>>;

fn defaults() -> &'static Defaults {
    static DEFAULTS: OnceLock<Defaults> = OnceLock::new();
    DEFAULTS.get_or_init(Default::default)
}

impl Registrar {
    /// A registrar over `registry`, its task spawned on the current tokio runtime.
    pub fn new(registry: Arc<dyn Registry>, options: RegistrarOptions) -> Result<Registrar> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::NoRuntime("Registrar::new"))?;
        let epoch = Instant::now();
        let shared_lease = match options.shared_lease {
            Some(lease) => Some(SharedLease {
                ttl: ttl_secs(lease.ttl)?,
                options: lease,
                clock: Arc::new(LeaseClock::new(epoch)),
            }),
            None => None,
        };
        let shared_clock = shared_lease.as_ref().map(|lease| lease.clock.clone());
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_CAPACITY);
        let inbox = Arc::new(Inbox::default());
        let roster = Arc::new(Roster::default());
        let machines = Machines::new(shared_lease, options.key_watch);
        let failed = roster.clone();
        let task = OwnedTask::spawn(
            &runtime,
            "registrar",
            tracing::info_span!("registrar"),
            driver::run(registry, machines, commands_rx, inbox.clone()),
            move |error| failed.fail(error),
        );
        Ok(Registrar {
            inner: Arc::new(Mailbox {
                commands: commands_tx,
                inbox,
                roster,
                next_id: AtomicU64::new(1),
                shared_clock,
                epoch,
                task,
            }),
        })
    }

    /// The default registrar of `registry` (one per `Arc` pointer), started if none is live.
    pub fn default_for(registry: &Arc<dyn Registry>) -> Result<Registrar> {
        let key = Arc::as_ptr(registry) as *const () as usize;
        let mut map = defaults()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(inner) = map.get(&key).and_then(Weak::upgrade) {
            // A registrar whose task has ended (its runtime shut down, or it failed) is of no
            // use to new registrations: start another.
            if !inner.commands.is_closed() && !inner.task.is_finished() {
                return Ok(Registrar { inner });
            }
        }
        map.retain(|_, registrar| registrar.strong_count() > 0);
        let registrar = Registrar::new(registry.clone(), RegistrarOptions::default())?;
        map.insert(key, Arc::downgrade(&registrar.inner));
        Ok(registrar)
    }

    /// Registers `instance` and keeps it registered; see [`Registration::start`].
    pub async fn register(
        &self,
        instance: ServiceInstance,
        options: RegistrationOptions,
    ) -> Result<Registration> {
        let (registration, first) = self.begin(instance, options, None).await?;
        match first {
            Some(first) => match first.await {
                Ok(Ok(())) => Ok(registration),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(self.inner.gone()),
            },
            None => Ok(registration),
        }
    }

    /// Registers `instance` once `ready` completes; see [`Registration::start_when_ready`].
    pub async fn register_when_ready(
        &self,
        instance: ServiceInstance,
        options: RegistrationOptions,
        ready: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Registration> {
        let (registration, _) = self.begin(instance, options, Some(Box::pin(ready))).await?;
        Ok(registration)
    }

    /// What the registrar's task died of, if it did (then every registration on it has
    /// [`RegistrationState::Failed`] with this as its last error).
    pub fn failure(&self) -> Option<Error> {
        self.inner
            .roster
            .failure()
            .map(|failure| Error::clone(&failure))
    }

    async fn begin(
        &self,
        instance: ServiceInstance,
        options: RegistrationOptions,
        ready: Option<BoxFuture<'static, ()>>,
    ) -> Result<(Registration, Option<oneshot::Receiver<Result<()>>>)> {
        instance.validate()?;
        let layout = KeyLayout::new(options.namespace.clone())?;
        let ttl = ttl_secs(options.ttl)?;
        let key = layout.instance_key(&instance.service, &instance.id);
        check_put(key.as_bytes(), &instance.to_json(), DEFAULT_MAX_VALUE_BYTES)?;
        let prefix = layout.service_prefix(&instance.service);

        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let initial = if ready.is_some() {
            RegistrationState::WaitingForReady
        } else {
            RegistrationState::Registering
        };
        let clock = match &self.inner.shared_clock {
            Some(clock) => clock.clone(),
            None => Arc::new(LeaseClock::new(self.inner.epoch)),
        };
        let shared = Shared::new(initial, instance.status, clock);
        #[cfg(feature = "metrics")]
        let shared = shared.with_series(&instance.service, &instance.id);
        let shared = Arc::new(shared);
        let (first_tx, first_rx) = if ready.is_none() {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let mailbox = &self.inner;
        mailbox.roster.join(id, &shared);
        let start = Start {
            id,
            key: key.clone(),
            prefix,
            instance,
            ttl,
            options,
            shared: shared.clone(),
            first: first_tx,
            ready,
        };
        if let Err(e) = mailbox.send(Command::Start(Box::new(start))).await {
            mailbox.roster.leave(id);
            return Err(e);
        }
        let registration = Registration::new(id, key, shared, self.inner.clone());
        Ok((registration, first_rx))
    }

    /// True when `self` and `other` are the same registrar (one task).
    pub fn same_as(&self, other: &Registrar) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Registration {
    /// Registers `instance` and keeps it registered until deregistered or dropped, on the
    /// default [`Registrar`] of `registry`.
    ///
    /// Returns once the instance is first in the registry. A registry that cannot be reached
    /// is retried for ever with backoff (wrap the call in a timeout to bound it); bad input
    /// (service name, id, namespace, TTL, a value over the size limit) fails at once with a
    /// typed error and writes nothing, and so does a registry that refuses the registration
    /// for good (permission denied, not supported). Must be called within a tokio runtime,
    /// which runs the registrar's task.
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
        registry: Arc<dyn Registry>,
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
        registry: Arc<dyn Registry>,
        instance: ServiceInstance,
        options: RegistrationOptions,
        ready: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Registration> {
        Registrar::default_for(&registry)?
            .register_when_ready(instance, options, ready)
            .await
    }
}
