//! A live, local view of one service's instances.
//!
//! A [`Discovery`] lists the service's prefix at revision R, watches from R+1 and applies each
//! batch, so [`snapshot`](Discovery::snapshot) answers at once from memory. When the watch
//! fails (server unreachable, history compacted, watch cancelled, stream ended) the cache is
//! marked stale, re-lists with jittered backoff, diffs the fresh list against what it held,
//! emits exactly the differences (no duplicate add, no missed removal) and watches on from the
//! new list's revision + 1. A removed instance comes back only through a later put.
//!
//! # Stale is not empty
//!
//! The cache tells the truth as last read: when every instance's lease expired during an
//! outage, the snapshot empties. Whether to keep routing to the last non-empty list during a
//! blip (kratos refuses to publish zero endpoints, Eureka has self-preservation) is the
//! balancer's call; [`is_synced`](Discovery::is_synced) and [`revision`](Discovery::revision)
//! tell it how fresh the view is.
//!
//! # Sharing one watch
//!
//! [`Discovery`] is a cheap handle: clones share one cache and one watch. A [`DiscoveryHub`]
//! hands out handles keyed by service, so a process with a thousand consumers of one service
//! holds one watch on it; the watch stops when the last handle is dropped.
//!
//! # Values that are not instances
//!
//! A key directly under the prefix whose value does not parse as a [`ServiceInstance`] (or
//! whose `service` / `id` disagree with the key) is skipped with a `tracing` warning and counted
//! in [`malformed`](Discovery::malformed); if it replaced an instance, that instance is removed.

mod cache;
mod hub;
mod source;

pub use hub::DiscoveryHub;

use crate::backoff::Backoff;
use crate::instance::{validate_service, KeyLayout, ServiceInstance, DEFAULT_NAMESPACE};
use crate::rng::{seed_for, SplitMix64};
use crate::{Error, Result};
use cache::Cache;
use futures::Stream;
use registry_api::{Registry, Revision};
use source::Source;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A change to a service's instances.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiscoveryEvent {
    /// A new instance.
    Added(ServiceInstance),
    /// An instance's value changed (address or metadata).
    Updated {
        /// What it was.
        old: ServiceInstance,
        /// What it is now.
        new: ServiceInstance,
    },
    /// An instance left: deregistered, expired, deleted, or its value became unreadable.
    Removed(ServiceInstance),
}

impl DiscoveryEvent {
    /// The instance as it is after the event (for `Removed`, as it was).
    pub fn instance(&self) -> &ServiceInstance {
        match self {
            DiscoveryEvent::Added(instance) | DiscoveryEvent::Removed(instance) => instance,
            DiscoveryEvent::Updated { new, .. } => new,
        }
    }
}

/// How a [`Discovery`] behaves. `Default` watches under `services`.
#[derive(Clone, Debug, PartialEq)]
pub struct DiscoveryOptions {
    /// The key namespace (see [`KeyLayout`]).
    pub namespace: String,
    /// Waits between re-list attempts after a watch fails.
    pub backoff: Backoff,
    /// Seeds the jitter (mixed with the service name). The same seed gives the same waits, so
    /// give each process of a fleet its own (from its instance id or host name, say), or their
    /// caches will re-list in step after an outage.
    pub seed: u64,
    /// How long one list or watch call may take before it counts as failed.
    pub request_timeout: Duration,
}

impl Default for DiscoveryOptions {
    fn default() -> Self {
        DiscoveryOptions {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            backoff: Backoff::default(),
            seed: 0,
            request_timeout: Duration::from_secs(5),
        }
    }
}

impl DiscoveryOptions {
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
}

/// Keeps the feeding task alive while any handle exists.
#[derive(Debug)]
struct Shared {
    cache: Arc<Cache>,
    /// Dropped with the last handle, which stops the task.
    _stop: oneshot::Sender<()>,
}

/// A handle on a live cache of one service's instances. Clones share the cache and its watch.
#[derive(Clone, Debug)]
pub struct Discovery {
    shared: Arc<Shared>,
}

impl Discovery {
    /// Starts a cache of `service` with its own watch. Returns at once; the first list follows
    /// in the background ([`wait_synced`](Self::wait_synced) waits for it). Fails on a bad
    /// service name or namespace, or when called outside a tokio runtime.
    ///
    /// ```
    /// use registry_service::{
    ///     Discovery, DiscoveryEvent, DiscoveryOptions, Registration, RegistrationOptions,
    ///     ServiceInstance,
    /// };
    /// use registry_api::Registry;
    /// use registry_memory::MemoryRegistry;
    /// use std::sync::Arc;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> registry_service::Result<()> {
    /// let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    /// let discovery = Discovery::start(registry.clone(), "hello", DiscoveryOptions::default())?;
    /// discovery.wait_synced().await;
    /// let mut events = discovery.subscribe();
    ///
    /// let instance = ServiceInstance::new("hello", "a", "127.0.0.1:8080");
    /// let registration =
    ///     Registration::start(registry, instance.clone(), RegistrationOptions::default()).await?;
    /// assert_eq!(events.recv().await, Some(DiscoveryEvent::Added(instance.clone())));
    /// assert_eq!(discovery.snapshot().to_vec(), vec![instance.clone()]);
    ///
    /// registration.deregister().await?;
    /// assert_eq!(events.recv().await, Some(DiscoveryEvent::Removed(instance)));
    /// assert!(discovery.snapshot().is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub fn start(
        registry: Arc<dyn Registry>,
        service: impl Into<String>,
        options: DiscoveryOptions,
    ) -> Result<Discovery> {
        let service = service.into();
        validate_service(&service)?;
        let layout = KeyLayout::new(options.namespace.clone())?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::NoRuntime("Discovery::start"))?;
        let cache = Arc::new(Cache::new(service.clone(), layout));
        let (stop_tx, stop_rx) = oneshot::channel();
        let source = Source {
            registry,
            cache: cache.clone(),
            rng: SplitMix64::new(seed_for(options.seed, &[&service])),
            older_lists: 0,
            options,
        };
        let span = tracing::info_span!("discovery", service = %service);
        runtime.spawn(tracing::Instrument::instrument(source.run(stop_rx), span));
        Ok(Discovery {
            shared: Arc::new(Shared {
                cache,
                _stop: stop_tx,
            }),
        })
    }

    /// The service this cache follows.
    pub fn service(&self) -> &str {
        &self.shared.cache.service
    }

    /// The instances held now, in id order. Never waits; empty before the first list.
    pub fn snapshot(&self) -> Arc<[ServiceInstance]> {
        self.shared.cache.snapshot()
    }

    /// One instance by id.
    pub fn get(&self, id: &str) -> Option<ServiceInstance> {
        self.shared.cache.get(id)
    }

    /// How many instances are held.
    pub fn len(&self) -> usize {
        self.shared.cache.len()
    }

    /// True when no instance is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The events from now on: first an `Added` for every instance held at the time of the
    /// call, then every change, in order, none dropped. Each subscriber has its own unbounded
    /// queue: read it, or drop it.
    pub fn subscribe(&self) -> DiscoveryEvents {
        DiscoveryEvents {
            receiver: self.shared.cache.subscribe(),
        }
    }

    /// The store revision the cache reflects: the last list's, or the last applied batch's.
    /// Zero before the first list.
    pub fn revision(&self) -> Revision {
        self.shared.cache.status().revision
    }

    /// True while the cache is listed and its watch is up; false before the first list and
    /// between a watch failure and the re-list that recovers from it.
    pub fn is_synced(&self) -> bool {
        self.shared.cache.status().synced
    }

    /// Waits until the cache is synced (at once if it is): listed, and the watch that continues
    /// the list established, so a change made after this returns reaches the cache even if the
    /// connection breaks the moment after. While the registry is unreachable
    /// this waits for as long as that lasts: bound it with a timeout if needed.
    pub async fn wait_synced(&self) {
        let mut status = self.shared.cache.status.subscribe();
        // The sender lives in the cache this handle keeps alive, so this cannot fail early.
        status.wait_for(|status| status.synced).await.ok();
    }

    /// How many malformed values the cache has skipped.
    pub fn malformed(&self) -> u64 {
        self.shared.cache.malformed()
    }

    /// True when both handles share one cache and watch.
    pub fn shares_cache_with(&self, other: &Discovery) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

/// The stream of a [`Discovery`]'s events; see [`Discovery::subscribe`].
#[derive(Debug)]
pub struct DiscoveryEvents {
    receiver: mpsc::UnboundedReceiver<Arc<DiscoveryEvent>>,
}

impl DiscoveryEvents {
    /// The next event; `None` once the cache is gone.
    pub async fn recv(&mut self) -> Option<DiscoveryEvent> {
        self.receiver.recv().await.map(Arc::unwrap_or_clone)
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<DiscoveryEvent> {
        self.receiver.try_recv().ok().map(Arc::unwrap_or_clone)
    }
}

impl Stream for DiscoveryEvents {
    type Item = DiscoveryEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.receiver
            .poll_recv(cx)
            .map(|event| event.map(Arc::unwrap_or_clone))
    }
}
