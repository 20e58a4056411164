//! Named clients of one simulated server, each behind its own link.

use crate::store::Shared;
use crate::timing::ClientTimer;
use crate::MemoryRegistry;
use registry_api::rng::SplitMix64;
use registry_api::wrap::{Intercepted, Link};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// A client of a [`MemoryRegistry`] reached through its own [`Link`]: a
/// [`Registry`](registry_api::Registry) whose link the test partitions, slows, holds or makes
/// lose replies, while the server and every other client go on. Get one with
/// [`MemoryRegistry::client`]; its link is [`Intercepted::intercept`] or
/// [`MemoryRegistry::link`].
pub type MemoryClient = Intercepted<MemoryRegistry, Link>;

/// The links of one server, and the timing of its clients, by client name.
#[derive(Debug, Default)]
pub(crate) struct Links {
    by_name: Mutex<BTreeMap<String, Link>>,
    // One per client name a test uses, like the links.
    timers: Mutex<BTreeMap<String, Arc<ClientTimer>>>,
}

impl Links {
    /// The timing of client `name` (created, following the simulator's profile, if new).
    pub(crate) fn timer(&self, shared: &Shared, name: &str) -> Arc<ClientTimer> {
        let mut timers = self.timers.lock().unwrap_or_else(PoisonError::into_inner);
        timers
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(shared.timing.client(name)))
            .clone()
    }

    fn get(&self, name: &str) -> Link {
        let mut links = self.by_name.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(link) = links.get(name) {
            return link.clone();
        }
        // Seeded from the name: the same names give the same random latencies and losses.
        let link = Link::with_seed(SplitMix64::derive(0, name));
        links.insert(name.to_owned(), link.clone());
        link
    }
}

impl MemoryRegistry {
    /// A client named `name`, on its own link (the same name gives a client on the same link).
    /// Server-wide faults ([`set_unavailable`](Self::set_unavailable)) reach it as they reach
    /// every client; link faults reach it alone, and cost the other clients nothing.
    ///
    /// An instance cut off from the server while its consumers still reach it:
    ///
    /// ```
    /// use registry_api::{PutOptions, Registry};
    /// use registry_memory::MemoryRegistry;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> registry_api::Result<()> {
    /// let server = MemoryRegistry::new();
    /// let instance = server.client("instance-1");
    /// let gateway = server.client("gateway-1");
    /// let lease = instance.lease_grant(2, None).await?;
    /// instance.put(b"svc/a", b"addr", PutOptions::with_lease(lease.id)).await?;
    ///
    /// server.link("instance-1").partition();
    /// assert!(instance.lease_keep_alive(lease.id).await.is_err());
    /// tokio::time::sleep(Duration::from_secs(2)).await;
    /// // The server went on: the lease expired, and the gateway sees it.
    /// assert!(gateway.get(b"svc/a").await?.kv.is_none());
    /// # Ok(())
    /// # }
    /// ```
    pub fn client(&self, name: &str) -> MemoryClient {
        let handle = MemoryRegistry {
            shared: self.shared.clone(),
            links: self.links.clone(),
            timer: Some(self.links.timer(&self.shared, name)),
        };
        self.link(name).wrap(handle)
    }

    /// The control handle of client `name`'s link (created healthy if new).
    pub fn link(&self, name: &str) -> Link {
        self.links.get(name)
    }

    /// Heals, releases and clears every client link (server-wide faults are left as they are).
    pub fn reset_links(&self) {
        let links = self
            .links
            .by_name
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        links.values().for_each(Link::reset);
    }
}
