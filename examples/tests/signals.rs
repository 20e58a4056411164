//! Every long-running binary stops cleanly on a SIGTERM sent the moment it prints a line: a
//! supervisor (or a test) that stops a process right after it says it is ready must see a
//! clean exit, not death by the signal's default action.
//!
//! CI once saw `registry register --json` die that way: it printed its line before it listened
//! for SIGTERM, and the test's SIGTERM landed in between. Each binary is stopped at each of its
//! first lines several times, so a window of a few microseconds still shows.
//!
//! `hello-service` and `gateway` run on the in-memory default; the `registry` subcommands need
//! etcd, and use the etcd shared by this test binary under a key prefix of their own.

mod support;

use registry_etcd::testing::{shared_endpoints, unique_key_prefix};
use support::Child;

/// How many times each binary is stopped at each line it prints while starting.
const ROUNDS: usize = 8;

/// Starts `binary args` `ROUNDS` times for each of its first `lines` stdout lines, sends
/// SIGTERM as soon as that line is read, and asserts a clean exit every time.
async fn stops_cleanly_at_each_line(binary: &str, args: &[&str], lines: usize) {
    for line in 1..=lines {
        for round in 0..ROUNDS {
            let mut child: Child = support::spawn(binary, args);
            for _ in 0..line {
                child.next_line().await;
            }
            assert!(
                child.terminate().await,
                "{binary} {args:?}: SIGTERM right after line {line} (round {round}) was not a \
                 clean stop"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_service_stops_cleanly_on_sigterm_right_after_each_line() {
    // `listening on ...`, then `registered ...`.
    stops_cleanly_at_each_line(
        env!("CARGO_BIN_EXE_hello-service"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--ttl",
            "2",
            "--drain-grace-ms",
            "0",
        ],
        2,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_stops_cleanly_on_sigterm_right_after_each_line() {
    // `listening on ...`, then `forwarding to ...`.
    stops_cleanly_at_each_line(
        env!("CARGO_BIN_EXE_gateway"),
        &["--listen", "127.0.0.1:0"],
        2,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_commands_stop_cleanly_on_sigterm_right_after_their_first_line() {
    let endpoint = shared_endpoints()
        .expect("an etcd server for the tests")
        .join(",");
    let prefix = unique_key_prefix("signals");
    let registry = env!("CARGO_BIN_EXE_registry");
    let etcd = ["--etcd", endpoint.as_str(), "--key-prefix", prefix.as_str()];
    let with_etcd = |args: &[&'static str]| -> Vec<&str> {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(etcd);
        all
    };
    for args in [
        &["register", "hello", "127.0.0.1:9001", "--id", "a"][..],
        &["register", "hello", "127.0.0.1:9001", "--id", "a", "--json"],
        &["watch", "hello"],
        &["ui", "--listen", "127.0.0.1:0"],
        &["ui", "--listen", "127.0.0.1:0", "--json"],
    ] {
        stops_cleanly_at_each_line(registry, &with_etcd(args), 1).await;
    }
}
