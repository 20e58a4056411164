//! The `registry` CLI against a real etcd: global options before or after the subcommand,
//! `status` counting instances by status, and `--json` on every subcommand.
//!
//! Every test works under its own `--key-prefix` on the etcd shared by this test binary, writes
//! its instances in-process (through `registry_service::Registration` or a raw put), and runs
//! the real binary. Children are killed when their handle drops; every wait is bounded.

mod support;

use registry_api::{PutOptions, Registry};
use registry_etcd::testing::{shared_endpoints, unique_key_prefix};
use registry_etcd::EtcdRegistry;
use registry_service::{Registration, RegistrationOptions, ServiceInstance, Status};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use support::{http_get, Child};

/// The etcd, key prefix and in-process registry of one test.
struct Setup {
    endpoint: String,
    prefix: String,
    registry: Arc<dyn Registry>,
}

impl Setup {
    async fn new(label: &str) -> Setup {
        let endpoints = shared_endpoints().expect("an etcd server for the tests");
        let prefix = unique_key_prefix(label);
        let registry = EtcdRegistry::builder(endpoints.clone())
            .key_prefix(prefix.clone())
            .connect()
            .await
            .expect("the test connects to etcd");
        Setup {
            endpoint: endpoints.join(","),
            prefix,
            registry: Arc::new(registry),
        }
    }

    fn etcd_args(&self) -> [&str; 4] {
        ["--etcd", &self.endpoint, "--key-prefix", &self.prefix]
    }

    /// Runs `registry` with exactly `args` to completion: success, stdout, stderr.
    async fn run(&self, args: &[&str]) -> (bool, String, String) {
        support::run(
            support::command(env!("CARGO_BIN_EXE_registry"), args)
                .env_remove("REGISTRY_ETCD")
                .env_remove("REGISTRY_NAMESPACE"),
        )
        .await
    }

    /// Runs `registry <args> --etcd ... --key-prefix ...` and parses its stdout as JSON.
    async fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(self.etcd_args());
        let (ok, stdout, stderr) = self.run(&all).await;
        assert!(ok, "registry {args:?} failed: {stderr}");
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
    }

    /// Starts a long-running `registry` command (its options after the subcommand).
    fn spawn(&self, args: &[&str]) -> Child {
        let mut all = args.to_vec();
        all.extend(self.etcd_args());
        support::spawn(env!("CARGO_BIN_EXE_registry"), &all)
    }

    async fn register(&self, service: &str, id: &str, address: &str) -> Registration {
        Registration::start(
            self.registry.clone(),
            ServiceInstance::new(service, id, address),
            RegistrationOptions::default().ttl(Duration::from_secs(10)),
        )
        .await
        .expect("the test registers an instance")
    }

    /// Writes an instance's value directly, as another writer (or a draining process) would.
    async fn put_instance(&self, instance: &ServiceInstance) {
        let key = format!("services/{}/{}", instance.service, instance.id);
        self.registry
            .put(key.as_bytes(), &instance.to_json(), PutOptions::default())
            .await
            .expect("the test writes an instance");
    }
}

/// The next stdout line of `child`, parsed as JSON.
async fn next_json(child: &mut Child) -> Value {
    let line = child.next_line().await;
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_options_work_before_and_after_the_subcommand() {
    let setup = Setup::new("cli-global").await;
    let _a = setup.register("hello", "a", "127.0.0.1:9001").await;
    let [etcd, endpoint, prefix_flag, prefix] = setup.etcd_args();

    let before = [
        etcd,
        endpoint,
        prefix_flag,
        prefix,
        "--json",
        "list",
        "hello",
    ];
    let after = [
        "list",
        "hello",
        etcd,
        endpoint,
        prefix_flag,
        prefix,
        "--json",
    ];
    let mixed = [
        "--json",
        prefix_flag,
        prefix,
        "list",
        etcd,
        endpoint,
        "hello",
    ];
    let mut outputs = Vec::new();
    for args in [&before[..], &after[..], &mixed[..]] {
        let (ok, stdout, stderr) = setup.run(args).await;
        assert!(ok, "registry {args:?} failed: {stderr}");
        outputs.push(stdout);
    }
    let listed: Value = serde_json::from_str(&outputs[0]).expect("JSON");
    assert_eq!(listed[0]["id"], "a", "{listed}");
    assert_eq!(listed[0]["address"], "127.0.0.1:9001");
    assert_eq!(outputs[1], outputs[0], "options after the subcommand");
    assert_eq!(outputs[2], outputs[0], "options on both sides");

    // The prefix after the subcommand is honoured, not ignored: another prefix sees nothing.
    let other = unique_key_prefix("cli-global-other");
    let (ok, stdout, _) = setup
        .run(&[
            "list",
            "hello",
            etcd,
            endpoint,
            prefix_flag,
            &other,
            "--json",
        ])
        .await;
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&stdout).unwrap(), json!([]));

    // Without --etcd (anywhere) the CLI refuses with a clear error.
    let (ok, _, stderr) = setup.run(&["list", "hello"]).await;
    assert!(!ok);
    assert!(stderr.contains("needs --etcd"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_every_services_instances_by_status() {
    let setup = Setup::new("cli-status").await;
    let empty = setup.json(&["status", "--json"]).await;
    assert_eq!(empty["services"], json!([]), "{empty}");
    assert_eq!(empty["namespace"], "services");

    let _a = setup.register("hello", "a", "127.0.0.1:9001").await;
    let _b = setup.register("hello", "b", "127.0.0.1:9002").await;
    let _d = setup.register("billing", "d", "127.0.0.1:9101").await;
    setup
        .put_instance(
            &ServiceInstance::new("hello", "c", "127.0.0.1:9003").with_status(Status::Draining),
        )
        .await;
    // Not instances: a value naming another id than its key, and a value that is not JSON.
    let other_id = ServiceInstance::new("hello", "x", "127.0.0.1:9").to_json();
    for (key, value) in [
        (&b"services/hello/y"[..], &other_id[..]),
        (b"services/hello/junk", b"not json"),
    ] {
        setup
            .registry
            .put(key, value, PutOptions::default())
            .await
            .expect("the test writes a value");
    }

    let status = setup.json(&["status", "--json"]).await;
    assert!(
        status["revision"].as_i64().is_some_and(|r| r > 1),
        "{status}"
    );
    assert_eq!(
        status["services"],
        json!([
            {"service": "billing", "instances": 1, "serving": 1, "draining": 0, "unknown": 0, "malformed": 0},
            {"service": "hello", "instances": 3, "serving": 2, "draining": 1, "unknown": 0, "malformed": 2},
        ]),
        "{status}"
    );

    let mut args = vec!["status"];
    args.extend(setup.etcd_args());
    let (ok, text, _) = setup.run(&args).await;
    assert!(ok);
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert!(text.starts_with("2 service(s) under services/"), "{text}");
    assert_eq!(
        lines[1],
        [
            "SERVICE",
            "INSTANCES",
            "SERVING",
            "DRAINING",
            "UNKNOWN",
            "MALFORMED"
        ]
    );
    assert_eq!(lines[2], ["billing", "1", "1", "0", "0", "0"]);
    assert_eq!(lines[3], ["hello", "3", "2", "1", "0", "2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subcommand_prints_json_with_json() {
    let setup = Setup::new("cli-json").await;
    let _a = setup.register("hello", "a", "127.0.0.1:9001").await;

    let listed = setup.json(&["list", "hello", "--json"]).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let status = setup.json(&["status", "--json"]).await;
    assert_eq!(status["services"][0]["service"], "hello");

    let mut watch = setup.spawn(&["watch", "hello", "--json"]);
    let event = next_json(&mut watch).await;
    assert_eq!(
        (&event["event"], &event["instance"]["id"]),
        (&json!("added"), &json!("a"))
    );

    let mut register = setup.spawn(&["register", "hello", "127.0.0.1:9002", "--id", "b", "--json"]);
    let registered = next_json(&mut register).await;
    assert_eq!(registered["registered"]["id"], "b", "{registered}");
    assert!(registered["key"]
        .as_str()
        .is_some_and(|k| k.ends_with("services/hello/b")));
    let event = next_json(&mut watch).await;
    assert_eq!(
        (&event["event"], &event["instance"]["id"]),
        (&json!("added"), &json!("b"))
    );
    assert!(register.terminate().await);
    let deregistered = next_json(&mut register).await;
    assert!(deregistered["deregistered"].is_string(), "{deregistered}");

    let deleted = setup.json(&["deregister", "hello", "a", "--json"]).await;
    assert_eq!(deleted["deleted"], true, "{deleted}");

    let mut ui = setup.spawn(&["ui", "--listen", "127.0.0.1:0", "--json"]);
    let listening = next_json(&mut ui).await;
    let address = listening["listening"]
        .as_str()
        .expect("an address")
        .to_owned();
    assert!(address.starts_with("127.0.0.1:"), "{listening}");
    assert_eq!(listening["url"], format!("http://{address}/"));
    let page = http_get(&address, "/").await.body;
    assert!(page.contains("<title>Service registry</title>"));
    let fleet: Value =
        serde_json::from_str(&http_get(&address, "/api/fleet").await.body).expect("JSON");
    assert_eq!(fleet["namespace"], "services", "{fleet}");
    assert!(ui.terminate().await, "registry ui stops cleanly on SIGTERM");
}
