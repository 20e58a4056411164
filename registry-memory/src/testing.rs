//! A ready-made [`ServiceBackend`] on the simulator (feature `testing`), for an app's own
//! scenarios stamped with [`registry_testing::scenarios!`].
//!
//! [`backend()`] gives one simulated server per scenario, made on the scenario's runtime (whose
//! clock is paused), with a named client per process of the app, each on its own link: every
//! fault of [`ServiceBackend`] is native (a partition is the client's link cut, an outage the
//! server's, a lease expired or a leader change on demand), and so are the link faults beyond a
//! partition ([`ServiceBackend::link`]: latency, holds, lost replies, stalled watches).
//!
//! ```
//! use registry_testing::ServiceBackend;
//! use registry_api::Registry;
//!
//! async fn leases_expire_on_virtual_time(etcd: &dyn ServiceBackend) {
//!     let client = etcd.client("app").await;
//!     let lease = client.lease_grant(5, None).await.unwrap();
//!     etcd.sleep(std::time::Duration::from_secs(5)).await; // no real time passes
//!     assert!(client.lease_keep_alive(lease.id).await.is_err());
//! }
//!
//! registry_testing::scenarios! {
//!     leases_expire_on_virtual_time;
//!     simulator: registry_memory::testing::backend(),
//! }
//! # fn main() {
//! #     registry_testing::run(registry_memory::testing::backend, |b| {
//! #         Box::pin(leases_expire_on_virtual_time(b))
//! #     });
//! # }
//! ```

use crate::MemoryRegistry;
use registry_api::wrap::Link;
use registry_api::{async_trait, LeaseId, Registry, Revision};
use registry_testing::{ServerCommit, ServerJournal, ServiceBackend, ServiceCapabilities};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The simulator as a scenario's backend: see the [module](self).
pub fn backend() -> Simulator {
    Simulator::default()
}

/// One simulated server per scenario, with named clients on their own links.
#[derive(Debug, Default)]
pub struct Simulator {
    server: OnceLock<MemoryRegistry>,
    journal: usize,
}

impl Simulator {
    /// The same, whose server keeps a journal of its last `commits` revisions
    /// ([`MemoryRegistryBuilder::journal`](crate::MemoryRegistryBuilder::journal)), offered as
    /// [`ServiceBackend::journal`]: what the fleet search of `registry-conformance` checks
    /// against.
    pub fn with_journal(mut self, commits: usize) -> Self {
        self.journal = commits;
        self
    }

    /// The server, made on first use on tokio's clock (so call it inside the scenario, whose
    /// runtime's clock is paused): for what [`ServiceBackend`] does not cover (compaction,
    /// reading the store without a client).
    pub fn server(&self) -> &MemoryRegistry {
        self.server.get_or_init(|| {
            let builder = MemoryRegistry::builder();
            if self.journal > 0 {
                builder.journal(self.journal).build()
            } else {
                builder.build()
            }
        })
    }
}

#[async_trait]
impl ServiceBackend for Simulator {
    async fn client(&self, name: &str) -> Arc<dyn Registry> {
        Arc::new(self.server().client(name))
    }

    fn capabilities(&self) -> ServiceCapabilities {
        // The server's timing (etcd's measured delays by default, drawn from the run's seed):
        // bounds on virtual time allow a few of its round trips.
        ServiceCapabilities::simulator().with_latency(crate::Latencies::etcd().bound())
    }

    async fn partition(&self, name: &str, cut: bool) {
        let link = self.server().link(name);
        if cut {
            link.partition();
        } else {
            link.heal();
        }
    }

    async fn outage(&self, down: bool) {
        self.server().set_unavailable(down);
    }

    async fn expire_lease(&self, lease: LeaseId) {
        // A lease already gone has nothing to expire: the scenario sees what it did meanwhile.
        let _ = self.server().expire_lease(lease);
    }

    fn link(&self, name: &str) -> Option<Link> {
        Some(self.server().link(name))
    }

    async fn leader_change(&self, extra: Duration) -> bool {
        self.server().leader_change(extra);
        true
    }

    fn journal(&self) -> Option<Arc<dyn ServerJournal>> {
        (self.journal > 0).then(|| {
            let journal: Arc<dyn ServerJournal> = Arc::new(Journal(self.server().clone()));
            journal
        })
    }
}

/// The server's journal as [`ServerJournal`] reads it.
#[derive(Debug)]
struct Journal(MemoryRegistry);

impl ServerJournal for Journal {
    fn now(&self) -> Duration {
        self.0.now()
    }

    fn after(&self, after: Revision) -> Option<Vec<ServerCommit>> {
        let commits = self.0.journal_after(after)?;
        Some(
            commits
                .into_iter()
                .map(|c| ServerCommit {
                    at: c.at,
                    batch: c.batch,
                })
                .collect(),
        )
    }
}
