//! What a scenario works with: named clients of the backend (each behind the suite's tap), the
//! options and bounds of the backend's time, and the helpers every scenario shares: waiting on
//! either time, reading the truth from the server, registering and discovering.

use super::tap::{Renewal, Tap, Tapped};
use crate::backend::Time;
use crate::failure::Check;
use registry_api::{KeyValue, LeaseId, ListOptions, Registry, Revision};
use registry_service::{
    Backoff, Discovery, DiscoveryEvent, DiscoveryEvents, DiscoveryOptions, Registration,
    RegistrationOptions, RegistrationState, ServiceInstance,
};
use registry_testing::{ServiceBackend, ServiceCapabilities};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

/// The service every scenario registers and discovers.
pub(crate) const SERVICE: &str = "hello";

/// Where the service layer keeps `SERVICE`'s instances (the default namespace).
const PREFIX: &str = "services/hello/";

/// A scenario's world.
pub(crate) struct ServiceCtx<'b> {
    backend: &'b dyn ServiceBackend,
    pub(crate) caps: ServiceCapabilities,
    pub(crate) scenario: &'static str,
    // A handful of named clients per scenario.
    taps: Mutex<HashMap<String, Arc<Tapped>>>,
    outage: Mutex<bool>,
    cut: Mutex<Vec<String>>,
}

impl<'b> ServiceCtx<'b> {
    pub(crate) fn new(backend: &'b dyn ServiceBackend, scenario: &'static str) -> Self {
        ServiceCtx {
            caps: backend.capabilities(),
            backend,
            scenario,
            taps: Mutex::new(HashMap::new()),
            outage: Mutex::new(false),
            cut: Mutex::new(Vec::new()),
        }
    }

    /// Heals whatever fault the scenario left staged, so a shared server is left serving.
    pub(crate) async fn cleanup(&self) {
        let cut = std::mem::take(&mut *lock(&self.cut));
        for name in cut {
            self.backend.partition(&name, false).await;
        }
        let down = std::mem::replace(&mut *lock(&self.outage), false);
        if down {
            self.backend.outage(false).await;
        }
    }

    /// The client named `name`, behind the suite's tap.
    pub(crate) async fn client(&self, name: &str) -> Arc<dyn Registry> {
        self.tap(name).await
    }

    /// The tap of the client named `name`.
    pub(crate) async fn tap(&self, name: &str) -> Arc<Tapped> {
        if let Some(tap) = lock(&self.taps).get(name) {
            return tap.clone();
        }
        let tap = Tap::new(self.backend.client(name).await);
        lock(&self.taps)
            .entry(name.to_owned())
            .or_insert(tap)
            .clone()
    }

    /// The client the scenarios read the truth and act as an operator with.
    pub(crate) async fn operator(&self) -> Arc<dyn Registry> {
        self.client("operator").await
    }

    /// True when the backend can stage `needed`; otherwise says so and the scenario passes.
    pub(crate) fn supports(&self, needed: bool, what: &str) -> bool {
        if !needed {
            println!(
                "service scenario `{}`: {what} not supported by this backend; passes trivially",
                self.scenario
            );
        }
        needed
    }

    pub(crate) async fn partition(&self, name: &str, cut: bool) {
        self.backend.partition(name, cut).await;
        let mut staged = lock(&self.cut);
        staged.retain(|n| n != name);
        if cut {
            staged.push(name.to_owned());
        }
    }

    pub(crate) async fn outage(&self, down: bool) {
        *lock(&self.outage) = down;
        self.backend.outage(down).await;
    }

    pub(crate) async fn expire_lease(&self, lease: LeaseId) {
        self.backend.expire_lease(lease).await;
    }

    /// Lets `by` pass on the backend's time.
    pub(crate) async fn sleep(&self, by: Duration) {
        self.backend.sleep(by).await;
    }

    fn is_virtual(&self) -> bool {
        self.caps.time == Time::Virtual
    }

    /// The TTL registrations ask for: a multiple of three seconds on virtual time, so that
    /// keep-alives (every TTL/3) fall on whole milliseconds; the backend's minimum on real time,
    /// to keep the run short.
    pub(crate) fn ttl(&self) -> Duration {
        let secs = if self.is_virtual() {
            self.caps.min_ttl.max(6)
        } else {
            self.caps.min_ttl.max(1)
        };
        Duration::from_secs(u64::try_from(secs).unwrap_or(6))
    }

    /// Scheduling and delivery slack on top of a stated bound: on virtual time, the few round
    /// trips one step of a scenario makes (a registration's grant and put and the delivery of
    /// its event), nothing on an instant simulator (bounds are exact); a second on a real server
    /// on a loaded machine.
    pub(crate) fn allowance(&self) -> Duration {
        self.caps.allowance()
    }

    /// How long a client takes to serve again after the server comes back: nothing for a
    /// simulator, a few seconds for a real client's reconnect.
    pub(crate) fn reconnect(&self) -> Duration {
        if self.is_virtual() {
            Duration::ZERO
        } else {
            Duration::from_secs(4)
        }
    }

    /// How much earlier than computed from our own clock a real server may act (it starts its
    /// timers when it receives a request, a little after we sent it).
    pub(crate) fn early(&self) -> Duration {
        if self.is_virtual() {
            Duration::ZERO
        } else {
            Duration::from_millis(100)
        }
    }

    pub(crate) fn backoff(&self) -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(1))
    }

    pub(crate) fn registration_options(&self) -> RegistrationOptions {
        RegistrationOptions::default()
            .ttl(self.ttl())
            .backoff(self.backoff())
            .seed(7)
            .request_timeout(Duration::from_secs(1))
    }

    pub(crate) fn discovery_options(&self) -> DiscoveryOptions {
        DiscoveryOptions::default()
            .backoff(self.backoff())
            .seed(11)
            .request_timeout(Duration::from_secs(1))
    }

    /// The instance `id` of the scenario's service.
    pub(crate) fn instance(id: &str) -> ServiceInstance {
        let port = 9000 + id.bytes().map(u32::from).sum::<u32>() % 1000;
        ServiceInstance::new(SERVICE, id, format!("127.0.0.1:{port}"))
    }

    /// The key instance `id` is stored under.
    pub(crate) fn key(id: &str) -> Vec<u8> {
        format!("{PREFIX}{id}").into_bytes()
    }

    /// Registers instance `id` through `client`, within a bound.
    pub(crate) async fn register(
        &self,
        client: &Arc<dyn Registry>,
        instance: ServiceInstance,
    ) -> Check<Registration> {
        let id = instance.id.clone();
        let bound = Duration::from_secs(5);
        let started = tokio::time::timeout(
            bound,
            Registration::start(client.clone(), instance, self.registration_options()),
        )
        .await
        .map_err(|_| format!("registering {id} took longer than {bound:?}"))?;
        started.map_err(|e| format!("registering {id} failed: {e}"))
    }

    /// A discovery cache of the service through `client`, synced.
    pub(crate) async fn discover(&self, client: &Arc<dyn Registry>) -> Check<Discovery> {
        let discovery = Discovery::start(client.clone(), SERVICE, self.discovery_options())
            .map_err(|e| format!("starting discovery failed: {e}"))?;
        self.synced(&discovery, Duration::from_secs(5)).await?;
        Ok(discovery)
    }

    /// Waits until `discovery` is synced, within `bound`.
    pub(crate) async fn synced(&self, discovery: &Discovery, bound: Duration) -> Check {
        discovery
            .wait_synced(bound)
            .await
            .map_err(|_| format!("the cache did not sync within {bound:?}"))
    }

    /// A synced cache on client `cache` with a subscriber, then instance `id` registered on
    /// client `app` and seen by that subscriber as added, at once.
    pub(crate) async fn registered_and_seen(
        &self,
        cache: &str,
        app: &str,
        id: &str,
    ) -> Check<(Discovery, DiscoveryEvents, Registration)> {
        let discovery = self.discover(&self.client(cache).await).await?;
        let mut events = discovery.subscribe();
        let instance = Self::instance(id);
        let registration = self
            .register(&self.client(app).await, instance.clone())
            .await?;
        let (added, took) = self
            .next_event(&mut events, self.allowance(), "the new instance")
            .await?;
        if added != DiscoveryEvent::Added(instance) {
            return Err(format!("the first event after registering {id}: {added:?}"));
        }
        if took > self.allowance() {
            return Err(format!("{id} seen {took:?} after it was registered"));
        }
        Ok((discovery, events, registration))
    }

    /// Waits until `discovery` has applied every change up to `revision`.
    pub(crate) async fn caught_up(&self, discovery: &Discovery, revision: Revision) -> Check {
        self.eventually(self.allowance(), "the cache catching up", || async {
            let at = discovery.revision();
            if at >= revision {
                Ok(())
            } else {
                Err(format!("at {at:?}, not yet {revision:?}"))
            }
        })
        .await
        .map(|_| ())
    }

    /// Waits until a registration's state satisfies `done`, within `bound`, and returns it.
    pub(crate) async fn state(
        &self,
        states: &mut tokio::sync::watch::Receiver<RegistrationState>,
        bound: Duration,
        what: &str,
        done: impl FnMut(&RegistrationState) -> bool,
    ) -> Check<RegistrationState> {
        // As for events: what happens on the bound's own instant counts.
        let wait = bound + Duration::from_millis(1);
        let waited = tokio::time::timeout(wait, states.wait_for(done))
            .await
            .map(|r| r.map(|state| state.clone()));
        match waited {
            Ok(Ok(state)) => Ok(state),
            Ok(Err(_)) => Err(format!("{what}: the registration task ended")),
            Err(_) => Err(format!(
                "{what}: not within {bound:?}; state: {:?}",
                *states.borrow()
            )),
        }
    }

    /// The instances of the service in the store now, in id order, read through the operator
    /// client: the truth.
    pub(crate) async fn truth(&self) -> Check<Vec<ServiceInstance>> {
        let list = self
            .operator()
            .await
            .list(PREFIX.as_bytes(), ListOptions::default())
            .await
            .map_err(|e| format!("listing the truth failed: {e}"))?;
        Ok(list
            .kvs
            .iter()
            .filter_map(|kv| ServiceInstance::from_json(&kv.value).ok())
            .collect())
    }

    /// The stored key of instance `id`, read through the operator client.
    pub(crate) async fn stored(&self, id: &str) -> Check<Option<KeyValue>> {
        let got = self
            .operator()
            .await
            .get(&Self::key(id))
            .await
            .map_err(|e| format!("reading the key of {id} failed: {e}"))?;
        Ok(got.kv)
    }

    /// True while the server still knows `lease`.
    pub(crate) async fn lease_alive(&self, lease: LeaseId) -> Check<bool> {
        let leases = self
            .operator()
            .await
            .leases()
            .await
            .map_err(|e| format!("listing leases failed: {e}"))?;
        Ok(leases.contains(&lease))
    }

    /// The last renewal of `lease` seen on client `name`.
    pub(crate) async fn last_renewal(&self, name: &str, lease: LeaseId) -> Check<Renewal> {
        self.tap(name)
            .await
            .intercept()
            .last_renewal(lease)
            .ok_or_else(|| format!("no renewal of lease {lease:?} was seen on client `{name}`"))
    }

    /// The next event of `events`, within `bound`, and how long it took.
    pub(crate) async fn next_event(
        &self,
        events: &mut DiscoveryEvents,
        bound: Duration,
        what: &str,
    ) -> Check<(DiscoveryEvent, Duration)> {
        let start = Instant::now();
        // One millisecond more, so that what happens on the bound's own instant (a timer
        // firing there, then the tasks it wakes) is seen; callers that time the event check
        // the instant themselves.
        let wait = bound + Duration::from_millis(1);
        match tokio::time::timeout(wait, events.recv()).await {
            Ok(Some(event)) => Ok((event, start.elapsed())),
            Ok(None) => Err(format!("{what}: the event stream ended")),
            Err(_) => Err(format!("{what}: no event within {bound:?}")),
        }
    }

    /// Checks `condition` every few milliseconds until it holds, on either time; fails with
    /// `what` and the last reason after `bound`. Returns how long it took.
    pub(crate) async fn eventually<F, Fut>(
        &self,
        bound: Duration,
        what: &str,
        mut condition: F,
    ) -> Check<Duration>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Check>,
    {
        let step = if self.is_virtual() {
            Duration::from_millis(10)
        } else {
            Duration::from_millis(20)
        };
        let start = Instant::now();
        loop {
            match condition().await {
                Ok(()) => return Ok(start.elapsed()),
                // Even a zero bound lets ready tasks run for one step.
                Err(why) if start.elapsed() >= bound.max(step) => {
                    return Err(format!("{what}: not within {bound:?}: {why}"))
                }
                Err(_) => tokio::time::sleep(step).await,
            }
        }
    }
}

/// Every event waiting in `events` now.
pub(crate) fn drain(events: &mut DiscoveryEvents) -> Vec<DiscoveryEvent> {
    std::iter::from_fn(|| events.try_recv()).collect()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
