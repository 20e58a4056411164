//! Interop with Go through etcd's Go naming layout, against a real Go program: `etcd-naming`
//! (`examples/go/etcd-naming`), built by `scripts/install-go.sh` from Debian's grpc-go 1.64 and
//! etcd client v3 3.5.16 (`naming/endpoints`, `naming/resolver`), on the real etcd of the tests.
//!
//! - Go clients on `etcd:///<target>` follow Rust `hello-service` nodes through a SIGKILL and a
//!   join, with grpc-go's default balancer (pick_first) and with round_robin: no panic, no
//!   failed call once the killed node's entry is gone. With `--go-metadata object`, the old
//!   default, the same pick_first client panics: the trap is real and this harness sees it.
//! - Go services registered with `endpoints.Manager.AddEndpoint` are read by the Rust side
//!   (`go_naming::list`) next to Rust nodes, and a Rust gRPC client dialing a discovered address
//!   is answered by the Go server.
//!
//! Each test starts its own etcd on 127.0.0.1. The Go binary: `$REGISTRY_GO_NAMING_BIN` when set (`scripts/test.sh` builds it first), else
//! this test runs `scripts/install-go.sh` itself (about 75 MB and a minute or more, once).
//! It never skips: if Go cannot be installed, the tests fail and say why.

mod support;

use registry_api::{ListOptions, Registry};
use registry_etcd::testing::EtcdServer;
use registry_etcd::EtcdRegistry;
use registry_examples::gateway::endpoint;
use registry_examples::go_naming::{self, GoEndpoint, GoTarget};
use registry_examples::proto::greeter_client::GreeterClient;
use registry_examples::proto::HelloRequest;
use registry_service::{Metadata, ServiceInstance};
use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::{spawn_capturing_stderr, Child};
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

/// The environment variable naming a built `etcd-naming` binary.
const GO_BIN_ENV: &str = "REGISTRY_GO_NAMING_BIN";
/// The lease TTL of the Rust nodes: how long a killed node stays listed.
const TTL_SECS: u64 = 2;
/// How many calls each Go client makes, 40 ms apart.
const CALLS: u32 = 300;
/// The longest a Go `call` run may take in all (its calls take about 12 s).
const RUN_TIMEOUT: Duration = Duration::from_secs(40);

/// The Go program, built once per test process.
fn go_bin() -> &'static str {
    static BIN: OnceLock<Result<String, String>> = OnceLock::new();
    let built = BIN.get_or_init(|| {
        if let Ok(bin) = std::env::var(GO_BIN_ENV) {
            if !bin.is_empty() {
                return Ok(bin);
            }
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/install-go.sh");
        let output = std::process::Command::new("bash")
            .arg(script)
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("could not run {script}: {e}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        match stdout.lines().last() {
            Some(bin) if output.status.success() => Ok(bin.trim().to_owned()),
            _ => Err(format!("{script} failed ({})", output.status)),
        }
    });
    match built {
        Ok(bin) => bin,
        Err(why) => panic!(
            "the Go interop tests need the Go client: {why}. It is built from Debian trixie's \
             packages by scripts/install-go.sh; set {GO_BIN_ENV} to a built binary otherwise"
        ),
    }
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

/// One test's own etcd. Not the shared one with a key prefix per test: the Go program would
/// need the prefix in its target, and a target with `/` breaks Go-to-Rust calls (see
/// [`a_go_target_with_a_slash_needs_an_authority_for_rust_servers`]).
struct Setup {
    _etcd: EtcdServer,
    endpoints: String,
}

impl Setup {
    async fn new() -> Setup {
        // Build the Go program first (once, maybe minutes), off the async workers.
        tokio::task::spawn_blocking(go_bin)
            .await
            .expect("the Go build task");
        let etcd = tokio::task::spawn_blocking(EtcdServer::start)
            .await
            .expect("the etcd start task")
            .expect("an etcd server for the test");
        Setup {
            endpoints: etcd.endpoint(),
            _etcd: etcd,
        }
    }

    async fn registry(&self) -> EtcdRegistry {
        EtcdRegistry::connect([self.endpoints.clone()])
            .await
            .expect("connects to etcd")
    }

    /// A Rust hello node publishing under the Go target `hello` (or another one in `extra`).
    fn hello(&self, id: &str, extra: &[&str]) -> Child {
        let ttl = TTL_SECS.to_string();
        let mut args = vec![
            "--etcd",
            &self.endpoints,
            "--listen",
            "127.0.0.1:0",
            "--id",
            id,
            "--ttl",
            &ttl,
        ];
        if !extra.contains(&"--go-target") {
            args.extend(["--go-target", "hello"]);
        }
        args.extend_from_slice(extra);
        spawn_capturing_stderr(env!("CARGO_BIN_EXE_hello-service"), &args)
    }

    /// The Go program: `etcd-naming --etcd <endpoints> <command> <target> <args>`.
    fn go(&self, command: &str, target: &str, args: &[&str]) -> Child {
        let mut all = vec!["--etcd", &self.endpoints, command, target];
        all.extend_from_slice(args);
        spawn_capturing_stderr(go_bin(), &all)
    }

    /// A Go client making `n` calls through `etcd:///hello` with `policy`.
    fn go_call(&self, policy: &str, n: u32) -> Child {
        let n = n.to_string();
        self.go(
            "call",
            "hello",
            &["--policy", policy, "--n", &n, "--interval", "40ms"],
        )
    }

    /// What Go's `endpoints.Manager.List` sees under `hello`: (key, addr, metadata).
    async fn go_list(&self) -> Vec<(String, String, String)> {
        let mut list = self.go("list", "hello", &[]);
        let (ok, lines, stderr) = list.finish(RUN_TIMEOUT).await;
        assert!(ok, "etcd-naming list failed: {stderr}");
        lines
            .iter()
            .map(|line| {
                let words: Vec<&str> = line.splitn(4, ' ').collect();
                assert_eq!(words.len(), 4, "{line}");
                assert_eq!(words[0], "endpoint", "{line}");
                (
                    words[1].to_owned(),
                    words[2].to_owned(),
                    words[3].to_owned(),
                )
            })
            .collect()
    }
}

/// One line of `etcd-naming call`: `call <seq> <unix ms> ok <node> <address>` or
/// `call <seq> <unix ms> err <code> <message>`.
#[derive(Debug)]
struct Call {
    at_ms: u128,
    ok: bool,
    /// The node that answered, or the error.
    what: String,
}

fn parse_calls(lines: &[String]) -> Vec<Call> {
    lines
        .iter()
        .filter(|line| line.starts_with("call "))
        .map(|line| {
            let words: Vec<&str> = line.splitn(5, ' ').collect();
            assert_eq!(words.len(), 5, "{line}");
            Call {
                at_ms: words[2].parse().expect("a timestamp"),
                ok: words[3] == "ok",
                what: words[4].split(' ').next().unwrap_or_default().to_owned(),
            }
        })
        .collect()
}

/// Reads stdout until the first answered call; returns its node and the lines read.
async fn first_node(client: &mut Child) -> (String, Vec<String>) {
    let mut read = Vec::new();
    loop {
        let line = client.next_line().await;
        let words: Vec<&str> = line.split(' ').collect();
        let node = (words.first() == Some(&"call") && words.get(3) == Some(&"ok"))
            .then(|| words.get(4).map(|w| (*w).to_owned()))
            .flatten();
        read.push(line);
        if let Some(node) = node {
            return (node, read);
        }
    }
}

/// Everything a Go call client printed, after it ran to the end.
struct CallRun {
    ok: bool,
    calls: Vec<Call>,
    summary: Option<String>,
    stderr: String,
}

/// Runs `client` to the end in the background; `earlier` are the lines already read from it.
fn collect(mut client: Child, mut earlier: Vec<String>) -> JoinHandle<CallRun> {
    tokio::spawn(async move {
        let (ok, rest, stderr) = client.finish(RUN_TIMEOUT).await;
        earlier.extend(rest);
        let lines = earlier;
        CallRun {
            ok,
            calls: parse_calls(&lines),
            summary: lines.iter().find(|l| l.starts_with("summary")).cloned(),
            stderr,
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_clients_on_pick_first_and_round_robin_follow_a_kill_and_a_join() {
    let setup = Setup::new().await;
    let mut a = setup.hello("a", &[]);
    let mut b = setup.hello("b", &[]);
    let addr_a = a.wait_line("listening on").await;
    let addr_b = b.wait_line("listening on").await;
    a.wait_line("published").await;
    b.wait_line("published").await;

    // Go's endpoints.Manager lists both, with the value Go itself writes.
    let listed = setup.go_list().await;
    let expected: BTreeSet<(String, String, String)> = [&addr_a, &addr_b]
        .into_iter()
        .map(|addr| (format!("hello/{addr}"), addr.clone(), "null".to_owned()))
        .collect();
    assert_eq!(listed.into_iter().collect::<BTreeSet<_>>(), expected);

    let mut watch = setup.go("watch", "hello", &["--for", "25s"]);
    watch.wait_line("ready").await;
    let initial: BTreeSet<String> = [watch.next_line().await, watch.next_line().await]
        .into_iter()
        .collect();
    let expected: BTreeSet<String> = [&addr_a, &addr_b]
        .into_iter()
        .map(|addr| format!("add hello/{addr} {addr} null"))
        .collect();
    assert_eq!(initial, expected);

    // 300 calls 40 ms apart: about 12 s, across the kill (after ~1 s), the removal (~3 s
    // later) and the join.
    let mut pick_first = setup.go_call("pick_first", CALLS);
    let round_robin = collect(setup.go_call("round_robin", CALLS), Vec::new());

    // pick_first sticks to one node: crash that one.
    let (victim, read) = first_node(&mut pick_first).await;
    let pick_first = collect(pick_first, read);
    let (victim_proc, victim_addr, survivor) = match victim.as_str() {
        "a" => (&mut a, &addr_a, "b"),
        "b" => (&mut b, &addr_b, "a"),
        other => panic!("pick_first called {other}"),
    };
    victim_proc.kill().await;
    let killed = Instant::now();

    // Its entry goes when its lease expires; the Go watch sees it.
    let deleted = format!("delete hello/{victim_addr}");
    loop {
        let line = watch.next_line().await;
        if line == deleted {
            break;
        }
        assert!(!line.starts_with("delete"), "unexpected {line}");
    }
    let removed_ms = unix_ms();
    let removed_after = killed.elapsed();
    assert!(
        removed_after <= Duration::from_secs(TTL_SECS + 3),
        "removed {removed_after:?} after the kill, TTL {TTL_SECS} s"
    );

    // A node joins.
    let mut c = setup.hello("c", &[]);
    let addr_c = c.wait_line("listening on").await;
    c.wait_line("published").await;
    assert_eq!(
        watch.next_line().await,
        format!("add hello/{addr_c} {addr_c} null")
    );
    let joined_ms = unix_ms();

    for (policy, run) in [("pick_first", pick_first), ("round_robin", round_robin)] {
        let run = run.await.expect("the collector");
        eprintln!(
            "{policy}: {} calls, {} failed ({:?})",
            run.calls.len(),
            run.calls.iter().filter(|c| !c.ok).count(),
            run.summary
        );
        assert!(
            !run.stderr.contains("panic"),
            "the Go {policy} client panicked:\n{}",
            run.stderr
        );
        assert!(run.ok, "the Go {policy} client failed:\n{}", run.stderr);
        assert_eq!(
            run.calls.len(),
            CALLS as usize,
            "{policy}: every call reported"
        );
        let after: Vec<&Call> = run.calls.iter().filter(|c| c.at_ms > removed_ms).collect();
        assert!(
            after.len() >= 20,
            "{policy}: only {} calls after the removal; the run ended too early",
            after.len()
        );
        let failed: Vec<&&Call> = after.iter().filter(|c| !c.ok).collect();
        assert!(
            failed.is_empty(),
            "{policy}: calls failed after the removal: {failed:?}"
        );
        assert!(
            after.iter().all(|c| c.what != victim),
            "{policy}: the killed node answered"
        );
        let after_join: BTreeSet<&str> = run
            .calls
            .iter()
            .filter(|c| c.at_ms > joined_ms + 500)
            .map(|c| c.what.as_str())
            .collect();
        if policy == "round_robin" {
            assert_eq!(
                after_join,
                BTreeSet::from([survivor, "c"]),
                "round_robin spreads over the survivor and the new node"
            );
        } else {
            assert_eq!(after_join.len(), 1, "pick_first sticks to one node");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_metadata_crashes_a_go_pick_first_client_at_the_first_removal_not_round_robin() {
    // The old default, kept as an opt-in: this proves the trap exists in the grpc-go of this
    // test, and that the assertions above would catch it.
    let setup = Setup::new().await;
    let object = ["--go-metadata", "object", "--meta", "zone=z1"];
    let mut a = setup.hello("a", &object);
    let mut b = setup.hello("b", &object);
    a.wait_line("published").await;
    b.wait_line("published").await;
    let listed = setup.go_list().await;
    assert_eq!(listed.len(), 2);
    assert!(listed
        .iter()
        .all(|(_, _, md)| md.contains(r#""zone":"z1""#)));

    let mut pick_first = setup.go_call("pick_first", CALLS);
    let round_robin = collect(setup.go_call("round_robin", CALLS), Vec::new());
    let (victim, read) = first_node(&mut pick_first).await;
    match victim.as_str() {
        "a" => a.kill().await,
        "b" => b.kill().await,
        other => panic!("pick_first called {other}"),
    }
    let run = collect(pick_first, read).await.expect("the collector");
    assert!(!run.ok, "the Go pick_first client survived object metadata");
    assert!(
        run.stderr
            .contains("comparing uncomparable type map[string]interface {}"),
        "{}",
        run.stderr
    );
    assert!(run.summary.is_none(), "it died before the end of its calls");
    let died_ms = run.calls.last().map_or(0, |c| c.at_ms);
    eprintln!(
        "object metadata: pick_first panicked after {} of {CALLS} calls",
        run.calls.len()
    );

    // round_robin never compares metadata: it lives through the same removal.
    let rr = round_robin.await.expect("the collector");
    assert!(rr.ok && !rr.stderr.contains("panic"), "{}", rr.stderr);
    assert_eq!(rr.calls.len(), CALLS as usize);
    assert!(
        rr.calls.iter().filter(|c| c.at_ms > died_ms + 1000).count() > 20,
        "round_robin kept calling after pick_first died"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_reads_go_registered_nodes_beside_its_own_and_calls_them() {
    let setup = Setup::new().await;
    let registry = setup.registry().await;
    let target = GoTarget::new("hello").expect("a target");

    // Two Go services registered the standard Go way (AddEndpoint with a lease kept alive),
    // one without metadata and one with a string map; and one Rust node.
    let mut go1 = setup.go("register", "hello", &["--id", "go-1", "--ttl", "5"]);
    let mut go2 = setup.go(
        "register",
        "hello",
        &[
            "--id",
            "go-2",
            "--ttl",
            "5",
            "--metadata",
            r#"{"zone":"go-zone","version":"1.4.0","team":"payments"}"#,
        ],
    );
    let mut rust = setup.hello("r", &[]);
    let addr_go1 = go1.wait_line("listening on").await;
    let addr_go2 = go2.wait_line("listening on").await;
    let addr_rust = rust.wait_line("listening on").await;
    go1.wait_line("registered").await;
    go2.wait_line("registered").await;
    rust.wait_line("published").await;

    // What Go wrote is byte for byte what we write by default.
    let go_written = registry
        .get(target.key(&addr_go1).unwrap().as_bytes())
        .await
        .unwrap()
        .kv
        .expect("the Go key");
    assert_eq!(
        go_written.value,
        GoEndpoint::new(addr_go1.clone()).to_json()
    );
    assert!(go_written.lease.is_some(), "Go attached a lease");

    // One list, Go and Rust nodes alike.
    let instances = go_naming::list(&registry, &target).await.expect("lists");
    let by_address: BTreeSet<(String, String, Option<String>)> = instances
        .iter()
        .map(|i| {
            assert_eq!(i.service, "hello");
            assert_eq!(
                i.id, i.address,
                "the id is the key's last segment: the address"
            );
            (
                i.address.clone(),
                i.service.clone(),
                i.metadata.zone.clone(),
            )
        })
        .collect();
    assert_eq!(
        by_address,
        BTreeSet::from([
            (addr_go1.clone(), "hello".into(), None),
            (addr_go2.clone(), "hello".into(), Some("go-zone".into())),
            (addr_rust.clone(), "hello".into(), None),
        ])
    );
    let go2_instance = instances
        .iter()
        .find(|i| i.address == addr_go2)
        .expect("go-2 is listed");
    assert_eq!(
        go2_instance.metadata,
        Metadata::default()
            .with_zone("go-zone")
            .with_version("1.4.0")
            .with_label("team", "payments")
    );

    // With our own layout, one list: the Rust node once, under its own id.
    let ours = registry
        .list(b"services/hello/", ListOptions::default())
        .await
        .expect("lists")
        .kvs
        .iter()
        .map(|kv| ServiceInstance::from_json(&kv.value).expect("ours"))
        .collect::<Vec<_>>();
    let fleet: BTreeSet<String> = go_naming::merge(&ours, &instances)
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(
        fleet,
        BTreeSet::from([addr_go1.clone(), addr_go2.clone(), "r".to_owned()])
    );

    // A Rust gRPC client dialing each discovered address is answered by that node.
    let mut answered = BTreeSet::new();
    for instance in &instances {
        let channel = endpoint(&instance.address)
            .expect("an address")
            .connect_lazy();
        let reply = timeout(
            Duration::from_secs(5),
            GreeterClient::new(channel).say_hello(HelloRequest {
                name: "rust".into(),
            }),
        )
        .await
        .expect("answers within 5 s")
        .expect("the call succeeds")
        .into_inner();
        assert_eq!(reply.message, "Hello, rust!");
        assert_eq!(reply.address, instance.address);
        answered.insert(reply.node);
    }
    assert_eq!(
        answered,
        BTreeSet::from(["go-1".to_owned(), "go-2".to_owned(), "r".to_owned()])
    );

    // The Rust gateway fronts the mixed fleet: `--go-target` follows the Go-registered
    // endpoints beside our own, and its calls are served by Go and Rust nodes alike.
    let mut gateway = spawn_capturing_stderr(
        env!("CARGO_BIN_EXE_gateway"),
        &[
            "--etcd",
            &setup.endpoints,
            "--go-target",
            "hello",
            "--pick",
            "round-robin",
            "--listen",
            "127.0.0.1:0",
        ],
    );
    let gateway_address = gateway.wait_line("listening on").await;
    let channel = endpoint(&gateway_address)
        .expect("an address")
        .connect_lazy();
    let mut client = GreeterClient::new(channel);
    let mut served = BTreeSet::new();
    for _ in 0..12 {
        let reply = timeout(
            Duration::from_secs(5),
            client.say_hello(HelloRequest {
                name: "via gateway".into(),
            }),
        )
        .await
        .expect("the gateway answers within 5 s")
        .expect("the forwarded call succeeds")
        .into_inner();
        served.insert(reply.node);
    }
    assert_eq!(
        served,
        BTreeSet::from(["go-1".to_owned(), "go-2".to_owned(), "r".to_owned()]),
        "the gateway serves calls from Go-registered nodes and its own"
    );
    drop(gateway);

    // The CLI lists the mixed fleet too.
    let mut cli = spawn_capturing_stderr(
        env!("CARGO_BIN_EXE_registry"),
        &[
            "list",
            "hello",
            "--go-target",
            "--json",
            "--etcd",
            &setup.endpoints,
        ],
    );
    let (ok, lines, stderr) = cli.finish(RUN_TIMEOUT).await;
    assert!(ok, "registry list --go-target fails: {stderr}");
    let listed: Vec<ServiceInstance> =
        serde_json::from_str(&lines.join("\n")).expect("the CLI prints instances as JSON");
    let ids: BTreeSet<String> = listed.into_iter().map(|i| i.id).collect();
    assert_eq!(
        ids,
        BTreeSet::from([addr_go1.clone(), addr_go2.clone(), "r".to_owned()])
    );

    // A Go service that stops deletes its endpoint: gone from the Rust list at once.
    assert!(go1.terminate().await, "etcd-naming register stops cleanly");
    let left: BTreeSet<String> = go_naming::list(&registry, &target)
        .await
        .expect("lists")
        .into_iter()
        .map(|i| i.address)
        .collect();
    assert_eq!(left, BTreeSet::from([addr_go2, addr_rust]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_target_with_a_slash_needs_an_authority_for_rust_servers() {
    // grpc-go sends the target's path as `:authority`; `team/hello` is not a valid authority,
    // and the HTTP/2 server under tonic resets such streams. Go servers accept it, so this only
    // bites Go clients of Rust servers, and `grpc.WithAuthority` is the cure.
    let setup = Setup::new().await;
    let mut node = setup.hello("t", &["--go-target", "team/hello"]);
    node.wait_line("published team/hello/").await;

    let mut plain = setup.go("call", "team/hello", &["--n", "3", "--interval", "10ms"]);
    let (ok, lines, stderr) = plain.finish(RUN_TIMEOUT).await;
    assert!(ok, "{stderr}");
    let calls = parse_calls(&lines);
    assert_eq!(calls.len(), 3);
    assert!(
        calls.iter().all(|c| !c.ok && c.what == "Internal"),
        "{lines:?}"
    );
    assert!(lines[0].contains("PROTOCOL_ERROR"), "{lines:?}");

    let mut with_authority = setup.go(
        "call",
        "team/hello",
        &["--n", "3", "--interval", "10ms", "--authority", "hello"],
    );
    let (ok, lines, stderr) = with_authority.finish(RUN_TIMEOUT).await;
    assert!(ok, "{stderr}");
    let calls = parse_calls(&lines);
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|c| c.ok && c.what == "t"), "{lines:?}");
}
