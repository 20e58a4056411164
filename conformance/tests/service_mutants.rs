//! The service-layer suite can fail: the simulator wrapped in deliberately broken registries,
//! each of which breaks the service layer above it in a way the named scenarios must catch,
//! and the unbroken simulator as a control.

use async_trait::async_trait;
use futures::StreamExt;
use registry_api::wrap::{Answer, Call, Intercept, Intercepted, Next};
use registry_api::{EventKind, LeaseId, PutOptions, Registry, Result, WatchStream};
use registry_conformance::service::{
    run_scenario, runtime, scenario_names, Links, ServiceBackend, ServiceCapabilities,
};
use registry_memory::{Latencies, MemoryRegistry};
use std::sync::{Arc, OnceLock};

/// One deliberate bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bug {
    /// Watches never deliver deletes: caches miss every removal.
    DropsDeleteEvents,
    /// A keep-alive answers the granted TTL without renewing the lease.
    KeepAliveDoesNotRenew,
    /// A put ignores its lease: the key outlives its owner.
    PutIgnoresLease,
    /// A watch from revision `r` starts at `r + 1`: the first change after a list is lost.
    WatchStartsOneRevisionLate,
    /// The backend declares partitions but its `partition` cuts nothing.
    PartitionCutsNothing,
}

/// The bug, as a hook on every call of the simulator's clients.
#[derive(Debug)]
struct Mutant {
    /// The simulator itself, for the answers a bug makes up.
    store: MemoryRegistry,
    bug: Option<Bug>,
}

impl Mutant {
    fn is(&self, bug: Bug) -> bool {
        self.bug == Some(bug)
    }

    /// The granted TTL of `id`, as a keep-alive would answer, without renewing anything.
    async fn granted_ttl(&self, id: LeaseId) -> Result<i64> {
        Ok(self.store.lease_time_to_live(id).await?.granted_ttl)
    }
}

#[async_trait]
impl Intercept for Mutant {
    async fn around(&self, call: Call<'_>, next: Next<'_>) -> Answer {
        match call {
            Call::LeaseKeepAlive { id } if self.is(Bug::KeepAliveDoesNotRenew) => {
                Answer::LeaseKeepAlive(self.granted_ttl(id).await)
            }
            Call::LeaseKeepAliveMany { ids } if self.is(Bug::KeepAliveDoesNotRenew) => {
                let mut answers = Vec::with_capacity(ids.len());
                for id in ids {
                    answers.push(self.granted_ttl(*id).await);
                }
                Answer::LeaseKeepAliveMany(Ok(answers))
            }
            Call::Put {
                key,
                value,
                options,
            } if self.is(Bug::PutIgnoresLease) => {
                let options = PutOptions {
                    lease: None,
                    ..options
                };
                next.run(Call::Put {
                    key,
                    value,
                    options,
                })
                .await
            }
            Call::Watch {
                prefix,
                mut options,
            } if self.is(Bug::WatchStartsOneRevisionLate) => {
                options.start_revision = options.start_revision.map(|r| r.next());
                next.run(Call::Watch { prefix, options }).await
            }
            call => next.run(call).await,
        }
    }

    fn watch(&self, stream: WatchStream) -> WatchStream {
        if !self.is(Bug::DropsDeleteEvents) {
            return stream;
        }
        stream.map_events(|events| {
            events
                .filter_map(|item| async move {
                    match item {
                        Ok(mut batch) if !batch.is_progress() => {
                            batch.events.retain(|e| e.kind != EventKind::Delete);
                            (!batch.events.is_empty()).then_some(Ok(batch))
                        }
                        other => Some(other),
                    }
                })
                .boxed()
        })
    }
}

/// The simulator as the service suite's backend, every client through the mutant.
#[derive(Debug)]
struct MutantBackend {
    bug: Option<Bug>,
    store: OnceLock<MemoryRegistry>,
    links: Links,
}

impl MutantBackend {
    fn new(bug: Option<Bug>) -> Self {
        MutantBackend {
            bug,
            store: OnceLock::new(),
            links: Links::new(),
        }
    }

    fn store(&self) -> &MemoryRegistry {
        self.store.get_or_init(MemoryRegistry::new)
    }
}

#[async_trait]
impl ServiceBackend for MutantBackend {
    async fn client(&self, name: &str) -> Arc<dyn Registry> {
        let mutant = Mutant {
            store: self.store().clone(),
            bug: self.bug,
        };
        let client = Intercepted::new(self.store().clone(), mutant);
        self.links.wrap(name, Arc::new(client))
    }
    fn capabilities(&self) -> ServiceCapabilities {
        // The simulator's default timing: etcd's measured delays on every call and delivery.
        ServiceCapabilities::simulator().with_latency(Latencies::etcd().bound())
    }
    async fn partition(&self, name: &str, cut: bool) {
        if self.bug != Some(Bug::PartitionCutsNothing) {
            self.links.cut(name, cut);
        }
    }
    async fn outage(&self, down: bool) {
        self.store().set_unavailable(down);
    }
    async fn expire_lease(&self, lease: LeaseId) {
        let _ = self.store().expire_lease(lease);
    }
}

/// The scenarios that fail with `bug`, each on a fresh store and a fresh paused runtime.
fn failing_scenarios(bug: Option<Bug>) -> Vec<&'static str> {
    scenario_names()
        .into_iter()
        .filter(|name| {
            let backend = MutantBackend::new(bug);
            let rt = runtime(backend.capabilities().time);
            match run_scenario(name, &backend, &rt) {
                Ok(()) => false,
                Err(failure) => {
                    println!("{bug:?}: {failure}");
                    true
                }
            }
        })
        .collect()
}

fn assert_caught(bug: Bug, named: &[&str]) {
    let failed = failing_scenarios(Some(bug));
    for scenario in named {
        assert!(
            failed.contains(scenario),
            "{bug:?} not caught by {scenario}; scenarios that failed: {failed:?}"
        );
    }
}

#[test]
fn control_the_unbroken_simulator_passes_every_scenario() {
    let failed = failing_scenarios(None);
    assert!(
        failed.is_empty(),
        "scenarios failed on the real simulator: {failed:?}"
    );
}

#[test]
fn catches_a_cache_that_misses_removals() {
    assert_caught(
        Bug::DropsDeleteEvents,
        &[
            "crashed_instance_expires_one_ttl_after_its_last_keep_alive",
            "deregistration_removes_the_instance_at_once",
        ],
    );
}

#[test]
fn catches_a_keep_alive_that_does_not_renew() {
    assert_caught(
        Bug::KeepAliveDoesNotRenew,
        &["live_registration_is_seen_and_stays"],
    );
}

#[test]
fn catches_a_put_that_ignores_its_lease() {
    assert_caught(
        Bug::PutIgnoresLease,
        &["crashed_instance_expires_one_ttl_after_its_last_keep_alive"],
    );
}

#[test]
fn catches_a_watch_that_starts_one_revision_late() {
    assert_caught(
        Bug::WatchStartsOneRevisionLate,
        &["live_registration_is_seen_and_stays"],
    );
}

#[test]
fn catches_a_backend_whose_partition_cuts_nothing() {
    assert_caught(
        Bug::PartitionCutsNothing,
        &[
            "lease_is_declared_lost_one_ttl_after_the_last_good_keep_alive",
            "cache_resyncs_by_diff_after_a_partition_and_a_compaction",
        ],
    );
}
