//! The registrar on the simulator, on virtual time: one task for many registrations, keep-alive
//! rounds that send nothing else, put-back from the watch, a shared lease, draining, readiness,
//! the lease timing in the status, the recovery bound and `wait_registered`.

mod common;

use common::{drain, hello, options, settle, truth, TTL};
use registry_api::wrap::{CallKind, Counting, Intercept, Intercepted};
use registry_api::Registry;
use registry_memory::MemoryRegistry;
use registry_service::{
    Backoff, Discovery, DiscoveryEvent, DiscoveryOptions, Picker, PickerOptions, Registrar,
    RegistrarOptions, Registration, RegistrationOptions, RegistrationState, Status, Strategy,
    WatcherConfig,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

fn discovery_options() -> DiscoveryOptions {
    DiscoveryOptions::default()
        .backoff(Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(1),
        ))
        .seed(11)
}

/// (grant, keep-alive, revoke, put, get, list, delete, watch, other) since the last call, and
/// back to zero.
fn take(counts: &Counting) -> [u64; 9] {
    let taken = counts.snapshot();
    counts.reset();
    let kinds = [
        CallKind::LeaseGrant,
        CallKind::LeaseKeepAlive,
        CallKind::LeaseRevoke,
        CallKind::Put,
        CallKind::Get,
        CallKind::List,
        CallKind::Delete,
        CallKind::Watch,
    ];
    let mut by_kind = kinds.map(|kind| taken.get(kind));
    let named: u64 = by_kind.iter().sum();
    let other = taken.total() - named;
    let mut all = [0; 9];
    all[..8].swap_with_slice(&mut by_kind);
    all[8] = other;
    all
}

/// The simulator, and a counted client of it. Without the simulator's timing: these tests count
/// the calls of each keep-alive round (leases due at one instant share a round only when their
/// registrations took no time) and time the registrar's reactions to the instant; the
/// service-layer suite and the fleet search run the registrar under seeded timing.
fn counted() -> (MemoryRegistry, Arc<dyn Registry>, Counting) {
    let memory = MemoryRegistry::builder().instant().build();
    let counts = Counting::new();
    let registry: Arc<dyn Registry> = Arc::new(counts.wrap(memory.clone()));
    (memory, registry, counts)
}

/// How many times a quiet key watch checks it is alive in `period`: once per idle period of
/// the watcher's default configuration.
fn idle_checks_in(period: Duration) -> u64 {
    let idle = WatcherConfig::default().idle_timeout;
    u64::try_from(period.as_nanos() / idle.as_nanos()).unwrap()
}

async fn key_exists(registry: &dyn Registry, key: &str) -> bool {
    registry.get(key.as_bytes()).await.unwrap().kv.is_some()
}

#[tokio::test(start_paused = true)]
async fn one_task_keeps_a_thousand_registrations_alive() {
    let (_memory, registry, _counts) = counted();
    let alive = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let tasks_before = alive();
    let mut registrations = vec![
        Registration::start(registry.clone(), hello("i0"), options())
            .await
            .unwrap(),
    ];
    // The registrar's task, and the simulator's lease-expiry task.
    let tasks_with_one = alive();
    assert!(tasks_with_one > tasks_before);
    for n in 1..1_000 {
        registrations.push(
            Registration::start(registry.clone(), hello(&format!("i{n}")), options())
                .await
                .unwrap(),
        );
    }
    assert_eq!(
        alive(),
        tasks_with_one,
        "999 more registrations, not one task more"
    );
    let leases: Vec<_> = registrations.iter().map(|r| r.lease().unwrap()).collect();
    settle(TTL * 5).await;
    for (registration, lease) in registrations.iter().zip(&leases) {
        assert_eq!(registration.lease(), Some(*lease));
    }
    assert_eq!(truth(&*registry, "hello").await.len(), 1_000);
    drop(registrations);
    settle(Duration::from_millis(1)).await;
    assert_eq!(truth(&*registry, "hello").await, vec![]);
    assert_eq!(
        alive(),
        tasks_with_one - 1,
        "the registrar stops with its last registration"
    );
}

#[tokio::test(start_paused = true)]
async fn keep_alive_rounds_send_nothing_but_keep_alives() {
    let (_memory, registry, counts) = counted();
    let mut registrations = Vec::new();
    for id in ["a", "b", "c", "d", "e"] {
        registrations.push(
            Registration::start(registry.clone(), hello(id), options())
                .await
                .unwrap(),
        );
    }
    let [grant, _, _, put, get, list, _, watch, _] = take(&counts);
    assert_eq!((grant, put, get), (5, 5, 0));
    assert_eq!((list, watch), (1, 1), "one key watch for the service");
    // One minute: 30 rounds of TTL/3 = 2 s, each one keep-alive per registration and nothing
    // else. Apart from the rounds, the key watch checks it is alive once per idle period (a
    // read of the store's revision and a progress request: "other"), whatever the number of
    // registrations.
    settle(Duration::from_secs(60) + Duration::from_millis(1)).await;
    let idle_checks = idle_checks_in(Duration::from_secs(60));
    assert_eq!(
        take(&counts),
        [0, 5 * 30, 0, 0, idle_checks, 0, 0, 0, idle_checks]
    );
}

#[tokio::test(start_paused = true)]
async fn a_deleted_key_is_put_back_as_soon_as_the_watch_shows_it() {
    let (_memory, registry, _counts) = counted();
    let registration = Registration::start(registry.clone(), hello("a"), options())
        .await
        .unwrap();
    let lease = registration.lease().unwrap();
    settle(Duration::from_millis(300)).await;
    let deleted_at = Instant::now();
    registry.delete(b"services/hello/a").await.unwrap();
    let mut yields = 0;
    while !key_exists(&*registry, "services/hello/a").await {
        tokio::task::yield_now().await;
        yields += 1;
        assert!(yields < 100, "not put back");
    }
    assert_eq!(Instant::now(), deleted_at, "put back at the same instant");
    let kv = registry.get(b"services/hello/a").await.unwrap().kv.unwrap();
    assert_eq!(kv.lease, Some(lease));
    assert_eq!(kv.value, hello("a").to_json());
}

#[tokio::test(start_paused = true)]
async fn a_shared_lease_is_one_keep_alive_for_all_and_one_grant_after_a_loss() {
    let (memory, registry, counts) = counted();
    let registrar = Registrar::new(
        registry.clone(),
        RegistrarOptions::default().shared_lease(RegistrationOptions::default().ttl(TTL).seed(3)),
    )
    .unwrap();
    let mut registrations = Vec::new();
    for n in 0..20 {
        registrations.push(
            registrar
                .register(hello(&format!("i{n:02}")), options())
                .await
                .unwrap(),
        );
    }
    let lease = registrations[0].lease().unwrap();
    assert!(registrations.iter().all(|r| r.lease() == Some(lease)));
    let [grant, _, _, put, ..] = take(&counts);
    assert_eq!((grant, put), (1, 20));

    settle(Duration::from_secs(60) + Duration::from_millis(1)).await;
    let idle_checks = idle_checks_in(Duration::from_secs(60));
    assert_eq!(
        take(&counts),
        [0, 30, 0, 0, idle_checks, 0, 0, 0, idle_checks],
        "one keep-alive per round for all twenty (and the key watch's idle checks)"
    );

    let mut state = registrations[19].subscribe();
    memory.expire_lease(lease).unwrap();
    state
        .wait_for(|s| *s == RegistrationState::LeaseLost)
        .await
        .unwrap();
    for registration in &registrations {
        registration
            .wait_registered(Duration::from_secs(10))
            .await
            .unwrap();
    }
    let new_lease = registrations[0].lease().unwrap();
    assert_ne!(new_lease, lease);
    assert!(registrations.iter().all(|r| r.lease() == Some(new_lease)));
    let [grant, _, _, put, get, ..] = take(&counts);
    // The watch shows the keys gone; one put-back finds the lease dead (the others wait for
    // the new lease), then one grant and every key put again.
    assert_eq!(
        (grant, put, get),
        (1, 1 + 20, 0),
        "one grant, every key put again"
    );
    assert_eq!(truth(&*registry, "hello").await.len(), 20);
    for registration in &registrations {
        let status = registration.status();
        assert_eq!(status.lease_losses, 1);
        assert_eq!(status.re_registrations, 1);
    }

    // One leaves: its key goes, the lease stays for the others.
    let leaving = registrations.pop().unwrap();
    leaving.deregister().await.unwrap();
    assert_eq!(truth(&*registry, "hello").await.len(), 19);
    assert_eq!(registrations[0].lease(), Some(new_lease));
    assert!(registry.lease_time_to_live(new_lease).await.is_ok());
    drop(registrations);
    settle(Duration::from_millis(1)).await;
    assert_eq!(truth(&*registry, "hello").await, vec![]);
    assert!(
        registry.leases().await.unwrap().is_empty(),
        "the last one revokes it"
    );
}

#[tokio::test(start_paused = true)]
async fn a_draining_instance_is_not_picked_before_its_lease_is_revoked() {
    let (_memory, registry, _counts) = counted();
    let discovery = Discovery::start(registry.clone(), "hello", discovery_options()).unwrap();
    discovery
        .wait_synced(Duration::from_secs(5))
        .await
        .expect("synced");
    let a = Registration::start(registry.clone(), hello("a"), options())
        .await
        .unwrap();
    let _b = Registration::start(registry.clone(), hello("b"), options())
        .await
        .unwrap();
    settle(Duration::from_millis(1)).await;
    let picker = Picker::new(discovery.clone(), PickerOptions::new(Strategy::RoundRobin));
    let picked: Vec<_> = (0..4).map(|_| picker.pick().unwrap().id.clone()).collect();
    assert_eq!(picked, ["a", "b", "a", "b"]);

    let grace = Duration::from_secs(2);
    let started = Instant::now();
    let shutdown = tokio::spawn(async move {
        a.shutdown(grace).await.unwrap();
        a
    });
    settle(Duration::from_millis(1)).await;
    assert_eq!(
        discovery.get("a").map(|i| i.status),
        Some(Status::Draining),
        "the cache sees it draining at once"
    );
    assert!(
        key_exists(&*registry, "services/hello/a").await,
        "still registered"
    );
    for _ in 0..6 {
        assert_eq!(picker.pick().unwrap().id, "b");
    }

    let a = shutdown.await.unwrap();
    assert_eq!(
        Instant::now() - started,
        grace,
        "revoked when the grace ends"
    );
    assert_eq!(a.state(), RegistrationState::Deregistered);
    assert!(!key_exists(&*registry, "services/hello/a").await);
}

#[tokio::test(start_paused = true)]
async fn an_instance_that_is_not_ready_is_never_visible() {
    let (_memory, registry, counts) = counted();
    let discovery = Discovery::start(registry.clone(), "hello", discovery_options()).unwrap();
    discovery
        .wait_synced(Duration::from_secs(5))
        .await
        .expect("synced");
    let mut events = discovery.subscribe();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let registration =
        Registration::start_when_ready(registry.clone(), hello("a"), options(), async move {
            ready_rx.await.ok();
        })
        .await
        .unwrap();
    assert_eq!(registration.state(), RegistrationState::WaitingForReady);
    take(&counts);

    settle(Duration::from_secs(60)).await;
    assert_eq!(truth(&*registry, "hello").await, vec![]);
    assert_eq!(drain(&mut events), vec![]);
    assert_eq!(registration.lease(), None);
    let [grant, keep_alive, _, put, ..] = take(&counts);
    assert_eq!(
        (grant, keep_alive, put),
        (0, 0, 0),
        "nothing sent before ready"
    );
    assert!(matches!(
        registration.wait_registered(Duration::from_secs(1)).await,
        Err(registry_service::Error::Timeout { .. })
    ));

    ready_tx.send(()).unwrap();
    let lease = registration
        .wait_registered(Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(registration.lease(), Some(lease));
    assert_eq!(events.recv().await, Some(DiscoveryEvent::Added(hello("a"))));
}

#[tokio::test(start_paused = true)]
async fn wait_registered_returns_the_lease_once_the_instance_is_in_the_registry() {
    let (memory, registry, _counts) = counted();
    memory.set_unavailable(true);
    let starting = tokio::spawn(Registration::start_when_ready(
        registry.clone(),
        hello("a"),
        options(),
        async {},
    ));
    let registration = starting.await.unwrap().unwrap();
    let before = Instant::now();
    assert!(matches!(
        registration.wait_registered(Duration::from_secs(3)).await,
        Err(registry_service::Error::Timeout { after, .. }) if after == Duration::from_secs(3)
    ));
    assert_eq!(
        Instant::now() - before,
        Duration::from_secs(3),
        "virtual time"
    );
    memory.set_unavailable(false);
    let lease = registration
        .wait_registered(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(registration.lease(), Some(lease));
    assert!(key_exists(&*registry, "services/hello/a").await);
    registration.deregister().await.unwrap();
    assert!(matches!(
        registration.wait_registered(Duration::from_secs(1)).await,
        Err(registry_service::Error::Stopped(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn the_status_gives_the_exact_expiry_of_a_crashed_instance() {
    let (_memory, registry, _counts) = counted();
    let discovery = Discovery::start(registry.clone(), "hello", discovery_options()).unwrap();
    discovery
        .wait_synced(Duration::from_secs(5))
        .await
        .expect("synced");
    let mut events = discovery.subscribe();
    let registered_at = Instant::now();
    let registration = Registration::start(registry.clone(), hello("a"), options())
        .await
        .unwrap();
    assert_eq!(events.recv().await, Some(DiscoveryEvent::Added(hello("a"))));
    let status = registration.status();
    assert_eq!(status.last_keep_alive, Some(registered_at), "the grant");
    assert_eq!(status.lease_deadline, Some(registered_at + TTL));

    settle(Duration::from_millis(4_500)).await;
    let status = registration.status();
    let last = status.last_keep_alive.unwrap();
    let deadline = status.lease_deadline.unwrap();
    assert_eq!(last, registered_at + Duration::from_secs(4));
    assert_eq!(deadline, last + TTL);
    assert_eq!(status.lease, registration.lease());
    assert!(status.last_error.is_none());
    registration.abandon();

    assert_eq!(
        events.recv().await,
        Some(DiscoveryEvent::Removed(hello("a")))
    );
    assert_eq!(
        Instant::now(),
        deadline,
        "gone exactly at the status's deadline"
    );
}

#[tokio::test(start_paused = true)]
async fn the_status_keeps_the_last_error_and_counts_losses() {
    let (memory, registry, _counts) = counted();
    let registration = Registration::start(registry.clone(), hello("a"), options())
        .await
        .unwrap();
    let mut states = registration.subscribe();
    memory.set_unavailable(true);
    states
        .wait_for(|s| *s == RegistrationState::LeaseLost)
        .await
        .unwrap();
    let status = registration.status();
    assert_eq!(status.lease_losses, 1);
    assert_eq!(status.lease, None);
    assert!(status
        .last_error
        .as_deref()
        .is_some_and(registry_service::Error::is_retryable));
    memory.set_unavailable(false);
    registration
        .wait_registered(Duration::from_secs(10))
        .await
        .unwrap();
    let status = registration.status();
    assert_eq!((status.lease_losses, status.re_registrations), (1, 1));
}

/// The registration docs promise recovery within `backoff.max + request_timeout` of the registry
/// coming back (`backoff.max` on the simulator, whose calls to an unreachable server fail at
/// once), however long the outage: here, with the default options, ten minutes.
#[tokio::test(start_paused = true)]
async fn recovery_after_a_long_outage_is_within_the_documented_bound() {
    for seed in 0..5 {
        let (memory, registry, _counts) = counted();
        let options = RegistrationOptions::default().seed(seed);
        assert_eq!(options.worst_case_recovery(), Duration::from_secs(35));
        let registration = Registration::start(registry.clone(), hello("a"), options.clone())
            .await
            .unwrap();
        memory.set_unavailable(true);
        settle(Duration::from_secs(600)).await;
        assert!(matches!(
            registration.state(),
            RegistrationState::ReRegistering { .. }
        ));
        memory.set_unavailable(false);
        let back = Instant::now();
        registration
            .wait_registered(options.worst_case_recovery())
            .await
            .unwrap();
        let took = Instant::now() - back;
        assert!(
            took <= options.backoff.max,
            "seed {seed}: back after {took:?}, more than {:?}",
            options.backoff.max
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_status_carries_the_last_keep_alive_round_trip_and_a_reader_sees_it() {
    // Instant: the figures checked are the registrar's own, to the millisecond.
    let memory = MemoryRegistry::builder().instant().build();
    let link = memory.link("slow");
    link.set_call_latency(registry_api::wrap::Latency::Fixed(Duration::from_millis(
        30,
    )));
    let client: Arc<dyn Registry> = Arc::new(memory.client("slow"));
    let registration = Registration::start(client, hello("a"), options())
        .await
        .unwrap();
    let reader = registration.status_reader();
    // The grant's answer came 30 ms after it was sent (the put after it, another 30 ms).
    assert_eq!(
        reader.status().last_keep_alive_round_trip,
        Some(Duration::from_millis(30))
    );
    link.set_call_latency(registry_api::wrap::Latency::Fixed(Duration::from_millis(
        70,
    )));
    settle(TTL / 3 + Duration::from_millis(100)).await;
    let status = reader.status();
    assert_eq!(
        status.last_keep_alive_round_trip,
        Some(Duration::from_millis(70)),
        "{status:?}"
    );
    drop(registration);
    settle(Duration::from_millis(200)).await;
    assert_eq!(reader.status().state, RegistrationState::Deregistered);
    assert_eq!(reader.status().last_keep_alive_round_trip, None);
}

/// The keep-alive calls that reach the simulator: a batch's size, or 1 for a single call.
#[derive(Debug, Default)]
struct KeepAliveCalls {
    batches: std::sync::Mutex<Vec<usize>>,
    singles: std::sync::atomic::AtomicUsize,
}

impl KeepAliveCalls {
    fn take(&self) -> (Vec<usize>, usize) {
        let batches = std::mem::take(&mut *self.batches.lock().unwrap());
        let singles = self.singles.swap(0, std::sync::atomic::Ordering::Relaxed);
        (batches, singles)
    }
}

#[registry_api::async_trait]
impl Intercept for KeepAliveCalls {
    async fn before(&self, kind: CallKind) -> registry_api::Result<()> {
        if kind == CallKind::LeaseKeepAlive {
            self.singles
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    async fn before_many(&self, _kind: CallKind, n: usize) -> registry_api::Result<()> {
        self.batches.lock().unwrap().push(n);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn leases_due_together_are_renewed_in_batches_each_answered_alone() {
    // Instant: the figures checked are the registrar's own, to the millisecond.
    let memory = MemoryRegistry::builder().instant().build();
    let calls = Arc::new(Intercepted::new(
        memory.client("app"),
        KeepAliveCalls::default(),
    ));
    let registry: Arc<dyn Registry> = calls.clone();
    let mut registrations = Vec::new();
    for n in 0..2_500 {
        registrations.push(
            Registration::start(registry.clone(), hello(&format!("i{n}")), options())
                .await
                .unwrap(),
        );
    }
    let leases: Vec<_> = registrations.iter().map(|r| r.lease().unwrap()).collect();
    settle(TTL / 3 + Duration::from_millis(1)).await;
    assert_eq!(
        calls.intercept().take(),
        (vec![1_000, 1_000, 500], 0),
        "2,500 leases due at one instant: three batches, no single call"
    );

    // A lease gone from the server costs its registration alone.
    memory.lease_revoke(leases[1_234]).await.unwrap();
    settle(Duration::from_millis(500)).await;
    for (n, registration) in registrations.iter().enumerate() {
        let lease = registration.lease();
        if n == 1_234 {
            assert!(
                lease.is_some_and(|lease| lease != leases[n]),
                "re-registered"
            );
        } else {
            assert_eq!(lease, Some(leases[n]), "registration {n} kept its lease");
        }
    }

    // A round that fails as a whole (the client cut off) is retried at the next round, and a
    // cut shorter than what is left of the TTL loses nothing.
    memory.link("app").partition();
    settle(TTL / 3).await;
    assert!(registrations[0]
        .status()
        .last_error
        .as_deref()
        .is_some_and(registry_service::Error::is_retryable));
    memory.link("app").heal();
    settle(TTL / 3).await;
    for (n, registration) in registrations
        .iter()
        .enumerate()
        .filter(|(n, _)| *n != 1_234)
    {
        assert_eq!(registration.lease(), Some(leases[n]));
        assert_eq!(registration.status().lease_losses, 0);
    }
    assert_eq!(truth(&*registry, "hello").await.len(), 2_500);
}

#[tokio::test(start_paused = true)]
async fn registrations_started_apart_fall_into_step_and_are_renewed_together() {
    let memory = MemoryRegistry::new();
    let calls = Arc::new(Intercepted::new(memory.clone(), KeepAliveCalls::default()));
    let registry: Arc<dyn Registry> = calls.clone();
    let mut registrations = Vec::new();
    // Ten starts 30 ms apart, as on real time one after another.
    for n in 0..10 {
        registrations.push(
            Registration::start(registry.clone(), hello(&format!("i{n}")), options())
                .await
                .unwrap(),
        );
        settle(Duration::from_millis(30)).await;
    }
    // Each round may take leases due up to 100 ms later: the first round (at 2 s) takes the
    // starts at 0-90 ms, the next (at 2.12 s) 120-210 ms, the last 240-270 ms.
    settle(TTL / 3).await;
    assert_eq!(calls.intercept().take(), (vec![4, 4, 2], 0));
    // And they stay in step: the next round is the same three calls, not ten.
    settle(TTL / 3).await;
    assert_eq!(calls.intercept().take(), (vec![4, 4, 2], 0));
    for registration in &registrations {
        assert_eq!(registration.status().lease_losses, 0);
    }
}
