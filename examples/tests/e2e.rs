//! The real binaries (`hello-service`, `gateway`, `registry`) against a real etcd.
//!
//! Every test works under its own `--key-prefix` on the etcd shared by this test binary
//! (`registry_etcd::testing::shared_endpoints`), so tests never see each other's keys. Child
//! processes are killed when their handle drops, and every wait is bounded.

mod support;

use registry_etcd::testing::{shared_endpoints, unique_key_prefix};
use registry_examples::gateway::{endpoint, RETRIED_FROM};
use registry_examples::proto::greeter_client::GreeterClient;
use registry_examples::proto::HelloRequest;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;
use support::Child;
use tokio::time::{timeout, Instant};
use tonic::transport::Channel;

/// The lease TTL of the hello services: how long a killed node stays registered.
const TTL_SECS: u64 = 2;

/// The etcd and key prefix of one test.
struct Setup {
    endpoint: String,
    prefix: String,
}

impl Setup {
    fn new(label: &str) -> Setup {
        let endpoints = shared_endpoints().expect("an etcd server for the tests");
        Setup {
            endpoint: endpoints.join(","),
            prefix: unique_key_prefix(label),
        }
    }

    /// This setup's backend options, then `args`.
    fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["--etcd", &self.endpoint, "--key-prefix", &self.prefix];
        all.extend_from_slice(args);
        all
    }

    /// Starts a binary with this setup's backend options before `args`.
    fn spawn(&self, binary: &str, args: &[&str]) -> Child {
        support::spawn(binary, &self.args(args))
    }

    fn hello(&self, id: &str) -> Child {
        let ttl = TTL_SECS.to_string();
        self.spawn(
            env!("CARGO_BIN_EXE_hello-service"),
            &["--listen", "127.0.0.1:0", "--id", id, "--ttl", &ttl],
        )
    }

    /// Runs the `registry` CLI to completion: its exit status and stdout.
    async fn registry_cli(&self, args: &[&str]) -> (bool, String) {
        let (ok, stdout, _) = support::run(&mut support::command(
            env!("CARGO_BIN_EXE_registry"),
            &self.args(args),
        ))
        .await;
        (ok, stdout)
    }

    /// The instance ids `registry --json list <service>` prints.
    async fn listed(&self, service: &str) -> Vec<Value> {
        let (ok, stdout) = self.registry_cli(&["--json", "list", service]).await;
        assert!(ok, "registry list failed");
        match serde_json::from_str(&stdout).expect("list --json prints JSON") {
            Value::Array(instances) => instances,
            other => panic!("expected an array, got {other}"),
        }
    }

    async fn listed_ids(&self, service: &str) -> Vec<String> {
        self.listed(service)
            .await
            .iter()
            .map(|instance| instance["id"].as_str().expect("an id").to_owned())
            .collect()
    }
}

/// One call through the gateway: which node served it and which (if any) failed first. Any
/// failed call fails the test: the gateway must hide a dead node.
async fn call(client: &mut GreeterClient<Channel>) -> (String, Option<String>) {
    let response = timeout(
        Duration::from_secs(5),
        client.say_hello(HelloRequest { name: "e2e".into() }),
    )
    .await
    .expect("the call finishes within 5 s")
    .expect("the call succeeds");
    let retried_from = response
        .metadata()
        .get(RETRIED_FROM)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    (response.into_inner().node, retried_from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_routes_around_a_killed_node_and_picks_up_a_new_one() {
    let setup = Setup::new("e2e-gateway");
    let mut a = setup.hello("a");
    let mut b = setup.hello("b");
    a.wait_line("registered").await;
    b.wait_line("registered").await;
    let mut gateway = setup.spawn(
        env!("CARGO_BIN_EXE_gateway"),
        // A failing node is left out for only 200 ms: if discovery did not drop a dead node,
        // the gateway would try it again and again.
        &["--listen", "127.0.0.1:0", "--down-for-ms", "200"],
    );
    let address = gateway.wait_line("listening on").await;
    let mut client = GreeterClient::new(endpoint(&address).expect("an address").connect_lazy());

    let mut served = BTreeSet::new();
    for _ in 0..20 {
        served.insert(call(&mut client).await.0);
    }
    assert_eq!(served, BTreeSet::from(["a".to_owned(), "b".to_owned()]));
    assert_eq!(setup.listed_ids("hello").await, ["a", "b"]);

    // Crash a: its entry stays until the lease runs out; meanwhile no call may fail.
    a.kill().await;
    let killed_at = Instant::now();
    {
        let left = gateway.wait_line("node left a ");
        tokio::pin!(left);
        loop {
            tokio::select! {
                _ = &mut left => break,
                () = tokio::time::sleep(Duration::from_millis(50)) => {
                    let (node, _) = call(&mut client).await;
                    assert_eq!(node, "b", "only b is alive");
                }
            }
        }
    }
    let expired_after = killed_at.elapsed();
    assert!(
        expired_after <= Duration::from_secs(TTL_SECS + 3),
        "a was dropped {expired_after:?} after the kill, TTL {TTL_SECS} s"
    );
    assert_eq!(setup.listed_ids("hello").await, ["b"]);

    // The gateway never tries a again: more than three `--down-for-ms` periods of calls, none
    // retried from a.
    for _ in 0..30 {
        let (node, retried_from) = call(&mut client).await;
        assert_eq!(node, "b");
        assert_eq!(
            retried_from, None,
            "the gateway still routed to the dead node"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // A new node: picked up without restarting the gateway.
    let mut c = setup.hello("c");
    c.wait_line("registered").await;
    gateway.wait_line("node joined c ").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut served = BTreeSet::new();
    while served.len() < 2 {
        assert!(Instant::now() < deadline, "c got no call: {served:?}");
        let (node, retried_from) = call(&mut client).await;
        assert_eq!(retried_from, None);
        served.insert(node);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(served, BTreeSet::from(["b".to_owned(), "c".to_owned()]));

    // A clean stop deregisters at once (no TTL wait).
    assert!(
        c.terminate().await,
        "hello-service exits cleanly on SIGTERM"
    );
    assert_eq!(setup.listed_ids("hello").await, ["b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_cli_lists_watches_registers_and_deregisters() {
    let setup = Setup::new("e2e-cli");
    let mut h1 = setup.hello("h1");
    let mut h2 = setup.hello("h2");
    h1.wait_line("registered").await;
    h2.wait_line("registered").await;

    let listed = setup.listed("hello").await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["id"], "h1");
    assert_eq!(listed[1]["id"], "h2");
    assert_eq!(listed[0]["service"], "hello");
    assert!(listed[0]["address"]
        .as_str()
        .is_some_and(|a| a.starts_with("127.0.0.1:")));
    let (ok, text) = setup.registry_cli(&["list", "hello"]).await;
    assert!(ok);
    assert!(text.starts_with("hello: 2 instance(s)"), "{text}");

    let mut watch = setup.spawn(
        env!("CARGO_BIN_EXE_registry"),
        &["--json", "watch", "hello"],
    );
    for expected in ["h1", "h2"] {
        let event: Value = serde_json::from_str(&watch.wait_line("").await).expect("JSON");
        assert_eq!(event["event"], "added");
        assert_eq!(event["instance"]["id"], expected);
    }

    // `register` stays registered until stopped, and `list` shows it with its metadata.
    let mut manual = setup.spawn(
        env!("CARGO_BIN_EXE_registry"),
        &[
            "register",
            "hello",
            "127.0.0.1:9",
            "--id",
            "manual",
            "--ttl",
            "5",
            "--meta",
            "zone=z1",
            "--meta",
            "tier=web",
        ],
    );
    manual.wait_line("registered").await;
    let listed = setup.listed("hello").await;
    let manual_entry = listed
        .iter()
        .find(|instance| instance["id"] == "manual")
        .expect("the registered instance is listed");
    assert_eq!(manual_entry["address"], "127.0.0.1:9");
    assert_eq!(manual_entry["metadata"]["zone"], "z1");
    assert_eq!(manual_entry["metadata"]["labels"]["tier"], "web");
    let event: Value = serde_json::from_str(&watch.wait_line("").await).expect("JSON");
    assert_eq!(
        (&event["event"], &event["instance"]["id"]),
        (&Value::from("added"), &Value::from("manual"))
    );

    // Ctrl-C / SIGTERM deregisters it at once.
    assert!(manual.terminate().await, "registry register exits cleanly");
    assert_eq!(setup.listed_ids("hello").await, ["h1", "h2"]);
    let event: Value = serde_json::from_str(&watch.wait_line("").await).expect("JSON");
    assert_eq!(
        (&event["event"], &event["instance"]["id"]),
        (&Value::from("removed"), &Value::from("manual"))
    );

    // `deregister` removes a crashed instance's entry without waiting for its TTL.
    h2.kill().await;
    let (ok, text) = setup.registry_cli(&["deregister", "hello", "h2"]).await;
    assert!(ok, "{text}");
    assert_eq!(setup.listed_ids("hello").await, ["h1"]);
    let (ok, _) = setup.registry_cli(&["deregister", "hello", "nobody"]).await;
    assert!(!ok, "deregistering an unknown instance fails");
    let (ok, _) = setup.registry_cli(&["deregister", "hello", "bad/id"]).await;
    assert!(!ok, "a malformed id is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_service_also_publishes_in_etcds_go_naming_layout() {
    use registry_api::Registry;
    let setup = Setup::new("e2e-go-naming");
    let mut node = setup.spawn(
        env!("CARGO_BIN_EXE_hello-service"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--id",
            "g1",
            "--ttl",
            "5",
            "--go-target",
            "my/hello",
            "--meta",
            "zone=z1",
        ],
    );
    let address = node.wait_line("listening on").await;
    let key = node.wait_line("published").await;
    let key = key.split_whitespace().next().expect("the key").to_owned();
    assert_eq!(key, format!("my/hello/{address}"));

    let etcd = registry_etcd::EtcdRegistry::builder([setup.endpoint.clone()])
        .key_prefix(setup.prefix.clone())
        .connect()
        .await
        .expect("connects to etcd");
    let go = etcd
        .get(key.as_bytes())
        .await
        .unwrap()
        .kv
        .expect("the Go key");
    let value: Value = serde_json::from_slice(&go.value).expect("JSON");
    assert_eq!(value["Addr"], Value::from(address.clone()));
    // What Go's endpoints.Manager writes: Op 0 (Add), Metadata null (an object would crash Go
    // clients on pick_first; see tests/go_interop.rs).
    assert_eq!(value["Op"], 0);
    assert_eq!(value["Metadata"], Value::Null);
    let ours = etcd
        .get(b"services/hello/g1")
        .await
        .unwrap()
        .kv
        .expect("our key");
    assert!(go.lease.is_some());
    assert_eq!(
        go.lease, ours.lease,
        "both keys share the registration's lease"
    );

    // A clean stop revokes the lease: both keys go at once.
    assert!(node.terminate().await);
    assert!(etcd.get(key.as_bytes()).await.unwrap().kv.is_none());
    assert!(etcd.get(b"services/hello/g1").await.unwrap().kv.is_none());
}
