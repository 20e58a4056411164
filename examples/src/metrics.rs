//! `--metrics ADDR`: what a registration and a discovery cache are doing, as Prometheus series.
//!
//! The series go through the [`metrics`] facade; [`serve`] installs the Prometheus recorder of
//! `metrics-exporter-prometheus` and serves its text format on `GET /metrics`. They are fed from
//! what any app can observe through the service layer's public API: a [`Registration`]'s state
//! stream and a [`Discovery`]'s events, size, revision and sync flag (sampled every
//! [`SAMPLE_EVERY`]). The crate README has the table of series.

use crate::BoxError;
use metrics::{counter, describe_counter, describe_gauge, gauge, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use registry_service::{
    Discovery, DiscoveryEvent, Picker, Registration, RegistrationState, ServiceInstance, Status,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How often a discovery cache's size, revision and sync flag are read.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// Background tasks feeding or serving metrics; dropping it stops them.
#[derive(Debug, Default)]
pub struct MetricsTasks(Vec<JoinHandle<()>>);

impl MetricsTasks {
    /// Adds the tasks of `other`.
    pub fn extend(&mut self, other: MetricsTasks) {
        let mut other = other;
        self.0.append(&mut other.0);
    }
}

impl Drop for MetricsTasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Installs the Prometheus recorder as the process's `metrics` recorder and serves
/// `GET /metrics` on `address`. Returns the bound address (port 0 picks one) and the server
/// task. Fails if the address cannot be bound or a recorder is already installed.
pub async fn serve(address: SocketAddr) -> Result<(SocketAddr, MetricsTasks), BoxError> {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    describe();
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address} for metrics: {e}"))?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || render(handle.clone())),
    );
    let server = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the metrics server stopped");
        }
    });
    Ok((bound, MetricsTasks(vec![server])))
}

async fn render(handle: PrometheusHandle) -> impl axum::response::IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        handle.render(),
    )
}

fn describe() {
    describe_gauge!(
        "registry_registration_state",
        "1 for the registration's current state, 0 for states it left"
    );
    describe_counter!(
        "registry_registration_lease_losses_total",
        "Leases the registration lost (expired or revoked) and had to replace"
    );
    describe_counter!(
        "registry_registration_reregistrations_total",
        "Times the instance was registered again under a new lease"
    );
    describe_gauge!(
        "registry_registration_state_changed_timestamp_seconds",
        Unit::Seconds,
        "When the registration's state last changed, as a Unix time"
    );
    describe_gauge!(
        "registry_discovery_instances",
        "Instances in the discovery cache, by status"
    );
    describe_gauge!(
        "registry_discovery_revision",
        "The store revision the discovery cache reflects"
    );
    describe_gauge!(
        "registry_discovery_synced",
        "1 while the discovery cache is listed and watching, else 0"
    );
    describe_gauge!(
        "registry_discovery_staleness_seconds",
        Unit::Seconds,
        "Seconds since the discovery cache was last seen synced (or, serving a snapshot file, the file's age); 0 while it is"
    );
    describe_counter!(
        "registry_discovery_resyncs_total",
        "Times the discovery cache became synced again after losing its watch"
    );
    describe_counter!(
        "registry_discovery_watch_restarts_total",
        "Times the discovery cache's watch failed (unavailable, compacted, stalled, ...) and restarted"
    );
    describe_counter!(
        "registry_discovery_regressions_total",
        "Times the registry's revision went back under the discovery cache (a store restored from an older backup)"
    );
    describe_counter!(
        "registry_discovery_events_total",
        "Changes the discovery cache applied, by kind (added, updated, removed)"
    );
    describe_gauge!(
        "registry_registration_keep_alive_round_trip_seconds",
        Unit::Seconds,
        "How long the last successful keep-alive (or grant) took to be answered"
    );
    describe_gauge!(
        "registry_registration_lease_remaining_seconds",
        Unit::Seconds,
        "Seconds until the lease runs out unless a keep-alive succeeds first"
    );
    describe_counter!(
        "registry_balancer_picks_total",
        "Calls the balancer sent to a node, by outcome (success, failure)"
    );
    describe_gauge!(
        "registry_balancer_in_flight",
        "Calls picked on a node and not finished yet"
    );
    describe_gauge!(
        "registry_balancer_ejected",
        "1 while the balancer leaves a node out after consecutive failures, else 0"
    );
    describe_counter!(
        "registry_balancer_ejections_total",
        "Times the balancer ejected a node"
    );
    describe_gauge!(
        "registry_balancer_latency_seconds",
        Unit::Seconds,
        "The balancer's peak-EWMA latency estimate of a node"
    );
}

/// Counts one forwarded call on `node` of `service` by its outcome (a no-op while no metrics
/// recorder is installed, so callers need not check).
pub fn record_pick(service: &str, node: &str, success: bool) {
    let outcome = if success { "success" } else { "failure" };
    counter!(
        "registry_balancer_picks_total",
        "service" => service.to_owned(),
        "instance" => node.to_owned(),
        "outcome" => outcome
    )
    .increment(1);
}

/// Samples `picker`'s view of every node `nodes` lists into the `registry_balancer_*`
/// series, labelled with `service` and the node's id.
pub fn observe_picker(
    service: &str,
    picker: Picker,
    nodes: impl Fn() -> Arc<[ServiceInstance]> + Send + 'static,
) -> MetricsTasks {
    let service = service.to_owned();
    let sampler = tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for node in nodes().iter() {
                let labels = [("service", service.clone()), ("instance", node.id.clone())];
                gauge!("registry_balancer_in_flight", &labels)
                    .set(picker.in_flight(&node.id) as f64);
                let ejected = if picker.is_ejected(&node.id) {
                    1.0
                } else {
                    0.0
                };
                gauge!("registry_balancer_ejected", &labels).set(ejected);
                counter!("registry_balancer_ejections_total", &labels)
                    .absolute(u64::from(picker.times_ejected(&node.id)));
                if let Some(latency) = picker.latency(&node.id) {
                    gauge!("registry_balancer_latency_seconds", &labels).set(latency.as_secs_f64());
                }
            }
        }
    });
    MetricsTasks(vec![sampler])
}

fn unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `lease_lost` for `LeaseLost { .. }`: the variant's name in snake case, so a state added
/// later gets a series without a change here.
fn state_name(state: &RegistrationState) -> String {
    let debug = format!("{state:?}");
    let mut name = String::new();
    for (i, c) in debug
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .enumerate()
    {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_lowercase());
    }
    name
}

/// Follows `registration`'s state into the `registry_registration_*` series, labelled with
/// its service and instance id.
pub fn observe_registration(
    registration: &Registration,
    service: &str,
    instance: &str,
) -> MetricsTasks {
    let mut states = registration.subscribe();
    let labels = [
        ("service", service.to_owned()),
        ("instance", instance.to_owned()),
    ];
    let reader = registration.status_reader();
    let sampled = labels.clone();
    let sampler = tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let status = reader.status();
            if let Some(round_trip) = status.last_keep_alive_round_trip {
                gauge!(
                    "registry_registration_keep_alive_round_trip_seconds",
                    &sampled
                )
                .set(round_trip.as_secs_f64());
            }
            let remaining = status.lease_deadline.map_or(0.0, |deadline| {
                deadline
                    .saturating_duration_since(Instant::now())
                    .as_secs_f64()
            });
            gauge!("registry_registration_lease_remaining_seconds", &sampled).set(remaining);
        }
    });
    // Created at zero, so a scrape shows the series before anything went wrong.
    counter!("registry_registration_lease_losses_total", &labels).absolute(0);
    counter!("registry_registration_reregistrations_total", &labels).absolute(0);
    let task = tokio::spawn(async move {
        let mut shown: Option<String> = None;
        let mut lease = None;
        // The state stream keeps only the latest state, so a quick loss and re-registration
        // can show up as a new lease alone: count the loss then too.
        let mut loss_seen = false;
        loop {
            let state = states.borrow_and_update().clone();
            let name = state_name(&state);
            if shown.as_deref() != Some(name.as_str()) {
                if let Some(old) = shown.take() {
                    let mut old_labels = labels.to_vec();
                    old_labels.push(("state", old));
                    gauge!("registry_registration_state", &old_labels).set(0.0);
                }
                let mut new_labels = labels.to_vec();
                new_labels.push(("state", name.clone()));
                gauge!("registry_registration_state", &new_labels).set(1.0);
                gauge!(
                    "registry_registration_state_changed_timestamp_seconds",
                    &labels
                )
                .set(unix_seconds());
                shown = Some(name);
            }
            match state {
                RegistrationState::LeaseLost if !loss_seen => {
                    loss_seen = true;
                    counter!("registry_registration_lease_losses_total", &labels).increment(1);
                }
                RegistrationState::Registered { lease: new, .. } if lease != Some(new) => {
                    if lease.is_some() {
                        if !loss_seen {
                            counter!("registry_registration_lease_losses_total", &labels)
                                .increment(1);
                        }
                        counter!("registry_registration_reregistrations_total", &labels)
                            .increment(1);
                    }
                    lease = Some(new);
                    loss_seen = false;
                }
                _ => {}
            }
            if states.changed().await.is_err() {
                return;
            }
        }
    });
    MetricsTasks(vec![task, sampler])
}

/// Follows `discovery` into the `registry_discovery_*` series, labelled with its service.
pub fn observe_discovery(discovery: &Discovery) -> MetricsTasks {
    let service = discovery.service().to_owned();
    let mut events = discovery.subscribe();
    let events_task = {
        let service = service.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let kind = match event {
                    DiscoveryEvent::Added(_) => "added",
                    DiscoveryEvent::Updated { .. } => "updated",
                    DiscoveryEvent::Removed(_) => "removed",
                };
                counter!("registry_discovery_events_total", "service" => service.clone(), "event" => kind)
                    .increment(1);
            }
        })
    };
    let discovery = discovery.clone();
    let labels = [("service", service)];
    counter!("registry_discovery_resyncs_total", &labels).absolute(0);
    counter!("registry_discovery_watch_restarts_total", &labels).absolute(0);
    counter!("registry_discovery_regressions_total", &labels).absolute(0);
    let sampler = tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let started = Instant::now();
        let mut last_synced: Option<Instant> = None;
        loop {
            tick.tick().await;
            let mut by_status =
                BTreeMap::from([("serving", 0u32), ("draining", 0), ("unknown", 0)]);
            for instance in discovery.snapshot().iter() {
                let status = match instance.status {
                    Status::Serving => "serving",
                    Status::Draining => "draining",
                    Status::Unknown => "unknown",
                };
                *by_status.entry(status).or_default() += 1;
            }
            for (status, count) in by_status {
                let mut status_labels = labels.to_vec();
                status_labels.push(("status", status.to_owned()));
                gauge!("registry_discovery_instances", &status_labels).set(f64::from(count));
            }
            // Revisions stay far below 2^53, where f64 is exact.
            gauge!("registry_discovery_revision", &labels).set(discovery.revision().0 as f64);
            let synced = discovery.is_synced();
            gauge!("registry_discovery_synced", &labels).set(if synced { 1.0 } else { 0.0 });
            let now = Instant::now();
            if synced {
                last_synced = Some(now);
            }
            counter!("registry_discovery_resyncs_total", &labels).absolute(discovery.resyncs());
            counter!("registry_discovery_watch_restarts_total", &labels)
                .absolute(discovery.watch_restarts());
            let status = discovery.status();
            counter!("registry_discovery_regressions_total", &labels).absolute(status.regressions);
            let staleness = match (synced, last_synced) {
                (true, _) => 0.0,
                // Serving a snapshot file: as old as the file.
                (false, None) if status.seeded.is_some() => status
                    .seeded
                    .as_ref()
                    .map_or(0.0, |seeded| seeded.age().as_secs_f64()),
                (false, Some(at)) => now.duration_since(at).as_secs_f64(),
                (false, None) => now.duration_since(started).as_secs_f64(),
            };
            gauge!("registry_discovery_staleness_seconds", &labels).set(staleness);
        }
    });
    MetricsTasks(vec![events_task, sampler])
}

#[cfg(test)]
mod tests {
    use super::*;
    use registry_api::{LeaseId, Revision};

    #[test]
    fn state_names_are_snake_case_variant_names() {
        assert_eq!(state_name(&RegistrationState::Registering), "registering");
        assert_eq!(state_name(&RegistrationState::LeaseLost), "lease_lost");
        assert_eq!(
            state_name(&RegistrationState::ReRegistering { attempt: 2 }),
            "re_registering"
        );
        assert_eq!(
            state_name(&RegistrationState::Registered {
                lease: LeaseId(7),
                revision: Revision(3)
            }),
            "registered"
        );
    }
}
