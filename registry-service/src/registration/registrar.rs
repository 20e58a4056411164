//! The registrar: one task per registry and process that keeps every registration alive.

use super::task::{self, Command, Inbox, Init, Start};
use super::{ttl_secs, LeaseClock, Registration, RegistrationOptions, RegistrationState, Shared};
use crate::backoff::Backoff;
use crate::instance::{KeyLayout, ServiceInstance};
use crate::{Error, Result};
use futures::future::BoxFuture;
use registry_api::limits::{check_put, DEFAULT_MAX_VALUE_BYTES};
use registry_api::Registry;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// Commands waiting for the registrar's task. The task never sends to this channel and never
/// waits on a handle, so it always gets back to receiving: a full channel only makes callers
/// wait their turn, it cannot deadlock. Drops and abandons, which cannot wait, go through the
/// task's inbox instead.
const COMMAND_CAPACITY: usize = 1024;

/// How a [`Registrar`] keeps its registrations' leases.
#[derive(Clone, Debug, PartialEq)]
pub struct RegistrarOptions {
    /// Every registration on one lease, kept alive by one keep-alive per TTL/3 for all (as
    /// etcd's `concurrency.Session` does); when it is lost, one new grant and every key put
    /// again. Off by default: each registration has its own lease, with its own options.
    pub shared_lease: bool,
    /// The shared lease's TTL (rounded up to whole seconds). Unused without a shared lease.
    pub ttl: Duration,
    /// Waits between grants of the shared lease, and between reopenings of a key watch.
    pub backoff: Backoff,
    /// Seeds the shared lease's and the watches' jitter.
    pub seed: u64,
    /// How long one call for the shared lease or a key watch may take.
    pub request_timeout: Duration,
}

impl Default for RegistrarOptions {
    fn default() -> Self {
        let registration = RegistrationOptions::default();
        RegistrarOptions {
            shared_lease: false,
            ttl: registration.ttl,
            backoff: registration.backoff,
            seed: registration.seed,
            request_timeout: registration.request_timeout,
        }
    }
}

impl RegistrarOptions {
    /// Puts every registration on one lease (or not).
    pub fn shared_lease(mut self, shared: bool) -> Self {
        self.shared_lease = shared;
        self
    }

    /// Sets the shared lease's TTL.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets the backoff of the shared lease and of the key watches.
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
}

/// Keeps the registrations of a process alive, all in one task: one timer per instant at which
/// leases are due, one watch per registered service (which puts back a key someone deleted or
/// overwrote), in-flight calls polled together.
///
/// [`Registration::start`] uses a default registrar per registry (per `Arc` pointer); make one
/// with [`Registrar::new`] for other options, such as a shared lease. The task stops once the
/// registrar and all its registrations are dropped and their leases revoked.
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
/// let registrar = Registrar::new(registry.clone(), RegistrarOptions::default().shared_lease(true))?;
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
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    commands: mpsc::Sender<Command>,
    inbox: Arc<Inbox>,
    next_id: AtomicU64,
    shared_clock: Option<Arc<LeaseClock>>,
    epoch: Instant,
}

/// The default registrar of each registry, by `Arc` pointer. Weak: a registrar lives as long
/// as its handles and registrations, not as long as the process. It holds its registry, so a
/// live entry's pointer cannot be reused by another registry.
type Defaults = Mutex<HashMap<usize, Weak<Inner>>>;

fn defaults() -> &'static Defaults {
    static DEFAULTS: OnceLock<Defaults> = OnceLock::new();
    DEFAULTS.get_or_init(Default::default)
}

impl Registrar {
    /// A registrar over `registry`, its task spawned on the current tokio runtime.
    pub fn new(registry: Arc<dyn Registry>, options: RegistrarOptions) -> Result<Registrar> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::NoRuntime("Registrar::new"))?;
        let shared_ttl = if options.shared_lease {
            Some(ttl_secs(options.ttl)?)
        } else {
            None
        };
        let epoch = Instant::now();
        let shared_clock = shared_ttl.map(|_| Arc::new(LeaseClock::new(epoch)));
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_CAPACITY);
        let inbox = Arc::new(Inbox::default());
        let init = Init {
            options,
            shared_ttl,
            shared_clock: shared_clock.clone(),
            commands: commands_rx,
            inbox: inbox.clone(),
        };
        runtime.spawn(tracing::Instrument::instrument(
            task::run(registry, init),
            tracing::info_span!("registrar"),
        ));
        Ok(Registrar {
            inner: Arc::new(Inner {
                commands: commands_tx,
                inbox,
                next_id: AtomicU64::new(1),
                shared_clock,
                epoch,
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
            // A registrar whose runtime has shut down has lost its task: start another.
            if !inner.commands.is_closed() {
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
                Err(_) => Err(Error::Stopped("registrar")),
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
        let shared = Arc::new(Shared {
            state: watch::channel(initial).0,
            details: Mutex::new(super::Details {
                status: instance.status,
                ..Default::default()
            }),
            clock,
        });
        let (first_tx, first_rx) = if ready.is_none() {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        self.send(Command::Start(Box::new(Start {
            id,
            key: key.clone(),
            prefix,
            instance,
            ttl,
            options,
            shared: shared.clone(),
            first: first_tx,
            ready,
        })))
        .await?;
        Ok((Registration::new(id, key, shared, self.clone()), first_rx))
    }

    pub(super) async fn send(&self, command: Command) -> Result<()> {
        self.inner
            .commands
            .send(command)
            .await
            .map_err(|_| Error::Stopped("registrar"))
    }

    pub(super) fn dropped(&self, id: u64, abandoned: bool) {
        self.inner.inbox.push(id, abandoned);
    }

    /// True when `self` and `other` are the same registrar (one task).
    pub fn same_as(&self, other: &Registrar) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}
