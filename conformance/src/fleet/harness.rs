//! A whole app under a fault plan: registrations, discovery caches and pickers, each on its own
//! client, run for a stretch of virtual time under faults, then healed, in one of two
//! [`Mode`]s; checked throughout and at the end against the server's journal.

use super::checker::{lock, replay, route, unconverged, Caches, Shared, World};
use super::log::Log;
use super::mode::Mode;
use super::plan::{FaultPlan, Profile, MAX_LEADER_EXTRA};
use super::play::{heal_all, play};
use super::truth::Truth;
use crate::service::ServiceBackend;
use registry_api::rng::SplitMix64;
use registry_api::{LeaseId, Registry};
use registry_service::{
    Backoff, Discovery, DiscoveryOptions, Picker, PickerOptions, Registration, RegistrationOptions,
    ServiceInstance, Strategy,
};
use std::fmt;
use std::sync::{Arc, Mutex};
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
/// [`Picker`] per service. The truth comes from the server's own journal
/// ([`ServiceBackend::journal`]); compactions go through a client of the harness's own,
/// `fleet-admin`, which no fault but an outage hits.
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
    /// The routing bound: a gateway whose cache is synced never routes to an instance more than
    /// this long after the server deleted its key (its lease ended, or it was deleted).
    pub stale_bound: Duration,
    /// The mode: `None` (the default) lets each seed draw its own ([`Mode::of_seed`]).
    pub mode: Option<Mode>,
    /// [`Mode::Safety`]: after the plan, everything is healed; the fleet must then be
    /// quiescent (every instance registered, every cache equal to the truth) within this long.
    /// Generous on purpose: it says "eventually", the timed claim is the liveness mode's.
    pub settle_within: Duration,
    /// [`Mode::Liveness`]: the bound. Once the faults stop and everything is healed, every
    /// registration and every cache must have converged within this long, and stay so. `None`
    /// (the default) derives it from the fleet's timings: [`FleetOptions::liveness_bound`].
    pub converge_within: Option<Duration>,
    /// [`Mode::Liveness`]: once converged, the fleet must stay so (the same leases, caches
    /// still equal to the truth) for this long, with no fault to excuse a change.
    pub hold_converged: Duration,
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
    /// 5 services x 2 instances, 2 gateways routing every 500 ms, 4 s TTL, a 5 s routing
    /// bound, two virtual minutes of [`Profile::default`], the mode drawn from each seed; 60 s
    /// to settle in safety mode; in liveness mode convergence within the bound derived from
    /// these timings (9.33 s, see [`FleetOptions::liveness_bound`]), then held for 10 s.
    fn default() -> Self {
        FleetOptions {
            services: 5,
            instances: 2,
            gateways: 2,
            ttl: Duration::from_secs(4),
            route_every: Duration::from_millis(500),
            stale_bound: Duration::from_secs(5),
            mode: None,
            settle_within: Duration::from_secs(60),
            converge_within: None,
            hold_converged: Duration::from_secs(10),
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
            .field("mode", &self.mode)
            .field("settle_within", &self.settle_within)
            .field("converge_within", &self.converge_within)
            .field("hold_converged", &self.hold_converged)
            .field("profile", &self.profile)
            .field("instance_layer", &self.instance_layer.is_some())
            .field("gateway_layer", &self.gateway_layer.is_some())
            .field("keep_log", &self.keep_log)
            .finish()
    }
}

impl FleetOptions {
    /// The liveness bound in force: [`converge_within`](Self::converge_within) if set, else
    /// the longest the service layer may take, by its own documented timings, to converge once
    /// the faults stop:
    /// - a lease the faults kept from being renewed can still die after they stop: at most a
    ///   TTL after its last renewal, plus a leader change's extension (up to 1 s);
    /// - its registrar learns it at its next keep-alive round, at most TTL/3 later;
    /// - and is registered again within its worst-case recovery, `backoff.max +
    ///   request_timeout` (2 s + 1 s here; `RegistrationOptions::worst_case_recovery`);
    /// - meanwhile every cache follows its open watch at once, or, if its watch broke, lists
    ///   again within the same `backoff.max + request_timeout`.
    ///
    /// With the default 4 s TTL: 4 + 1 + 1.33 + 3 = 9.33 s.
    ///
    /// ```
    /// use registry_conformance::fleet::FleetOptions;
    /// use std::time::Duration;
    ///
    /// assert_eq!(FleetOptions::default().liveness_bound(), Duration::from_millis(9_333));
    /// ```
    pub fn liveness_bound(&self) -> Duration {
        if let Some(bound) = self.converge_within {
            return bound;
        }
        // A third of the TTL, at millisecond grain.
        let round = Duration::from_millis(u64::try_from((self.ttl / 3).as_millis()).unwrap_or(0));
        self.ttl + MAX_LEADER_EXTRA + round + backoff().max + REQUEST_TIMEOUT
    }

    /// The mode seed `seed` runs: the forced one, or the seed's own.
    pub fn mode_of(&self, seed: u64) -> Mode {
        self.mode.unwrap_or_else(|| Mode::of_seed(seed))
    }

    /// What seed `seed` runs: its mode, when the faults stop (counted from the start of the
    /// plan), and its plan (the faults before that point).
    pub fn plan_of(&self, seed: u64) -> (Mode, Duration, FaultPlan) {
        let profile = self.plan_profile();
        let mode = self.mode_of(seed);
        let quiet_at = mode.quiet_at(seed, profile.duration);
        let mut plan = FaultPlan::generate(seed, &profile);
        plan.steps.retain(|step| step.at < quiet_at);
        (mode, quiet_at, plan)
    }

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
    /// The mode it ran.
    pub mode: Mode,
    /// When the faults stopped and everything was healed, counted from the start of the plan.
    pub quiet_at: Duration,
    /// The plan it ran (the faults before `quiet_at`).
    pub plan: FaultPlan,
    /// Every invariant broken, with when and where (empty when the run passed).
    pub violations: Vec<String>,
    /// Requests routed by the gateways.
    pub routes: u64,
    /// Discovery events the gateways saw.
    pub events: u64,
    /// Faults of the plan the backend could not stage.
    pub skipped_faults: u64,
    /// How long after the heal (at `quiet_at`) the fleet had converged: in liveness mode, from
    /// when on it stayed converged to the end of the bound. `None` if it was not converged by
    /// the mode's bound.
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

    /// A report of a run that could not take place (the backend keeps no journal, the run
    /// panicked): its seed and plan, and why.
    pub(super) fn aborted(seed: u64, options: &FleetOptions, why: String) -> FleetReport {
        let (mode, quiet_at, plan) = options.plan_of(seed);
        FleetReport {
            seed,
            mode,
            quiet_at,
            plan,
            violations: vec![why],
            routes: 0,
            events: 0,
            skipped_faults: 0,
            settled_after: None,
            log_hash: 0,
            log: Vec::new(),
        }
    }
}

/// Runs the fleet of `options` on `backend` under the plan drawn from `seed`, in the seed's
/// [`Mode`], and checks the invariants. Call it on a paused runtime for a backend on virtual
/// time (the search does).
///
/// The truth is the server's own journal ([`ServiceBackend::journal`]); a backend without one
/// fails at once, saying so. The invariants:
/// - throughout, no gateway whose cache claims to be synced routes to an instance the server
///   deleted more than [`FleetOptions::stale_bound`] earlier, or never held;
/// - throughout, every cache's events replay to its view: no event applied twice or skipped;
/// - [`Mode::Safety`]: after the plan everything is healed, and within
///   [`FleetOptions::settle_within`] every instance is registered (its state says so, and the
///   server holds its key with that lease and its value) and every cache is synced and equal to
///   the truth;
/// - [`Mode::Liveness`]: the faults stop at [`FleetReport::quiet_at`], everything is healed, and
///   the same holds within [`FleetOptions::liveness_bound`], then keeps holding, with the same
///   leases, for [`FleetOptions::hold_converged`].
pub async fn run_fleet<B: ServiceBackend>(
    backend: &B,
    seed: u64,
    options: &FleetOptions,
) -> FleetReport {
    let (mode, quiet_at, plan) = options.plan_of(seed);
    let Some(journal) = backend.journal() else {
        let why = "the backend keeps no server journal (ServiceBackend::journal): the fleet \
                   search has no truth to check against";
        return FleetReport::aborted(seed, options, why.into());
    };
    let log = Arc::new(Mutex::new(Log::new(options.keep_log)));
    lock(&log).record(&format!(
        "seed {seed}, {mode} mode: faults until {:.3}s",
        quiet_at.as_secs_f64()
    ));
    let world = Arc::new(Mutex::new(World::new(Truth::new(journal, "services/"))));
    let admin = backend.client("fleet-admin").await;
    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    let (registrations, expected) = register(backend, seed, options, &log).await;
    let mut gateways = Vec::new();
    for g in 0..options.gateways {
        gateways.push(gateway(backend, seed, options, g, &world, &log, &mut tasks).await);
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
    let plan_start = Instant::now();
    let lease_of = |client: &str| {
        registrations
            .iter()
            .find(|(name, _)| name == client)
            .and_then(|(_, registration)| registration.lease())
    };
    let skipped = play(&plan, backend, &lease_of, admin.as_ref(), |step| {
        lock(&log).record(&format!("fault {:?}", step.fault))
    })
    .await;
    sleep_until(plan_start + quiet_at).await;
    let clients = options.plan_profile().clients;
    heal_all(backend, &clients).await;
    lock(&log).record("faults stop: everything healed");

    let check = || unconverged(&registrations, &expected, &gateways, &world, &log);
    let leases = || registrations.iter().map(|(_, r)| r.lease()).collect();
    let settled_after = match mode {
        Mode::Safety => converge(options.settle_within, &check).await,
        Mode::Liveness => {
            let converged = converged_by(options.liveness_bound(), &check).await;
            if converged.is_ok() {
                hold(options.hold_converged, &check, leases, &log).await;
            }
            converged
        }
    };
    if let Ok(after) = settled_after {
        lock(&log).record(&format!(
            "converged {:.3}s after the heal",
            after.as_secs_f64()
        ));
    }
    for task in &tasks {
        task.abort();
    }
    let mut log = lock(&log);
    if let Err(last) = &settled_after {
        let (what, within) = match mode {
            Mode::Safety => ("not quiescent", options.settle_within),
            Mode::Liveness => (
                "not converged (the liveness bound)",
                options.liveness_bound(),
            ),
        };
        log.violation(format!(
            "{what} {:.1}s after the faults stopped: {last}",
            within.as_secs_f64()
        ));
    }
    for (client, registration) in registrations.iter() {
        log.record(&format!("{client} ends {:?}", registration.state()));
    }
    FleetReport {
        seed,
        mode,
        quiet_at,
        plan,
        violations: log.violations.clone(),
        routes: log.routes,
        events: log.events,
        skipped_faults: skipped,
        settled_after: settled_after.ok(),
        log_hash: log.hash,
        log: log.lines.take().unwrap_or_default(),
    }
}

/// How often convergence is checked: fine enough to measure it, cheap (no call to any server).
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// Waits until `check` finds nothing wrong, up to `within`: how long that took, or the last
/// reason it gave.
async fn converge(
    within: Duration,
    check: &dyn Fn() -> Option<String>,
) -> Result<Duration, String> {
    let from = Instant::now();
    loop {
        let why = match check() {
            None => return Ok(from.elapsed()),
            Some(why) => why,
        };
        if from.elapsed() + CHECK_EVERY > within {
            return Err(why);
        }
        sleep(CHECK_EVERY).await;
    }
}

/// Watches `check` for all of `bound`: converged at its end, since when (counted from now), or
/// the reason it gave last. A divergence inside the bound is the tail of the faults (a lease
/// they left without renewal dies up to a TTL after they stop) and only restarts the count.
async fn converged_by(
    bound: Duration,
    check: &dyn Fn() -> Option<String>,
) -> Result<Duration, String> {
    let from = Instant::now();
    let mut since = None;
    loop {
        match check() {
            None => since = since.or_else(|| Some(from.elapsed())),
            Some(why) => {
                since = None;
                if from.elapsed() + CHECK_EVERY > bound {
                    return Err(why);
                }
            }
        }
        if from.elapsed() + CHECK_EVERY > bound {
            // Converged now (the arm above returned otherwise).
            return Ok(since.unwrap_or_default());
        }
        sleep(CHECK_EVERY).await;
    }
}

/// Once converged, with no fault left and past the bound, the fleet stays so for `period`:
/// the checks keep passing and no registration changes its lease.
async fn hold(
    period: Duration,
    check: &dyn Fn() -> Option<String>,
    leases: impl Fn() -> Vec<Option<LeaseId>>,
    log: &Shared<Log>,
) {
    let held = leases();
    let until = Instant::now() + period;
    while Instant::now() < until {
        sleep(CHECK_EVERY).await;
        let why = check().or_else(|| {
            let now = leases();
            (now != held).then(|| format!("leases changed from {held:?} to {now:?}"))
        });
        if let Some(why) = why {
            lock(log).violation(format!(
                "converged, then diverged with no fault left: {why}"
            ));
            return;
        }
    }
}

/// Starts every instance's registration, each on its own client.
async fn register<B: ServiceBackend>(
    backend: &B,
    seed: u64,
    options: &FleetOptions,
    log: &Shared<Log>,
) -> (Vec<(String, Registration)>, Vec<ServiceInstance>) {
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
                    .backoff(backoff())
                    .seed(SplitMix64::derive(seed, &client))
                    .request_timeout(REQUEST_TIMEOUT),
            )
            .await;
            match registered {
                Ok(registration) => {
                    registrations.push((client, registration));
                    expected.push(instance);
                }
                Err(e) => lock(log).violation(format!("{client} could not register at all: {e}")),
            }
        }
    }
    (registrations, expected)
}

/// Gateway `g`: a discovery cache and a picker per service on one client, each cache's events
/// replayed by a task of `tasks`; returns once every cache is synced.
async fn gateway<B: ServiceBackend>(
    backend: &B,
    seed: u64,
    options: &FleetOptions,
    g: usize,
    world: &Shared<World>,
    log: &Shared<Log>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Caches {
    let client = format!("gw{g}");
    let mut registry: Arc<dyn Registry> = backend.client(&client).await;
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
                .backoff(backoff())
                .seed(SplitMix64::derive(seed, &name))
                .request_timeout(REQUEST_TIMEOUT),
        ) {
            Ok(discovery) => discovery,
            Err(e) => {
                lock(log).violation(format!("{name}: discovery did not start: {e}"));
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
    for (discovery, name) in caches.iter().map(|(d, _)| d).zip(0..) {
        // Before any fault: a cache that cannot sync in this long is a broken layer.
        if let Err(e) = discovery.wait_synced(SYNC_TIMEOUT).await {
            lock(log).violation(format!("{client}/svc{name}: the cache did not sync: {e}"));
        }
    }
    Arc::new(caches)
}

/// How long a cache may take to sync before the faults start.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// Every call of the fleet's registrations and caches gives up after this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// The fleet's retry waits: 100 ms doubling to 2 s, jittered.
fn backoff() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_secs(2))
}
