//! Layer 3: a live, typed view of one service's instances.
//!
//! A [`Discovery`] is a [`watcher`](mod@crate::watcher) of the service's prefix feeding a
//! [`store`](mod@crate::store), decoded into [`ServiceInstance`]s by an [`InstanceLayout`]
//! ([`JsonLayout`] by default), run by one task that the handles own. It lists the prefix at
//! revision R, watches from R+1 and applies each batch, so [`snapshot`](Discovery::snapshot)
//! answers at once from memory. When the watch fails (server unreachable, history compacted,
//! watch cancelled, stream ended, or silent past the idle bound) the view is flagged stale,
//! re-lists with jittered backoff and emits exactly the differences (no duplicate add, no
//! missed removal), then watches on. A removed instance comes back only through a later put.
//!
//! # Empty is truth only when a read says so
//!
//! A failure never changes the instances: the view stays as last read, flagged stale
//! ([`is_stale`](Discovery::is_stale), [`last_error`](Discovery::last_error)). It empties only
//! when a successful list or watch says the instances are gone (every lease expired, or the
//! service scaled to zero), which is the truth a balancer must see (nacos #4470 shows the
//! outage an error-emptied list causes; nacos-sdk-nodejs #94 the one a never-empty list hides).
//!
//! # Views: filters and subsets
//!
//! [`Discovery::view`] narrows the snapshot and the change stream to the instances passing a
//! [`Filter`] (version, zone, labels, status, or any predicate), optionally to a stable
//! [`Subset`] of them per client (rendezvous hashing, as kratos and go-zero subset).
//! [`Discovery::serving`] is the view pickers read: it leaves draining instances out.
//!
//! # Sharing one watch, owning the task
//!
//! [`Discovery`] is a cheap handle: clones share one store and one watch. A [`DiscoveryHub`]
//! hands out handles keyed by service, so a process with a thousand consumers of one service
//! holds one watch on it. [`shutdown`](Discovery::shutdown) stops the task and waits for it;
//! dropping the last handle stops it too. [`status`](Discovery::status) shows its state and
//! last error.
//!
//! # Values that are not instances
//!
//! A key directly under the prefix whose value does not decode (for the JSON layout: does not
//! parse as a [`ServiceInstance`], or its `service` / `id` disagree with the key) is skipped
//! with a `tracing` warning and counted in [`malformed`](Discovery::malformed); if it replaced
//! an instance, that instance is removed.

mod events;
mod feed;
mod filter;
mod hub;
mod layout;
mod snapshot_file;
mod subset;
mod view;

pub use events::DiscoveryEvents;
pub use filter::Filter;
pub use hub::DiscoveryHub;
pub use layout::{InstanceLayout, JsonLayout};
pub use snapshot_file::{
    SnapshotFile, SnapshotFileStatus, SnapshotLoad, SnapshotPath, SnapshotRefusal, FORMAT_VERSION,
};
pub use subset::Subset;
pub use view::{DiscoveryView, View};

use crate::backoff::Backoff;
use crate::instance::{validate_service, KeyLayout, ServiceInstance, DEFAULT_NAMESPACE};
use crate::owned::OwnedTask;
use crate::pick::InstanceSource;
use crate::store::{self, Snapshot, Store, StoreEvent, StoreStatus};
use crate::watcher::{watcher, WatcherConfig};
use crate::{Error, Result};
use registry_api::{Registry, Revision};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A change to a service's instances: the [store](mod@crate::store)'s event over
/// [`ServiceInstance`]s (`Added`, `Updated { old, new }`, `Removed`), so that a discovery's
/// events and its store's are one type.
pub type DiscoveryEvent = StoreEvent<ServiceInstance>;

/// A picker reads a discovery's instances as they are now.
impl InstanceSource for Discovery {
    fn instances(&self) -> Arc<[ServiceInstance]> {
        self.snapshot()
    }
}

impl StoreEvent<ServiceInstance> {
    /// The instance as it is after the event (for `Removed`, as it was).
    pub fn instance(&self) -> &ServiceInstance {
        self.value()
    }
}

/// How a [`Discovery`] behaves. `Default` watches under `services`.
#[derive(Clone, Debug, PartialEq)]
pub struct DiscoveryOptions {
    /// The key namespace (see [`KeyLayout`]).
    pub namespace: String,
    /// How the watch under the view lists, watches, heals and backs off: the [`watcher`]'s
    /// own configuration. Its `seed` is mixed with the prefix; `None` (the default) takes a
    /// seed of the process's own, so a fleet's re-lists spread out.
    pub watcher: WatcherConfig,
    /// How many batches of changes a subscriber may fall behind before it is resynced from the
    /// snapshot (see [`DiscoveryEvents`]). At least 1.
    pub capacity: usize,
    /// Keep the view's last synced instances in a file and serve them, flagged stale, at a
    /// start while the registry cannot be reached (see [`SnapshotFile`]). Off by default.
    pub snapshot_file: Option<SnapshotFile>,
}

impl Default for DiscoveryOptions {
    fn default() -> Self {
        DiscoveryOptions {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            watcher: WatcherConfig::default(),
            capacity: store::DEFAULT_CAPACITY,
            snapshot_file: None,
        }
    }
}

impl DiscoveryOptions {
    /// Sets the namespace.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Sets the whole watcher configuration.
    pub fn watcher(mut self, watcher: WatcherConfig) -> Self {
        self.watcher = watcher;
        self
    }

    /// Sets the watcher's backoff ([`WatcherConfig::backoff`]).
    pub fn backoff(self, backoff: Backoff) -> Self {
        self.map_watcher(|w| w.backoff(backoff))
    }

    /// Sets the watcher's jitter seed ([`WatcherConfig::seed`]): the same seed gives the same
    /// waits.
    pub fn seed(self, seed: u64) -> Self {
        self.map_watcher(|w| w.seed(seed))
    }

    /// Sets the watcher's per-call timeout ([`WatcherConfig::request_timeout`]).
    pub fn request_timeout(self, timeout: Duration) -> Self {
        self.map_watcher(|w| w.request_timeout(timeout))
    }

    /// Sets how long the watch may be silent before it is asked for progress
    /// ([`WatcherConfig::idle_timeout`]).
    pub fn idle_timeout(self, idle: Duration) -> Self {
        self.map_watcher(|w| w.idle_timeout(idle))
    }

    /// Sets how long a progress request may go unanswered
    /// ([`WatcherConfig::progress_timeout`]).
    pub fn progress_timeout(self, timeout: Duration) -> Self {
        self.map_watcher(|w| w.progress_timeout(timeout))
    }

    /// Sets how many batches a subscriber may fall behind before it is resynced.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Keeps a snapshot file ([`SnapshotFile::at`] for one discovery, [`SnapshotFile::in_dir`]
    /// for a hub).
    pub fn snapshot_file(mut self, file: SnapshotFile) -> Self {
        self.snapshot_file = Some(file);
        self
    }

    fn map_watcher(mut self, change: impl FnOnce(WatcherConfig) -> WatcherConfig) -> Self {
        self.watcher = change(self.watcher);
        self
    }
}

/// What every handle on one discovery shares. Dropping it (with the last handle) stops the
/// task: `stop`'s sender goes with it.
#[derive(Debug)]
struct Shared {
    service: String,
    store: Store<ServiceInstance>,
    malformed: Arc<AtomicU64>,
    counters: Arc<feed::Counters>,
    stop: watch::Sender<bool>,
    /// The feed, owned: if it dies, the store's status says so at once.
    task: OwnedTask,
    /// The snapshot file and the task that writes it, when there is one.
    file: Option<(Arc<snapshot_file::FileShared>, OwnedTask)>,
}

/// A handle on a live view of one service's instances. Clones share the store, its watch and
/// its task; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Discovery {
    shared: Arc<Shared>,
}

impl Discovery {
    /// Starts a discovery of `service` in this crate's layout ([`JsonLayout`] under the
    /// options' namespace). Returns at once; the first list follows in the background
    /// ([`wait_synced`](Self::wait_synced) waits for it and its watch). Fails on a bad service name or
    /// namespace, or when called outside a tokio runtime.
    ///
    /// ```
    /// use registry_service::{
    ///     Discovery, DiscoveryEvent, DiscoveryOptions, Registration, RegistrationOptions,
    ///     ServiceInstance,
    /// };
    /// use registry_api::Registry;
    /// use registry_memory::MemoryRegistry;
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> registry_service::Result<()> {
    /// let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    /// let discovery = Discovery::start(registry.clone(), "hello", DiscoveryOptions::default())?;
    /// discovery.wait_synced(Duration::from_secs(5)).await?;
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
        let keys = KeyLayout::new(options.namespace.clone())?;
        Self::with_layout(registry, JsonLayout::new(keys, service), options)
    }

    /// Starts a discovery of the instances `layout` describes (its prefix, keys and values):
    /// for registries written by other clients, such as etcd's Go naming layout. The options'
    /// namespace is not used; everything else is.
    pub fn with_layout(
        registry: Arc<dyn Registry>,
        layout: impl InstanceLayout,
        options: DiscoveryOptions,
    ) -> Result<Discovery> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::NoRuntime("Discovery::start"))?;
        let layout: Arc<dyn InstanceLayout> = Arc::new(layout);
        let service = layout.service().to_owned();
        let (writer, store) = store::store(options.capacity);
        let malformed = Arc::new(AtomicU64::new(0));
        let counters = Arc::new(feed::Counters::default());
        let (stop, stopped) = watch::channel(false);
        let file = options
            .snapshot_file
            .clone()
            .map(|file| snapshot_file::FileShared::new(file, &service, layout.prefix()));
        let feed = feed::Feed {
            watcher: watcher(registry, layout.prefix(), options.watcher.clone()),
            writer,
            layout,
            malformed: malformed.clone(),
            counters: counters.clone(),
            listed: false,
            file: file.clone(),
            seed_pending: false,
            #[cfg(feature = "metrics")]
            series: crate::metrics::DiscoverySeries::new(&service),
        };
        let failed = store.clone();
        let task = OwnedTask::spawn(
            &runtime,
            "discovery",
            tracing::info_span!("discovery", service = %service),
            feed.run(stopped.clone()),
            move |error| failed.fail(error),
        );
        let file = file.map(|file| {
            let failed = file.clone();
            let writer = OwnedTask::spawn(
                &runtime,
                "discovery snapshot file",
                tracing::info_span!("discovery.snapshot_file", service = %service),
                snapshot_file::keep_written(file.clone(), store.clone(), stopped),
                move |error| {
                    failed.status.send_modify(|status| {
                        status.last_error = Some(error.to_string());
                        status.stopped = true;
                    })
                },
            );
            (file, writer)
        });
        Ok(Discovery {
            shared: Arc::new(Shared {
                service,
                store,
                malformed,
                counters,
                stop,
                task,
                file,
            }),
        })
    }

    /// The service this discovery follows.
    pub fn service(&self) -> &str {
        &self.shared.service
    }

    /// The instances held now, in id order, whatever their status. Never waits; empty before
    /// the first list. Pickers read [`serving`](Self::serving) instead.
    pub fn snapshot(&self) -> Arc<[ServiceInstance]> {
        self.store_snapshot().values()
    }

    /// One instance by id.
    pub fn get(&self, id: &str) -> Option<ServiceInstance> {
        self.shared.store.get(id)
    }

    /// How many instances are held.
    pub fn len(&self) -> usize {
        self.shared.store.len()
    }

    /// True when no instance is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The events from now on: first an `Added` for every instance held at the time of the
    /// call, then every change, in order. Bounded: a subscriber that falls more than
    /// [`DiscoveryOptions::capacity`] batches behind is resynced with exactly the differences
    /// it missed (see [`DiscoveryEvents`]), so applying the events always gives the current
    /// set, and a reader that never reads costs no growing memory.
    pub fn subscribe(&self) -> DiscoveryEvents {
        DiscoveryEvents::new(self.shared.store.subscribe(), None)
    }

    /// This discovery seen through `view`: only the instances it keeps, in the snapshot and
    /// in the change stream.
    pub fn view(&self, view: View) -> DiscoveryView {
        DiscoveryView::new(self.clone(), view)
    }

    /// The instances that take new work ([`View::serving`]): what a picker should read, e.g.
    /// `Picker::new(discovery.serving(), options)`.
    pub fn serving(&self) -> DiscoveryView {
        self.view(View::serving())
    }

    /// The store revision the view reflects: the last list's, or the last applied batch's.
    /// Zero before the first list.
    pub fn revision(&self) -> Revision {
        self.shared.store.revision()
    }

    /// True while the view is synced: listed, and the watch that continues the list
    /// established. False before that, and between a failure and the re-list that recovers
    /// from it.
    pub fn is_synced(&self) -> bool {
        self.shared.store.is_synced()
    }

    /// True when the instances may be out of date with nothing coming to fix them yet: the
    /// view is not synced and either was before (the instances are as last read) or has
    /// failed, even on its first list or watch (a view whose first watch failed or was cut off
    /// is stale, not merely starting). [`last_error`](Self::last_error) says why. False while
    /// the first sync is still under way with nothing failed, and while synced.
    pub fn is_stale(&self) -> bool {
        self.shared.store.is_stale()
    }

    /// How many times the registry's revision was seen to go back (its store restored from an
    /// older backup without `--bump-revision`): each time the view took the registry's list
    /// as the truth and its revision followed it down. Also in
    /// [`status`](Self::status)`().regressions`.
    pub fn regressions(&self) -> u64 {
        self.shared.store.status().regressions
    }

    /// The snapshot file's state (`None` without one): whether it was served at start or why
    /// it was refused, and how writing it goes. While its instances are served,
    /// [`status`](Self::status)`().seeded` gives their revision and age.
    pub fn snapshot_file_status(&self) -> Option<SnapshotFileStatus> {
        self.shared
            .file
            .as_ref()
            .map(|(file, _)| file.status.borrow().clone())
    }

    /// Waits until the view has instances to serve: synced, or seeded from its snapshot file
    /// (then stale, see [`SnapshotFile`]). Without a file, or when the file was refused, this
    /// is [`wait_synced`](Self::wait_synced). Up to `timeout` (virtual time under a paused
    /// tokio clock): fails with [`Error::Timeout`] after it, with the task's error if it died,
    /// and with [`Error::Stopped`] once the discovery was shut down.
    pub async fn wait_seeded_or_synced(&self, timeout: Duration) -> Result<()> {
        self.shared.store.wait_seeded_or_synced(timeout).await
    }

    /// The last failure of the list or watch (kept after recovery, for the record).
    pub fn last_error(&self) -> Option<Arc<Error>> {
        self.shared.store.last_error()
    }

    /// The state of the view and its task: revision, synced, stale, last error, whether the
    /// task has stopped ([`StoreStatus::closed`]) and whether it died instead of being shut
    /// down ([`StoreStatus::failed`]: a panic, even inside a backend's call, or its runtime
    /// gone; the cause is the last error, and the waits return it).
    pub fn status(&self) -> StoreStatus {
        self.shared.store.status()
    }

    /// Waits until the view is synced (at once if it is), up to `timeout` (virtual time under
    /// a paused tokio clock): listed, and the watch that continues the list established, so a
    /// change made after this returns reaches the view even if the connection breaks the
    /// moment after (the view then shows as stale until it has re-listed). While the registry
    /// is unreachable no sync comes: the wait fails with [`Error::Timeout`] after `timeout`.
    /// Fails with [`Error::Stopped`] once the discovery is shut down, and with the cause when
    /// its task died.
    pub async fn wait_synced(&self, timeout: Duration) -> Result<()> {
        self.shared.store.wait_synced(timeout).await
    }

    /// Waits until the view is synced and `condition` holds on its instances (checked now and
    /// after every change), up to `timeout` (virtual time under a paused tokio clock); returns
    /// them. Synced, as for every wait here: instances read before the watch is up may be out
    /// of date already, and a watch that then failed would leave a view that never says so.
    /// Fails with [`Error::Timeout`] after `timeout`.
    pub async fn wait_until(
        &self,
        condition: impl Fn(&[ServiceInstance]) -> bool,
        timeout: Duration,
    ) -> Result<Arc<[ServiceInstance]>> {
        let snapshot = self
            .shared
            .store
            .wait_until(|snapshot| condition(&snapshot.values()), timeout)
            .await?;
        Ok(snapshot.values())
    }

    /// Waits until the view is synced and holds exactly `count` instances, up to `timeout`.
    pub async fn wait_for_len(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Result<Arc<[ServiceInstance]>> {
        let snapshot = self
            .shared
            .store
            .wait_until(|snapshot| snapshot.len() == count, timeout)
            .await?;
        Ok(snapshot.values())
    }

    /// Waits until the view is synced and holds the instance `id`, up to `timeout`; returns
    /// it.
    pub async fn wait_for_instance(&self, id: &str, timeout: Duration) -> Result<ServiceInstance> {
        let snapshot = self
            .shared
            .store
            .wait_until(|snapshot| snapshot.get(id).is_some(), timeout)
            .await?;
        snapshot
            .get(id)
            .cloned()
            .ok_or_else(|| Error::Stopped("discovery"))
    }

    /// How many malformed values have been skipped.
    pub fn malformed(&self) -> u64 {
        self.shared.malformed.load(Ordering::Relaxed)
    }

    /// How many times the watch failed and was restarted (unavailable, compacted, cancelled,
    /// ended, stalled or behind): each one is followed by a re-list, or by a fresh watch where
    /// the backend cannot be asked for progress.
    pub fn watch_restarts(&self) -> u64 {
        self.shared.counters.watch_restarts.load(Ordering::Relaxed)
    }

    /// How many times the cache was synced again (listed and watching) after its first sync:
    /// each recovery from a failed watch counts once.
    pub fn resyncs(&self) -> u64 {
        self.shared.counters.resyncs.load(Ordering::Relaxed)
    }

    /// True when both handles share one store and watch.
    pub fn shares_cache_with(&self, other: &Discovery) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Stops the task (for every handle) and waits until it has stopped. The instances stay
    /// readable as last read; nothing changes them any more. Calling it again, from any
    /// handle, waits likewise and returns.
    pub async fn shutdown(&self) {
        self.shared.stop.send_replace(true);
        // The task stops when told: this wait is short and needs no bound.
        self.shared.store.closed().await.ok();
        if let Some((file, _)) = &self.shared.file {
            let mut status = file.status.subscribe();
            // The sender lives in `file`, which `self` holds: this cannot fail early.
            status.wait_for(|status| status.stopped).await.ok();
        }
    }

    /// The store underneath (for views and the hub).
    pub(crate) fn store(&self) -> &Store<ServiceInstance> {
        &self.shared.store
    }

    pub(crate) fn store_snapshot(&self) -> Arc<Snapshot<ServiceInstance>> {
        self.shared.store.snapshot()
    }
}
