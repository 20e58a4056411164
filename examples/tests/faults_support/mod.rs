//! What the fault and soak tests share: a fleet of registrations, discovery caches that record
//! every event they emit, an oracle that records etcd's own revision history of the service,
//! and the checks run after each fault heals.
//!
//! The checks, after a fault heals:
//! - every live instance is registered again (its key in etcd, on the lease its registration
//!   holds) within the stated bound;
//! - every cache is synced and equals the truth listed from etcd;
//! - each cache's event stream is consistent with itself (no add of a held instance, no update
//!   or removal of one not held: nothing applied twice) and, key by key, the values it went
//!   through are a subsequence of the values etcd's history went through, ending at the same
//!   one (nothing invented, nothing out of order, nothing missed at the end; a re-list may
//!   legitimately skip intermediate values);
//! - no cache held an instance longer than the stated bound after its process died.
//!
//! The bounds, stated per fault in each test from these parts: [`TTL`] (2 s, etcd's minimum),
//! [`BACKOFF_MAX`] (1 s, the longest retry wait), [`RECONNECT`] (4 s for etcd-client to serve
//! again after a restart or heal), [`EXPIRY_LATENESS`] (1.5 s: etcd checks expiry every 500 ms,
//! then the watch delivers), the fault's own duration (nothing can be removed from a cache that
//! cannot hear, and a restarted etcd gives every lease its whole TTL again), and for elections
//! the failover time. Re-registration: TTL + backoff + reconnect after the heal. Staleness of
//! a dead instance: fault duration + TTL + expiry lateness + reconnect (+ backoff or election).
//!
//! Every test prints `FIGURE ...` lines; `scripts/faults.sh` collects them.

#![allow(dead_code, unreachable_pub, missing_docs)]

use futures::StreamExt;
use registry_api::{
    EventKind, KeyValue, ListOptions, Registry, Revision, WatchBatch, WatchEvent, WatchOptions,
};
use registry_etcd::EtcdRegistry;
use registry_service::{
    Backoff, Discovery, DiscoveryEvent, DiscoveryOptions, KeyLayout, Registration,
    RegistrationOptions, RegistrationState, ServiceInstance,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// etcd's minimum TTL, what the tests register with: keep-alives every ~667 ms.
pub const TTL: Duration = Duration::from_secs(2);

/// The longest wait between retries of registrations and caches in these tests.
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How long a restarted etcd takes to serve an existing client again: etcd-client reconnects
/// about 1.5 s after the restart; the rest is margin for a loaded 2-core machine.
pub const RECONNECT: Duration = Duration::from_secs(4);

/// How late etcd expires a lease (it checks every 500 ms) plus the watch's delivery time.
pub const EXPIRY_LATENESS: Duration = Duration::from_millis(1_500);

/// `REGISTRY_FAULTS_FULL=1` selects the full sizes and durations.
pub fn full_mode() -> bool {
    std::env::var_os("REGISTRY_FAULTS_FULL").is_some_and(|v| !v.is_empty() && v != "0")
}

/// `ci` in CI, `full` with `REGISTRY_FAULTS_FULL=1`.
pub fn scale<T>(ci: T, full: T) -> T {
    if full_mode() {
        full
    } else {
        ci
    }
}

/// Prints one figure line for `scripts/faults.sh`.
pub fn figure(name: &str, text: impl std::fmt::Display) {
    println!("FIGURE {name}: {text}");
}

pub fn backoff() -> Backoff {
    Backoff::new(Duration::from_millis(100), BACKOFF_MAX)
}

pub fn registration_options(seed: u64) -> RegistrationOptions {
    RegistrationOptions::default()
        .ttl(TTL)
        .backoff(backoff())
        .seed(seed)
        .request_timeout(Duration::from_secs(1))
}

pub fn discovery_options(seed: u64) -> DiscoveryOptions {
    DiscoveryOptions::default()
        .backoff(backoff())
        .seed(seed)
        .request_timeout(Duration::from_secs(1))
}

/// A client on `endpoints` in `namespace`, with short timeouts and HTTP/2 pings, so a silent
/// connection is dropped within about a second.
pub async fn connect(endpoints: &[String], namespace: &str) -> Arc<dyn Registry> {
    let registry = EtcdRegistry::builder(endpoints.to_vec())
        .key_prefix(namespace)
        .connect_timeout(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(1))
        .keep_alive(Duration::from_millis(500), Duration::from_millis(700))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to {endpoints:?}: {e}"));
    Arc::new(registry)
}

/// Polls `condition` every 25 ms; panics with `what` and the `state` dump after `bound`.
pub async fn eventually<F, Fut>(bound: Duration, what: &str, mut condition: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    loop {
        match condition().await {
            Ok(()) => return start.elapsed(),
            Err(why) if start.elapsed() > bound => {
                panic!("{what}: not within {bound:?}: {why}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}

/// Runs blocking harness work (starting, stopping etcd) without stalling the runtime.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// The instances of one service, each kept registered by its own [`Registration`].
pub struct Fleet {
    pub service: String,
    registry: Arc<dyn Registry>,
    pub live: BTreeMap<String, Registration>,
    /// Instances whose process died (abandoned, never deregistered), with when.
    pub died: Vec<(String, Instant)>,
    next: usize,
}

impl Fleet {
    pub fn new(registry: Arc<dyn Registry>, service: &str) -> Self {
        Fleet {
            service: service.to_owned(),
            registry,
            live: BTreeMap::new(),
            died: Vec::new(),
            next: 0,
        }
    }

    pub fn instance(&self, index: usize) -> ServiceInstance {
        ServiceInstance::new(
            self.service.clone(),
            format!("i{index:04}"),
            format!("10.0.{}.{}:8080", index / 250, index % 250),
        )
    }

    /// Registers `count` more instances, all at once; each must be in within 10 s.
    pub async fn grow(&mut self, count: usize) {
        let starts = (0..count).map(|k| {
            let index = self.next + k;
            let instance = self.instance(index);
            let registry = self.registry.clone();
            async move {
                let id = instance.id.clone();
                let registration = tokio::time::timeout(
                    Duration::from_secs(10),
                    Registration::start(registry, instance, registration_options(index as u64)),
                )
                .await
                .unwrap_or_else(|_| panic!("{id} not registered within 10 s"))
                .unwrap_or_else(|e| panic!("{id}: {e}"));
                (id, registration)
            }
        });
        for (id, registration) in futures::future::join_all(starts).await {
            self.live.insert(id, registration);
        }
        self.next += count;
    }

    /// The process of `id` dies: no revoke, its lease expires a TTL after its last keep-alive.
    pub fn kill(&mut self, id: &str) {
        if let Some(registration) = self.live.remove(id) {
            registration.abandon();
            self.died.push((id.to_owned(), Instant::now()));
        }
    }

    /// Kills the first `count` live instances; returns their ids.
    pub fn kill_some(&mut self, count: usize) -> Vec<String> {
        let ids: Vec<String> = self.live.keys().take(count).cloned().collect();
        for id in &ids {
            self.kill(id);
        }
        ids
    }

    /// Deregisters `id` gracefully (its entry goes at once).
    pub async fn leave(&mut self, id: &str) {
        if let Some(registration) = self.live.remove(id) {
            // An unreachable registry is fine: the entry then expires within a TTL.
            registration.deregister().await.ok();
        }
    }

    pub fn expected(&self) -> BTreeMap<String, ServiceInstance> {
        self.live
            .keys()
            .map(|id| {
                let index: usize = id[1..].parse().unwrap_or_default();
                (id.clone(), self.instance(index))
            })
            .collect()
    }

    /// How many registrations are not `Registered` right now.
    pub fn unregistered(&self) -> usize {
        self.live
            .values()
            .filter(|r| !matches!(r.state(), RegistrationState::Registered { .. }))
            .count()
    }

    pub async fn shutdown(mut self) {
        let ids: Vec<String> = self.live.keys().cloned().collect();
        for id in ids {
            self.leave(&id).await;
        }
    }
}

/// A discovery cache with the log of every event it emitted, timestamped.
pub struct Cache {
    pub discovery: Discovery,
    log: Arc<Mutex<Vec<(Instant, DiscoveryEvent)>>>,
    task: JoinHandle<()>,
}

impl Cache {
    pub fn start(registry: Arc<dyn Registry>, service: &str, seed: u64) -> Cache {
        let discovery =
            Discovery::start(registry, service, discovery_options(seed)).expect("discovery");
        let mut events = discovery.subscribe();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let task = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                sink.lock().unwrap().push((Instant::now(), event));
            }
        });
        Cache {
            discovery,
            log,
            task,
        }
    }

    pub fn log(&self) -> Vec<(Instant, DiscoveryEvent)> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// etcd's own history of the service's keys, read over a connection the faults do not touch
/// (or that resumes from the last revision + 1 after a restart, as nothing is compacted then).
pub struct Oracle {
    state: Arc<Mutex<OracleState>>,
    task: JoinHandle<()>,
    service: String,
}

/// Records every batch under `prefix` from `next` on, resuming after a broken watch from the
/// last revision + 1 and re-listing (a gap) after a compaction.
async fn follow(
    registry: Arc<dyn Registry>,
    prefix: String,
    mut next: Revision,
    sink: Arc<Mutex<OracleState>>,
) {
    loop {
        let watch = registry
            .watch(prefix.as_bytes(), WatchOptions::from_revision(next))
            .await;
        if let Ok(mut stream) = watch {
            while let Some(item) = stream.next().await {
                match item {
                    Ok(batch) if batch.is_progress() => {}
                    Ok(batch) => {
                        next = batch.revision.next();
                        sink.lock().unwrap().batches.push(batch);
                    }
                    Err(registry_api::Error::Compacted { .. }) => {
                        sink.lock().unwrap().gaps += 1;
                        if let Ok(list) = registry
                            .list(prefix.as_bytes(), ListOptions::default())
                            .await
                        {
                            next = list.revision.next();
                        }
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        sink.lock().unwrap().resumed += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(Default)]
struct OracleState {
    /// Every batch under the service prefix since the oracle started, in revision order.
    batches: Vec<WatchBatch>,
    /// Times the history had to be re-listed because it was compacted away (it then has a gap).
    gaps: u32,
    resumed: u32,
}

impl Oracle {
    /// Starts watching `service` from the current revision; nothing of it may exist yet.
    pub async fn start(registry: Arc<dyn Registry>, service: &str) -> Oracle {
        let prefix = KeyLayout::default().service_prefix(service);
        let list = retried(|| registry.list(prefix.as_bytes(), ListOptions::default()))
            .await
            .expect("oracle list");
        assert!(list.kvs.is_empty(), "the service must start empty");
        let state = Arc::new(Mutex::new(OracleState::default()));
        let task = tokio::spawn(follow(
            registry,
            prefix,
            list.revision.next(),
            state.clone(),
        ));
        Oracle {
            state,
            task,
            service: service.to_owned(),
        }
    }

    /// The store was restored from a backup at `at` (the backup's revision, plus any bump):
    /// its history forked there. Lists the service at `at` (retrying while the restarted
    /// server comes back), records the jump from what the history held to that list as one
    /// batch, and follows the new history from `at` + 1.
    pub async fn rebase(&mut self, registry: Arc<dyn Registry>, at: Revision) {
        self.task.abort();
        let prefix = KeyLayout::default().service_prefix(&self.service);
        let start = Instant::now();
        let list = loop {
            match registry.list(prefix.as_bytes(), ListOptions::at(at)).await {
                Ok(list) => break list,
                Err(e) if start.elapsed() < RECONNECT * 2 => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("oracle: listing the restored store at {at}: {e}"),
            }
        };
        {
            let mut state = self.state.lock().unwrap();
            // The old watch may have met the bumped restore's compaction on its way out: that
            // is the jump recorded here, not a hole in the history.
            state.gaps = 0;
            let mut present = BTreeSet::new();
            for batch in &state.batches {
                for event in &batch.events {
                    match event.kind {
                        EventKind::Put => present.insert(event.kv.key.clone()),
                        EventKind::Delete => present.remove(&event.kv.key),
                    };
                }
            }
            let mut events: Vec<WatchEvent> = list
                .kvs
                .iter()
                .map(|kv| WatchEvent {
                    kind: EventKind::Put,
                    kv: kv.clone(),
                    prev_kv: None,
                })
                .collect();
            for key in present {
                if !list.kvs.iter().any(|kv| kv.key == key) {
                    events.push(WatchEvent {
                        kind: EventKind::Delete,
                        kv: KeyValue {
                            key,
                            mod_revision: at,
                            ..KeyValue::default()
                        },
                        prev_kv: None,
                    });
                }
            }
            state.batches.push(WatchBatch {
                revision: at,
                events,
            });
        }
        self.task = tokio::spawn(follow(registry, prefix, at.next(), self.state.clone()));
    }

    /// The last revision the oracle saw a change at.
    pub fn last_revision(&self) -> Revision {
        self.state
            .lock()
            .unwrap()
            .batches
            .last()
            .map(|b| b.revision)
            .unwrap_or_default()
    }

    /// Per instance id, the values its key went through (None: absent or not an instance),
    /// consecutive repeats collapsed, starting from absent.
    pub fn key_histories(&self, service: &str) -> Histories {
        let state = self.state.lock().unwrap();
        assert_eq!(
            state.gaps, 0,
            "the oracle's history has a gap: it was compacted"
        );
        let layout = KeyLayout::default();
        let mut histories: BTreeMap<String, Vec<Option<ServiceInstance>>> = BTreeMap::new();
        for batch in &state.batches {
            for event in &batch.events {
                let Some(id) = layout.instance_id(service, &event.kv.key) else {
                    continue;
                };
                let value = match event.kind {
                    EventKind::Put => ServiceInstance::from_json(&event.kv.value)
                        .ok()
                        .filter(|i| i.service == service && i.id == id),
                    EventKind::Delete => None,
                };
                let history = histories.entry(id.to_owned()).or_insert_with(|| vec![None]);
                if history.last() != Some(&value) {
                    history.push(value);
                }
            }
        }
        histories
    }

    /// Waits until the oracle has seen `revision`.
    pub async fn caught_up(&self, revision: Revision, bound: Duration) {
        eventually(bound, "oracle caught up", || async {
            let last = self.last_revision();
            if last >= revision {
                Ok(())
            } else {
                Err(format!("at {last}, want {revision}"))
            }
        })
        .await;
    }
}

impl Drop for Oracle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Retries a read while it fails as retryable: with several endpoints, etcd-client sends some
/// calls to a dead member and does not retry them itself.
pub async fn retried<T, F, Fut>(mut call: F) -> registry_api::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = registry_api::Result<T>>,
{
    let mut attempts = 0;
    loop {
        match call().await {
            Err(e) if e.is_retryable() && attempts < 20 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            outcome => return outcome,
        }
    }
}

/// The instances etcd holds now, and the revision read at.
pub async fn truth(
    registry: &dyn Registry,
    service: &str,
) -> Result<(BTreeMap<String, ServiceInstance>, Revision), String> {
    let layout = KeyLayout::default();
    let prefix = layout.service_prefix(service);
    let list = retried(|| registry.list(prefix.as_bytes(), ListOptions::default()))
        .await
        .map_err(|e| format!("truth: {e}"))?;
    let mut instances = BTreeMap::new();
    for kv in list.kvs {
        if let Some(id) = layout.instance_id(service, &kv.key) {
            if let Ok(instance) = ServiceInstance::from_json(&kv.value) {
                instances.insert(id.to_owned(), instance);
            }
        }
    }
    Ok((instances, list.revision))
}

/// Waits until every live instance is registered (in etcd, on its registration's lease), no
/// dead one remains, and every cache is synced and equal to etcd. Returns how long it took.
pub async fn converge(
    checker: &dyn Registry,
    fleet: &Fleet,
    caches: &[Cache],
    bound: Duration,
    what: &str,
) -> Duration {
    let layout = KeyLayout::default();
    eventually(bound, what, || async {
        let (truth, revision) = truth(checker, &fleet.service).await?;
        let expected = fleet.expected();
        if truth != expected {
            let have: BTreeSet<_> = truth.keys().collect();
            let want: BTreeSet<_> = expected.keys().collect();
            let differing: Vec<&String> = truth
                .iter()
                .filter(|(id, value)| expected.get(*id).is_some_and(|e| e != *value))
                .map(|(id, _)| id)
                .collect();
            return Err(format!(
                "etcd at {revision}: missing {:?}, extra {:?}, other values {differing:?}",
                want.difference(&have).collect::<Vec<_>>(),
                have.difference(&want).collect::<Vec<_>>()
            ));
        }
        for (id, registration) in &fleet.live {
            let Some(lease) = registration.lease() else {
                return Err(format!("{id} is {:?}", registration.state()));
            };
            let key = layout.instance_key(&fleet.service, id);
            let held = retried(|| checker.get(key.as_bytes()))
                .await
                .map_err(|e| e.to_string())?
                .kv
                .and_then(|kv| kv.lease);
            if held != Some(lease) {
                return Err(format!(
                    "{id}: key on lease {held:?}, registration holds {lease}"
                ));
            }
        }
        let want: Vec<ServiceInstance> = expected.into_values().collect();
        for (i, cache) in caches.iter().enumerate() {
            if !cache.discovery.is_synced() {
                return Err(format!("cache {i} not synced"));
            }
            if cache.discovery.snapshot().to_vec() != want {
                return Err(format!(
                    "cache {i} holds {} instances at {}, etcd {} at {revision}",
                    cache.discovery.len(),
                    cache.discovery.revision(),
                    want.len()
                ));
            }
        }
        Ok(())
    })
    .await
}

/// Checks every cache's event log against itself, its snapshot and the oracle's history (see
/// the module docs). Returns how many events were checked.
pub fn check_histories(oracle: &Oracle, service: &str, caches: &[Cache]) -> usize {
    let truth_histories = oracle.key_histories(service);
    let mut checked = 0;
    for (i, cache) in caches.iter().enumerate() {
        let log: Vec<DiscoveryEvent> = cache.log().into_iter().map(|(_, e)| e).collect();
        checked += log.len();
        if let Err(why) = check_log(&log, &cache.discovery.snapshot(), &truth_histories) {
            panic!("cache {i}: {why}");
        }
    }
    checked
}

/// Etcd's history per instance id, as [`Oracle::key_histories`] gives it.
pub type Histories = BTreeMap<String, Vec<Option<ServiceInstance>>>;

/// One cache's event log against itself, its snapshot and etcd's history (module docs).
pub fn check_log(
    log: &[DiscoveryEvent],
    snapshot: &[ServiceInstance],
    truth_histories: &Histories,
) -> Result<(), String> {
    let mut held: BTreeMap<String, ServiceInstance> = BTreeMap::new();
    let mut seen: Histories = BTreeMap::new();
    for event in log {
        let id = event.instance().id.clone();
        match event {
            DiscoveryEvent::Added(new) => {
                if held.insert(id.clone(), new.clone()).is_some() {
                    return Err(format!("{id} added twice"));
                }
            }
            DiscoveryEvent::Updated { old, new } => {
                if held.get(&id) != Some(old) || old == new {
                    return Err(format!("update of {id} from a value it did not hold"));
                }
                held.insert(id.clone(), new.clone());
            }
            DiscoveryEvent::Removed(old) => {
                if held.remove(&id).as_ref() != Some(old) {
                    return Err(format!("removal of {id} it did not hold"));
                }
            }
        }
        seen.entry(id.clone())
            .or_insert_with(|| vec![None])
            .push(held.get(&id).cloned());
    }
    let snapshot: BTreeMap<String, ServiceInstance> =
        snapshot.iter().map(|i| (i.id.clone(), i.clone())).collect();
    if held != snapshot {
        return Err("its events do not add up to its snapshot".to_owned());
    }
    for (id, values) in &seen {
        let Some(truth) = truth_histories.get(id) else {
            return Err(format!("{id} never existed in etcd"));
        };
        if !is_subsequence(values, truth) {
            return Err(format!(
                "{id} went through {} values not in etcd's order ({} values)",
                values.len(),
                truth.len()
            ));
        }
        if values.last() != truth.last() {
            return Err(format!("{id} ended elsewhere than etcd"));
        }
    }
    for (id, truth) in truth_histories {
        if !seen.contains_key(id) && truth.last() != Some(&None) {
            return Err(format!("never saw {id}"));
        }
    }
    Ok(())
}

fn is_subsequence<T: PartialEq>(sub: &[T], of: &[T]) -> bool {
    let mut of = of.iter();
    sub.iter().all(|x| of.any(|y| y == x))
}

/// The longest any cache held a dead instance after its death; panics past `bound`.
pub fn worst_staleness(fleet: &Fleet, caches: &[Cache], bound: Duration) -> Duration {
    let mut worst = Duration::ZERO;
    for (id, died) in &fleet.died {
        for (i, cache) in caches.iter().enumerate() {
            let log = cache.log();
            let held_at_death = log.iter().filter(|(at, _)| at <= died).fold(
                false,
                |held, (_, event)| match event {
                    DiscoveryEvent::Removed(x) if &x.id == id => false,
                    e if &e.instance().id == id => true,
                    _ => held,
                },
            );
            if !held_at_death {
                continue;
            }
            let removed = log.iter().find_map(|(at, event)| match event {
                DiscoveryEvent::Removed(x) if &x.id == id && at > died => Some(*at),
                _ => None,
            });
            let stale = match removed {
                Some(at) => at - *died,
                None => panic!(
                    "cache {i} still holds {id}, dead since {:?}",
                    died.elapsed()
                ),
            };
            assert!(
                stale <= bound,
                "cache {i} held {id} for {stale:?} after it died (bound {bound:?})"
            );
            worst = worst.max(stale);
        }
    }
    worst
}

/// The whole check after a fault healed; prints the figures. `reregister_bound` bounds the
/// convergence, `stale_bound` how long a dead instance may stay in a cache.
pub async fn after_heal(
    label: &str,
    checker: &dyn Registry,
    oracle: &Oracle,
    fleet: &Fleet,
    caches: &[Cache],
    reregister_bound: Duration,
    stale_bound: Duration,
) {
    let took = converge(checker, fleet, caches, reregister_bound, label).await;
    // The oracle's history must end where etcd is now before the logs are compared with it.
    eventually(Duration::from_secs(5), "oracle caught up", || async {
        let (now, _) = truth(checker, &fleet.service).await?;
        let ends: BTreeMap<String, ServiceInstance> = oracle
            .key_histories(&fleet.service)
            .into_iter()
            .filter_map(|(id, values)| Some((id, values.last()?.clone()?)))
            .collect();
        if ends == now {
            Ok(())
        } else {
            Err(format!(
                "oracle ends with {} instances, etcd has {}",
                ends.len(),
                now.len()
            ))
        }
    })
    .await;
    let events = check_histories(oracle, &fleet.service, caches);
    let worst = worst_staleness(fleet, caches, stale_bound);
    figure(
        label,
        format!(
            "healed: {} instances registered and {} caches equal to etcd {:.2?} after the heal (bound {:.2?}); {} cache events checked against etcd's history; worst staleness of {} dead instances {:.2?} (bound {:.2?})",
            fleet.live.len(),
            caches.len(),
            took,
            reregister_bound,
            events,
            fleet.died.len(),
            worst,
            stale_bound
        ),
    );
}

/// A service with its instances, caches, oracle and a checker client, in one namespace.
pub struct Setup {
    pub namespace: String,
    pub checker: Arc<dyn Registry>,
    pub oracle: Oracle,
    pub fleet: Fleet,
    pub caches: Vec<Cache>,
}

impl Setup {
    /// The oracle first (so it sees every change), then `caches` caches (each its own client
    /// on `cache_endpoints`), then `instances` registrations (one client on
    /// `registration_endpoints`); the checker and the oracle use `direct`.
    pub async fn start(
        label: &str,
        direct: &[String],
        registration_endpoints: &[String],
        cache_endpoints: &[String],
        instances: usize,
        caches: usize,
    ) -> Setup {
        let namespace = registry_etcd::testing::unique_key_prefix(label);
        let checker = connect(direct, &namespace).await;
        let oracle = Oracle::start(connect(direct, &namespace).await, "hello").await;
        let mut cache_list = Vec::with_capacity(caches);
        for seed in 0..caches {
            let client = connect(cache_endpoints, &namespace).await;
            cache_list.push(Cache::start(client, "hello", seed as u64));
        }
        let mut fleet = Fleet::new(connect(registration_endpoints, &namespace).await, "hello");
        fleet.grow(instances).await;
        let setup = Setup {
            namespace,
            checker,
            oracle,
            fleet,
            caches: cache_list,
        };
        converge(
            &*setup.checker,
            &setup.fleet,
            &setup.caches,
            Duration::from_secs(15),
            "initial registration",
        )
        .await;
        setup
    }

    /// The checks after a heal; see [`after_heal`].
    pub async fn after_heal(&self, label: &str, reregister_bound: Duration, stale_bound: Duration) {
        after_heal(
            label,
            &*self.checker,
            &self.oracle,
            &self.fleet,
            &self.caches,
            reregister_bound,
            stale_bound,
        )
        .await;
    }

    /// Waits until every cache knows it is stale; returns how long that took.
    pub async fn all_stale(&self, bound: Duration, what: &str) -> Duration {
        eventually(bound, what, || async {
            match self.caches.iter().position(|c| c.discovery.is_synced()) {
                Some(i) => Err(format!("cache {i} still claims to be synced")),
                None => Ok(()),
            }
        })
        .await
    }

    /// Compacts at the current revision, if it moved since the last compaction.
    pub async fn compact_now(&self, last: &mut Revision) -> bool {
        let Ok((_, current)) = truth(&*self.checker, "hello").await else {
            return false;
        };
        if current <= *last {
            return false;
        }
        retried(|| self.checker.compact(current))
            .await
            .expect("compact");
        *last = current;
        true
    }

    pub async fn shutdown(self) {
        self.fleet.shutdown().await;
    }
}
