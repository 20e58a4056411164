//! The simulator may stand in for etcd: the same generated sequences, run on `MemoryRegistry`
//! and on a real etcd, give identical observations (every result, every watched event, the
//! final state; revisions relative to each sequence's first, leases by grant order).

use async_trait::async_trait;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use registry_api::Registry;
use registry_conformance::{ops_strategy, run, Backend, Capabilities, Op, Outcome, Time};
use registry_etcd::testing::{unique_key_prefix, EtcdServer};
use registry_etcd::EtcdRegistry;
use registry_memory::MemoryRegistry;
use std::sync::Arc;
use std::time::Duration;

/// How many sequences: a few dozen, about 11 s on etcd (`DIFFERENTIAL_SEQUENCES` for more). A
/// quarter of the generated watches start ahead of the store and see fewer events, so it runs
/// more than the 36 it ran before they did.
const SEQUENCES: usize = 48;
/// The generator's seed: the same sequences on every run.
const SEED: [u8; 32] = *b"registry differential check 0001";

/// A fresh simulator per sequence. No sequence here advances time.
#[derive(Debug)]
struct Simulator;

#[async_trait]
impl Backend for Simulator {
    async fn registry(&self) -> Arc<dyn Registry> {
        Arc::new(MemoryRegistry::with_manual_clock())
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::simulator()
    }
    async fn advance(&self, _by: Duration) {}
}

/// One real etcd; a fresh client and namespace per sequence.
#[derive(Debug)]
struct Etcd {
    endpoints: Vec<String>,
}

#[async_trait]
impl Backend for Etcd {
    async fn registry(&self) -> Arc<dyn Registry> {
        match EtcdRegistry::builder(self.endpoints.clone())
            .key_prefix(unique_key_prefix("differential"))
            .connect()
            .await
        {
            Ok(registry) => Arc::new(registry),
            Err(e) => panic!("cannot connect to etcd: {e}"),
        }
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::etcd()
    }
    async fn advance(&self, _by: Duration) {}
}

/// Sequences for real time (long TTLs, no time advances), from the fixed seed.
fn sequences(count: usize) -> Vec<Vec<Op>> {
    let strategy = ops_strategy(&Capabilities::etcd().with_time(Time::Real));
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &SEED);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    (0..count)
        .map(|_| match strategy.new_tree(&mut runner) {
            Ok(tree) => tree.current(),
            Err(why) => panic!("cannot generate a sequence: {why}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_and_etcd_observe_the_same() {
    let server = match EtcdServer::start() {
        Ok(server) => server,
        Err(e) => panic!("etcd did not start: {e}"),
    };
    let etcd = Etcd {
        endpoints: server.endpoints(),
    };
    let count = std::env::var("DIFFERENTIAL_SEQUENCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SEQUENCES);
    let (mut steps, mut failed, mut events) = (0, 0, 0);
    for (i, ops) in sequences(count).iter().enumerate() {
        let simulated = run(&Simulator, ops).await;
        let real = run(&etcd, ops).await;
        if let Some(diff) = simulated.diff(&real) {
            panic!("sequence {i} differs (left: simulator, right: etcd): {diff}\nops: {ops:#?}");
        }
        steps += real.steps.len();
        failed += real
            .steps
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Failed(_)))
            .count();
        events += real
            .watches
            .iter()
            .flat_map(|w| &w.batches)
            .map(|b| b.events.len())
            .sum::<usize>();
    }
    // The comparison only means something if the sequences did things, failures included.
    assert!(steps > 10 * count, "only {steps} steps");
    assert!(failed > 0, "no sequence exercised a failing call");
    assert!(events > 100, "only {events} watched events");
}

/// What a watch from a revision beyond the current one sees, written down step by step with
/// revisions relative to the store's revision when it began: the progress answers (or their
/// absence) and the events. etcd's answers are the reference; the simulator must give the same.
async fn future_start_log(registry: Arc<dyn Registry>) -> Vec<String> {
    use futures::StreamExt;
    use registry_api::{ListOptions, PutOptions, Revision, WatchOptions};
    let wait = Duration::from_secs(2);
    let mut log = Vec::new();
    let base = match registry.list(b"f/", ListOptions::default()).await {
        Ok(list) => list.revision,
        Err(e) => panic!("list failed: {e}"),
    };
    let rel = |r: Revision| r.0 - base.0;
    let open = |start: i64| {
        let registry = registry.clone();
        async move {
            match registry
                .watch(b"f/", WatchOptions::from_revision(Revision(base.0 + start)))
                .await
            {
                Ok(stream) => stream,
                Err(e) => panic!("a watch from +{start} failed at once: {e}"),
            }
        }
    };
    let mut near = open(5).await;
    let mut far = open(1_000_000).await;
    for (name, stream) in [("near", &mut near), ("far", &mut far)] {
        let asked = stream.request_progress().await;
        let answer = tokio::time::timeout(wait, stream.next()).await;
        log.push(match (asked, answer) {
            (Err(e), _) => format!("{name}: progress request failed: {e}"),
            (Ok(()), Err(_)) => format!("{name}: no answer to a progress request"),
            (Ok(()), Ok(Some(Ok(b)))) => format!(
                "{name}: answered with {} events at +{}",
                b.events.len(),
                rel(b.revision)
            ),
            (Ok(()), Ok(other)) => format!("{name}: answered {other:?}"),
        });
    }
    for i in 0..8 {
        if let Err(e) = registry
            .put(format!("f/{i}").as_bytes(), b"v", PutOptions::default())
            .await
        {
            panic!("put failed: {e}");
        }
    }
    loop {
        match tokio::time::timeout(wait, near.next()).await {
            Ok(Some(Ok(b))) => {
                log.push(format!(
                    "near: {} events at +{}",
                    b.events.len(),
                    rel(b.revision)
                ));
                if rel(b.revision) >= 8 {
                    break;
                }
            }
            other => {
                log.push(format!("near: then {other:?}"));
                break;
            }
        }
    }
    let asked = far.request_progress().await.is_ok();
    let answer = tokio::time::timeout(wait, far.next()).await;
    log.push(match answer {
        Ok(Some(Ok(b))) => format!(
            "far (asked: {asked}): {} events at +{}",
            b.events.len(),
            rel(b.revision)
        ),
        Ok(other) => format!("far (asked: {asked}): {other:?}"),
        Err(_) => format!("far (asked: {asked}): nothing"),
    });
    log
}

/// A watch from a future revision starts exactly there, on etcd 3.5.16 as on the simulator:
/// nothing below its start is delivered, a progress request is answered at the current
/// revision (below the start), and a watch far ahead stays silent through writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_future_revision_starts_there_on_both() {
    let server = match EtcdServer::start() {
        Ok(server) => server,
        Err(e) => panic!("etcd did not start: {e}"),
    };
    let etcd = Etcd {
        endpoints: server.endpoints(),
    };
    let real = future_start_log(etcd.registry().await).await;
    let simulated = future_start_log(Simulator.registry().await).await;
    println!("etcd:\n  {}", real.join("\n  "));
    assert_eq!(
        simulated, real,
        "the simulator differs from etcd (left: simulator)"
    );
}
