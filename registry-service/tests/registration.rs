//! Registration on the simulator, on virtual time: visibility, crash expiry to the instant,
//! graceful shutdown, outages, server-side expiry, operator deletes, metadata updates.

mod common;

use common::{drain, hello, settle, truth};
use registry_api::{Error, ListOptions, Registry};
use registry_memory::MemoryRegistry;
use registry_service::{
    Backoff, Discovery, DiscoveryEvent, DiscoveryOptions, Metadata, Registration,
    RegistrationOptions, RegistrationState,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(6);

fn options() -> RegistrationOptions {
    RegistrationOptions::default()
        .ttl(TTL)
        .backoff(Backoff::new(
            Duration::from_millis(200),
            Duration::from_secs(2),
        ))
        .seed(7)
}

fn discovery_options() -> DiscoveryOptions {
    DiscoveryOptions::default()
        .backoff(Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(1),
        ))
        .seed(11)
}

fn memory() -> (MemoryRegistry, Arc<dyn Registry>) {
    let memory = MemoryRegistry::new();
    let registry: Arc<dyn Registry> = Arc::new(memory.clone());
    (memory, registry)
}

#[tokio::test(start_paused = true)]
async fn a_crashed_instance_is_gone_exactly_one_ttl_after_its_last_keep_alive() {
    let (_memory, registry) = memory();
    let discovery = Discovery::start(registry.clone(), "hello", discovery_options()).unwrap();
    discovery.wait_synced().await;
    let mut events = discovery.subscribe();

    let registered_at = Instant::now();
    let registration = Registration::start(registry.clone(), hello("a"), options())
        .await
        .unwrap();
    assert!(matches!(
        registration.state(),
        RegistrationState::Registered { .. }
    ));
    assert_eq!(events.recv().await, Some(DiscoveryEvent::Added(hello("a"))));
    assert_eq!(discovery.snapshot().to_vec(), vec![hello("a")]);

    // Keep-alives go out every TTL/3 = 2 s; crash between the second and the third.
    tokio::time::sleep_until(registered_at + Duration::from_secs(5)).await;
    registration.abandon();
    let last_keep_alive = registered_at + Duration::from_secs(4);
    let deadline = last_keep_alive + TTL;

    tokio::time::sleep_until(deadline - Duration::from_millis(1)).await;
    assert!(registry
        .get(b"services/hello/a")
        .await
        .unwrap()
        .kv
        .is_some());
    assert_eq!(drain(&mut events), vec![]);

    assert_eq!(
        events.recv().await,
        Some(DiscoveryEvent::Removed(hello("a")))
    );
    assert_eq!(
        Instant::now(),
        deadline,
        "removed exactly one TTL after the last keep-alive"
    );
    assert!(discovery.snapshot().is_empty());
}

#[tokio::test(start_paused = true)]
async fn graceful_shutdown_removes_the_instance_at_once() {
    let (_memory, registry) = memory();
    let discovery = Discovery::start(registry.clone(), "hello", discovery_options()).unwrap();
    discovery.wait_synced().await;
    let registration = Registration::start(registry.clone(), hello("a"), options())
        .await
        .unwrap();
    settle(Duration::from_secs(3)).await;
    let mut events = discovery.subscribe();
    assert_eq!(drain(&mut events), vec![DiscoveryEvent::Added(hello("a"))]);
    let lease = registration.lease().expect("registered");

    let before = Instant::now();
    registration.deregister().await.unwrap();
    assert_eq!(registration.state(), RegistrationState::Deregistered);
    assert!(registry
        .get(b"services/hello/a")
        .await
        .unwrap()
        .kv
        .is_none());
    assert!(matches!(
        registry.lease_time_to_live(lease).await,
        Err(Error::LeaseNotFound(id)) if id == lease
    ));
    assert_eq!(
        events.recv().await,
        Some(DiscoveryEvent::Removed(hello("a")))
    );
    assert_eq!(
        Instant::now(),
        before,
        "no time passes between revoke and removal"
    );
    // Deregistering twice is harmless.
    registration.deregister().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn dropping_the_handle_revokes_the_lease() {
    let (_memory, registry) = memory();
    let registration = Registration::start(registry.clone(), hello("a"), options())
        .await
        .unwrap();
    let lease = registration.lease().unwrap();
    let mut state = registration.subscribe();
    let before = Instant::now();
    drop(registration);
    state
        .wait_for(|s| *s == RegistrationState::Deregistered)
        .await
        .unwrap();
    assert_eq!(Instant::now(), before);
    assert!(registry
        .get(b"services/hello/a")
        .await
        .unwrap()
        .kv
        .is_none());
    assert!(registry.leases().await.unwrap().iter().all(|l| *l != lease));
}

#[tokio::test(start_paused = true)]
async fn an_outage_longer_than_the_ttl_loses_the_instances_and_they_come_back_by_themselves() {
    let (memory, registry) = memory();
    let discovery = Discovery::start(registry.clone(), "hello", discovery_options()).unwrap();
    let mut registrations = Vec::new();
    for id in ["a", "b", "c"] {
        registrations.push(
            Registration::start(registry.clone(), hello(id), options())
                .await
                .unwrap(),
        );
    }
    discovery.wait_synced().await;
    settle(Duration::from_secs(1)).await;
    assert_eq!(discovery.len(), 3);
    let old_leases: Vec<_> = registrations.iter().map(|r| r.lease().unwrap()).collect();
    let mut states = registrations[0].subscribe();

    memory.set_unavailable(true);
    settle(TTL * 3).await;
    assert!(!discovery.is_synced(), "the cache knows it is stale");
    for registration in &registrations {
        assert!(matches!(
            registration.state(),
            RegistrationState::ReRegistering { .. }
        ));
    }

    memory.set_unavailable(false);
    let back = Instant::now();
    // Server-side, every lease expired during the outage and took its instance with it.
    assert_eq!(truth(&*registry, "hello").await, vec![]);
    for lease in &old_leases {
        assert!(matches!(
            registry.lease_time_to_live(*lease).await,
            Err(Error::LeaseNotFound(_))
        ));
    }
    // Each registration retries within its backoff ceiling, the cache within its own.
    let bound = options().backoff.max.max(discovery_options().backoff.max);
    while !(discovery.is_synced() && discovery.len() == 3) {
        settle(Duration::from_millis(10)).await;
        assert!(Instant::now() - back <= bound, "not back within {bound:?}");
    }
    let ids: Vec<_> = discovery.snapshot().iter().map(|i| i.id.clone()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert_eq!(
        discovery.snapshot().to_vec(),
        truth(&*registry, "hello").await
    );
    for (registration, old) in registrations.iter().zip(&old_leases) {
        let lease = registration.lease().expect("registered again");
        assert_ne!(lease, *old, "a dead lease id is never reused");
    }

    // The handle saw the whole story.
    let mut seen = vec![states.borrow_and_update().clone()];
    while states.has_changed().unwrap_or(false) {
        seen.push(states.borrow_and_update().clone());
    }
    assert!(matches!(
        seen.last(),
        Some(RegistrationState::Registered { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_lease_expired_by_the_server_is_replaced_within_the_backoff_bound() {
    let (memory, registry) = memory();
    let registration = Registration::start(registry.clone(), hello("a"), options())
        .await
        .unwrap();
    let old = registration.lease().unwrap();
    let mut states = registration.subscribe();
    settle(Duration::from_millis(500)).await;

    let expired_at = Instant::now();
    memory.expire_lease(old).unwrap();
    assert!(registry
        .get(b"services/hello/a")
        .await
        .unwrap()
        .kv
        .is_none());

    states.changed().await.unwrap();
    assert_eq!(*states.borrow_and_update(), RegistrationState::LeaseLost);
    let registered = states
        .wait_for(|s| matches!(s, RegistrationState::Registered { .. }))
        .await
        .unwrap()
        .clone();
    let RegistrationState::Registered { lease, revision } = registered else {
        unreachable!()
    };
    assert_ne!(lease, old);
    // Found at the next keep-alive (TTL/3), then one backoff wait.
    let bound = TTL / 3 + options().backoff.ceiling(1);
    assert!(
        Instant::now() - expired_at <= bound,
        "{:?}",
        Instant::now() - expired_at
    );
    let kv = registry
        .get(b"services/hello/a")
        .await
        .unwrap()
        .kv
        .expect("put back");
    assert_eq!(kv.lease, Some(lease));
    assert_eq!(kv.mod_revision, revision);
}

#[tokio::test(start_paused = true)]
async fn a_key_deleted_by_an_operator_is_put_back_on_the_same_lease() {
    let (_memory, registry) = memory();
    let registration = Registration::start(registry.clone(), hello("a"), options())
        .await
        .unwrap();
    let lease = registration.lease().unwrap();
    settle(Duration::from_millis(300)).await;
    registry.delete(b"services/hello/a").await.unwrap();
    let deleted_at = Instant::now();

    let mut waited = Duration::ZERO;
    while registry
        .get(b"services/hello/a")
        .await
        .unwrap()
        .kv
        .is_none()
    {
        settle(Duration::from_millis(10)).await;
        waited += Duration::from_millis(10);
        assert!(
            waited <= TTL / 3,
            "not put back within one keep-alive round"
        );
    }
    let kv = registry.get(b"services/hello/a").await.unwrap().kv.unwrap();
    assert_eq!(kv.lease, Some(lease));
    assert_eq!(registration.lease(), Some(lease));
    assert!(Instant::now() - deleted_at <= TTL / 3);
    assert_eq!(kv.value, hello("a").to_json());
}

#[tokio::test(start_paused = true)]
async fn metadata_updates_are_seen_and_survive_re_registration() {
    let (memory, registry) = memory();
    let discovery = Discovery::start(registry.clone(), "hello", discovery_options()).unwrap();
    discovery.wait_synced().await;
    let mut events = discovery.subscribe();
    let registration = Registration::start(registry.clone(), hello("a"), options())
        .await
        .unwrap();
    assert_eq!(events.recv().await, Some(DiscoveryEvent::Added(hello("a"))));

    let metadata = Metadata::default().with_version("2.0").with_weight(5);
    registration
        .update_metadata(metadata.clone())
        .await
        .unwrap();
    let updated = hello("a").with_metadata(metadata.clone());
    assert_eq!(
        events.recv().await,
        Some(DiscoveryEvent::Updated {
            old: hello("a"),
            new: updated.clone()
        })
    );

    // CURATOR-181: after losing the lease, it comes back with the new metadata, not the old.
    memory.expire_lease(registration.lease().unwrap()).unwrap();
    assert_eq!(
        events.recv().await,
        Some(DiscoveryEvent::Removed(updated.clone()))
    );
    assert_eq!(
        events.recv().await,
        Some(DiscoveryEvent::Added(updated.clone()))
    );
    assert_eq!(discovery.get("a"), Some(updated));
}

#[tokio::test(start_paused = true)]
async fn bad_input_fails_typed_and_writes_nothing() {
    let (_memory, registry) = memory();
    let start = |instance, options| Registration::start(registry.clone(), instance, options);
    assert!(matches!(
        start(
            hello("a").with_metadata(Metadata::default()),
            options().ttl(Duration::ZERO)
        )
        .await,
        Err(registry_service::Error::InvalidOption(_))
    ));
    let mut bad_service = hello("a");
    bad_service.service = "he/llo".into();
    assert!(matches!(
        start(bad_service, options()).await,
        Err(registry_service::Error::ServiceName(s)) if s == "he/llo"
    ));
    assert!(matches!(
        start(hello(""), options()).await,
        Err(registry_service::Error::InstanceId(s)) if s.is_empty()
    ));
    assert!(matches!(
        start(hello("a"), options().namespace("")).await,
        Err(registry_service::Error::InvalidOption(_))
    ));
    let huge = Metadata::default().with_label("blob", "x".repeat(2 * 1024 * 1024));
    assert!(matches!(
        start(hello("a").with_metadata(huge.clone()), options()).await,
        Err(registry_service::Error::Registry(
            registry_api::Error::TooLarge { .. }
        ))
    ));
    let all = registry.list(b"", ListOptions::default()).await.unwrap();
    assert!(all.kvs.is_empty());
    assert!(registry.leases().await.unwrap().is_empty());

    // Oversized metadata on a live registration changes nothing.
    let registration = start(hello("a"), options()).await.unwrap();
    assert!(matches!(
        registration.update_metadata(huge).await,
        Err(registry_service::Error::Registry(
            registry_api::Error::TooLarge { .. }
        ))
    ));
    assert_eq!(truth(&*registry, "hello").await, vec![hello("a")]);
}

#[tokio::test(start_paused = true)]
async fn start_waits_out_an_unreachable_server() {
    let (memory, registry) = memory();
    memory.set_unavailable(true);
    let starting = tokio::spawn(Registration::start(registry.clone(), hello("a"), options()));
    settle(Duration::from_secs(10)).await;
    assert!(!starting.is_finished());
    memory.set_unavailable(false);
    let registration = starting.await.unwrap().unwrap();
    assert!(registration.lease().is_some());
    assert_eq!(truth(&*registry, "hello").await, vec![hello("a")]);
}

/// The same seed gives the same run, to the revision and the instant.
#[tokio::test(start_paused = true)]
async fn the_same_seed_gives_the_same_recovery() {
    async fn run() -> Vec<(Duration, RegistrationState)> {
        let (memory, registry) = memory();
        let origin = Instant::now();
        let registration = Registration::start(registry.clone(), hello("a"), options())
            .await
            .unwrap();
        let mut states = registration.subscribe();
        let mut seen = Vec::new();
        memory.set_unavailable(true);
        let restore = tokio::spawn(async move {
            settle(TTL * 2).await;
            memory.set_unavailable(false);
        });
        while !matches!(seen.last(), Some((_, RegistrationState::Registered { .. }))) {
            states.changed().await.unwrap();
            seen.push((origin.elapsed(), states.borrow_and_update().clone()));
        }
        restore.await.unwrap();
        seen
    }
    let first = run().await;
    assert!(first.len() > 3, "{first:?}");
    assert_eq!(first, run().await);
}

#[tokio::test(start_paused = true)]
async fn a_key_overwritten_by_someone_else_is_restored() {
    let (_memory, registry) = memory();
    let registration = Registration::start(registry.clone(), hello("a"), options())
        .await
        .unwrap();
    let lease = registration.lease().unwrap();
    registry
        .put(
            b"services/hello/a",
            b"hijacked",
            registry_api::PutOptions::default(),
        )
        .await
        .unwrap();
    // The next keep-alive round, at TTL/3, notices.
    settle(TTL / 3 + Duration::from_millis(1)).await;
    let kv = registry.get(b"services/hello/a").await.unwrap().kv.unwrap();
    assert_eq!(kv.value, hello("a").to_json());
    assert_eq!(kv.lease, Some(lease));
}

#[tokio::test(start_paused = true)]
async fn a_leader_change_is_not_a_lease_loss() {
    let (memory, registry) = memory();
    let registration = Registration::start(registry.clone(), hello("a"), options())
        .await
        .unwrap();
    let lease = registration.lease().unwrap();
    let mut states = registration.subscribe();
    memory.leader_change(Duration::from_secs(1));
    settle(TTL * 3).await;
    assert!(
        !states.has_changed().unwrap(),
        "{:?}",
        *states.borrow_and_update()
    );
    assert_eq!(registration.lease(), Some(lease));
    assert_eq!(truth(&*registry, "hello").await, vec![hello("a")]);
}

/// L6: with the server unreachable, the lease is declared lost exactly one TTL after the last
/// successful keep-alive was sent, not earlier and not a round later.
#[tokio::test(start_paused = true)]
async fn the_lease_is_declared_lost_one_ttl_after_the_last_good_keep_alive() {
    let (memory, registry) = memory();
    let registered_at = Instant::now();
    let registration = Registration::start(registry.clone(), hello("a"), options())
        .await
        .unwrap();
    let mut states = registration.subscribe();
    tokio::time::sleep_until(registered_at + Duration::from_secs(5)).await;
    memory.set_unavailable(true);
    states
        .wait_for(|s| *s == RegistrationState::LeaseLost)
        .await
        .unwrap();
    // Keep-alives at 2 s and 4 s succeeded; 6 s and 8 s failed.
    assert_eq!(Instant::now(), registered_at + Duration::from_secs(4) + TTL);
}
