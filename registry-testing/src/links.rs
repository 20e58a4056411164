//! Named links to a registry that a test cuts one at a time: a network partition of one
//! client while the server and every other client go on. Each link is a
//! [`registry_api::wrap::Link`], so it can do everything a link does (latency, holds, lost
//! replies) for a backend that has no per-client links of its own.

use registry_api::wrap::Link;
use registry_api::Registry;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// The links of a backend's named clients: [`wrap`](Links::wrap) puts a client behind the link
/// of its name, [`cut`](Links::cut) fails every call on that link with `Unavailable` and ends its
/// open watches, until restored. What [`ServiceBackend::partition`](crate::ServiceBackend::partition)
/// needs, for a backend that has no per-client links of its own.
///
/// ```
/// # registry_testing::runtime(registry_testing::Time::Real).block_on(async {
/// use registry_api::Registry;
/// use registry_testing::Links;
/// use std::sync::Arc;
///
/// let store: Arc<dyn Registry> = Arc::new(registry_memory::MemoryRegistry::with_manual_clock());
/// let links = Links::new();
/// let app = links.wrap("app", store.clone());
/// links.cut("app", true);
/// assert!(app.get(b"k").await.unwrap_err().is_retryable());
/// assert!(store.get(b"k").await.is_ok(), "the server and other clients go on");
/// links.cut("app", false);
/// assert!(app.get(b"k").await.is_ok());
/// # });
/// ```
#[derive(Default)]
pub struct Links {
    // One entry per client name a scenario uses: a handful.
    links: Mutex<BTreeMap<String, Link>>,
}

impl fmt::Debug for Links {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        let cut: Vec<&String> = links
            .iter()
            .filter(|(_, link)| link.is_partitioned())
            .map(|(name, _)| name)
            .collect();
        f.debug_struct("Links").field("cut", &cut).finish()
    }
}

impl Links {
    /// No links yet, none cut.
    pub fn new() -> Self {
        Self::default()
    }

    /// The link named `name` (created, up, on first use).
    pub fn link(&self, name: &str) -> Link {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links.entry(name.to_owned()).or_default().clone()
    }

    /// `inner` as seen through the link named `name` (created, up, on first use).
    pub fn wrap(&self, name: &str, inner: Arc<dyn Registry>) -> Arc<dyn Registry> {
        Arc::new(self.link(name).wrap(inner))
    }

    /// Cuts (`true`) or restores (`false`) the link named `name`.
    pub fn cut(&self, name: &str, cut: bool) {
        let link = self.link(name);
        if cut {
            link.partition();
        } else {
            link.heal();
        }
    }

    /// Whether the link named `name` is cut now.
    pub fn is_cut(&self, name: &str) -> bool {
        self.link(name).is_partitioned()
    }
}
