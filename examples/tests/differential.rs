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

/// How many sequences: a few dozen, about 10 s on etcd (`DIFFERENTIAL_SEQUENCES` for more).
const SEQUENCES: usize = 36;
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
