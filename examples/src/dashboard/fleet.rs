//! What the dashboard shows, kept up to date: the services of a namespace (found by listing and
//! watching the namespace), one [`Discovery`] per service for its instances, the lease of every
//! key and the time that lease has left, and a short log of changes.
//!
//! Everything is folded into one [`FleetView`] published on a `watch` channel: a page gets the
//! whole fleet in each message, so a slow page skips to the latest state instead of queueing
//! changes, and a fresh page needs no separate first load.

use super::service_of;
use futures::StreamExt;
use registry_api::{EventKind, LeaseId, ListOptions, Registry, WatchOptions};
use registry_service::{
    Discovery, DiscoveryEvent, DiscoveryOptions, KeyLayout, ServiceInstance, Status,
};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// How many changes the log keeps: the page shows recent history, not an audit trail.
const LOG_LEN: usize = 50;
/// How often the time each lease has left is read again.
const LEASE_REFRESH: Duration = Duration::from_secs(1);
/// The longest one registry call of the dashboard may take before it is retried later.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause before listing the namespace again after its watch failed.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How many lease reads run at once.
const LEASE_READS_IN_FLIGHT: usize = 16;

/// The whole fleet as the page shows it.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct FleetView {
    /// Where the registry is (`etcd at ...`, `in-memory registry`).
    pub(crate) source: String,
    /// The namespace the services live under.
    pub(crate) namespace: String,
    /// The namespace revision the service list reflects.
    pub(crate) revision: i64,
    /// When this view was built, in milliseconds since the Unix epoch.
    pub(crate) generated_at_ms: u64,
    /// The last error of the namespace watch or of lease reads, cleared by the next success.
    pub(crate) error: Option<String>,
    /// Every service seen, by name.
    pub(crate) services: Vec<ServiceView>,
    /// Recent changes, newest first.
    pub(crate) changes: Vec<Change>,
}

/// One service and its instances.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ServiceView {
    pub(crate) name: String,
    /// Whether its discovery cache is listed and watching.
    pub(crate) synced: bool,
    /// The revision its cache reflects.
    pub(crate) revision: i64,
    pub(crate) serving: usize,
    pub(crate) draining: usize,
    pub(crate) unknown: usize,
    pub(crate) instances: Vec<InstanceView>,
}

/// One instance, with its lease.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct InstanceView {
    #[serde(flatten)]
    pub(crate) instance: ServiceInstance,
    /// The lease of its key, in hex as etcdctl prints it; none for a key without a lease.
    pub(crate) lease: Option<String>,
    /// Whole seconds the lease has left, as last read.
    pub(crate) ttl_left: Option<i64>,
    /// The TTL the lease was granted with.
    pub(crate) granted_ttl: Option<i64>,
}

/// One entry of the change log.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Change {
    pub(crate) at_ms: u64,
    pub(crate) service: String,
    pub(crate) id: String,
    /// `added`, `updated` or `removed`.
    pub(crate) event: &'static str,
    pub(crate) address: String,
    pub(crate) status: Status,
    /// What changed, for updates.
    pub(crate) detail: String,
}

#[derive(Clone, Copy, Debug)]
struct LeaseTtl {
    left: i64,
    granted: i64,
}

#[derive(Debug, Default)]
struct State {
    source: String,
    revision: i64,
    error: Option<String>,
    services: BTreeMap<String, Discovery>,
    /// The lease of every key under the namespace.
    leases: HashMap<Vec<u8>, LeaseId>,
    ttls: HashMap<LeaseId, LeaseTtl>,
    log: VecDeque<Change>,
}

/// The live state and the tasks that keep it.
#[derive(Debug)]
pub(crate) struct Fleet {
    registry: Arc<dyn Registry>,
    layout: KeyLayout,
    state: Mutex<State>,
    view: watch::Sender<Arc<FleetView>>,
    /// The tasks to abort when the dashboard goes; shared with [`Tasks`], which does it.
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

/// Aborts the fleet's tasks when dropped (their `Arc<Fleet>` would otherwise keep them alive).
#[derive(Debug)]
pub(crate) struct Tasks(Arc<Mutex<Vec<AbortHandle>>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in lock(&self.0).drain(..) {
            task.abort();
        }
    }
}

/// A poisoned lock only means a task panicked mid-update; the state is still worth showing.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Fleet {
    /// Starts following the namespace of `layout`. Must run inside a tokio runtime.
    pub(crate) fn start(
        registry: Arc<dyn Registry>,
        layout: KeyLayout,
        source: String,
    ) -> (Arc<Fleet>, Tasks) {
        let (view, _) = watch::channel(Arc::new(FleetView::default()));
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let fleet = Arc::new(Fleet {
            registry,
            layout,
            state: Mutex::new(State {
                source,
                ..State::default()
            }),
            view,
            tasks: tasks.clone(),
        });
        fleet.publish();
        fleet.spawn(fleet.clone().follow_namespace());
        fleet.spawn(fleet.clone().refresh_leases());
        (fleet, Tasks(tasks))
    }

    /// The views from now on, starting with the current one.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<FleetView>> {
        self.view.subscribe()
    }

    /// The current view.
    pub(crate) fn view(&self) -> Arc<FleetView> {
        self.view.borrow().clone()
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(task);
        lock(&self.tasks).push(handle.abort_handle());
    }

    /// Lists the namespace, then watches it from there; on any failure, lists again.
    async fn follow_namespace(self: Arc<Self>) {
        let prefix = format!("{}/", self.layout.namespace());
        loop {
            if let Err(error) = self.list_and_watch(prefix.as_bytes()).await {
                lock(&self.state).error = Some(format!("watching {prefix}: {error}"));
                self.publish();
            }
            tokio::time::sleep(RETRY_AFTER).await;
        }
    }

    async fn list_and_watch(self: &Arc<Self>, prefix: &[u8]) -> Result<(), String> {
        let listed = tokio::time::timeout(
            CALL_TIMEOUT,
            self.registry.list(prefix, ListOptions::default()),
        )
        .await
        .map_err(|_| "the list timed out".to_owned())?
        .map_err(|e| e.to_string())?;
        {
            let mut state = lock(&self.state);
            state.leases.clear();
            for kv in &listed.kvs {
                if let Some(lease) = kv.lease {
                    state.leases.insert(kv.key.to_vec(), lease);
                }
            }
            state.revision = listed.revision.0;
            state.error = None;
        }
        for kv in &listed.kvs {
            if let Some(service) = service_of(&self.layout, &kv.key) {
                self.ensure_service(service);
            }
        }
        self.publish();
        let mut watch = self
            .registry
            .watch(prefix, WatchOptions::from_revision(listed.revision.next()))
            .await
            .map_err(|e| e.to_string())?;
        while let Some(batch) = watch.next().await {
            let batch = batch.map_err(|e| e.to_string())?;
            let mut new_services = Vec::new();
            {
                let mut state = lock(&self.state);
                state.revision = batch.revision.0;
                for event in &batch.events {
                    let key = event.kv.key.to_vec();
                    match (event.kind, event.kv.lease) {
                        (EventKind::Put, Some(lease)) => {
                            state.leases.insert(key, lease);
                        }
                        _ => {
                            state.leases.remove(&key);
                        }
                    }
                    if event.kind == EventKind::Put {
                        if let Some(service) = service_of(&self.layout, &event.kv.key) {
                            if !state.services.contains_key(service) {
                                new_services.push(service.to_owned());
                            }
                        }
                    }
                }
            }
            for service in new_services {
                self.ensure_service(&service);
            }
            self.publish();
        }
        Err("the watch ended".to_owned())
    }

    /// Starts a discovery of `service` and a task folding its events in, unless there is one.
    fn ensure_service(self: &Arc<Self>, service: &str) {
        let discovery = {
            let mut state = lock(&self.state);
            if state.services.contains_key(service) {
                return;
            }
            let options = DiscoveryOptions::default().namespace(self.layout.namespace());
            match Discovery::start(self.registry.clone(), service, options) {
                Ok(discovery) => {
                    state.services.insert(service.to_owned(), discovery.clone());
                    discovery
                }
                Err(error) => {
                    // `service_of` only yields valid names, so this is a namespace problem.
                    state.error = Some(format!("following {service}: {error}"));
                    return;
                }
            }
        };
        self.spawn(self.clone().follow_service(discovery));
    }

    async fn follow_service(self: Arc<Self>, discovery: Discovery) {
        let mut events = discovery.subscribe();
        while let Some(event) = events.recv().await {
            {
                let mut state = lock(&self.state);
                let change = describe(&event);
                if state.log.len() == LOG_LEN {
                    state.log.pop_back();
                }
                state.log.push_front(change);
            }
            self.publish();
        }
    }

    /// Reads, every second, how long each lease in use has left.
    async fn refresh_leases(self: Arc<Self>) {
        let mut tick = tokio::time::interval(LEASE_REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let leases: HashSet<LeaseId> = lock(&self.state).leases.values().copied().collect();
            let registry = &self.registry;
            let reads: Vec<(LeaseId, Option<LeaseTtl>)> =
                futures::stream::iter(leases.into_iter().map(|lease| async move {
                    let ttl =
                        tokio::time::timeout(CALL_TIMEOUT, registry.lease_time_to_live(lease))
                            .await
                            .ok()
                            .and_then(Result::ok)
                            .map(|ttl| LeaseTtl {
                                left: ttl.ttl,
                                granted: ttl.granted_ttl,
                            });
                    (lease, ttl)
                }))
                .buffer_unordered(LEASE_READS_IN_FLIGHT)
                .collect()
                .await;
            {
                let mut state = lock(&self.state);
                state.ttls = reads
                    .into_iter()
                    .filter_map(|(lease, ttl)| Some((lease, ttl?)))
                    .collect();
            }
            self.publish();
        }
    }

    /// Builds the view from the state and the discoveries, and sends it to every page.
    fn publish(&self) {
        let view = {
            let state = lock(&self.state);
            let services = state
                .services
                .iter()
                .map(|(name, discovery)| service_view(&self.layout, &state, name, discovery))
                .collect();
            FleetView {
                source: state.source.clone(),
                namespace: self.layout.namespace().to_owned(),
                revision: state.revision,
                generated_at_ms: now_ms(),
                error: state.error.clone(),
                services,
                changes: state.log.iter().cloned().collect(),
            }
        };
        self.view.send_replace(Arc::new(view));
    }
}

fn service_view(
    layout: &KeyLayout,
    state: &State,
    name: &str,
    discovery: &Discovery,
) -> ServiceView {
    let mut view = ServiceView {
        name: name.to_owned(),
        synced: discovery.is_synced(),
        revision: discovery.revision().0,
        serving: 0,
        draining: 0,
        unknown: 0,
        instances: Vec::new(),
    };
    for instance in discovery.snapshot().iter() {
        match instance.status {
            Status::Serving => view.serving += 1,
            Status::Draining => view.draining += 1,
            Status::Unknown => view.unknown += 1,
        }
        let key = layout.instance_key(name, &instance.id);
        let lease = state.leases.get(key.as_bytes()).copied();
        let ttl = lease.and_then(|lease| state.ttls.get(&lease));
        view.instances.push(InstanceView {
            instance: instance.clone(),
            lease: lease.map(|lease| lease.to_string()),
            ttl_left: ttl.map(|ttl| ttl.left),
            granted_ttl: ttl.map(|ttl| ttl.granted),
        });
    }
    view
}

fn describe(event: &DiscoveryEvent) -> Change {
    let instance = event.instance();
    let (kind, detail) = match event {
        DiscoveryEvent::Added(_) => ("added", String::new()),
        DiscoveryEvent::Updated { old, new } => {
            let mut what = Vec::new();
            if old.status != new.status {
                what.push(format!("status {:?} -> {:?}", old.status, new.status).to_lowercase());
            }
            if old.address != new.address {
                what.push(format!("address {} -> {}", old.address, new.address));
            }
            if old.metadata != new.metadata {
                what.push("metadata".to_owned());
            }
            ("updated", what.join(", "))
        }
        DiscoveryEvent::Removed(_) => ("removed", String::new()),
    };
    Change {
        at_ms: now_ms(),
        service: instance.service.clone(),
        id: instance.id.clone(),
        event: kind,
        address: instance.address.clone(),
        status: instance.status,
        detail,
    }
}
