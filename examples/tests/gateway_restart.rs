//! The gateway restarted while etcd is down, on real processes: the gateway is killed, etcd is
//! stopped, one node dies meanwhile, and the gateway is started again with its snapshot file.
//! It routes calls to the live nodes at once, flagged stale; once etcd is back (a node that
//! died leaves when its lease expires, a new node joins), its view equals etcd's within the
//! stated bound. A damaged or foreign snapshot file is refused with a warning and a reason.

mod faults_support;
mod support;

use faults_support::{blocking, connect, figure, truth, EXPIRY_LATENESS, RECONNECT};
use registry_etcd::testing::{unique_key_prefix, EtcdServer};
use registry_examples::gateway::{endpoint, SERVED_BY};
use registry_examples::proto::greeter_client::GreeterClient;
use registry_examples::proto::HelloRequest;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;
use support::Child;
use tokio::time::{timeout, Instant};

/// The nodes' lease TTL.
const TTL_SECS: u64 = 3;
const TTL: Duration = Duration::from_secs(TTL_SECS);
/// The gateway's discovery backs off up to 30 s by default; after a 2 s outage its waits are
/// at most a few seconds.
const BACKOFF: Duration = Duration::from_secs(4);

fn hello_node(etcd: &str, prefix: &str, id: &str) -> Child {
    support::spawn(
        env!("CARGO_BIN_EXE_hello-service"),
        &[
            "--etcd",
            etcd,
            "--key-prefix",
            prefix,
            "--id",
            id,
            "--ttl",
            &TTL_SECS.to_string(),
        ],
    )
}

fn gateway(etcd: &str, prefix: &str, file: &Path) -> Child {
    support::spawn_logging(
        env!("CARGO_BIN_EXE_gateway"),
        &[
            "--etcd",
            etcd,
            "--key-prefix",
            prefix,
            "--listen",
            "127.0.0.1:0",
            "--snapshot-file",
            file.to_str().expect("a UTF-8 path"),
            "--snapshot-interval-ms",
            "200",
        ],
        "warn",
    )
}

/// The gateway's node ids as its stdout tells them (`node joined` / `node left`), reading
/// every line that arrives within `wait`.
async fn follow_nodes(gateway: &mut Child, nodes: &mut BTreeSet<String>, wait: Duration) {
    while let Ok(line) = timeout(wait, gateway.next_line()).await {
        if let Some(rest) = line.strip_prefix("node joined ") {
            nodes.insert(rest.split(' ').next().unwrap_or_default().to_owned());
        } else if let Some(rest) = line.strip_prefix("node left ") {
            nodes.remove(rest.split(' ').next().unwrap_or_default());
        }
    }
}

/// `count` calls through the gateway; the ids of the nodes that served them. Every call must
/// succeed.
async fn call_through(address: &str, count: usize) -> BTreeSet<String> {
    let mut client = GreeterClient::new(endpoint(address).expect("an address").connect_lazy());
    let mut served = BTreeSet::new();
    for i in 0..count {
        let call = client.say_hello(HelloRequest {
            name: format!("call {i}"),
        });
        let response = timeout(Duration::from_secs(5), call)
            .await
            .unwrap_or_else(|_| panic!("call {i} timed out"))
            .unwrap_or_else(|status| panic!("call {i} failed: {status}"));
        let node = response
            .metadata()
            .get(SERVED_BY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        served.insert(node);
    }
    served
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_restarted_during_an_outage_serves_its_snapshot_then_follows_etcd() {
    let mut server = blocking(EtcdServer::start).expect("etcd");
    let etcd = server.endpoint();
    let prefix = unique_key_prefix("gateway-restart");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.json");

    let mut nodes = Vec::new();
    for id in ["n1", "n2", "n3"] {
        let mut node = hello_node(&etcd, &prefix, id);
        node.wait_line("registered").await;
        nodes.push(node);
    }
    let mut first = gateway(&etcd, &prefix, &file);
    let address = first.wait_line("listening on").await;
    let mut seen = BTreeSet::new();
    while seen.len() < 3 {
        follow_nodes(&mut first, &mut seen, Duration::from_millis(200)).await;
    }
    assert_eq!(call_through(&address, 10).await.len(), 3);
    // The file holds the three nodes (written within the interval).
    let written = Instant::now();
    loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if ["n1", "n2", "n3"]
            .iter()
            .all(|id| text.contains(&format!("\"{id}\"")))
        {
            break;
        }
        assert!(written.elapsed() < Duration::from_secs(5), "file: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The gateway crashes, etcd goes down, and n3 dies during the outage.
    first.kill().await;
    nodes[2].kill().await;
    blocking(|| server.stop());
    let outage = Instant::now();

    let started = Instant::now();
    let mut second = gateway(&etcd, &prefix, &file);
    let serving = second.wait_line("serving").await;
    let address = second.wait_line("listening on").await;
    let up_in = started.elapsed();
    assert!(
        serving.starts_with("3 node(s) from the snapshot file (stale"),
        "{serving}"
    );
    // Calls go to the live nodes at once (a call picking the dead n3 is retried on another).
    let served = call_through(&address, 20).await;
    assert!(
        served.iter().all(|node| node == "n1" || node == "n2") && !served.is_empty(),
        "served by {served:?} while etcd is down"
    );
    let routed_in = started.elapsed();
    let mut view = BTreeSet::new();
    follow_nodes(&mut second, &mut view, Duration::from_millis(100)).await;
    assert_eq!(
        view,
        BTreeSet::from(["n1".into(), "n2".into(), "n3".into()])
    );

    // etcd comes back (every lease gets its whole TTL again); n4 joins; n3's lease expires.
    tokio::time::sleep(Duration::from_secs(1)).await;
    blocking(|| server.restart()).expect("etcd restarts");
    let down_for = outage.elapsed();
    let back = Instant::now();
    let mut n4 = hello_node(&etcd, &prefix, "n4");
    n4.wait_line("registered").await;
    let checker = connect(&server.endpoints(), &prefix).await;
    // Reconnecting, a backoff wait, n3's whole TTL again after the restart and etcd's
    // lateness in expiring it.
    let bound = RECONNECT + BACKOFF + TTL + EXPIRY_LATENESS;
    let equal_in = loop {
        follow_nodes(&mut second, &mut view, Duration::from_millis(100)).await;
        let (etcd_view, _) = truth(&*checker, "hello").await.unwrap_or_default();
        let etcd_ids: BTreeSet<String> = etcd_view.into_keys().collect();
        if view == etcd_ids && !etcd_ids.contains("n3") && etcd_ids.contains("n4") {
            break back.elapsed();
        }
        assert!(
            back.elapsed() < bound,
            "the gateway holds {view:?}, etcd {etcd_ids:?}, {:?} after etcd came back (bound {bound:?})",
            back.elapsed()
        );
    };
    assert_eq!(call_through(&address, 20).await.len(), 3, "n1, n2 and n4");
    figure(
        "gateway-restart",
        format!(
            "gateway restarted with etcd down: listening and serving 3 nodes from its snapshot file (stale) {up_in:.2?} after the start, 20 calls served by the live nodes {routed_in:.2?} after it; etcd down {down_for:.2?}; the gateway's view equal to etcd's {equal_in:.2?} after etcd came back (bound {bound:?})"
        ),
    );
    second.kill().await;
    n4.kill().await;
    for node in &mut nodes {
        node.kill().await;
    }
}

/// A snapshot file that must be refused: the gateway says why on stdout and warns on stderr,
/// then serves what etcd lists.
async fn refused(etcd: &str, prefix: &str, bytes: &[u8], reason: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.json");
    std::fs::write(&file, bytes).unwrap();
    let mut gateway = gateway(etcd, prefix, &file);
    let why = gateway.wait_line("snapshot file not used:").await;
    assert!(why.contains(reason), "{why}");
    gateway.wait_line("listening on").await;
    gateway.kill().await;
    let (_, _, stderr) = gateway.finish(Duration::from_secs(5)).await;
    assert!(
        stderr.contains("WARN") && stderr.contains("snapshot file refused"),
        "no warning: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_and_foreign_snapshot_files_are_refused_with_a_warning() {
    let server = blocking(EtcdServer::start).expect("etcd");
    let etcd = server.endpoint();
    let prefix = unique_key_prefix("gateway-snapshot-refused");
    let mut node = hello_node(&etcd, &prefix, "n1");
    node.wait_line("registered").await;
    // A good file first, written by a gateway.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.json");
    let mut writer = gateway(&etcd, &prefix, &file);
    writer.wait_line("listening on").await;
    let started = Instant::now();
    let good = loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if text.contains("\"n1\"") {
            break text;
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    writer.kill().await;

    refused(
        &etcd,
        &prefix,
        &good.as_bytes()[..good.len() / 2],
        "corrupt",
    )
    .await;
    refused(&etcd, &prefix, b"\x89PNG\r\n\x1a\n\x00\x00", "corrupt").await;
    let newer = good.replace("\"version\": 1", "\"version\": 7");
    refused(&etcd, &prefix, newer.as_bytes(), "format version 7").await;
    let other = good.replace(
        "\"service\": \"hello\",\n  \"prefix\"",
        "\"service\": \"other\",\n  \"prefix\"",
    );
    assert_ne!(other, good);
    refused(
        &etcd,
        &prefix,
        other.as_bytes(),
        "belongs to service \"other\"",
    )
    .await;
    node.kill().await;
}
