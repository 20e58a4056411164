//! Least privilege on a real etcd with auth on, set up by the `registry acl` CLI: two services
//! and a gateway each under their own role. Each service registers and is discovered; service
//! A writing under service B's prefix is refused at once with `PermissionDenied`; the gateway
//! cannot write; the operator sees and manages everything (status, the dashboard); a service
//! drains and deregisters under its role.
//!
//! The test has its own etcd (users and roles belong to the whole server) and works under its
//! own `--key-prefix`, so the roles' permissions carry it. Children are killed when their
//! handle drops; every wait is bounded.

mod support;

use registry_api::{Error, PutOptions, Registry};
use registry_etcd::testing::{unique_key_prefix, EtcdServer};
use registry_etcd::EtcdRegistry;
use serde_json::Value;
use std::time::{Duration, Instant};
use support::{http_get, Child};

/// A refusal must come at once: one round trip, not the CLI's 10 s wait or a retry loop.
const AT_ONCE: Duration = Duration::from_secs(2);

struct Setup {
    server: EtcdServer,
    prefix: String,
}

impl Setup {
    /// `--etcd`, `--key-prefix`, and `--user`/`--password` when given, then `args`.
    fn args(&self, creds: Option<(&str, &str)>, args: &[&str]) -> Vec<String> {
        let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        all.extend([
            "--etcd".into(),
            self.server.endpoint(),
            "--key-prefix".into(),
            self.prefix.clone(),
        ]);
        if let Some((user, password)) = creds {
            all.extend([
                "--user".into(),
                user.into(),
                "--password".into(),
                password.into(),
            ]);
        }
        all
    }

    async fn cli(&self, creds: Option<(&str, &str)>, args: &[&str]) -> (bool, String, String) {
        support::run_registry(&self.args(creds, args)).await
    }

    async fn json(&self, creds: Option<(&str, &str)>, args: &[&str]) -> Value {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let (ok, stdout, stderr) = self.cli(creds, &with_json).await;
        assert!(ok, "registry {args:?} failed: {stderr}");
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
    }

    /// Runs an `acl` subcommand twice: the first run changes something, the second nothing.
    async fn acl_twice(&self, creds: Option<(&str, &str)>, args: &[&str]) {
        let first = self.json(creds, args).await;
        assert_eq!(first["changed"], true, "{args:?}: {first}");
        let second = self.json(creds, args).await;
        assert_eq!(second["changed"], false, "{args:?} again: {second}");
    }

    fn spawn(&self, binary: &str, creds: (&str, &str), args: &[&str]) -> Child {
        let all = self.args(Some(creds), args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        support::spawn(binary, &all)
    }

    async fn registry_as(&self, user: &str, password: &str) -> EtcdRegistry {
        EtcdRegistry::builder(self.server.endpoints())
            .key_prefix(self.prefix.clone())
            .user(user, password)
            .connect()
            .await
            .unwrap_or_else(|e| panic!("{user} connects: {e}"))
    }
}

const ROOT: (&str, &str) = ("root", "root-pw");
const ALPHA: (&str, &str) = ("alpha", "alpha-pw");
const BETA: (&str, &str) = ("beta", "beta-pw");
const GATEWAY: (&str, &str) = ("gw", "gw-pw");
const OPS: (&str, &str) = ("ops", "ops-pw");

/// A put that must be refused at once with the typed error.
async fn refused(registry: &EtcdRegistry, key: &[u8]) {
    let started = Instant::now();
    let err = registry
        .put(key, b"{}", PutOptions::default())
        .await
        .expect_err("must be refused");
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert!(
        started.elapsed() < AT_ONCE,
        "refused after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_writes_only_its_own_entries_and_the_gateway_only_reads() {
    let setup = Setup {
        server: EtcdServer::start().expect("etcd"),
        prefix: unique_key_prefix("acl"),
    };

    // The operator's steps, as the README gives them; each is idempotent.
    let enabled = setup
        .json(None, &["acl", "enable", "--user-password", ROOT.1])
        .await;
    assert_eq!(enabled["changed"], true, "{enabled}");
    setup
        .json(Some(ROOT), &["acl", "enable", "--user-password", ROOT.1])
        .await
        .get("changed")
        .filter(|changed| **changed == false)
        .expect("enabling again changes nothing");
    for (service, (user, password)) in [("alpha", ALPHA), ("beta", BETA)] {
        setup
            .acl_twice(
                Some(ROOT),
                &[
                    "acl",
                    "add-service",
                    service,
                    user,
                    "--user-password",
                    password,
                ],
            )
            .await;
    }
    setup
        .acl_twice(
            Some(ROOT),
            &[
                "acl",
                "grant-read",
                GATEWAY.0,
                "alpha",
                "beta",
                "--user-password",
                GATEWAY.1,
            ],
        )
        .await;
    setup
        .acl_twice(
            Some(ROOT),
            &["acl", "add-operator", OPS.0, "--user-password", OPS.1],
        )
        .await;
    let shown = setup.json(Some(ROOT), &["acl", "show"]).await;
    assert_eq!(shown["auth_enabled"], true);
    let alpha_role = shown["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "registry-service-alpha")
        .unwrap_or_else(|| panic!("no alpha role in {shown}"));
    assert_eq!(
        alpha_role["permissions"][0]["key"],
        format!("{}services/alpha/", setup.prefix)
    );
    assert_eq!(alpha_role["permissions"][0]["kind"], "readwrite");
    assert_eq!(alpha_role["permissions"][0]["prefix"], true);
    let (ok, _, stderr) = setup.cli(None, &["acl", "show"]).await;
    assert!(!ok, "with auth on, show needs root");
    assert!(
        stderr.contains("user name is empty") || stderr.contains("permission denied"),
        "{stderr}"
    );

    // Each service registers under its own role and is discovered by the gateway's.
    let hello = env!("CARGO_BIN_EXE_hello-service");
    let node = |service: &str, id: &str| {
        vec![
            "--service".to_owned(),
            service.to_owned(),
            "--id".into(),
            id.into(),
            "--ttl".into(),
            "5".into(),
            "--drain-grace-ms".into(),
            "200".into(),
        ]
    };
    let alpha_args = node("alpha", "a1");
    let alpha_args: Vec<&str> = alpha_args.iter().map(String::as_str).collect();
    let mut alpha = setup.spawn(hello, ALPHA, &alpha_args);
    let beta_args = node("beta", "b1");
    let beta_args: Vec<&str> = beta_args.iter().map(String::as_str).collect();
    let mut beta = setup.spawn(hello, BETA, &beta_args);
    alpha.wait_line("registered").await;
    beta.wait_line("registered").await;
    let mut gateway = setup.spawn(
        env!("CARGO_BIN_EXE_gateway"),
        GATEWAY,
        &["--service", "alpha", "--listen", "127.0.0.1:0"],
    );
    let forwarding = gateway.wait_line("forwarding to alpha").await;
    assert!(
        forwarding.contains("1 node(s)") && forwarding.contains("a1"),
        "{forwarding}"
    );
    let listed = setup.json(Some(GATEWAY), &["list", "beta"]).await;
    assert_eq!(
        listed[0]["id"], "b1",
        "the gateway's role reads beta: {listed}"
    );

    // Service alpha writing under beta's prefix: refused at once, typed, nothing written.
    let as_alpha = setup.registry_as(ALPHA.0, ALPHA.1).await;
    refused(&as_alpha, b"services/beta/b1").await;
    refused(&as_alpha, b"services/beta/forged").await;
    let started = Instant::now();
    let (ok, _, stderr) = setup.cli(Some(ALPHA), &["deregister", "beta", "b1"]).await;
    assert!(!ok && stderr.contains("permission denied"), "{stderr}");
    assert!(
        started.elapsed() < AT_ONCE * 2,
        "the CLI was refused after {:?}",
        started.elapsed()
    );

    // The gateway cannot write at all.
    let as_gateway = setup.registry_as(GATEWAY.0, GATEWAY.1).await;
    refused(&as_gateway, b"services/alpha/a1").await;
    refused(&as_gateway, b"services/beta/new").await;
    let (ok, _, stderr) = setup
        .cli(Some(GATEWAY), &["deregister", "alpha", "a1"])
        .await;
    assert!(!ok && stderr.contains("permission denied"), "{stderr}");
    let listed = setup.json(Some(OPS), &["list", "beta"]).await;
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(1),
        "beta untouched: {listed}"
    );
    assert_eq!(listed[0]["address"], beta_address(&listed));

    // The operator sees every service, and the dashboard works under its role.
    let status = setup.json(Some(OPS), &["status"]).await;
    let services: Vec<&str> = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service"].as_str().unwrap())
        .collect();
    assert_eq!(services, ["alpha", "beta"], "{status}");
    let mut ui = setup.spawn(
        env!("CARGO_BIN_EXE_registry"),
        OPS,
        &["ui", "--listen", "127.0.0.1:0", "--json"],
    );
    let listening: Value = serde_json::from_str(&ui.next_line().await).unwrap();
    let address = listening["listening"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fleet = http_get(&address, "/api/fleet").await.body;
        if fleet.contains("\"a1\"") && fleet.contains("\"b1\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dashboard never showed both: {fleet}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Drain and deregistration under the service's own role.
    assert!(
        alpha.terminate_echoing_rest().await,
        "alpha drains and exits cleanly"
    );
    gateway.wait_line("node left a1").await;
    let listed = setup.json(Some(OPS), &["list", "alpha"]).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed}");
    assert!(beta.terminate().await);
}

fn beta_address(listed: &Value) -> Value {
    // hello-service registers the address it listens on, never one a forger chose.
    let address = listed[0]["address"].clone();
    assert!(
        address
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{address}"
    );
    address
}
