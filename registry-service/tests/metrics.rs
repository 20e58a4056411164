//! The series the service layer emits itself (feature `metrics`), read as Prometheus text from
//! a recorder installed for the test's thread: a registration's state, lease losses and timing;
//! a discovery cache's instances, sync and restarts; a picker's calls, ejections and latency.

mod common;

use common::{hello, options, settle, TTL};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use registry_memory::MemoryRegistry;
use registry_service::{
    Discovery, DiscoveryOptions, EjectionOptions, Picker, PickerOptions, Registration,
    RegistrationState, Status, Strategy,
};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// A Prometheus recorder for this test's thread (the runtime is current-thread, so every task
/// of the test records into it). Keep the guard.
fn recorder() -> (PrometheusHandle, metrics::LocalRecorderGuard<'static>) {
    let recorder: &'static _ = Box::leak(Box::new(PrometheusBuilder::new().build_recorder()));
    let handle = recorder.handle();
    (handle, metrics::set_default_local_recorder(recorder))
}

/// The value of the series `name` whose labels include every `key="value"` of `labels`.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (label_text, value) = match rest.strip_prefix('{') {
            Some(rest) => rest.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        labels
            .iter()
            .all(|(key, expected)| label_text.contains(&format!("{key}=\"{expected}\"")))
            .then(|| value.trim().parse().ok())?
    })
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test(start_paused = true)]
async fn a_registration_exports_its_state_losses_and_lease_timing() {
    let (prometheus, _guard) = recorder();
    // Timestamps follow tokio's clock from the wall clock: virtual time here.
    let start = unix_now();
    let etcd = MemoryRegistry::new();
    let a = Registration::start(Arc::new(etcd.client("a")), hello("a"), options())
        .await
        .unwrap();
    let node = [("service", "hello"), ("instance", "a")];
    let with = |extra: (&'static str, &'static str)| {
        let mut labels = node.to_vec();
        labels.push(extra);
        labels
    };
    let text = prometheus.render();
    assert!(
        text.contains("# TYPE registry_registration_state gauge"),
        "{text}"
    );
    assert!(
        text.contains("# HELP registry_registration_lease_losses_total"),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "registry_registration_state",
            &with(("state", "registered"))
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "registry_registration_state",
            &with(("state", "registering"))
        ),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "registry_registration_lease_losses_total", &node),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "registry_registration_reregistrations_total", &node),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            "registry_registration_keep_alive_round_trip_seconds",
            &node
        ),
        Some(0.0),
        "answered at once on virtual time"
    );
    let deadline = value(
        &text,
        "registry_registration_lease_deadline_timestamp_seconds",
        &node,
    )
    .expect("the lease's deadline");
    let expected = start + TTL.as_secs_f64();
    assert!(
        (deadline - expected).abs() < 1.0,
        "{deadline} vs {expected}"
    );
    let changed = value(
        &text,
        "registry_registration_state_changed_timestamp_seconds",
        &node,
    )
    .expect("when the state changed");
    assert!((start - changed).abs() < 1.0);

    // The lease is renewed every TTL/3: the deadline moves with it (on virtual time).
    settle(TTL / 2).await;
    let renewed = value(
        &prometheus.render(),
        "registry_registration_lease_deadline_timestamp_seconds",
        &node,
    )
    .unwrap();
    let after_a_third = deadline + (TTL / 3).as_secs_f64();
    assert!(
        (renewed - after_a_third).abs() < 0.01,
        "{renewed} vs {after_a_third}"
    );

    // The server expires the lease: lost once, registered again under a new one.
    etcd.expire_lease(a.lease().unwrap()).unwrap();
    let mut states = a.subscribe();
    tokio::time::timeout(
        WAIT,
        states.wait_for(|s| {
            matches!(s, RegistrationState::Registered { .. }) && a.status().re_registrations == 1
        }),
    )
    .await
    .unwrap()
    .unwrap();
    let text = prometheus.render();
    assert_eq!(
        value(&text, "registry_registration_lease_losses_total", &node),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "registry_registration_reregistrations_total", &node),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "registry_registration_state",
            &with(("state", "lease_lost"))
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            "registry_registration_state",
            &with(("state", "registered"))
        ),
        Some(1.0)
    );

    a.deregister().await.unwrap();
    let text = prometheus.render();
    assert_eq!(
        value(
            &text,
            "registry_registration_state",
            &with(("state", "deregistered"))
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "registry_registration_state",
            &with(("state", "registered"))
        ),
        Some(0.0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_discovery_cache_exports_its_instances_sync_and_restarts() {
    let (prometheus, _guard) = recorder();
    let start = unix_now();
    let etcd = MemoryRegistry::new();
    let service = [("service", "hello")];
    let with = |key: &'static str, v: &'static str| [("service", "hello"), (key, v)];
    let view = Discovery::start(
        Arc::new(etcd.client("gateway")),
        "hello",
        DiscoveryOptions::default().seed(1),
    )
    .unwrap();
    let (a, b) = (
        Registration::start(Arc::new(etcd.client("a")), hello("a"), options())
            .await
            .unwrap(),
        Registration::start(Arc::new(etcd.client("b")), hello("b"), options())
            .await
            .unwrap(),
    );
    view.wait_for_len(2, WAIT).await.unwrap();
    b.set_status(Status::Draining).await.unwrap();
    view.wait_until(|all| all.iter().any(|i| i.status == Status::Draining), WAIT)
        .await
        .unwrap();
    let text = prometheus.render();
    assert_eq!(
        value(
            &text,
            "registry_discovery_instances",
            &with("status", "serving")
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "registry_discovery_instances",
            &with("status", "draining")
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "registry_discovery_instances",
            &with("status", "unknown")
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            "registry_discovery_events_total",
            &with("event", "added")
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            "registry_discovery_events_total",
            &with("event", "updated")
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "registry_discovery_events_total",
            &with("event", "removed")
        ),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "registry_discovery_synced", &service),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "registry_discovery_stale_since_timestamp_seconds",
            &service
        ),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "registry_discovery_resyncs_total", &service),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "registry_discovery_watch_restarts_total", &service),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "registry_discovery_revision", &service),
        Some(view.revision().0 as f64)
    );

    // Cut off: stale since now; healed: synced again, once more than the first time.
    etcd.link("gateway").partition();
    settle(Duration::from_secs(1)).await;
    let text = prometheus.render();
    assert_eq!(
        value(&text, "registry_discovery_synced", &service),
        Some(0.0),
        "{text}"
    );
    let since = value(
        &text,
        "registry_discovery_stale_since_timestamp_seconds",
        &service,
    )
    .unwrap();
    // Cut off at once, on virtual time: within the second of the partition.
    assert!(
        (start - 1.0..start + 1.0).contains(&since),
        "{since} vs {start}"
    );
    assert!(value(&text, "registry_discovery_watch_restarts_total", &service).unwrap() >= 1.0);
    etcd.link("gateway").heal();
    drop(a);
    view.wait_for_len(1, WAIT).await.unwrap();
    let text = prometheus.render();
    assert_eq!(
        value(&text, "registry_discovery_synced", &service),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "registry_discovery_stale_since_timestamp_seconds",
            &service
        ),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "registry_discovery_resyncs_total", &service),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "registry_discovery_events_total",
            &with("event", "removed")
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "registry_discovery_instances",
            &with("status", "serving")
        ),
        Some(0.0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_picker_exports_its_calls_ejections_and_latency() {
    let (prometheus, _guard) = recorder();
    let nodes: Arc<[_]> = [hello("a"), hello("b")].into();
    let picker = Picker::new(
        nodes,
        PickerOptions::new(Strategy::RoundRobin).seed(1).ejection(
            EjectionOptions::default()
                .consecutive_failures(2)
                .max_ejection_percent(100)
                .panic_threshold_percent(0),
        ),
    );
    let node = |id: &'static str| [("service", "hello"), ("instance", id)];
    let outcome = |id: &'static str, o: &'static str| {
        [("service", "hello"), ("instance", id), ("outcome", o)]
    };
    let a = picker.pick_excluding(&["b"]).unwrap();
    let held = picker.pick_excluding(&["a"]).unwrap();
    let text = prometheus.render();
    assert_eq!(
        value(&text, "registry_balancer_in_flight", &node("a")),
        Some(1.0),
        "{text}"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    a.success();
    drop(held);
    for _ in 0..2 {
        picker.pick_excluding(&["b"]).unwrap().failure();
    }
    let text = prometheus.render();
    assert_eq!(
        value(
            &text,
            "registry_balancer_picks_total",
            &outcome("a", "success")
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "registry_balancer_picks_total",
            &outcome("a", "failure")
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            "registry_balancer_picks_total",
            &outcome("b", "dropped")
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "registry_balancer_in_flight", &node("a")),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "registry_balancer_in_flight", &node("b")),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "registry_balancer_ejected", &node("a")),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "registry_balancer_ejections_total", &node("a")),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "registry_balancer_ejected", &node("b")),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "registry_balancer_ejections_total", &node("b")),
        Some(0.0)
    );
    // A failure counts at least the failure penalty (1 s): the peak estimate.
    assert_eq!(
        value(&text, "registry_balancer_latency_seconds", &node("a")),
        Some(1.0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_store_restored_from_an_older_backup_is_counted_by_caches_and_registrations() {
    let (prometheus, _guard) = recorder();
    let etcd = MemoryRegistry::new();
    let view = Discovery::start(
        Arc::new(etcd.client("gateway")),
        "hello",
        DiscoveryOptions::default().seed(1),
    )
    .unwrap();
    let a = Registration::start(Arc::new(etcd.client("a")), hello("a"), options())
        .await
        .unwrap();
    view.wait_for_len(1, WAIT).await.unwrap();
    let node = [("service", "hello"), ("instance", "a")];
    let service = [("service", "hello")];
    let text = prometheus.render();
    assert!(
        text.contains("# HELP registry_discovery_regressions_total"),
        "{text}"
    );
    assert!(
        text.contains("# HELP registry_registration_regressions_total"),
        "{text}"
    );
    assert_eq!(
        value(&text, "registry_discovery_regressions_total", &service),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "registry_registration_regressions_total", &node),
        Some(0.0),
        "{text}"
    );

    // Writes after the backup, so the restore takes the revision back.
    let backup = etcd.backup();
    for round in 0..5 {
        a.update_metadata(registry_service::Metadata::default().with_version(format!("v{round}")))
            .await
            .unwrap();
    }
    settle(Duration::from_secs(1)).await;
    etcd.set_unavailable(true);
    etcd.restore(&backup, registry_memory::RestoreOptions::plain())
        .unwrap();
    settle(Duration::from_secs(1)).await;
    etcd.set_unavailable(false);
    let counted = tokio::time::timeout(WAIT, async {
        while view.status().regressions == 0 || a.status().regressions == 0 {
            settle(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        counted.is_ok(),
        "regressions: cache {}, registration {}",
        view.status().regressions,
        a.status().regressions
    );
    let text = prometheus.render();
    assert_eq!(
        value(&text, "registry_discovery_regressions_total", &service),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "registry_registration_regressions_total", &node),
        Some(1.0),
        "{text}"
    );
}
