//! The fleet's invariants, checked against the server's journal: the safety checks that run
//! throughout (every route, every discovery event) and the convergence check.

use super::log::Log;
use super::truth::Truth;
use registry_service::{
    Discovery, DiscoveryEvent, Picker, Registration, RegistrationState, ServiceInstance,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::time::sleep;

pub(super) type Shared<T> = Arc<Mutex<T>>;

pub(super) fn lock<T>(shared: &Shared<T>) -> MutexGuard<'_, T> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One gateway's caches and pickers, one per service.
pub(super) type Caches = Arc<Vec<(Discovery, Picker)>>;

/// What the checks share: the truth, and each cache's view replayed from its events.
#[derive(Debug)]
pub(super) struct World {
    pub(super) truth: Truth,
    /// Per gateway and service: the instances as replayed from the discovery events.
    replayed: BTreeMap<(usize, usize), BTreeMap<String, ServiceInstance>>,
    /// The loss of the truth was reported (once is enough).
    lost: bool,
}

impl World {
    pub(super) fn new(truth: Truth) -> Self {
        World {
            truth,
            replayed: BTreeMap::new(),
            lost: false,
        }
    }

    /// Brings the truth up to the server's latest commit, logging each change under the prefix
    /// with its revision and server time. False when the truth is lost (a violation, once).
    pub(super) fn catch_up(&mut self, log: &mut Log) -> bool {
        match self.truth.catch_up() {
            Ok(applied) => {
                for change in applied {
                    log.record(&format!(
                        "server r{} at {:.3}s: {}",
                        change.revision.get(),
                        change.at.as_secs_f64(),
                        change.line
                    ));
                }
                true
            }
            Err(why) => {
                if !std::mem::replace(&mut self.lost, true) {
                    log.violation(why);
                }
                false
            }
        }
    }
}

/// One gateway's routing loop: a pick per service every `every`. When the cache claims to be
/// synced, the instance picked must be one the server holds, or deleted no more than `bound`
/// ago (server time against server time: the truth has no lag).
pub(super) async fn route(
    gateway: usize,
    caches: Caches,
    every: Duration,
    bound: Duration,
    world: Shared<World>,
    log: Shared<Log>,
) {
    loop {
        sleep(every).await;
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
            let mut world = lock(&world);
            if !world.catch_up(&mut log) {
                continue;
            }
            let truth = &world.truth;
            if let Some(ended) = truth.ended(&key) {
                let late = truth.now().saturating_sub(ended);
                if late > bound {
                    log.violation(format!(
                        "gw{gateway} routed to {key} {:.3}s after the server deleted it (at \
                         {:.3}s server time; bound {:.3}s), with a cache that claims to be synced",
                        late.as_secs_f64(),
                        ended.as_secs_f64(),
                        bound.as_secs_f64()
                    ));
                }
            } else if !truth.ever_held(&key) {
                log.violation(format!(
                    "gw{gateway} routed to {key}, which the server never held, with a cache that \
                     claims to be synced"
                ));
            }
        }
    }
}

/// Replays one cache's events: an add of a present instance or a removal of an absent one is
/// an event applied twice or one skipped before it.
pub(super) async fn replay(
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

/// Why the fleet has not converged, or `None` when it has: every registration registered with
/// the lease and value the server holds under its key, every cache synced and equal to the
/// server's instances, and every cache's events replaying to its view.
pub(super) fn unconverged(
    registrations: &[(String, Registration)],
    expected: &[ServiceInstance],
    gateways: &[Caches],
    world: &Shared<World>,
    log: &Shared<Log>,
) -> Option<String> {
    let mut log = lock(log);
    let mut world = lock(world);
    if !world.catch_up(&mut log) {
        return Some("the truth is lost".into());
    }
    let truth: BTreeMap<&str, (Option<registry_api::LeaseId>, Option<ServiceInstance>)> = world
        .truth
        .alive()
        .iter()
        .map(|(key, kv)| {
            let instance = ServiceInstance::from_json(&kv.value).ok();
            (key.as_str(), (kv.lease, instance))
        })
        .collect();
    for ((client, registration), instance) in registrations.iter().zip(expected) {
        let key = format!("services/{}/{}", instance.service, instance.id);
        let state = registration.state();
        let RegistrationState::Registered { lease, .. } = state else {
            return Some(format!("{client} is not registered: {state:?}"));
        };
        match truth.get(key.as_str()) {
            Some((Some(held), Some(found))) if *held == lease && found == instance => {}
            other => {
                return Some(format!(
                    "{client} says registered with lease {lease}, the server holds {other:?}"
                ))
            }
        }
    }
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
                    "gw{g} svc{s}: cache (synced: {}) holds {:?}, the server {:?}",
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
