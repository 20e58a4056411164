//! The seeded fleet search on the simulator: 5 services x 2 instances and 2 gateways, each on
//! its own client link, under a thousand seeded fault plans of two virtual minutes each; the
//! same seed gives the same run; and the search catches three broken service layers.

use registry_api::wrap::Link;
use registry_api::{async_trait, LeaseId, Registry};
use registry_conformance::fleet::{run_seed, search, search_test, FleetOptions, Mutant};
use registry_conformance::service::{ServiceBackend, ServiceCapabilities};
use registry_memory::MemoryRegistry;
use std::sync::Arc;
use std::time::Duration;

/// The simulator as the fleet (and the service-layer suite) sees it: one server, named clients
/// on their own links.
struct Simulator {
    server: MemoryRegistry,
}

fn simulator() -> Simulator {
    Simulator {
        server: MemoryRegistry::new(),
    }
}

#[async_trait]
impl ServiceBackend for Simulator {
    async fn client(&self, name: &str) -> Arc<dyn Registry> {
        Arc::new(self.server.client(name))
    }

    fn capabilities(&self) -> ServiceCapabilities {
        ServiceCapabilities::simulator()
    }

    async fn partition(&self, name: &str, cut: bool) {
        let link = self.server.link(name);
        if cut {
            link.partition();
        } else {
            link.heal();
        }
    }

    async fn outage(&self, down: bool) {
        self.server.set_unavailable(down);
    }

    async fn expire_lease(&self, lease: LeaseId) {
        // Gone already is fine: the plan does not know what the fleet did meanwhile.
        let _ = self.server.expire_lease(lease);
    }

    fn link(&self, name: &str) -> Option<Link> {
        Some(self.server.link(name))
    }

    async fn leader_change(&self, extra: Duration) -> bool {
        self.server.leader_change(extra);
        true
    }
}

registry_conformance::fleet_search!(simulator, seeds = 1000);

#[test]
fn the_same_seed_gives_the_same_run_byte_for_byte() {
    let options = FleetOptions::default();
    let first = run_seed(&simulator, 42, &options);
    let again = run_seed(&simulator, 42, &options);
    assert!(first.passed(), "{:?}", first.violations);
    assert!(first.routes > 0 && first.events > 0 && !first.plan.steps.is_empty());
    assert_eq!(first, again, "same seed, same report and event-log hash");
    let other = run_seed(&simulator, 43, &options);
    assert_ne!(first.log_hash, other.log_hash);
    for seed in 0..4 {
        let hashes = [0, 1].map(|_| run_seed(&simulator, seed, &options).log_hash);
        assert_eq!(hashes[0], hashes[1], "seed {seed} ran differently twice");
    }
    println!(
        "seed 42: {} faults, {} routes, {} events, log hash {:016x}, settled {:?} after the heal",
        first.plan.steps.len(),
        first.routes,
        first.events,
        first.log_hash,
        first.settled_after
    );
}

/// The search must find each broken layer within this many seeds.
const CATCH_WITHIN: u64 = 20;

fn catches(mutant: Mutant) {
    let report = search(
        simulator,
        0..CATCH_WITHIN,
        &mutant.apply(FleetOptions::default()),
    );
    let failure = report
        .failure
        .unwrap_or_else(|| panic!("{mutant:?} survived {CATCH_WITHIN} seeds"));
    println!(
        "{mutant:?} caught at seed {} (of {} run) in {:.2}s: {}",
        failure.seed,
        report.seeds_run,
        report.wall.as_secs_f64(),
        failure.violations[0]
    );
}

#[test]
fn the_search_catches_a_layer_that_never_re_registers() {
    catches(Mutant::NeverReRegisters);
}

#[test]
fn the_search_catches_a_layer_that_reuses_a_dead_lease() {
    catches(Mutant::ReusesDeadLease);
}

#[test]
fn the_search_catches_a_cache_that_drops_removals() {
    catches(Mutant::DropsRemovals);
}

#[test]
fn a_failing_search_prints_its_seed_and_the_replay_command() {
    let failed = std::panic::catch_unwind(|| {
        search_test(
            "fleet::caught",
            "registry-memory",
            "registry-memory/tests/fleet.rs",
            simulator,
            CATCH_WITHIN,
            Mutant::DropsRemovals.apply(FleetOptions::default()),
        )
    });
    let panic = failed.expect_err("the broken layer fails the search");
    let message = panic.downcast_ref::<String>().expect("a formatted message");
    assert!(message.contains("fleet seed "), "{message}");
    assert!(
        message.contains("cargo test -p registry-memory --test fleet caught -- --nocapture"),
        "{message}"
    );
    assert!(message.contains("REGISTRY_FLEET_SEED="), "{message}");
    assert!(message.contains("fault plan of seed"), "{message}");
}

#[test]
fn a_kept_log_shows_the_run_and_hashes_to_the_same_run() {
    let options = FleetOptions {
        keep_log: true,
        ..FleetOptions::default()
    };
    let report = run_seed(&simulator, 42, &options);
    let plain = run_seed(&simulator, 42, &FleetOptions::default());
    assert_eq!(
        report.log_hash, plain.log_hash,
        "keeping the log changes nothing"
    );
    assert!(plain.log.is_empty());
    assert!(report
        .log
        .iter()
        .any(|line| line.contains("fault Partition")));
    assert!(report.log.iter().any(|line| line.contains("gw0 svc0 -> i")));
}
