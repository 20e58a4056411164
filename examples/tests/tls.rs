//! The binaries over TLS on a real etcd whose client certificates name the etcd user
//! (`--client-cert-auth` with auth on): `--cacert`, `--cert` and `--key`, as etcdctl takes
//! them. Roles are made by `registry acl` as root (root's certificate, no password); the hello
//! service registers with its own certificate, the gateway discovers it with its own and
//! cannot write; missing or wrong TLS options fail with an error that says what is wrong.

mod support;

use registry_etcd::testing::{EtcdServer, TlsMode};
use serde_json::Value;
use std::path::PathBuf;
use support::Child;

struct Identity {
    cacert: String,
    cert: String,
    key: String,
}

fn identity(server: &EtcdServer, user: &str) -> Identity {
    let (cert, key) = server.client_files(user).expect("client certificate files");
    let text = |p: PathBuf| p.to_string_lossy().into_owned();
    Identity {
        cacert: text(server.ca_file().expect("a TLS server")),
        cert: text(cert),
        key: text(key),
    }
}

fn args(server: &EtcdServer, who: Option<&Identity>, args: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    all.extend(["--etcd".into(), server.endpoint()]);
    if let Some(who) = who {
        all.extend([
            "--cacert".into(),
            who.cacert.clone(),
            "--cert".into(),
            who.cert.clone(),
            "--key".into(),
            who.key.clone(),
        ]);
    }
    all
}

async fn cli(all: Vec<String>) -> (bool, String, String) {
    support::run_registry(&all).await
}

fn spawn(binary: &str, all: Vec<String>) -> Child {
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    support::spawn(binary, &all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binaries_connect_with_certificates_that_name_their_user() {
    let server = EtcdServer::start_tls(TlsMode::ClientCertIsUser).expect("etcd with TLS and auth");
    let root = identity(&server, "root");
    let hello = identity(&server, "hello");
    let gateway = identity(&server, "gw");

    for step in [
        vec![
            "acl",
            "add-service",
            "hello",
            "hello",
            "--no-password",
            "--json",
        ],
        vec![
            "acl",
            "grant-read",
            "gw",
            "hello",
            "--no-password",
            "--json",
        ],
    ] {
        let (ok, stdout, stderr) = cli(args(&server, Some(&root), &step)).await;
        assert!(ok, "{step:?}: {stderr}");
        let changed: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(changed["changed"], true, "{changed}");
    }

    let mut node = spawn(
        env!("CARGO_BIN_EXE_hello-service"),
        args(
            &server,
            Some(&hello),
            &["--id", "h1", "--ttl", "5", "--drain-grace-ms", "0"],
        ),
    );
    node.wait_line("registered").await;
    let mut gw = spawn(
        env!("CARGO_BIN_EXE_gateway"),
        args(&server, Some(&gateway), &["--listen", "127.0.0.1:0"]),
    );
    let forwarding = gw.wait_line("forwarding to hello").await;
    assert!(
        forwarding.contains("1 node(s)") && forwarding.contains("h1"),
        "{forwarding}"
    );

    // The gateway's certificate reads, and writes nothing.
    let (ok, stdout, stderr) =
        cli(args(&server, Some(&gateway), &["list", "hello", "--json"])).await;
    assert!(ok, "{stderr}");
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(listed[0]["id"], "h1", "{listed}");
    let (ok, _, stderr) = cli(args(
        &server,
        Some(&gateway),
        &["deregister", "hello", "h1"],
    ))
    .await;
    assert!(!ok && stderr.contains("permission denied"), "{stderr}");

    // Without a client certificate, without the CA, or in plaintext: refused, saying why.
    let ca_only = vec!["--cacert".to_owned(), root.cacert.clone()];
    let mut no_cert = args(&server, None, &["list", "hello"]);
    no_cert.extend(ca_only);
    let (ok, _, stderr) = cli(no_cert).await;
    assert!(!ok && stderr.contains("client certificate"), "{stderr}");
    let (ok, _, stderr) = cli(args(&server, None, &["list", "hello"])).await;
    assert!(
        !ok && stderr.contains("certificate verification failed"),
        "{stderr}"
    );
    let plain = server.endpoint().replace("https://", "http://");
    let (ok, _, stderr) = cli(vec!["list".into(), "hello".into(), "--etcd".into(), plain]).await;
    assert!(!ok && stderr.contains("serves TLS"), "{stderr}");

    assert!(
        node.terminate().await,
        "the node drains and deregisters with its certificate"
    );
    gw.wait_line("node left h1").await;
}
