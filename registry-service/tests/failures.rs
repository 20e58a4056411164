//! What the service layer does when things fail for good, on the simulator and virtual time:
//! a registration ends (instead of retrying for ever) on an error no retry can fix, a key watch
//! gone silent still gets a deleted key put back, and a background task that dies (a backend
//! panicking inside its call) is reported by every handle within a second.

mod common;
mod stalling;

use common::{hello, options, settle, TTL};
use registry_api::wrap::{CallKind, Intercept, Intercepted};
use registry_api::{Error as ApiError, Registry, Result as ApiResult};
use registry_memory::MemoryRegistry;
use registry_service::{
    Backoff, Discovery, DiscoveryHub, DiscoveryOptions, Error, Registrar, RegistrarOptions,
    Registration, RegistrationState, WatcherConfig,
};
use stalling::Stalling;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// A kind of call and the error it gets.
type Rule = (CallKind, fn() -> ApiError);

/// Refuses one kind of call with an error of the test's choosing, and counts the calls of
/// that kind that reached it.
#[derive(Debug, Default)]
struct Refuse {
    rule: Mutex<Option<Rule>>,
    calls: AtomicU64,
}

impl Refuse {
    fn refuse(&self, kind: CallKind, error: fn() -> ApiError) {
        *self.rule.lock().unwrap() = Some((kind, error));
        self.calls.store(0, Ordering::SeqCst);
    }

    fn allow(&self) {
        *self.rule.lock().unwrap() = None;
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
}

#[registry_api::async_trait]
impl Intercept for Refuse {
    async fn before(&self, kind: CallKind) -> ApiResult<()> {
        let rule = *self.rule.lock().unwrap();
        match rule {
            Some((refused, error)) if refused == kind => {
                self.calls.fetch_add(1, Ordering::SeqCst);
                Err(error())
            }
            _ => Ok(()),
        }
    }
}

fn refusing() -> (MemoryRegistry, Arc<Intercepted<MemoryRegistry, Refuse>>) {
    let memory = MemoryRegistry::new();
    let registry = Arc::new(Intercepted::new(memory.clone(), Refuse::default()));
    (memory, registry)
}

fn denied() -> ApiError {
    ApiError::permission_denied("the role does not cover services/hello/")
}

#[tokio::test(start_paused = true)]
async fn a_grant_refused_for_good_fails_the_start_at_once_and_retries_nothing() {
    let (memory, registry) = refusing();
    registry.intercept().refuse(CallKind::LeaseGrant, denied);
    let started = Instant::now();
    let start = Registration::start(registry.clone(), hello("a"), options());
    let outcome = tokio::time::timeout(Duration::from_secs(60), start)
        .await
        .expect("the start ends instead of retrying");
    assert!(
        matches!(
            outcome.as_ref().map_err(Error::as_registry),
            Err(Some(ApiError::PermissionDenied { .. }))
        ),
        "{outcome:?}"
    );
    assert_eq!(Instant::now(), started, "at once");
    settle(Duration::from_secs(60)).await;
    assert_eq!(registry.intercept().calls(), 1, "one grant, no retry");
    assert!(memory.leases().await.unwrap().is_empty());

    // NotSupported and InvalidArgument end it too; a registration started when ready reports
    // it as its state, its status and from `wait_registered`.
    for refusal in [
        (|| ApiError::NotSupported {
            what: "leases".into(),
        }) as fn() -> ApiError,
        || ApiError::InvalidArgument(registry_api::InvalidArgument::Other("no".into())),
    ] {
        registry.intercept().refuse(CallKind::LeaseGrant, refusal);
        let registration =
            Registration::start_when_ready(registry.clone(), hello("b"), options(), async {})
                .await
                .unwrap();
        let waited = registration.wait_registered(Duration::from_secs(60)).await;
        assert!(
            matches!(&waited, Err(Error::Registry(e)) if !e.is_retryable()),
            "{waited:?}"
        );
        assert_eq!(registration.state(), RegistrationState::Failed);
        let status = registration.status();
        assert_eq!(status.state, RegistrationState::Failed);
        assert_eq!(
            status.last_error.as_deref().map(ToString::to_string),
            Some(waited.unwrap_err().to_string())
        );
        assert_eq!(registry.intercept().calls(), 1, "no retry");
    }
}

#[tokio::test(start_paused = true)]
async fn a_registration_whose_permission_is_taken_away_ends_with_the_error() {
    let (memory, registry) = refusing();
    let registration = Registration::start(registry.clone(), hello("a"), options())
        .await
        .unwrap();
    let mut states = registration.subscribe();
    // The role loses the prefix; someone deletes the key; the put-back is refused.
    registry.intercept().refuse(CallKind::Put, denied);
    memory.delete(b"services/hello/a").await.unwrap();
    tokio::time::timeout(
        TTL * 3,
        states.wait_for(|s| *s == RegistrationState::Failed),
    )
    .await
    .expect("the registration ends")
    .unwrap();
    let status = registration.status();
    assert!(
        matches!(
            status.last_error.as_deref().and_then(Error::as_registry),
            Some(ApiError::PermissionDenied { .. })
        ),
        "{status:?}"
    );
    assert_eq!(status.lease, None);
    assert!(matches!(
        registration.wait_registered(Duration::from_secs(1)).await,
        Err(Error::Registry(e)) if matches!(*e, ApiError::PermissionDenied { .. })
    ));
    assert!(matches!(
        registration.deregister().await,
        Err(Error::Registry(e)) if matches!(*e, ApiError::PermissionDenied { .. })
    ));
    settle(TTL * 3).await;
    assert_eq!(
        registry.intercept().calls(),
        1,
        "refused once, never retried"
    );
    assert!(
        memory.leases().await.unwrap().is_empty(),
        "its lease is revoked rather than kept alive"
    );
    assert_eq!(registration.state(), RegistrationState::Failed, "terminal");
}

#[tokio::test(start_paused = true)]
async fn a_keep_alive_refused_for_good_ends_the_registration_but_unavailable_heals() {
    let (memory, registry) = refusing();
    let registration = Registration::start(registry.clone(), hello("a"), options())
        .await
        .unwrap();
    let lease = registration.lease().unwrap();

    // Unavailable for longer than a TTL: the lease is lost, and the registration heals.
    registry
        .intercept()
        .refuse(CallKind::LeaseKeepAlive, || ApiError::unavailable("down"));
    settle(TTL + TTL / 3).await;
    assert_ne!(registration.lease(), Some(lease));
    registry.intercept().allow();
    let healed = registration
        .wait_registered(Duration::from_secs(10))
        .await
        .unwrap();
    assert_ne!(healed, lease);
    assert_eq!(registration.status().lease_losses, 1);

    // NotSupported: no retry heals it.
    registry
        .intercept()
        .refuse(CallKind::LeaseKeepAlive, || ApiError::NotSupported {
            what: "keep-alive".into(),
        });
    let mut states = registration.subscribe();
    tokio::time::timeout(
        TTL * 3,
        states.wait_for(|s| *s == RegistrationState::Failed),
    )
    .await
    .expect("the registration ends")
    .unwrap();
    registry.intercept().allow();
    settle(TTL * 3).await;
    assert_eq!(registration.state(), RegistrationState::Failed);
    assert!(memory.leases().await.unwrap().is_empty());
    assert!(registry
        .get(b"services/hello/a")
        .await
        .unwrap()
        .kv
        .is_none());
}

#[tokio::test(start_paused = true)]
async fn a_deleted_key_is_put_back_even_when_the_key_watch_went_silent() {
    const IDLE: Duration = Duration::from_secs(3);
    const ANSWER: Duration = Duration::from_secs(1);
    let memory = MemoryRegistry::new();
    let stalled = Stalling::new(Arc::new(memory.clone()), true);
    let key_watch = WatcherConfig::default()
        .idle_timeout(IDLE)
        .progress_timeout(ANSWER)
        .backoff(Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(1),
        ))
        .seed(5);
    let registrar = Registrar::new(
        stalled.clone(),
        RegistrarOptions::default().key_watch(key_watch.clone()),
    )
    .unwrap();
    let registration = registrar.register(hello("a"), options()).await.unwrap();
    let lease = registration.lease().unwrap();
    settle(Duration::from_millis(10)).await;
    assert_eq!(stalled.intercept().lists(), 1);

    // The key watch goes silent (open, delivering nothing, answering nothing), and the key is
    // deleted behind its back.
    stalled.intercept().freeze_open_watches();
    let deleted_at = Instant::now();
    memory.delete(b"services/hello/a").await.unwrap();
    settle(IDLE / 2).await;
    assert!(
        memory.get(b"services/hello/a").await.unwrap().kv.is_none(),
        "a silent watch shows nothing"
    );

    // The watcher finds it silent, lists again, and the list shows the key gone.
    let bound = key_watch.stall_bound() + key_watch.backoff.max;
    let back = loop {
        if let Some(kv) = memory.get(b"services/hello/a").await.unwrap().kv {
            break kv;
        }
        assert!(
            Instant::now() - deleted_at <= bound,
            "not put back within {bound:?}"
        );
        settle(Duration::from_millis(50)).await;
    };
    assert_eq!(back.lease, Some(lease));
    assert_eq!(back.value, hello("a").to_json());
    assert_eq!(stalled.intercept().lists(), 2, "healed by one re-list");
    assert_eq!(
        registration.lease(),
        Some(lease),
        "the lease was never lost"
    );
}

/// Panics inside the call of one kind once armed, as a buggy backend or wrapper would.
#[derive(Debug)]
struct PanicsOn {
    kind: CallKind,
    armed: AtomicBool,
}

impl PanicsOn {
    fn new(kind: CallKind) -> Self {
        PanicsOn {
            kind,
            armed: AtomicBool::new(false),
        }
    }
}

#[registry_api::async_trait]
impl Intercept for PanicsOn {
    async fn before(&self, kind: CallKind) -> ApiResult<()> {
        if kind == self.kind && self.armed.load(Ordering::SeqCst) {
            panic!("the backend panicked in {kind}");
        }
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_backend_panicking_in_a_registrar_call_fails_every_registration_within_a_second() {
    let memory = MemoryRegistry::new();
    let registry = Arc::new(Intercepted::new(
        memory.clone(),
        PanicsOn::new(CallKind::LeaseKeepAlive),
    ));
    let mut registrations = Vec::new();
    for id in ["a", "b", "c"] {
        registrations.push(
            Registration::start(registry.clone(), hello(id), options())
                .await
                .unwrap(),
        );
    }
    let mut states: Vec<_> = registrations.iter().map(Registration::subscribe).collect();
    registry.intercept().armed.store(true, Ordering::SeqCst);
    // The next round's keep-alive panics inside the backend's call.
    let round = Instant::now() + TTL / 3;
    settle(TTL / 3 + Duration::from_millis(1)).await;
    for (registration, state) in registrations.iter().zip(&mut states) {
        assert!(state.has_changed().unwrap(), "subscribers are told");
        assert_eq!(registration.state(), RegistrationState::Failed);
        let status = registration.status();
        assert!(
            matches!(
                status.last_error.as_deref(),
                Some(Error::TaskFailed { task: "registrar", cause }) if cause.contains("panicked in lease_keep_alive")
            ),
            "{status:?}"
        );
        let waited = registration.wait_registered(Duration::from_secs(10)).await;
        assert!(
            matches!(waited, Err(Error::TaskFailed { .. })),
            "{waited:?}"
        );
        assert!(matches!(
            registration
                .set_status(registry_service::Status::Draining)
                .await,
            Err(Error::TaskFailed { .. })
        ));
    }
    assert!(
        Instant::now() - round < Duration::from_secs(1),
        "every handle saw it within a second"
    );

    // The next registration on this registry gets a registrar of its own.
    registry.intercept().armed.store(false, Ordering::SeqCst);
    let fresh = Registration::start(registry.clone(), hello("d"), options())
        .await
        .unwrap();
    assert!(matches!(
        fresh.state(),
        RegistrationState::Registered { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn a_registrar_reports_its_own_death_and_so_do_late_registrations() {
    let registry = Arc::new(Intercepted::new(
        MemoryRegistry::new(),
        PanicsOn::new(CallKind::Put),
    ));
    let registrar = Registrar::new(registry.clone(), RegistrarOptions::default()).unwrap();
    assert!(registrar.failure().is_none());
    registry.intercept().armed.store(true, Ordering::SeqCst);
    let refused = registrar.register(hello("a"), options()).await;
    assert!(
        matches!(refused, Err(Error::TaskFailed { .. })),
        "{refused:?}"
    );
    assert!(matches!(
        registrar.failure(),
        Some(Error::TaskFailed { .. })
    ));
    let late = registrar.register(hello("b"), options()).await;
    assert!(matches!(late, Err(Error::TaskFailed { .. })), "{late:?}");
}

#[tokio::test(start_paused = true)]
async fn a_discovery_feed_whose_backend_panics_reports_the_failure_within_a_second() {
    let memory = MemoryRegistry::new();
    let registry: Arc<dyn Registry> = Arc::new(Intercepted::new(
        memory.clone(),
        PanicsOn::new(CallKind::List),
    ));
    let _a = Registration::start(Arc::new(memory.clone()), hello("a"), options())
        .await
        .unwrap();
    let hub = DiscoveryHub::new(registry.clone(), DiscoveryOptions::default().seed(3));
    let healthy = hub.discovery("hello").unwrap();
    healthy
        .wait_synced(Duration::from_secs(5))
        .await
        .expect("synced");
    assert_eq!(healthy.len(), 1);

    // A second feed over a registry that panics when listed: its first list panics.
    let panicking = Arc::new(Intercepted::new(
        memory.clone(),
        PanicsOn::new(CallKind::List),
    ));
    panicking.intercept().armed.store(true, Ordering::SeqCst);
    let discovery = Discovery::start(
        panicking.clone(),
        "hello",
        DiscoveryOptions::default().seed(3),
    )
    .unwrap();
    let started = Instant::now();
    let waited = discovery.wait_for_len(1, Duration::from_secs(30)).await;
    assert!(
        matches!(&waited, Err(Error::TaskFailed { task: "discovery", cause }) if cause.contains("panicked in list")),
        "{waited:?}"
    );
    assert!(Instant::now() - started < Duration::from_secs(1));
    let status = discovery.status();
    assert!(
        status.failed && status.closed && !status.synced,
        "{status:?}"
    );
    assert!(matches!(
        status.last_error.as_deref(),
        Some(Error::TaskFailed { .. })
    ));
    let clone = discovery.clone();
    assert!(clone.status().failed, "every handle shows it");
    assert!(matches!(
        clone.wait_for_instance("a", Duration::from_secs(30)).await,
        Err(Error::TaskFailed { .. })
    ));

    // The healthy feed goes on; a hub replaces a cache whose feed died.
    assert!(!healthy.status().failed);
    let dead_hub = DiscoveryHub::new(panicking.clone(), DiscoveryOptions::default().seed(3));
    let first = dead_hub.discovery("hello").unwrap();
    let waited = first.wait_synced(Duration::from_secs(5)).await;
    assert!(
        matches!(&waited, Err(Error::TaskFailed { .. })),
        "the wait returns the cause: {waited:?}"
    );
    assert!(first.status().failed);
    panicking.intercept().armed.store(false, Ordering::SeqCst);
    let second = dead_hub.discovery("hello").unwrap();
    assert!(!second.shares_cache_with(&first));
    second
        .wait_synced(Duration::from_secs(5))
        .await
        .expect("synced");
    assert_eq!(second.len(), 1);
}
