//! A bounded soak on one local etcd: instances register and leave (gracefully or by dying)
//! across 10 services at a target rate of registrations, deregistrations and deaths, while a
//! thousand discovery handles follow them. Every event every handle sees is checked against
//! etcd's own history as it arrives (bounded bookkeeping, sized up front, so the memory figure
//! is the registry's); the soak records the rate held, the p50/p99/max propagation of
//! registrations and departures to every handle, the process's memory once churn is steady (it
//! must stay flat), and checks that nothing leaks: after everything deregistered, etcd holds no
//! lease and the runtime no extra task.
//!
//! The handles: 100 per service, through one [`DiscoveryHub`] per client (4 clients, as 4
//! processes), so each service has 4 caches and 4 etcd watches, and every handle its own
//! subscription and checker. The check, per handle: each event applies to what it holds (no
//! add of a held instance, no removal of one it does not hold), every added value is exactly
//! the registered one, and it ends equal to etcd. Per instance, over every handle: etcd's
//! history (read by an oracle watching everything) has the put of every instance added and the
//! delete of every instance removed, no handle added it more than once, every handle that added
//! it removed it once etcd did, and, unless a handle was resynced after lagging or a cache
//! re-listed, every handle saw it (nothing missed).
//!
//! The load is open: operations start at the target rate (1,000/s) whatever their latency, up
//! to 256 in flight; past that the rate falls and the figure says how far (the achieved rate is
//! what the machine gave, not the target). CI: 20 s of it. `REGISTRY_FAULTS_FULL=1`
//! (`scripts/faults.sh`): 10 minutes. `REGISTRY_SOAK_SECS`, `REGISTRY_SOAK_RATE` and
//! `REGISTRY_SOAK_HANDLES` override the duration, rate and handles. Memory is read at rest twice,
//! a third into the churn (a pause: everything in flight finishes and every cache catches up)
//! and at its end: the live heap (counted by the test's global allocator) must not grow by
//! 1 MiB between them in a run of 5 minutes or more (4 MiB in a shorter one), nor the RSS by
//! 8 MiB (it also holds what glibc kept from the load's peaks). The samples under churn, once
//! a second, are printed: they move with what is in flight.

mod faults_support;

/// Counts the bytes the process holds from its allocator: the live heap, the memory the
/// registry and the soak actually use. The RSS also holds what the allocator keeps after a free
/// (glibc's arenas and trimming thresholds move it by a megabyte or two, once, at no particular
/// time), so both are measured and the flatness bound is on the heap.
#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

use faults_support::{connect, figure, scale, truth};
use futures::StreamExt;
use registry_api::{EventKind, Registry, WatchOptions};
use registry_etcd::testing::{unique_key_prefix, EtcdServer};
use registry_service::{
    Backoff, Discovery, DiscoveryEvent, DiscoveryHub, DiscoveryOptions, KeyLayout, Metadata,
    Registration, RegistrationOptions, ServiceInstance, Status,
};
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

const SERVICES: usize = 10;
/// Processes following the services, each with a hub: caches per service.
const CLIENTS: usize = 4;
/// Longer than the fault tests' TTL: hundreds of live leases kept alive every TTL/3.
const TTL: Duration = Duration::from_secs(4);
/// The most operations in flight at once: past it the rate falls rather than the latency
/// growing with a queue of the test's own.
const MAX_IN_FLIGHT: usize = 256;
/// Every how many departures one dies instead of leaving.
const DIES_EVERY: usize = 10;
/// Processes registering the fleet, each with its client (and so its registrar).
const FLEET_CLIENTS: usize = 4;

struct Plan {
    duration: Duration,
    /// Registrations + deregistrations + deaths per second.
    ops_per_second: usize,
    population: usize,
    handles: usize,
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

fn plan() -> Plan {
    let secs = env_number("REGISTRY_SOAK_SECS").unwrap_or(scale(20, 600));
    let rate = env_number("REGISTRY_SOAK_RATE").unwrap_or(1_000);
    Plan {
        duration: Duration::from_secs(secs),
        ops_per_second: rate as usize,
        population: 400,
        handles: env_number("REGISTRY_SOAK_HANDLES").map_or(1_000, |n| n as usize),
    }
}

/// Latencies in 100 µs buckets up to 10 s (the last bucket takes anything longer).
struct Histogram {
    buckets: Vec<u32>,
    count: u64,
    max: Duration,
}

impl Histogram {
    const BUCKET: Duration = Duration::from_micros(100);
    const BUCKETS: usize = 100_000;

    fn new() -> Self {
        Histogram {
            // Written, not just allocated: the pages are in the RSS from the start (an opaque
            // zero, or an optimised build asks the kernel for zeroed pages instead).
            buckets: (0..Self::BUCKETS)
                .map(|_| std::hint::black_box(0))
                .collect(),
            count: 0,
            max: Duration::ZERO,
        }
    }

    fn record(&mut self, sample: Duration) {
        let index = (sample.as_micros() / Self::BUCKET.as_micros()) as usize;
        self.buckets[index.min(Self::BUCKETS - 1)] += 1;
        self.count += 1;
        self.max = self.max.max(sample);
    }

    /// The upper edge of the bucket holding the `p` quantile (the maximum for 1.0).
    fn percentile(&self, p: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        if p >= 1.0 {
            return self.max;
        }
        let rank = ((self.count as f64) * p).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += u64::from(*n);
            if seen >= rank {
                return (Self::BUCKET * (i as u32 + 1)).min(self.max);
            }
        }
        self.max
    }
}

/// Nanoseconds since the soak's start, `0` for never: one atomic per instance and event.
struct Times {
    start: Instant,
    at: Vec<AtomicU64>,
}

impl Times {
    fn new(start: Instant, instances: usize) -> Self {
        Times {
            start,
            // An opaque zero: an optimised build would otherwise allocate the table zeroed by the
            // kernel, whose pages become resident only as the instances reach them, and the
            // soak's own bookkeeping would show as the library's memory growth.
            at: (0..instances)
                .map(|_| AtomicU64::new(std::hint::black_box(0)))
                .collect(),
        }
    }

    fn mark(&self, index: usize) {
        if let Some(slot) = self.at.get(index) {
            let nanos = self.start.elapsed().as_nanos().max(1) as u64;
            slot.store(nanos, Ordering::Relaxed);
        }
    }

    fn clear(&self, index: usize) {
        if let Some(slot) = self.at.get(index) {
            slot.store(0, Ordering::Relaxed);
        }
    }

    fn since(&self, index: usize, now: Instant) -> Option<Duration> {
        let nanos = self.at.get(index)?.load(Ordering::Relaxed);
        (nanos > 0).then(|| now.saturating_duration_since(self.start + Duration::from_nanos(nanos)))
    }
}

/// Everything the handles, the fleet and the oracle share, sized up front.
struct Book {
    registered: Times,
    left: Times,
    died: Times,
    /// Per instance: how many times etcd's history showed its key appear (a put where there
    /// was none) and go (a delete): once each, or more when its lease was lost and it
    /// registered again.
    appeared: Vec<AtomicU16>,
    vanished: Vec<AtomicU16>,
    /// Leases the fleet's registrations lost (and replaced) under the load.
    lease_losses: AtomicU64,
    /// Per instance: how many handles added it, and removed it.
    adds: Vec<AtomicU16>,
    removes: Vec<AtomicU16>,
    /// What went wrong, first few only.
    violations: Mutex<Vec<String>>,
    violation_count: AtomicU64,
    /// Propagation seen by handles: additions, graceful removals, removals after a death.
    added: Mutex<Histogram>,
    removed: Mutex<Histogram>,
    expired: Mutex<Histogram>,
}

/// One zeroed counter per instance, written up front: an opaque zero, or an optimised build asks
/// the kernel for zeroed pages, which become resident only as the instances reach them and would
/// show as memory growth.
fn counters(instances: usize) -> Vec<AtomicU16> {
    (0..instances)
        .map(|_| AtomicU16::new(std::hint::black_box(0)))
        .collect()
}

impl Book {
    fn new(instances: usize) -> Self {
        let start = Instant::now();
        Book {
            registered: Times::new(start, instances),
            left: Times::new(start, instances),
            died: Times::new(start, instances),
            appeared: counters(instances),
            vanished: counters(instances),
            lease_losses: AtomicU64::new(0),
            adds: counters(instances),
            removes: counters(instances),
            violations: Mutex::new(Vec::with_capacity(16)),
            violation_count: AtomicU64::new(0),
            added: Mutex::new(Histogram::new()),
            removed: Mutex::new(Histogram::new()),
            expired: Mutex::new(Histogram::new()),
        }
    }

    fn violation(&self, what: String) {
        if self.violation_count.fetch_add(1, Ordering::Relaxed) < 16 {
            self.violations.lock().unwrap().push(what);
        }
    }
}

/// An operation of the fleet, finished.
enum Done {
    Registered(usize, Registration),
    Left,
    Died,
    /// A deregistration that failed (timed out under load): left to expire, as a death.
    TimedOut,
}

/// The operations finished so far, by kind.
#[derive(Default)]
struct Tally {
    registered: usize,
    left: usize,
    died: usize,
    timed_out: usize,
}

impl Tally {
    /// Counts `done`; a registration joins the live ones, to leave or die later.
    fn count(&mut self, done: Done, live: &mut VecDeque<(usize, Registration)>) {
        match done {
            Done::Registered(index, registration) => {
                self.registered += 1;
                live.push_back((index, registration));
            }
            Done::Left => self.left += 1,
            Done::Died => self.died += 1,
            Done::TimedOut => self.timed_out += 1,
        }
    }
}

/// The instance index of an id `i000042`.
fn index_of(id: &str) -> Option<usize> {
    id.strip_prefix('i')?.parse().ok()
}

/// Waits until every cache equals etcd (within a TTL and 5 s, or the soak fails), and says how
/// long that took.
async fn converge(checker: &dyn Registry, caches: &[(String, Discovery)], when: &str) -> Duration {
    let converge_start = Instant::now();
    loop {
        let mut behind = None;
        for (service, discovery) in caches {
            let (truth, _) = truth(checker, service).await.expect("truth");
            let want: Vec<ServiceInstance> = truth.into_values().collect();
            if discovery.snapshot().to_vec() != want {
                behind = Some(format!(
                    "a cache of {service} holds {} of {}",
                    discovery.len(),
                    want.len()
                ));
                break;
            }
        }
        match behind {
            None => return converge_start.elapsed(),
            Some(why) => {
                assert!(
                    converge_start.elapsed() < TTL + Duration::from_secs(5),
                    "caches did not converge {when}: {why}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Lets every operation in flight finish (within 10 s each, or the soak fails).
async fn drain(
    in_flight: &mut JoinSet<Done>,
    tally: &mut Tally,
    live: &mut VecDeque<(usize, Registration)>,
) {
    while let Some(done) = tokio::time::timeout(Duration::from_secs(10), in_flight.join_next())
        .await
        .expect("the operations in flight finish within 10 s")
    {
        tally.count(done.expect("an operation panicked"), live);
    }
}

/// The memory at rest: nothing in flight, the population live, every cache equal to etcd.
#[derive(Clone, Copy, Debug, Default)]
struct AtRest {
    heap_kib: u64,
    rss_kib: u64,
    registrations: usize,
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

fn service(index: usize) -> String {
    format!("svc{}", index % SERVICES)
}

fn instance(index: usize) -> ServiceInstance {
    ServiceInstance::new(
        service(index),
        format!("i{index:06}"),
        format!(
            "10.{}.{}.{}:80",
            index / 65_536,
            (index / 256) % 256,
            index % 256
        ),
    )
}

/// `value == instance(index)`, without building the instance (a thousand handles check every
/// event: the checking must not cost more than what it checks).
fn is_instance(value: &ServiceInstance, index: usize, scratch: &mut String) -> bool {
    use std::fmt::Write;
    let field = |scratch: &mut String, args: std::fmt::Arguments<'_>| {
        scratch.clear();
        let _ = scratch.write_fmt(args);
    };
    field(scratch, format_args!("svc{}", index % SERVICES));
    if value.service != *scratch {
        return false;
    }
    field(scratch, format_args!("i{index:06}"));
    if value.id != *scratch {
        return false;
    }
    field(
        scratch,
        format_args!(
            "10.{}.{}.{}:80",
            index / 65_536,
            (index / 256) % 256,
            index % 256
        ),
    );
    value.address == *scratch
        && value.metadata == Metadata::default()
        && value.status == Status::Serving
}

fn options(index: usize) -> RegistrationOptions {
    RegistrationOptions::default()
        .ttl(TTL)
        .seed(index as u64)
        .backoff(Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(1),
        ))
        .request_timeout(Duration::from_secs(3))
}

/// One handle's checker: follows its subscription until it ends (its cache stopped); returns
/// what it holds then.
fn follow(discovery: &Discovery, book: Arc<Book>, population: usize) -> JoinHandle<HashSet<usize>> {
    let mut events = discovery.subscribe();
    tokio::spawn(async move {
        let mut held: HashSet<usize> = HashSet::with_capacity(population);
        let mut scratch = String::with_capacity(64);
        while let Some(event) = events.recv().await {
            let now = Instant::now();
            let Some(index) = index_of(&event.instance().id) else {
                book.violation(format!("not an instance of the soak: {event:?}"));
                continue;
            };
            match &event {
                DiscoveryEvent::Added(value) => {
                    if !is_instance(value, index, &mut scratch) {
                        book.violation(format!("i{index}: added with another value"));
                    }
                    if !held.insert(index) {
                        book.violation(format!("i{index}: added twice"));
                    }
                    if book.adds[index].fetch_add(1, Ordering::Relaxed) == u16::MAX {
                        book.violation(format!("i{index}: added too often"));
                    }
                    if let Some(after) = book.registered.since(index, now) {
                        book.added.lock().unwrap().record(after);
                    }
                }
                DiscoveryEvent::Removed(_) => {
                    if !held.remove(&index) {
                        book.violation(format!("i{index}: removed, not held"));
                    }
                    book.removes[index].fetch_add(1, Ordering::Relaxed);
                    if let Some(after) = book.left.since(index, now) {
                        book.removed.lock().unwrap().record(after);
                    } else if let Some(after) = book.died.since(index, now) {
                        book.expired.lock().unwrap().record(after);
                    }
                }
                DiscoveryEvent::Updated { .. } => {
                    book.violation(format!("i{index}: updated, nothing updates in the soak"));
                }
            }
        }
        held
    })
}

/// Etcd's own history of every service, read by a watch of its own: marks each put and delete.
fn oracle(
    registry: Arc<dyn Registry>,
    book: Arc<Book>,
    from: registry_api::Revision,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let layout = KeyLayout::default();
        let mut next = from.next();
        // Whether each instance's key exists, as the history went.
        // Written up front, like the book's tables (`vec![false; n]` would be zeroed pages
        // that become resident only as the instances reach them).
        let mut present: Vec<bool> = (0..book.appeared.len())
            .map(|_| std::hint::black_box(false))
            .collect();
        loop {
            if let Ok(mut stream) = registry
                .watch(b"services/", WatchOptions::from_revision(next))
                .await
            {
                while let Some(Ok(batch)) = stream.next().await {
                    next = batch.revision.next();
                    for event in &batch.events {
                        let key = event.kv.key_str();
                        let Some(index) = key.rsplit('/').next().and_then(index_of) else {
                            continue;
                        };
                        if layout.instance_id(&service(index), &event.kv.key).is_none() {
                            continue;
                        }
                        let Some(was) = present.get_mut(index) else {
                            book.violation(format!("i{index}: past the soak's instances"));
                            continue;
                        };
                        let now = event.kind == EventKind::Put;
                        if now {
                            let value = ServiceInstance::from_json(&event.kv.value).ok();
                            if value.as_ref() != Some(&instance(index)) {
                                book.violation(format!("i{index}: etcd holds another value"));
                            }
                        }
                        match (*was, now) {
                            (false, true) => book.appeared[index].fetch_add(1, Ordering::Relaxed),
                            (true, false) => book.vanished[index].fetch_add(1, Ordering::Relaxed),
                            _ => 0,
                        };
                        *was = now;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_churn_with_a_thousand_handles() {
    let plan = plan();
    let server = tokio::task::block_in_place(EtcdServer::start).expect("etcd");
    let endpoints = server.endpoints();
    let namespace = unique_key_prefix("soak");
    let checker = connect(&endpoints, &namespace).await;
    let runtime = tokio::runtime::Handle::current();
    let baseline_tasks = runtime.metrics().num_alive_tasks();

    // Half the operations are registrations (the other half departures), with some room.
    let max_registrations =
        (plan.duration.as_secs() as usize + 10) * plan.ops_per_second / 2 + plan.population + 16;
    let book = Arc::new(Book::new(max_registrations));
    let first_revision = truth(&*checker, "svc0").await.expect("revision").1;
    let oracle_task = oracle(
        connect(&endpoints, &namespace).await,
        book.clone(),
        first_revision,
    );

    let mut hubs = Vec::new();
    for _ in 0..CLIENTS {
        let client = connect(&endpoints, &namespace).await;
        let options = DiscoveryOptions::default().backoff(Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(1),
        ));
        hubs.push(DiscoveryHub::new(client, options));
    }
    let per_service = plan.handles / SERVICES;
    let mut handles = Vec::with_capacity(plan.handles);
    let mut caches: Vec<(String, Discovery)> = Vec::new();
    for s in 0..SERVICES {
        for h in 0..per_service {
            let hub = &hubs[h % CLIENTS];
            let discovery = hub.discovery(&service(s)).expect("discovery");
            let checker = follow(&discovery, book.clone(), plan.population);
            if h < CLIENTS {
                caches.push((service(s), discovery.clone()));
            }
            handles.push((service(s), checker, discovery));
        }
    }
    for (_, discovery) in &caches {
        discovery
            .wait_synced(Duration::from_secs(10))
            .await
            .expect("every cache syncs");
    }

    let mut fleet_clients = Vec::with_capacity(FLEET_CLIENTS);
    for _ in 0..FLEET_CLIENTS {
        fleet_clients.push(connect(&endpoints, &namespace).await);
    }
    // Open loop: operations start at the target rate whatever their latency, up to a bound
    // on those in flight (past it the rate falls, and the figure says so).
    let mut in_flight: JoinSet<Done> = JoinSet::new();
    let mut live: VecDeque<(usize, Registration)> = VecDeque::with_capacity(plan.population * 2);
    let mut tally = Tally::default();
    let (mut issued, mut registering) = (0usize, 0usize);
    let mut saturated = 0u64;
    let mut steady = false;
    // A third into the churn it pauses once: everything in flight finishes, the caches catch
    // up, and the memory at rest is read; the same is read at the end. Between the two, the
    // load (and with it what is in flight and buffered) is the only thing that differs from
    // one sample to the next, so the two rests compare like with like.
    let mut rest_start: Option<AtRest> = None;
    let mut paused = Duration::ZERO;
    let mut rss = Vec::with_capacity(plan.duration.as_secs() as usize + 8);
    let mut heap = Vec::with_capacity(plan.duration.as_secs() as usize + 8);
    let started = Instant::now();
    let mut last_sample = Instant::now();
    while started.elapsed() < plan.duration && registering + 1 < max_registrations {
        while let Some(done) = in_flight.try_join_next() {
            tally.count(done.expect("an operation panicked"), &mut live);
        }
        if rest_start.is_none() && steady && started.elapsed() >= plan.duration / 3 {
            let pause = Instant::now();
            drain(&mut in_flight, &mut tally, &mut live).await;
            converge(&*checker, &caches, "at the pause").await;
            rest_start = Some(AtRest {
                heap_kib: ALLOCATOR.allocated() as u64 / 1024,
                rss_kib: rss_kib(),
                registrations: tally.registered,
            });
            // The schedule resumes where it stopped, not with a burst to catch up.
            paused += pause.elapsed();
        }
        let due =
            ((started.elapsed() - paused).as_secs_f64() * plan.ops_per_second as f64) as usize;
        while issued < due {
            if in_flight.len() >= MAX_IN_FLIGHT {
                saturated += 1;
                break;
            }
            // Registrations until the population is full, then one departure per registration.
            let pending = registering - tally.registered;
            if live.len() + pending < plan.population || live.is_empty() {
                let index = registering;
                registering += 1;
                let client = fleet_clients[index % fleet_clients.len()].clone();
                let book = book.clone();
                in_flight.spawn(async move {
                    // Propagation counts from the call: grant, put, watch, cache.
                    book.registered.mark(index);
                    let registration = Registration::start(client, instance(index), options(index))
                        .await
                        .unwrap_or_else(|e| panic!("register {index}: {e}"));
                    Done::Registered(index, registration)
                });
            } else if let Some((index, registration)) = live.pop_front() {
                let book = book.clone();
                in_flight.spawn(async move {
                    book.lease_losses
                        .fetch_add(registration.status().lease_losses, Ordering::Relaxed);
                    if index % DIES_EVERY == 0 {
                        book.died.mark(index);
                        registration.abandon();
                        Done::Died
                    } else {
                        book.left.mark(index);
                        match registration.deregister().await {
                            Ok(()) => Done::Left,
                            // Overloaded: the revoke timed out, and the lease expires instead.
                            Err(_) => {
                                book.left.clear(index);
                                book.died.mark(index);
                                Done::TimedOut
                            }
                        }
                    }
                });
            }
            issued += 1;
        }
        // Memory once churn is steady (the population was full once), once a second.
        steady |= live.len() + (registering - tally.registered) >= plan.population;
        if steady && last_sample.elapsed() >= Duration::from_secs(1) {
            rss.push(rss_kib());
            heap.push(ALLOCATOR.allocated() as u64 / 1024);
            last_sample = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The operations still in flight finish.
    drain(&mut in_flight, &mut tally, &mut live).await;
    let Tally {
        registered,
        left,
        died,
        timed_out,
    } = tally;
    // The pause a third in is not churn.
    let churn = started.elapsed() - paused;
    let (_, last_revision) = truth(&*checker, "svc0").await.expect("revision");
    let writes = last_revision.get() - first_revision.get();

    // Quiet: every cache equals etcd.
    let converged = converge(&*checker, &caches, "after the churn").await;
    let rest_start = rest_start.expect("the soak paused a third in");
    let rest_end = AtRest {
        heap_kib: ALLOCATOR.allocated() as u64 / 1024,
        rss_kib: rss_kib(),
        registrations: registered,
    };

    // Everything leaves; the dead ones' leases expire.
    let remaining = live.len();
    for (_, registration) in &live {
        book.lease_losses
            .fetch_add(registration.status().lease_losses, Ordering::Relaxed);
    }
    // As many at once as the churn had in flight at most; a revoke that times out leaves
    // its lease to expire, which the lease check below waits for.
    let unrevoked = futures::stream::iter(live.drain(..))
        .map(|(_, registration)| async move { registration.deregister().await.is_err() })
        .buffer_unordered(MAX_IN_FLIGHT)
        .filter(|failed| std::future::ready(*failed))
        .count()
        .await;
    let drained = Instant::now();
    let leases = loop {
        let leases = checker.leases().await.expect("leases");
        if leases.is_empty() || drained.elapsed() > TTL + Duration::from_secs(3) {
            break leases;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        leases.is_empty(),
        "{} leases leaked: {:?}",
        leases.len(),
        &leases[..leases.len().min(10)]
    );
    for (service, discovery) in &caches {
        tokio::time::timeout(Duration::from_secs(5), async {
            while !discovery.is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("a cache of {service} still holds {}", discovery.len()));
    }
    let restarts: u64 = caches.iter().map(|(_, d)| d.watch_restarts()).sum();

    // Drop every cache, handle, client and registration: the runtime's tasks go back to the
    // baseline. Each checker ends with its subscription and must hold nothing.
    drop(caches);
    drop(hubs);
    let checkers: Vec<_> = handles
        .into_iter()
        .map(|(service, checker, discovery)| {
            drop(discovery);
            (service, checker)
        })
        .collect();
    for (service, checker) in checkers {
        let held = checker.await.expect("checker ends with its cache");
        assert!(
            held.is_empty(),
            "a handle of {service} ends holding {held:?}"
        );
    }
    oracle_task.abort();
    let _ = oracle_task.await;
    drop(fleet_clients);
    drop(checker);
    let teardown = Instant::now();
    let tasks = loop {
        let tasks = runtime.metrics().num_alive_tasks();
        if tasks <= baseline_tasks || teardown.elapsed() > Duration::from_secs(5) {
            break tasks;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Per instance, over every handle, against etcd's history.
    let mut missed = 0u64;
    for index in 0..registered {
        let adds = u64::from(book.adds[index].load(Ordering::Relaxed));
        let removes = u64::from(book.removes[index].load(Ordering::Relaxed));
        let appeared = u64::from(book.appeared[index].load(Ordering::Relaxed));
        let vanished = u64::from(book.vanished[index].load(Ordering::Relaxed));
        let handles = per_service as u64;
        // Each handle adds an instance at most once per time its key appeared in etcd, and
        // removes it at most once per time it went.
        if adds > handles * appeared {
            book.violation(format!(
                "i{index}: added {adds} times by {handles} handles, in etcd {appeared} times"
            ));
        }
        if removes > handles * vanished {
            book.violation(format!(
                "i{index}: removed {removes} times by {handles} handles, gone from etcd {vanished} times"
            ));
        }
        if appeared != vanished {
            book.violation(format!(
                "i{index}: in etcd {appeared} times, gone {vanished} times, at the end"
            ));
        }
        if removes != adds {
            book.violation(format!("i{index}: added {adds} times, removed {removes}"));
        }
        missed += (handles * appeared).saturating_sub(adds);
    }
    let violations = book.violations.lock().unwrap().clone();
    let violation_count = book.violation_count.load(Ordering::Relaxed);
    let lease_losses = book.lease_losses.load(Ordering::Relaxed);
    let ops = registered + left + died + timed_out;
    let ops_per_sec = ops as f64 / churn.as_secs_f64();
    let added = book.added.lock().unwrap();
    let removed = book.removed.lock().unwrap();
    let expired = book.expired.lock().unwrap();
    let rest_heap_growth = rest_end.heap_kib as i64 - rest_start.heap_kib as i64;
    let rest_rss_growth = rest_end.rss_kib as i64 - rest_start.rss_kib as i64;
    // Every minute of the steady churn, to show the shape and not only the ends.
    let minutes: Vec<String> = heap
        .iter()
        .zip(&rss)
        .step_by(60)
        .map(|(heap, rss)| format!("{heap}/{rss}"))
        .collect();
    let events = added.count + removed.count + expired.count;
    figure(
        "soak",
        format!(
            "{churn:.1?} of churn: {registered} registrations, {left} deregistrations ({timed_out} more timed out and expired), {died} deaths, {remaining} left at the end ({unrevoked} of their revokes timed out); {ops_per_sec:.0} registrations, deregistrations and deaths per second (target {}, {saturated} times {MAX_IN_FLIGHT} in flight), {:.0} etcd writes/s; {} handles on {SERVICES} services ({} caches); {events} handle events checked against etcd's history, {violation_count} violations, {missed} instance sightings missed ({restarts} watch restarts, {lease_losses} leases lost under the load); propagation to every handle: add p50 {:.2?} p99 {:.2?} max {:.2?} ({} samples), graceful removal p50 {:.2?} p99 {:.2?} max {:.2?}, death to removal max {:.2?} (TTL {TTL:?}); caches equal to etcd {converged:.2?} after the churn; memory at rest (nothing in flight, {} live, caches equal to etcd) a third in and at the end, {} registrations apart: live heap {} KiB -> {} KiB ({rest_heap_growth:+} KiB), RSS {} KiB -> {} KiB ({rest_rss_growth:+} KiB); under the churn ({} samples, one a second), heap/RSS KiB each minute: {}; 0 leases and {tasks}/{baseline_tasks} tasks after teardown",
            plan.ops_per_second,
            writes as f64 / churn.as_secs_f64(),
            plan.handles,
            SERVICES * CLIENTS,
            added.percentile(0.5),
            added.percentile(0.99),
            added.percentile(1.0),
            added.count,
            removed.percentile(0.5),
            removed.percentile(0.99),
            removed.percentile(1.0),
            expired.percentile(1.0),
            plan.population,
            rest_end.registrations - rest_start.registrations,
            rest_start.heap_kib,
            rest_end.heap_kib,
            rest_start.rss_kib,
            rest_end.rss_kib,
            rss.len(),
            minutes.join(" "),
        ),
    );
    assert!(
        violation_count == 0,
        "{violation_count} violations, first ones: {violations:#?}"
    );
    assert!(
        tasks <= baseline_tasks,
        "{tasks} tasks alive after teardown, {baseline_tasks} before the soak"
    );
    if restarts == 0 {
        assert_eq!(missed, 0, "every handle sees every instance");
    }
    assert!(
        added.percentile(0.99) < Duration::from_secs(2),
        "p99 propagation {:?}",
        added.percentile(0.99)
    );
    // Expiry is etcd's: it revokes expired leases through raft, late under load.
    assert!(
        expired.percentile(1.0) < TTL * 2,
        "a dead instance stayed {:?} in a handle",
        expired.percentile(1.0)
    );
    // Flat: what the registry holds at rest after hundreds of thousands of registrations is
    // what it held after the first third (the bound the README states for the full run; the
    // short run has little churn between its two rests). The RSS also holds what the
    // allocator kept from the peaks of the load, so its bound is looser; the samples under
    // churn are printed, not bounded: they move with what is in flight.
    let long = plan.duration >= Duration::from_secs(300);
    let (heap_limit, rss_limit) = if long {
        (1024, 8 * 1024)
    } else {
        (4 * 1024, 8 * 1024)
    };
    assert!(
        rest_heap_growth < heap_limit,
        "the live heap at rest grew by {rest_heap_growth} KiB over the churn"
    );
    assert!(
        rest_rss_growth < rss_limit,
        "the RSS at rest grew by {rest_rss_growth} KiB over the churn"
    );
    drop(server);
}
