//! `--metrics ADDR` of a running `hello-service` and `gateway` on a real etcd: the documented
//! series, emitted by `registry-service` itself (the binaries only install the exporter), are
//! there, with plausible values after a registration, a lease loss (the test revokes the node's
//! lease behind its back), calls through the gateway, and a resync (the gateway reaches etcd
//! through a proxy that the test makes reset every connection for a while).

mod support;

use registry_api::Registry;
use registry_etcd::testing::{shared_endpoints, unique_key_prefix, ProxyMode, TcpProxy};
use registry_etcd::EtcdRegistry;
use std::time::Duration;
use support::spawn;
use tokio::time::{timeout, Instant};

/// The longest a series may take to reach a value.
const WAIT: Duration = Duration::from_secs(20);

/// One scrape: the body of `GET <url>` (a `http://127.0.0.1:PORT/metrics` URL).
async fn scrape(url: &str) -> String {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (address, path) = rest.split_once('/').expect("a path");
    let response = support::http_get(address, &format!("/{path}")).await;
    assert!(
        response
            .head
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{}",
        response.head
    );
    response.body
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

/// Scrapes `url` until the series satisfies `ready`; returns the last scrape.
async fn wait_for(url: &str, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = scrape(url).await;
        if ready(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not seen within {WAIT:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_service_and_gateway_export_registration_and_discovery_series() {
    let endpoints = shared_endpoints().expect("an etcd server for the tests");
    let prefix = unique_key_prefix("metrics");
    let proxy = TcpProxy::for_endpoint(&endpoints[0]).expect("a proxy to etcd");
    let registry = EtcdRegistry::builder(endpoints.clone())
        .key_prefix(prefix.clone())
        .connect()
        .await
        .expect("the test connects to etcd");

    let direct = endpoints.join(",");
    let mut node = spawn(
        env!("CARGO_BIN_EXE_hello-service"),
        &[
            "--etcd",
            &direct,
            "--key-prefix",
            &prefix,
            "--listen",
            "127.0.0.1:0",
            "--id",
            "m1",
            "--ttl",
            "2",
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let node_metrics = node.wait_line("metrics on").await;
    node.wait_line("registered").await;
    let through_proxy = proxy.endpoint();
    let mut gateway = spawn(
        env!("CARGO_BIN_EXE_gateway"),
        &[
            "--etcd",
            &through_proxy,
            "--key-prefix",
            &prefix,
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let gateway_metrics = gateway.wait_line("metrics on").await;
    let gateway_address = gateway.wait_line("listening on").await;

    // After the registration.
    let node_labels = [("service", "hello"), ("instance", "m1")];
    let text = scrape(&node_metrics).await;
    assert!(
        text.contains("# TYPE registry_registration_state gauge"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE registry_registration_lease_losses_total counter"),
        "{text}"
    );
    let mut registered = node_labels.to_vec();
    registered.push(("state", "registered"));
    assert_eq!(
        value(&text, "registry_registration_state", &registered),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "registry_registration_lease_losses_total",
            &node_labels
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            "registry_registration_reregistrations_total",
            &node_labels
        ),
        Some(0.0)
    );
    let text = wait_for(&node_metrics, "the keep-alive timing", |text| {
        value(
            text,
            "registry_registration_keep_alive_round_trip_seconds",
            &node_labels,
        )
        .is_some()
    })
    .await;
    let round_trip = value(
        &text,
        "registry_registration_keep_alive_round_trip_seconds",
        &node_labels,
    )
    .expect("a round trip");
    assert!((0.0..2.0).contains(&round_trip), "{text}");
    let deadline = value(
        &text,
        "registry_registration_lease_deadline_timestamp_seconds",
        &node_labels,
    )
    .expect("the lease's deadline");
    let remaining = deadline - unix_now();
    assert!(
        remaining > 0.0 && remaining <= 2.1,
        "{remaining} s left: {text}"
    );
    let changed = value(
        &text,
        "registry_registration_state_changed_timestamp_seconds",
        &node_labels,
    )
    .expect("a state change time");
    let now = unix_now();
    assert!(
        (now - 60.0..=now + 1.0).contains(&changed),
        "{changed} is not about now ({now})"
    );

    let service = [("service", "hello")];
    let text = wait_for(
        &gateway_metrics,
        "the gateway's cache with the node",
        |text| {
            value(
                text,
                "registry_discovery_instances",
                &[("service", "hello"), ("status", "serving")],
            ) == Some(1.0)
        },
    )
    .await;
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
        Some(0.0)
    );
    assert!(
        value(
            &text,
            "registry_discovery_events_total",
            &[("service", "hello"), ("event", "added")]
        )
        .is_some_and(|added| added >= 1.0),
        "{text}"
    );
    let revision = value(&text, "registry_discovery_revision", &service).expect("a revision");
    assert!(revision > 1.0, "{text}");

    // Three calls through the gateway: the balancer's series for the node.
    let channel = registry_examples::gateway::endpoint(&gateway_address)
        .expect("an address")
        .connect_lazy();
    let mut client = registry_examples::proto::greeter_client::GreeterClient::new(channel);
    for _ in 0..3 {
        timeout(
            Duration::from_secs(5),
            client.say_hello(registry_examples::proto::HelloRequest {
                name: "metrics".into(),
            }),
        )
        .await
        .expect("the gateway answers")
        .expect("the call succeeds");
    }
    let balancer = [("service", "hello"), ("instance", "m1")];
    let text = wait_for(
        &gateway_metrics,
        "the balancer's view of the node",
        |text| value(text, "registry_balancer_in_flight", &balancer).is_some(),
    )
    .await;
    assert_eq!(
        value(
            &text,
            "registry_balancer_picks_total",
            &[
                ("service", "hello"),
                ("instance", "m1"),
                ("outcome", "success")
            ]
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "registry_balancer_in_flight", &balancer),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "registry_balancer_ejected", &balancer),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "registry_balancer_ejections_total", &balancer),
        Some(0.0)
    );
    assert!(
        value(&text, "registry_balancer_latency_seconds", &balancer)
            .is_some_and(|seconds| seconds > 0.0 && seconds < 5.0),
        "{text}"
    );

    // A lease loss: the node's lease is revoked behind its back; it registers again.
    let lease = registry
        .get(b"services/hello/m1")
        .await
        .expect("reads the node's key")
        .kv
        .and_then(|kv| kv.lease)
        .expect("the node's key has a lease");
    registry
        .lease_revoke(lease)
        .await
        .expect("revokes the lease");
    let text = wait_for(
        &node_metrics,
        "a lease loss and a re-registration",
        |text| {
            value(
                text,
                "registry_registration_lease_losses_total",
                &node_labels,
            ) == Some(1.0)
                && value(
                    text,
                    "registry_registration_reregistrations_total",
                    &node_labels,
                ) == Some(1.0)
                && value(text, "registry_registration_state", &registered) == Some(1.0)
        },
    )
    .await;
    let changed_again = value(
        &text,
        "registry_registration_state_changed_timestamp_seconds",
        &node_labels,
    )
    .expect("a state change time");
    assert!(changed_again > changed, "{changed_again} after {changed}");
    let mut lost = node_labels.to_vec();
    lost.push(("state", "lease_lost"));
    assert_eq!(
        value(&text, "registry_registration_state", &lost),
        Some(0.0),
        "{text}"
    );

    // A resync: every connection from the gateway to etcd is reset for a while.
    proxy.set_mode(ProxyMode::Reset);
    let text = wait_for(&gateway_metrics, "the cache out of sync", |text| {
        value(text, "registry_discovery_synced", &service) == Some(0.0)
            && value(
                text,
                "registry_discovery_stale_since_timestamp_seconds",
                &service,
            )
            .is_some_and(|since| (unix_now() - 60.0..=unix_now()).contains(&since))
    })
    .await;
    eprintln!("out of sync:\n{text}");
    proxy.set_mode(ProxyMode::Pass);
    let text = wait_for(&gateway_metrics, "the cache synced again", |text| {
        value(text, "registry_discovery_synced", &service) == Some(1.0)
            && value(text, "registry_discovery_resyncs_total", &service)
                .is_some_and(|resyncs| resyncs >= 1.0)
    })
    .await;
    assert_eq!(
        value(
            &text,
            "registry_discovery_stale_since_timestamp_seconds",
            &service
        ),
        Some(0.0)
    );
    assert!(
        value(&text, "registry_discovery_watch_restarts_total", &service)
            .is_some_and(|restarts| restarts >= 1.0),
        "the reset watch counts as a restart: {text}"
    );
    assert!(
        value(&text, "registry_discovery_revision", &service).is_some_and(|r| r >= revision),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "registry_discovery_instances",
            &[("service", "hello"), ("status", "serving")]
        ),
        Some(1.0),
        "{text}"
    );
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn series_values_are_found_by_name_and_labels() {
    let text = "# TYPE a counter\na_total{service=\"x\",event=\"added\"} 3\na_total{service=\"y\"} 4\nb 1.5\n";
    assert_eq!(value(text, "a_total", &[("service", "y")]), Some(4.0));
    assert_eq!(value(text, "a_total", &[("event", "added")]), Some(3.0));
    assert_eq!(value(text, "a_total", &[("service", "z")]), None);
    assert_eq!(value(text, "b", &[]), Some(1.5));
    assert_eq!(value(text, "c", &[]), None);
}
