//! The service-layer suite can fail: the simulator wrapped in deliberately broken registries,
//! each of which breaks the service layer above it in a way the named scenarios must catch,
//! and the unbroken simulator as a control.

use async_trait::async_trait;
use futures::StreamExt;
use registry_api::{
    DeleteResponse, EventKind, GetResponse, LeaseGrant, LeaseId, LeaseTimeToLive, ListOptions,
    ListResponse, PutOptions, PutResponse, Registry, Result, Revision, WatchOptions, WatchStream,
};
use registry_conformance::service::{
    run_scenario, runtime, scenario_names, Links, ServiceBackend, ServiceCapabilities,
};
use registry_memory::MemoryRegistry;
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

#[derive(Debug)]
struct Mutant {
    inner: MemoryRegistry,
    bug: Option<Bug>,
}

impl Mutant {
    fn is(&self, bug: Bug) -> bool {
        self.bug == Some(bug)
    }
}

#[async_trait]
impl Registry for Mutant {
    async fn lease_grant(&self, ttl: i64, id: Option<LeaseId>) -> Result<LeaseGrant> {
        self.inner.lease_grant(ttl, id).await
    }
    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        if self.is(Bug::KeepAliveDoesNotRenew) {
            return Ok(self.inner.lease_time_to_live(id).await?.granted_ttl);
        }
        self.inner.lease_keep_alive(id).await
    }
    async fn lease_revoke(&self, id: LeaseId) -> Result<Revision> {
        self.inner.lease_revoke(id).await
    }
    async fn lease_time_to_live(&self, id: LeaseId) -> Result<LeaseTimeToLive> {
        self.inner.lease_time_to_live(id).await
    }
    async fn leases(&self) -> Result<Vec<LeaseId>> {
        self.inner.leases().await
    }
    async fn put(&self, key: &[u8], value: &[u8], opts: PutOptions) -> Result<PutResponse> {
        let opts = if self.is(Bug::PutIgnoresLease) {
            PutOptions {
                lease: None,
                ..opts
            }
        } else {
            opts
        };
        self.inner.put(key, value, opts).await
    }
    async fn get(&self, key: &[u8]) -> Result<GetResponse> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &[u8], opts: ListOptions) -> Result<ListResponse> {
        self.inner.list(prefix, opts).await
    }
    async fn delete(&self, key: &[u8]) -> Result<DeleteResponse> {
        self.inner.delete(key).await
    }
    async fn delete_prefix(&self, prefix: &[u8]) -> Result<DeleteResponse> {
        self.inner.delete_prefix(prefix).await
    }
    async fn compact(&self, revision: Revision) -> Result<Revision> {
        self.inner.compact(revision).await
    }
    async fn watch(&self, prefix: &[u8], mut opts: WatchOptions) -> Result<WatchStream> {
        if self.is(Bug::WatchStartsOneRevisionLate) {
            opts.start_revision = opts.start_revision.map(|r| r.next());
        }
        let stream = self.inner.watch(prefix, opts).await?;
        if !self.is(Bug::DropsDeleteEvents) {
            return Ok(stream);
        }
        Ok(stream.map_events(|events| {
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
        }))
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
            inner: self.store().clone(),
            bug: self.bug,
        };
        self.links.wrap(name, Arc::new(mutant))
    }
    fn capabilities(&self) -> ServiceCapabilities {
        ServiceCapabilities::simulator()
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
