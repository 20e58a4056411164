//! Crash to removal: instances registered through the service layer stop keeping their
//! leases alive ([`Registration::abandon`], as a killed process would) at spread-out moments,
//! and one discovery cache reports when each disappears. Run on etcd (wall clock) and on the
//! simulator (paused clock), with the same code.

use crate::recording::Recording;
use registry_api::Registry;
use registry_service::{
    Discovery, DiscoveryEvent, DiscoveryOptions, Registration, RegistrationOptions, ServiceInstance,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// What a crash run measured.
#[derive(Debug, Default)]
pub(crate) struct Crashes {
    pub(crate) crashed: usize,
    /// Removal seen by the cache, minus the send of the lease's last successful renewal.
    pub(crate) from_renewal: Vec<Duration>,
    /// Removal seen by the cache, minus the crash.
    pub(crate) from_crash: Vec<Duration>,
}

/// Registers one instance per offset, crashes each `offset` after all are registered, and
/// waits (at most until the last crash + TTL + `slack`) for the cache to drop them.
pub(crate) async fn crash_run(
    inner: Arc<dyn Registry>,
    namespace: &str,
    service: &str,
    ttl: Duration,
    offsets: &[Duration],
    slack: Duration,
) -> Result<Crashes, String> {
    let recording = Arc::new(Recording::new(inner));
    let registry: Arc<dyn Registry> = recording.clone();
    let discovery = Discovery::start(
        registry.clone(),
        service,
        DiscoveryOptions::default().namespace(namespace),
    )
    .map_err(|e| e.to_string())?;
    discovery
        .wait_synced(Duration::from_secs(10))
        .await
        .map_err(|_| "the cache did not sync".to_owned())?;
    let mut events = discovery.subscribe();
    let options = RegistrationOptions::default().ttl(ttl).namespace(namespace);
    let mut registrations = Vec::new();
    for n in 0..offsets.len() {
        let instance =
            ServiceInstance::new(service, format!("c{n}"), format!("127.0.0.1:{}", 9000 + n));
        let registration = Registration::start(registry.clone(), instance, options.clone())
            .await
            .map_err(|e| e.to_string())?;
        registrations.push(Some(registration));
    }
    let mut order: Vec<usize> = (0..offsets.len()).collect();
    order.sort_by_key(|n| offsets[*n]);
    let start = Instant::now();
    let mut crashed: BTreeMap<String, (Instant, registry_api::LeaseId)> = BTreeMap::new();
    for n in order {
        tokio::time::sleep_until(start + offsets[n]).await;
        let Some(registration) = registrations[n].take() else {
            continue;
        };
        let Some(lease) = registration.lease() else {
            return Err(format!(
                "instance c{n} was not registered when it was to crash"
            ));
        };
        registration.abandon();
        crashed.insert(format!("c{n}"), (Instant::now(), lease));
    }
    let last = offsets.iter().max().copied().unwrap_or_default();
    let until = start + last + ttl + slack;
    let mut out = Crashes {
        crashed: crashed.len(),
        ..Crashes::default()
    };
    while out.from_crash.len() < crashed.len() {
        let Ok(Some(event)) = tokio::time::timeout_at(until, events.recv()).await else {
            break;
        };
        let now = Instant::now();
        if let DiscoveryEvent::Removed(instance) = event {
            if let Some((at, lease)) = crashed.get(&instance.id) {
                out.from_crash.push(now - *at);
                if let Some(renewed) = recording.intercept().last_renewal_sent(*lease) {
                    out.from_renewal.push(now - renewed);
                }
            }
        }
    }
    Ok(out)
}
