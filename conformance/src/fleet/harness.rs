//! A whole app under a fault plan: registrations, discovery caches and pickers, each on its own
//! client, run for a stretch of virtual time, healed, and checked at quiescence.

use super::plan::{FaultPlan, Profile};
use super::play::{heal_all, play};
use crate::service::ServiceBackend;
use futures::StreamExt;
use registry_api::rng::{Fnv64, SplitMix64};
use registry_api::{EventKind, ListOptions, Registry, WatchOptions};
use registry_service::{
    Backoff, Discovery, DiscoveryEvent, DiscoveryOptions, Picker, PickerOptions, Registration,
    RegistrationOptions, RegistrationState, ServiceInstance, Strategy,
};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::hash::Hasher;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, Instant};

/// Wraps the registry a fleet member gets (named by its client name): how an app author (or a
/// deliberately broken service layer) puts something between the service layer and its client.
pub type ClientLayer = Arc<dyn Fn(&str, Arc<dyn Registry>) -> Arc<dyn Registry> + Send + Sync>;

/// The fleet's shape, its timings, the invariants' bound and the fault profile.
///
/// Services are named `svc0`, `svc1`, ...; instance `i<j>` of service `svc<s>` registers on
/// client `svc<s>-i<j>`; gateway `g` runs on client `gw<g>`, with one [`Discovery`] and one
/// [`Picker`] per service. The harness reads the truth on its own client `fleet-observer`,
/// which faults never hit.
#[derive(Clone)]
pub struct FleetOptions {
    /// How many services.
    pub services: usize,
    /// How many instances of each.
    pub instances: usize,
    /// How many gateways.
    pub gateways: usize,
    /// The instances' lease TTL.
    pub ttl: Duration,
    /// How often each gateway routes one request to each service.
    pub route_every: Duration,
    /// The invariant's bound: a gateway whose cache is synced never routes to an instance more
    /// than this long after the instance's lease ended (deleting its key).
    pub stale_bound: Duration,
    /// After the plan, everything is healed; the fleet must be quiescent (every instance
    /// registered, every cache equal to the truth) within this long.
    pub settle_within: Duration,
    /// The faults (its `duration` is how long the app runs under them).
    pub profile: Profile,
    /// Wraps each instance's registry.
    pub instance_layer: Option<ClientLayer>,
    /// Wraps each gateway's registry.
    pub gateway_layer: Option<ClientLayer>,
    /// Keep every line of the event log in the report ([`FleetReport::log`]), for reading a
    /// failing seed's run; off by default (the hash is always kept).
    pub keep_log: bool,
}

impl Default for FleetOptions {
    /// 5 services x 2 instances, 2 gateways routing every 500 ms, 4 s TTL, a 5 s bound, 60 s
    /// to settle, two virtual minutes of [`Profile::default`].
    fn default() -> Self {
        FleetOptions {
            services: 5,
            instances: 2,
            gateways: 2,
            ttl: Duration::from_secs(4),
            route_every: Duration::from_millis(500),
            stale_bound: Duration::from_secs(5),
            settle_within: Duration::from_secs(60),
            profile: Profile::default(),
            instance_layer: None,
            gateway_layer: None,
            keep_log: false,
        }
    }
}

impl fmt::Debug for FleetOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetOptions")
            .field("services", &self.services)
            .field("instances", &self.instances)
            .field("gateways", &self.gateways)
            .field("ttl", &self.ttl)
            .field("route_every", &self.route_every)
            .field("stale_bound", &self.stale_bound)
            .field("settle_within", &self.settle_within)
            .field("profile", &self.profile)
            .field("instance_layer", &self.instance_layer.is_some())
            .field("gateway_layer", &self.gateway_layer.is_some())
            .field("keep_log", &self.keep_log)
            .finish()
    }
}

impl FleetOptions {
    /// The client names of the instances, in order.
    pub fn instance_clients(&self) -> Vec<String> {
        let mut names = Vec::new();
        for s in 0..self.services {
            for i in 0..self.instances {
                names.push(format!("svc{s}-i{i}"));
            }
        }
        names
    }

    /// The client names of the gateways, in order.
    pub fn gateway_clients(&self) -> Vec<String> {
        (0..self.gateways).map(|g| format!("gw{g}")).collect()
    }

    /// The profile with its clients filled in (every instance and gateway) when it names none.
    pub fn plan_profile(&self) -> Profile {
        let mut profile = self.profile.clone();
        if profile.clients.is_empty() {
            profile.clients = self.instance_clients();
            profile.clients.extend(self.gateway_clients());
        }
        profile
    }
}

/// What one run of a fleet under one seed found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetReport {
    /// The seed.
    pub seed: u64,
    /// The plan it ran.
    pub plan: FaultPlan,
    /// Every invariant broken, with when and where (empty when the run passed).
    pub violations: Vec<String>,
    /// Requests routed by the gateways.
    pub routes: u64,
    /// Discovery events the gateways saw.
    pub events: u64,
    /// Faults of the plan the backend could not stage.
    pub skipped_faults: u64,
    /// How long after the heal the fleet was quiescent (`None` if it never was).
    pub settled_after: Option<Duration>,
    /// A hash of everything observed, with virtual times (routes, discovery events,
    /// registration states): the same seed gives the same hash.
    pub log_hash: u64,
    /// The event log, line by line with virtual times, when [`FleetOptions::keep_log`] asked
    /// for it (empty otherwise).
    pub log: Vec<String>,
}

impl FleetReport {
    /// True when no invariant was broken.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// At most this many violations are kept per run: the first ones tell the story.
const MAX_VIOLATIONS: usize = 20;

/// The log everything observable goes through, hashed as it comes (FNV-1a).
#[derive(Debug)]
struct Log {
    start: Instant,
    hash: u64,
    routes: u64,
    events: u64,
    violations: Vec<String>,
    lines: Option<Vec<String>>,
}

impl Log {
    fn at(&self) -> Duration {
        self.start.elapsed()
    }

    fn record(&mut self, line: &str) {
        let now = self.at();
        if let Some(lines) = &mut self.lines {
            lines.push(format!("[{:>8.3}s] {line}", now.as_secs_f64()));
        }
        let at = self.at().as_millis().to_le_bytes();
        let mut hash = Fnv64::with_key(self.hash);
        hash.write(&[&at[..], line.as_bytes(), b"\n"].concat());
        self.hash = hash.finish();
    }

    fn violation(&mut self, what: String) {
        if self.violations.len() < MAX_VIOLATIONS {
            let at = self.at();
            self.violations
                .push(format!("[{:>8.3}s] {what}", at.as_secs_f64()));
        }
    }
}

/// The truth as the observer reads it: which instance keys exist, and when each gone one went.
#[derive(Debug, Default)]
struct Truth {
    alive: BTreeSet<String>,
    ended: BTreeMap<String, Instant>,
}

impl Truth {
    fn put(&mut self, key: String) {
        self.ended.remove(&key);
        self.alive.insert(key);
    }

    fn delete(&mut self, key: String, now: Instant) {
        if self.alive.remove(&key) {
            self.ended.insert(key, now);
        }
    }
}

#[derive(Debug, Default)]
struct World {
    truth: Truth,
    /// Per gateway and service: the instances as replayed from the discovery events.
    replayed: BTreeMap<(usize, usize), BTreeMap<String, ServiceInstance>>,
}

type Shared<T> = Arc<Mutex<T>>;

fn lock<T>(shared: &Shared<T>) -> MutexGuard<'_, T> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

const PREFIX: &[u8] = b"services/";

/// Follows the truth under `services/` through a healthy client: list, then watch from the
/// list's revision + 1; on any failure (a server outage, a compaction) list again and diff.
/// Deletions seen late only make the routing check more lenient, never wrong.
async fn observe(observer: Arc<dyn Registry>, world: Shared<World>) {
    loop {
        if let Ok(list) = observer.list(PREFIX, ListOptions::default()).await {
            let now = Instant::now();
            let keys: BTreeSet<String> = list.kvs.iter().map(|kv| kv.key_str().into()).collect();
            {
                let mut world = lock(&world);
                let gone: Vec<String> = world.truth.alive.difference(&keys).cloned().collect();
                for key in gone {
                    world.truth.delete(key, now);
                }
                for key in keys {
                    world.truth.put(key);
                }
            }
            let from = WatchOptions::from_revision(list.revision.next());
            if let Ok(mut watch) = observer.watch(PREFIX, from).await {
                while let Some(Ok(batch)) = watch.next().await {
                    let now = Instant::now();
                    let mut world = lock(&world);
                    for event in &batch.events {
                        let key = event.kv.key_str().into_owned();
                        match event.kind {
                            EventKind::Put => world.truth.put(key),
                            EventKind::Delete => world.truth.delete(key, now),
                        }
                    }
                }
            }
        }
        sleep(Duration::from_millis(100)).await;
    }
}

/// One gateway's routing loop: a pick per service every `every`, each checked against the
/// truth when the cache claims to be synced.
async fn route(
    gateway: usize,
    caches: Arc<Vec<(Discovery, Picker)>>,
    every: Duration,
    bound: Duration,
    world: Shared<World>,
    log: Shared<Log>,
) {
    loop {
        sleep(every).await;
        let now = Instant::now();
        for (service, (discovery, picker)) in caches.iter().enumerate() {
            let picked = picker.pick();
            let mut log = lock(&log);
            log.routes += 1;
            let Some(instance) = picked else {
                log.record(&format!("gw{gateway} svc{service} -> none"));
                continue;
            };
            log.record(&format!("gw{gateway} svc{service} -> {}", instance.id));
            let id = instance.id.clone();
            instance.success();
            if !discovery.is_synced() {
                // A cache that knows it is stale keeps its last view: that is its job.
                continue;
            }
            let key = format!("services/svc{service}/{id}");
            let world = lock(&world);
            if let Some(ended) = world.truth.ended.get(&key) {
                let late = now.duration_since(*ended);
                if late > bound {
                    log.violation(format!(
                        "gw{gateway} routed to {key} {:.3}s after its lease ended (bound {:.3}s), \
                         with a cache that claims to be synced",
                        late.as_secs_f64(),
                        bound.as_secs_f64()
                    ));
                }
            }
        }
    }
}

/// Replays one cache's events: an add of a present instance or a removal of an absent one is
/// an event applied twice or one skipped before it.
async fn replay(
    gateway: usize,
    service: usize,
    discovery: Discovery,
    world: Shared<World>,
    log: Shared<Log>,
) {
    let mut events = discovery.subscribe();
    drop(discovery);
    while let Some(event) = events.recv().await {
        let mut log = lock(&log);
        let mut world = lock(&world);
        let view = world.replayed.entry((gateway, service)).or_default();
        log.events += 1;
        let (what, id, ok) = match &event {
            DiscoveryEvent::Added(i) => (
                "added",
                &i.id,
                view.insert(i.id.clone(), i.clone()).is_none(),
            ),
            DiscoveryEvent::Updated { old, new } => (
                "updated",
                &new.id,
                view.insert(new.id.clone(), new.clone()).as_ref() == Some(old),
            ),
            DiscoveryEvent::Removed(i) => ("removed", &i.id, view.remove(&i.id).is_some()),
        };
        log.record(&format!("gw{gateway} svc{service} {what} {id}"));
        if !ok {
            log.violation(format!(
                "gw{gateway} svc{service}: event {what} {id} does not follow from the events \
                 before it (applied twice, or one skipped)"
            ));
        }
    }
}

/// Why the fleet is not quiescent yet, or `None` when it is.
async fn unsettled(
    observer: &Arc<dyn Registry>,
    registrations: &[(String, Registration)],
    expected: &[ServiceInstance],
    gateways: &[Arc<Vec<(Discovery, Picker)>>],
    world: &Shared<World>,
) -> Option<String> {
    let list = match observer.list(PREFIX, ListOptions::default()).await {
        Ok(list) => list,
        Err(e) => return Some(format!("the truth cannot be read: {e}")),
    };
    let truth: BTreeMap<String, (Option<registry_api::LeaseId>, Option<ServiceInstance>)> = list
        .kvs
        .iter()
        .map(|kv| {
            let instance = ServiceInstance::from_json(&kv.value).ok();
            (kv.key_str().into_owned(), (kv.lease, instance))
        })
        .collect();
    for ((client, registration), instance) in registrations.iter().zip(expected) {
        let key = format!("services/{}/{}", instance.service, instance.id);
        let state = registration.state();
        let RegistrationState::Registered { lease, .. } = state else {
            return Some(format!("{client} is not registered: {state:?}"));
        };
        match truth.get(&key) {
            Some((Some(held), Some(found))) if *held == lease && found == instance => {}
            other => {
                return Some(format!(
                    "{client} says registered with lease {lease}, the store holds {other:?}"
                ))
            }
        }
    }
    let world = lock(world);
    for (g, caches) in gateways.iter().enumerate() {
        for (s, (discovery, _)) in caches.iter().enumerate() {
            let prefix = format!("services/svc{s}/");
            let want: Vec<&ServiceInstance> = truth
                .iter()
                .filter(|(key, _)| key.starts_with(&prefix))
                .filter_map(|(_, (_, instance))| instance.as_ref())
                .collect();
            let snapshot = discovery.snapshot();
            let have: Vec<&ServiceInstance> = snapshot.iter().collect();
            if !discovery.is_synced() || have != want {
                return Some(format!(
                    "gw{g} svc{s}: cache (synced: {}) holds {:?}, the truth is {:?}",
                    discovery.is_synced(),
                    have.iter().map(|i| &i.id).collect::<Vec<_>>(),
                    want.iter().map(|i| &i.id).collect::<Vec<_>>()
                ));
            }
            let replayed: Vec<&ServiceInstance> = world
                .replayed
                .get(&(g, s))
                .map(|view| view.values().collect())
                .unwrap_or_default();
            if replayed != have {
                return Some(format!(
                    "gw{g} svc{s}: its events replay to {:?}, its cache holds {:?}",
                    replayed.iter().map(|i| &i.id).collect::<Vec<_>>(),
                    have.iter().map(|i| &i.id).collect::<Vec<_>>()
                ));
            }
        }
    }
    None
}

/// Runs the fleet of `options` on `backend` under the plan drawn from `seed`, then heals
/// everything, waits for quiescence and checks the invariants. Call it on a paused runtime for a
/// backend on virtual time (the search does).
///
/// The invariants:
/// - at quiescence every instance is registered (its state says so, and the store holds its
///   key with that lease and its value), and every cache is synced and equal to the truth;
/// - every cache's events, replayed from the start, give its final view: no event applied twice
///   or skipped;
/// - no gateway whose cache claims to be synced routes to an instance more than
///   [`FleetOptions::stale_bound`] after its lease ended.
pub async fn run_fleet<B: ServiceBackend>(
    backend: &B,
    seed: u64,
    options: &FleetOptions,
) -> FleetReport {
    let profile = options.plan_profile();
    let plan = FaultPlan::generate(seed, &profile);
    let start = Instant::now();
    let log = Arc::new(Mutex::new(Log {
        start,
        hash: Fnv64::default().finish(),
        routes: 0,
        events: 0,
        violations: Vec::new(),
        lines: options.keep_log.then(Vec::new),
    }));
    let world: Shared<World> = Arc::default();
    let observer = backend.client("fleet-observer").await;
    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    tasks.push(tokio::spawn(observe(observer.clone(), world.clone())));

    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut registrations = Vec::new();
    let mut expected = Vec::new();
    for s in 0..options.services {
        for i in 0..options.instances {
            let client = format!("svc{s}-i{i}");
            let mut registry = backend.client(&client).await;
            if let Some(layer) = &options.instance_layer {
                registry = layer(&client, registry);
            }
            let instance = ServiceInstance::new(
                format!("svc{s}"),
                format!("i{i}"),
                format!("10.0.{s}.{i}:80"),
            );
            let registered = Registration::start(
                registry,
                instance.clone(),
                RegistrationOptions::default()
                    .ttl(options.ttl)
                    .backoff(backoff.clone())
                    .seed(SplitMix64::derive(seed, &client))
                    .request_timeout(Duration::from_secs(1)),
            )
            .await;
            match registered {
                Ok(registration) => {
                    registrations.push((client, registration));
                    expected.push(instance);
                }
                Err(e) => lock(&log).violation(format!("{client} could not register at all: {e}")),
            }
        }
    }

    let mut gateways = Vec::new();
    for g in 0..options.gateways {
        let client = format!("gw{g}");
        let mut registry = backend.client(&client).await;
        if let Some(layer) = &options.gateway_layer {
            registry = layer(&client, registry);
        }
        let mut caches = Vec::new();
        for s in 0..options.services {
            let service = format!("svc{s}");
            let name = format!("{client}/{service}");
            let discovery = match Discovery::start(
                registry.clone(),
                service,
                DiscoveryOptions::default()
                    .backoff(backoff.clone())
                    .seed(SplitMix64::derive(seed, &name))
                    .request_timeout(Duration::from_secs(1)),
            ) {
                Ok(discovery) => discovery,
                Err(e) => {
                    lock(&log).violation(format!("{name}: discovery did not start: {e}"));
                    continue;
                }
            };
            tasks.push(tokio::spawn(replay(
                g,
                s,
                discovery.clone(),
                world.clone(),
                log.clone(),
            )));
            let picker = Picker::new(
                discovery.clone(),
                PickerOptions::new(Strategy::RoundRobin).seed(SplitMix64::derive(seed, &name)),
            );
            caches.push((discovery, picker));
        }
        for (discovery, _) in &caches {
            discovery.wait_synced().await;
        }
        gateways.push(Arc::new(caches));
    }
    for (g, caches) in gateways.iter().enumerate() {
        tasks.push(tokio::spawn(route(
            g,
            caches.clone(),
            options.route_every,
            options.stale_bound,
            world.clone(),
            log.clone(),
        )));
    }

    // The plan, on virtual time from here.
    let registrations = Arc::new(registrations);
    let plan_start = Instant::now();
    let lease_of = |client: &str| {
        registrations
            .iter()
            .find(|(name, _)| name == client)
            .and_then(|(_, registration)| registration.lease())
    };
    let skipped = play(&plan, backend, &lease_of, observer.as_ref(), |step| {
        lock(&log).record(&format!("fault {:?}", step.fault))
    })
    .await;
    sleep_until(plan_start + profile.duration).await;
    heal_all(backend, &profile.clients).await;
    let healed = Instant::now();

    let mut settled_after = None;
    let mut last = String::new();
    while healed.elapsed() <= options.settle_within {
        match unsettled(&observer, &registrations, &expected, &gateways, &world).await {
            None => {
                settled_after = Some(healed.elapsed());
                break;
            }
            Some(why) => last = why,
        }
        sleep(Duration::from_millis(250)).await;
    }
    for task in &tasks {
        task.abort();
    }
    let mut log = lock(&log);
    if settled_after.is_none() {
        log.violation(format!(
            "not quiescent {:.0}s after the heal: {last}",
            options.settle_within.as_secs_f64()
        ));
    }
    for (client, registration) in registrations.iter() {
        log.record(&format!("{client} ends {:?}", registration.state()));
    }
    FleetReport {
        seed,
        plan,
        violations: log.violations.clone(),
        routes: log.routes,
        events: log.events,
        skipped_faults: skipped,
        settled_after,
        log_hash: log.hash,
        log: log.lines.take().unwrap_or_default(),
    }
}
