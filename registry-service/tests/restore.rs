//! A store restored from an older backup, on the simulator and virtual time: every discovery
//! cache (hub-shared and standalone, two services), the registrar's key watches and the
//! registrations made after the backup (whose leases the restore took away) converge within
//! the stated bounds, and every cache's events agree with the server's history, the restore
//! included: nothing missed, nothing invented, nothing applied twice.
//!
//! The restore is `MemoryRegistry::restore` (what `etcdutl snapshot restore` and a restart do)
//! inside a 2 s outage (the restart), plain and with `--bump-revision 1000 --mark-compacted`.

mod common;

use common::hello;
use registry_api::{Registry, Revision, WatchBatch};
use registry_memory::{MemoryRegistry, RestoreOptions};
use registry_service::{
    Backoff, Discovery, DiscoveryEvent, DiscoveryHub, DiscoveryOptions, KeyLayout, Metadata,
    Registrar, RegistrarOptions, Registration, RegistrationOptions, RegistrationState,
    ServiceInstance, WatcherConfig,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(6);
const BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(2));
/// The restart around the restore.
const DOWNTIME: Duration = Duration::from_secs(2);
/// Lists older than the held revision refused before one is believed (the watcher's rule).
const OLDER_LISTS: u32 = 3;

fn backoff() -> Backoff {
    Backoff::new(BACKOFF.0, BACKOFF.1)
}

/// How long after the server is back every registration holds its key on a live lease
/// again: a keep-alive round (TTL/3) finds a lease gone, or the key watch re-lists (one
/// backoff wait, at most its cap, plus the older lists refused, each at most the initial
/// wait), then a grant and a put; one more second for the calls.
fn registrations_bound() -> Duration {
    (TTL / 3).max(BACKOFF.1 + BACKOFF.0 * OLDER_LISTS) + Duration::from_secs(1)
}

/// How long after the server is back every cache equals the store: a restore brings back the
/// instances that left after the backup, with their leases, which nobody keeps alive any more:
/// they expire a TTL after the restore. Their removal reaches the caches at once (the watch is
/// up by then: one backoff wait and the refused lists).
fn caches_bound() -> Duration {
    TTL + BACKOFF.1 + BACKOFF.0 * OLDER_LISTS + Duration::from_secs(1)
}

fn registration_options(seed: u64) -> RegistrationOptions {
    RegistrationOptions::default()
        .ttl(TTL)
        .backoff(backoff())
        .seed(seed)
}

fn discovery_options(seed: u64) -> DiscoveryOptions {
    DiscoveryOptions::default().backoff(backoff()).seed(seed)
}

/// A cache and the log of every event it emitted.
struct Cache {
    service: &'static str,
    discovery: Discovery,
    log: Arc<Mutex<Vec<DiscoveryEvent>>>,
}

impl Cache {
    fn follow(service: &'static str, discovery: Discovery) -> Cache {
        let mut events = discovery.subscribe();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                sink.lock().unwrap().push(event);
            }
        });
        Cache {
            service,
            discovery,
            log,
        }
    }
}

fn instance(service: &str, id: &str) -> ServiceInstance {
    let mut instance = hello(id);
    instance.service = service.to_owned();
    instance
}

/// Per instance id of `service`, the values its key went through on the server (`None`:
/// absent), consecutive repeats collapsed, from the server's journal: the commits before the
/// restore, the jump to the backup's state, the commits after.
fn server_histories(
    service: &str,
    before: &[WatchBatch],
    backup_revision: Revision,
    after: &[WatchBatch],
) -> BTreeMap<String, Vec<Option<ServiceInstance>>> {
    let layout = KeyLayout::default();
    let decode = |key: &[u8], value: Option<&[u8]>| {
        let id = layout.instance_id(service, key)?.to_owned();
        let value = value.and_then(|v| ServiceInstance::from_json(v).ok());
        Some((id, value))
    };
    let mut histories: BTreeMap<String, Vec<Option<ServiceInstance>>> = BTreeMap::new();
    fn push(
        histories: &mut BTreeMap<String, Vec<Option<ServiceInstance>>>,
        id: String,
        value: Option<ServiceInstance>,
    ) {
        let history = histories.entry(id).or_insert_with(|| vec![None]);
        if history.last() != Some(&value) {
            history.push(value);
        }
    }
    let mut at_backup: BTreeMap<String, Option<ServiceInstance>> = BTreeMap::new();
    for batch in before {
        for event in &batch.events {
            let value = (event.kind == registry_api::EventKind::Put).then_some(&event.kv.value[..]);
            if let Some((id, value)) = decode(&event.kv.key, value) {
                if batch.revision <= backup_revision {
                    at_backup.insert(id.clone(), value.clone());
                }
                push(&mut histories, id, value);
            }
        }
    }
    // The restore: every key known goes to its value at the backup.
    let known: Vec<String> = histories.keys().cloned().collect();
    for id in known {
        push(
            &mut histories,
            id.clone(),
            at_backup.get(&id).cloned().flatten(),
        );
    }
    for batch in after {
        for event in &batch.events {
            let value = (event.kind == registry_api::EventKind::Put).then_some(&event.kv.value[..]);
            if let Some((id, value)) = decode(&event.kv.key, value) {
                push(&mut histories, id, value);
            }
        }
    }
    histories
}

/// A cache's log against itself, its snapshot and the server's histories: each event applies
/// to what it held (nothing twice), the events add up to the snapshot, and key by key the
/// values it went through are a subsequence of the server's, ending at the same one.
fn check_log(
    cache: &Cache,
    truth: &BTreeMap<String, Vec<Option<ServiceInstance>>>,
) -> Result<usize, String> {
    let log = cache.log.lock().unwrap().clone();
    let mut held: BTreeMap<String, ServiceInstance> = BTreeMap::new();
    let mut seen: BTreeMap<String, Vec<Option<ServiceInstance>>> = BTreeMap::new();
    for event in &log {
        let id = event.instance().id.clone();
        match event {
            DiscoveryEvent::Added(new) => {
                if held.insert(id.clone(), new.clone()).is_some() {
                    return Err(format!("{id} added twice"));
                }
            }
            DiscoveryEvent::Updated { old, new } => {
                if held.insert(id.clone(), new.clone()).as_ref() != Some(old) {
                    return Err(format!("{id} updated from a value it did not hold"));
                }
            }
            DiscoveryEvent::Removed(old) => {
                if held.remove(&id).as_ref() != Some(old) {
                    return Err(format!("{id} removed, not held"));
                }
            }
        }
        seen.entry(id.clone())
            .or_insert_with(|| vec![None])
            .push(held.get(&id).cloned());
    }
    let snapshot: BTreeMap<String, ServiceInstance> = cache
        .discovery
        .snapshot()
        .iter()
        .map(|i| (i.id.clone(), i.clone()))
        .collect();
    if held != snapshot {
        return Err("its events do not add up to its snapshot".to_owned());
    }
    for (id, values) in &seen {
        let truth = truth.get(id).ok_or_else(|| format!("{id} never existed"))?;
        let mut rest = truth.iter();
        if !values.iter().all(|v| rest.any(|t| t == v)) {
            return Err(format!(
                "{id} went through {values:?}, the server {truth:?}"
            ));
        }
        if values.last() != truth.last() {
            return Err(format!("{id} ended elsewhere than the server"));
        }
    }
    for (id, truth) in truth {
        if !seen.contains_key(id) && truth.last() != Some(&None) {
            return Err(format!("never saw {id}"));
        }
    }
    Ok(log.len())
}

/// What one run measured.
#[derive(Debug)]
struct Outcome {
    registrations_back: Duration,
    caches_equal: Duration,
    events_checked: usize,
    regressions: Vec<u64>,
}

async fn restore_under_a_fleet(options: RestoreOptions) -> Outcome {
    let server = MemoryRegistry::builder().journal(100_000).build();
    let registry: Arc<dyn Registry> = Arc::new(server.clone());
    let start = server.current_revision();

    // Two registrars: one lease per registration, and one shared lease (granted before the
    // backup, so the restore keeps it: only the key watch can see a key it lost).
    let key_watch = WatcherConfig::default().backoff(backoff()).seed(11);
    let own = Registrar::new(
        registry.clone(),
        RegistrarOptions::default().key_watch(key_watch.clone()),
    )
    .unwrap();
    let shared = Registrar::new(
        registry.clone(),
        RegistrarOptions::default()
            .shared_lease(registration_options(5))
            .key_watch(key_watch),
    )
    .unwrap();
    let hub = DiscoveryHub::new(registry.clone(), discovery_options(3));
    let mut caches = Vec::new();
    for service in ["hello", "world"] {
        caches.push(Cache::follow(service, hub.discovery(service).unwrap()));
        for seed in 0..2 {
            let discovery =
                Discovery::start(registry.clone(), service, discovery_options(seed)).unwrap();
            caches.push(Cache::follow(service, discovery));
        }
    }

    let mut live: Vec<(&'static str, Registration)> = Vec::new();
    let register = |registrar: &Registrar, service: &'static str, id: &str, seed: u64| {
        let registrar = registrar.clone();
        let instance = instance(service, id);
        async move {
            let registration = registrar
                .register(instance, registration_options(seed))
                .await
                .unwrap();
            (service, registration)
        }
    };
    for (i, service) in ["hello", "world"].into_iter().enumerate() {
        live.push(register(&own, service, "early-own", 10 + i as u64).await);
        live.push(register(&shared, service, "early-shared", 20 + i as u64).await);
    }
    let leaving = register(&own, "hello", "leaves-later", 30).await.1;
    let dying = register(&own, "world", "dies-later", 31).await.1;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let backup = server.backup();

    // After the backup: registrations whose leases or keys the restore takes away, departures
    // it undoes, and enough updates that the caches hold revisions far above the backup's.
    for (i, service) in ["hello", "world"].into_iter().enumerate() {
        live.push(register(&own, service, "late-own", 40 + i as u64).await);
        live.push(register(&shared, service, "late-shared", 50 + i as u64).await);
    }
    leaving.deregister().await.unwrap();
    dying.abandon();
    for round in 0..10 {
        for (_, registration) in &live {
            let metadata = Metadata::default().with_version(format!("v{round}"));
            registration.update_metadata(metadata).await.unwrap();
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = server.current_revision();
    assert!(held.get() > backup.revision().get() + 40, "{held}");
    for cache in &caches {
        let truth = common::truth(&*registry, cache.service).await;
        assert_eq!(
            cache.discovery.snapshot().to_vec(),
            truth,
            "caches are current first"
        );
    }
    let before = server
        .journal_after(start)
        .expect("the journal holds it all")
        .into_iter()
        .map(|commit| commit.batch)
        .collect::<Vec<_>>();

    // The restart: down, restored, up again.
    server.set_unavailable(true);
    let to = server.restore(&backup, options).unwrap();
    tokio::time::sleep(DOWNTIME).await;
    server.set_unavailable(false);
    let back = Instant::now();

    // Every registration holds its key on its live lease again.
    let registrations_back = loop {
        let mut missing = Vec::new();
        for (_, registration) in &live {
            let key = registration.key().to_owned();
            let kv = server.get(key.as_bytes()).await.unwrap().kv;
            let on_lease = matches!(
                (registration.state(), kv.and_then(|kv| kv.lease)),
                (RegistrationState::Registered { lease, .. }, Some(held)) if lease == held
            );
            if !on_lease {
                missing.push(key);
            }
        }
        if missing.is_empty() {
            break back.elapsed();
        }
        assert!(
            back.elapsed() <= registrations_bound(),
            "not registered again within {:?}: {missing:?}",
            registrations_bound()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Every cache is synced and equals the store, which holds the live registrations only
    // (the resurrected instances expired).
    let caches_equal = loop {
        let mut behind = None;
        for (i, cache) in caches.iter().enumerate() {
            let truth = common::truth(&*registry, cache.service).await;
            let ids: Vec<&str> = truth.iter().map(|i| i.id.as_str()).collect();
            let live_ids: Vec<&str> = {
                let mut ids: Vec<&str> = live
                    .iter()
                    .filter(|(service, _)| *service == cache.service)
                    .map(|(_, r)| r.key().rsplit('/').next().unwrap_or_default())
                    .collect();
                ids.sort_unstable();
                ids
            };
            if ids != live_ids {
                behind = Some(format!("the store holds {ids:?} of {}", cache.service));
            } else if !cache.discovery.is_synced() || cache.discovery.snapshot().to_vec() != truth {
                behind = Some(format!(
                    "cache {i} of {} holds {} at {}, the store {} at {}",
                    cache.service,
                    cache.discovery.len(),
                    cache.discovery.revision(),
                    truth.len(),
                    server.current_revision()
                ));
            }
        }
        match behind {
            None => break back.elapsed(),
            Some(why) => {
                assert!(
                    back.elapsed() <= caches_bound(),
                    "caches not equal to the store within {:?}: {why}",
                    caches_bound()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    let after = server
        .journal_after(to)
        .expect("the journal holds everything since the restore")
        .into_iter()
        .map(|commit| commit.batch)
        .collect::<Vec<_>>();
    let mut events_checked = 0;
    for (i, cache) in caches.iter().enumerate() {
        let truth = server_histories(cache.service, &before, backup.revision(), &after);
        events_checked += check_log(cache, &truth)
            .unwrap_or_else(|why| panic!("cache {i} of {}: {why}", cache.service));
    }
    let regressions = caches
        .iter()
        .map(|cache| cache.discovery.status().regressions)
        .collect();
    Outcome {
        registrations_back,
        caches_equal,
        events_checked,
        regressions,
    }
}

#[tokio::test(start_paused = true)]
async fn a_plain_restore_is_seen_as_a_regression_and_everything_converges() {
    let outcome = restore_under_a_fleet(RestoreOptions::plain()).await;
    println!(
        "FIGURE restore-plain (simulator): registrations back {:.2?} (bound {:.2?}), caches equal to the store {:.2?} (bound {:.2?}), {} events checked",
        outcome.registrations_back,
        registrations_bound(),
        outcome.caches_equal,
        caches_bound(),
        outcome.events_checked
    );
    // Every cache saw the store go back, once.
    assert!(
        outcome.regressions.iter().all(|r| *r == 1),
        "{:?}",
        outcome.regressions
    );
}

#[tokio::test(start_paused = true)]
async fn a_bumped_compacted_restore_is_a_plain_resync_and_everything_converges() {
    let outcome = restore_under_a_fleet(RestoreOptions::bumped(1_000)).await;
    println!(
        "FIGURE restore-bumped (simulator): registrations back {:.2?} (bound {:.2?}), caches equal to the store {:.2?} (bound {:.2?}), {} events checked",
        outcome.registrations_back,
        registrations_bound(),
        outcome.caches_equal,
        caches_bound(),
        outcome.events_checked
    );
    // The revision went up: nothing to tell apart from a compaction.
    assert!(
        outcome.regressions.iter().all(|r| *r == 0),
        "{:?}",
        outcome.regressions
    );
}
