//! A bounded soak on one local etcd: thousands of instances register and leave (gracefully or by
//! dying) across several services while hundreds of caches follow. Records operations per
//! second, the p50/p99/max propagation of registrations and departures to every cache, the
//! process's memory once churn is steady (it must stay flat), and checks that nothing leaks:
//! after everything deregistered, etcd holds no lease and the runtime no extra task.
//!
//! CI: about 25 s, up to 1,200 registrations, 100 caches. `REGISTRY_FAULTS_FULL=1`: about
//! 120 s, up to 6,000 registrations, 400 live at a time, 200 caches.

mod faults_support;

use faults_support::{connect, figure, scale, truth};
use registry_api::Registry;
use registry_etcd::testing::{unique_key_prefix, EtcdServer};
use registry_service::{
    Backoff, Discovery, DiscoveryEvent, DiscoveryOptions, Registration, RegistrationOptions,
    ServiceInstance,
};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const SERVICES: usize = 10;
/// Longer than the fault tests' TTL: hundreds of live leases kept alive every TTL/3.
const TTL: Duration = Duration::from_secs(4);
/// Every how many registrations one dies instead of leaving.
const DIES_EVERY: usize = 10;

struct Plan {
    duration: Duration,
    per_second: usize,
    population: usize,
    caches_per_service: usize,
    max_registrations: usize,
}

fn plan() -> Plan {
    Plan {
        duration: scale(Duration::from_secs(25), Duration::from_secs(120)),
        per_second: 50,
        population: scale(150, 400),
        caches_per_service: scale(10, 20),
        max_registrations: scale(1_200, 6_000),
    }
}

/// When each instance was put or removed by its owner (by instance index), and what the caches
/// saw. Sized up front, so the test's own bookkeeping does not grow with the churn and the
/// memory figure is the registry's.
struct Clock {
    registered: Vec<Option<Instant>>,
    left: Vec<Option<Instant>>,
    died: Vec<Option<Instant>>,
    /// Propagation delays seen by caches.
    added: Histogram,
    removed: Histogram,
    /// From a death to the removal in a cache: TTL plus etcd's lateness plus propagation.
    expired: Histogram,
}

impl Clock {
    fn new(instances: usize) -> Self {
        Clock {
            registered: vec![None; instances],
            left: vec![None; instances],
            died: vec![None; instances],
            added: Histogram::new(),
            removed: Histogram::new(),
            expired: Histogram::new(),
        }
    }

    fn mark(times: &mut [Option<Instant>], index: usize) {
        if let Some(slot) = times.get_mut(index) {
            *slot = Some(Instant::now());
        }
    }

    fn mark_registered(&mut self, index: usize) {
        Self::mark(&mut self.registered, index);
    }

    fn mark_left(&mut self, index: usize) {
        Self::mark(&mut self.left, index);
    }

    fn mark_died(&mut self, index: usize) {
        Self::mark(&mut self.died, index);
    }
}

/// Latencies in 100 µs buckets up to 10 s (the last bucket takes anything longer).
struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    max: Duration,
}

impl Histogram {
    const BUCKET: Duration = Duration::from_micros(100);
    const BUCKETS: usize = 100_000;

    fn new() -> Self {
        Histogram {
            buckets: vec![0; Self::BUCKETS],
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
            seen += n;
            if seen >= rank {
                return (Self::BUCKET * (i as u32 + 1)).min(self.max);
            }
        }
        self.max
    }
}

/// The instance index of an id `i00042`.
fn index_of(id: &str) -> Option<usize> {
    id.strip_prefix('i')?.parse().ok()
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
        format!("i{index:05}"),
        format!(
            "10.{}.{}.{}:80",
            index / 65_536,
            (index / 256) % 256,
            index % 256
        ),
    )
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

fn start_cache(
    registry: Arc<dyn Registry>,
    service: String,
    seed: u64,
    clock: Arc<Mutex<Clock>>,
) -> (Discovery, JoinHandle<()>) {
    let discovery = Discovery::start(
        registry,
        service,
        DiscoveryOptions::default().seed(seed).backoff(Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(1),
        )),
    )
    .expect("discovery");
    let mut events = discovery.subscribe();
    let task = tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let now = Instant::now();
            let mut clock = clock.lock().unwrap();
            let Some(index) = index_of(&event.instance().id) else {
                continue;
            };
            let at = |times: &[Option<Instant>]| times.get(index).copied().flatten();
            match &event {
                DiscoveryEvent::Added(_) => {
                    if let Some(at) = at(&clock.registered) {
                        clock.added.record(now.saturating_duration_since(at));
                    }
                }
                DiscoveryEvent::Removed(_) => {
                    if let Some(at) = at(&clock.left) {
                        clock.removed.record(now.saturating_duration_since(at));
                    } else if let Some(at) = at(&clock.died) {
                        clock.expired.record(now.saturating_duration_since(at));
                    }
                }
                DiscoveryEvent::Updated { .. } => {}
            }
        }
    });
    (discovery, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_churn_with_hundreds_of_caches() {
    let plan = plan();
    let server = tokio::task::block_in_place(EtcdServer::start).expect("etcd");
    let endpoints = server.endpoints();
    let namespace = unique_key_prefix("soak");
    let checker = connect(&endpoints, &namespace).await;
    let runtime = tokio::runtime::Handle::current();
    let baseline_tasks = runtime.metrics().num_alive_tasks();

    let clock = Arc::new(Mutex::new(Clock::new(plan.max_registrations + 16)));
    // Caches spread over a few clients, as over a few processes.
    let cache_clients: Vec<Arc<dyn Registry>> = {
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(connect(&endpoints, &namespace).await);
        }
        clients
    };
    let mut caches = Vec::new();
    for s in 0..SERVICES {
        for c in 0..plan.caches_per_service {
            let client = cache_clients[(s + c) % cache_clients.len()].clone();
            caches.push((
                service(s),
                start_cache(client, service(s), (s * 1000 + c) as u64, clock.clone()),
            ));
        }
    }
    for (_, (discovery, _)) in &caches {
        discovery
            .wait_synced(Duration::from_secs(10))
            .await
            .expect("every cache syncs");
    }

    let fleet_client = connect(&endpoints, &namespace).await;
    let mut live: VecDeque<(usize, Registration)> = VecDeque::new();
    let (mut registered, mut left, mut died) = (0usize, 0usize, 0usize);
    let mut rss = Vec::new();
    let first_revision = truth(&*checker, "svc0").await.expect("revision").1;
    let started = Instant::now();
    let tick = Duration::from_millis(100);
    let per_tick = (plan.per_second / 10).max(1);
    while started.elapsed() < plan.duration && registered < plan.max_registrations {
        let tick_start = Instant::now();
        let batch: Vec<usize> = (registered..registered + per_tick).collect();
        let starts = batch.iter().map(|&index| {
            let client = fleet_client.clone();
            let clock = clock.clone();
            async move {
                // Propagation counts from the call: grant, put, watch, cache.
                clock.lock().unwrap().mark_registered(index);
                let registration = Registration::start(client, instance(index), options(index))
                    .await
                    .unwrap_or_else(|e| panic!("register {index}: {e}"));
                (index, registration)
            }
        });
        let joined =
            tokio::time::timeout(Duration::from_secs(10), futures::future::join_all(starts))
                .await
                .expect("registrations keep up");
        registered += joined.len();
        live.extend(joined);
        while live.len() > plan.population {
            let Some((index, registration)) = live.pop_front() else {
                break;
            };
            if index % DIES_EVERY == 0 {
                clock.lock().unwrap().mark_died(index);
                registration.abandon();
                died += 1;
            } else {
                clock.lock().unwrap().mark_left(index);
                registration.deregister().await.expect("deregister");
                left += 1;
            }
        }
        // Memory from when churn is steady: the population is full.
        if live.len() >= plan.population && registered % (per_tick * 10) == 0 {
            rss.push(rss_kib());
        }
        tokio::time::sleep(tick.saturating_sub(tick_start.elapsed())).await;
    }
    let churn = started.elapsed();
    let writes = truth(&*checker, "svc0").await.expect("revision").1.get() - first_revision.get();

    // Quiet: every cache equals etcd.
    let converge_start = Instant::now();
    loop {
        let mut behind = None;
        for (service, (discovery, _)) in &caches {
            let (truth, _) = truth(&*checker, service).await.expect("truth");
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
            None => break,
            Some(why) => {
                assert!(
                    converge_start.elapsed() < TTL + Duration::from_secs(5),
                    "caches did not converge after the churn: {why}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let converged = converge_start.elapsed();

    // Everything leaves; the dead ones' leases expire.
    let remaining = live.len();
    for (_, registration) in live.drain(..) {
        registration.deregister().await.expect("deregister");
    }
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
        "{} leases leaked: {leases:?}",
        leases.len()
    );
    for (service, (discovery, _)) in &caches {
        assert!(
            discovery.is_empty(),
            "a cache of {service} still holds {}",
            discovery.len()
        );
    }

    // Drop every cache, client and registration: the runtime's tasks go back to the baseline.
    let cache_count = caches.len();
    for (_, (discovery, task)) in caches {
        drop(discovery);
        task.await.expect("recorder ends with its cache");
    }
    drop(cache_clients);
    drop(fleet_client);
    let teardown = Instant::now();
    let tasks = loop {
        let tasks = runtime.metrics().num_alive_tasks();
        if tasks <= baseline_tasks || teardown.elapsed() > Duration::from_secs(5) {
            break tasks;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        tasks <= baseline_tasks,
        "{tasks} tasks alive after teardown, {baseline_tasks} before the soak"
    );

    let clock = Arc::try_unwrap(clock)
        .ok()
        .expect("recorders are gone")
        .into_inner()
        .unwrap();
    let ops = registered + left + died;
    let ops_per_sec = ops as f64 / churn.as_secs_f64();
    let (add_p50, add_p99, add_max) = (
        clock.added.percentile(0.5),
        clock.added.percentile(0.99),
        clock.added.percentile(1.0),
    );
    let (rm_p50, rm_p99) = (
        clock.removed.percentile(0.5),
        clock.removed.percentile(0.99),
    );
    let expired_max = clock.expired.percentile(1.0);
    let steady = rss.len() / 3;
    let (rss_first, rss_last) = (
        rss.get(steady).copied().unwrap_or_default(),
        rss.last().copied().unwrap_or_default(),
    );
    let growth = rss_last.saturating_sub(rss_first);
    figure(
        "soak",
        format!(
            "{churn:.1?} of churn: {registered} registrations, {left} deregistrations, {died} deaths, {remaining} left at the end; {ops_per_sec:.0} registrations, deregistrations and deaths per second, {:.0} etcd writes/s; {cache_count} caches on {SERVICES} services; propagation to every cache: add p50 {add_p50:.2?} p99 {add_p99:.2?} max {add_max:.2?} ({} samples), graceful removal p50 {rm_p50:.2?} p99 {rm_p99:.2?}, death to removal max {expired_max:.2?} (TTL {TTL:?}); caches equal to etcd {converged:.2?} after the churn; RSS {rss_first} KiB -> {rss_last} KiB once steady (+{growth} KiB); 0 leases and {tasks}/{baseline_tasks} tasks after teardown",
            writes as f64 / churn.as_secs_f64(),
            clock.added.count
        ),
    );
    assert!(
        registered >= plan.max_registrations.min(plan.per_second * 10),
        "the load was held: {registered}"
    );
    assert!(
        add_p99 < Duration::from_secs(2),
        "p99 propagation {add_p99:?}"
    );
    assert!(rm_p99 < Duration::from_secs(2), "p99 removal {rm_p99:?}");
    assert!(
        expired_max < TTL + Duration::from_secs(3),
        "a dead instance stayed {expired_max:?} in a cache"
    );
    // Flat: at most 16 MiB more in the last two thirds of steady churn.
    assert!(
        growth < 16 * 1024,
        "memory grew by {growth} KiB under steady churn"
    );
    drop(server);
}
