//! A rolling restart on a real etcd: three `hello-service` processes behind the `gateway`,
//! each stopped with SIGTERM (it drains: marked draining, still serving for its grace period,
//! then deregistered) and started again with the same id, one after another, while a client
//! calls through the gateway without pause. Not one call may fail, and none may even need the
//! gateway's retry on another node: draining takes a node out of the picks before it stops,
//! where a plain deregistration would leave calls on their way to a stopping server (the retry
//! would hide those from the client, so the test counts retries too).

mod support;

use registry_etcd::testing::{shared_endpoints, unique_key_prefix};
use registry_examples::gateway::{endpoint, RETRIED_FROM};
use registry_examples::proto::greeter_client::GreeterClient;
use registry_examples::proto::HelloRequest;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::Child;
use tokio::time::{timeout, Instant};

/// How long a stopping node stays registered as draining while it still serves.
const DRAIN_GRACE_MS: &str = "1000";

/// Starts `binary` on the test's etcd and key prefix.
fn spawn(etcd: &str, prefix: &str, binary: &str, args: &[&str]) -> Child {
    let mut all = vec!["--etcd", etcd, "--key-prefix", prefix];
    all.extend_from_slice(args);
    support::spawn(binary, &all)
}

fn hello(etcd: &str, prefix: &str, id: &str) -> Child {
    spawn(
        etcd,
        prefix,
        env!("CARGO_BIN_EXE_hello-service"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--id",
            id,
            "--ttl",
            "5",
            "--drain-grace-ms",
            DRAIN_GRACE_MS,
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_behind_the_gateway_fails_no_call() {
    let etcd = shared_endpoints()
        .expect("an etcd server for the tests")
        .join(",");
    let prefix = unique_key_prefix("rolling-restart");
    let ids = ["a", "b", "c"];
    let mut nodes = Vec::new();
    for id in ids {
        let mut node = hello(&etcd, &prefix, id);
        node.wait_line("registered").await;
        nodes.push(node);
    }
    let mut gateway = spawn(
        &etcd,
        &prefix,
        env!("CARGO_BIN_EXE_gateway"),
        &["--listen", "127.0.0.1:0"],
    );
    let address = gateway.wait_line("listening on").await;
    for _ in ids {
        gateway.wait_line("node joined").await;
    }

    // The client: one call after another, each bounded, for as long as the restarts take.
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let retried = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (ok, failed, retried, stop) =
            (ok.clone(), failed.clone(), retried.clone(), stop.clone());
        let mut client = GreeterClient::new(endpoint(&address).expect("an address").connect_lazy());
        tokio::spawn(async move {
            let started = Instant::now();
            while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(120) {
                let call = client.say_hello(HelloRequest {
                    name: "rolling".into(),
                });
                match timeout(Duration::from_secs(5), call).await {
                    Ok(Ok(response)) => {
                        if let Some(from) = response.metadata().get(RETRIED_FROM) {
                            eprintln!("call retried after {from:?} failed");
                            retried.fetch_add(1, Ordering::SeqCst);
                        }
                        ok.fetch_add(1, Ordering::SeqCst)
                    }
                    Ok(Err(status)) => {
                        eprintln!("call failed: {status}");
                        failed.fetch_add(1, Ordering::SeqCst)
                    }
                    Err(_) => {
                        eprintln!("call timed out");
                        failed.fetch_add(1, Ordering::SeqCst)
                    }
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    for (node, id) in nodes.iter_mut().zip(ids) {
        let before = ok.load(Ordering::SeqCst);
        assert!(
            node.terminate_echoing_rest().await,
            "{id} exits cleanly on SIGTERM"
        );
        *node = hello(&etcd, &prefix, id);
        node.wait_line("registered").await;
        // Wait until the gateway routes to the new process before stopping the next one.
        loop {
            let line = gateway.wait_line("node ").await;
            if line.starts_with(&format!("joined {id} ")) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            ok.load(Ordering::SeqCst) > before,
            "calls kept flowing while {id} restarted"
        );
    }
    stop.store(true, Ordering::SeqCst);
    client.await.expect("the client task");
    let (ok, failed, retried) = (
        ok.load(Ordering::SeqCst),
        failed.load(Ordering::SeqCst),
        retried.load(Ordering::SeqCst),
    );
    eprintln!(
        "rolling restart of 3 nodes: {ok} calls succeeded ({retried} of them retried), {failed} failed"
    );
    assert!(ok > 100, "only {ok} calls");
    assert_eq!(failed, 0, "{failed} of {} calls failed", ok + failed);
    assert_eq!(retried, 0, "{retried} calls reached a stopping node first");
    for node in &mut nodes {
        assert!(node.terminate_echoing_rest().await);
    }
}
