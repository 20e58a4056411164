//! Named links to a registry that a test cuts one at a time: a network partition of one
//! client while the server and every other client go on.

use async_trait::async_trait;
use futures::StreamExt;
use registry_api::{
    DeleteResponse, Error, GetResponse, LeaseGrant, LeaseId, LeaseTimeToLive, ListOptions,
    ListResponse, PutOptions, PutResponse, Registry, Result, Revision, WatchOptions, WatchStream,
};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// The links of a backend's named clients: [`wrap`](Links::wrap) puts a client behind the link
/// of its name, [`cut`](Links::cut) fails every call on that link with `Unavailable` and ends its
/// open watches, until restored. What [`ServiceBackend::partition`](super::ServiceBackend::partition)
/// needs, for a backend that has no per-client links of its own.
///
/// ```
/// # tokio_test::block_on(async {
/// use registry_api::Registry;
/// use registry_conformance::service::Links;
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
    up: Mutex<HashMap<String, Arc<watch::Sender<bool>>>>,
}

impl fmt::Debug for Links {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let up = self.up.lock().unwrap_or_else(|p| p.into_inner());
        let mut cut: Vec<&String> = up
            .iter()
            .filter(|(_, s)| !*s.borrow())
            .map(|(n, _)| n)
            .collect();
        cut.sort();
        f.debug_struct("Links").field("cut", &cut).finish()
    }
}

impl Links {
    /// No links yet, none cut.
    pub fn new() -> Self {
        Self::default()
    }

    fn link(&self, name: &str) -> Arc<watch::Sender<bool>> {
        let mut up = self.up.lock().unwrap_or_else(|p| p.into_inner());
        up.entry(name.to_owned())
            .or_insert_with(|| Arc::new(watch::channel(true).0))
            .clone()
    }

    /// `inner` as seen through the link named `name` (created, up, on first use).
    pub fn wrap(&self, name: &str, inner: Arc<dyn Registry>) -> Arc<dyn Registry> {
        Arc::new(Link {
            name: name.to_owned(),
            inner,
            up: self.link(name),
        })
    }

    /// Cuts (`true`) or restores (`false`) the link named `name`.
    pub fn cut(&self, name: &str, cut: bool) {
        self.link(name).send_replace(!cut);
    }

    /// True while the link named `name` is cut.
    pub fn is_cut(&self, name: &str) -> bool {
        !*self.link(name).borrow()
    }
}

/// One client behind its link.
struct Link {
    name: String,
    inner: Arc<dyn Registry>,
    up: Arc<watch::Sender<bool>>,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("name", &self.name)
            .field("up", &*self.up.borrow())
            .field("inner", &self.inner)
            .finish()
    }
}

impl Link {
    fn check(&self) -> Result<()> {
        if *self.up.borrow() {
            Ok(())
        } else {
            Err(Error::unavailable(format!(
                "the link of client `{}` is cut",
                self.name
            )))
        }
    }
}

#[async_trait]
impl Registry for Link {
    async fn lease_grant(&self, ttl: i64, id: Option<LeaseId>) -> Result<LeaseGrant> {
        self.check()?;
        self.inner.lease_grant(ttl, id).await
    }
    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        self.check()?;
        self.inner.lease_keep_alive(id).await
    }
    async fn lease_revoke(&self, id: LeaseId) -> Result<Revision> {
        self.check()?;
        self.inner.lease_revoke(id).await
    }
    async fn lease_time_to_live(&self, id: LeaseId) -> Result<LeaseTimeToLive> {
        self.check()?;
        self.inner.lease_time_to_live(id).await
    }
    async fn leases(&self) -> Result<Vec<LeaseId>> {
        self.check()?;
        self.inner.leases().await
    }
    async fn put(&self, key: &[u8], value: &[u8], opts: PutOptions) -> Result<PutResponse> {
        self.check()?;
        self.inner.put(key, value, opts).await
    }
    async fn get(&self, key: &[u8]) -> Result<GetResponse> {
        self.check()?;
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &[u8], opts: ListOptions) -> Result<ListResponse> {
        self.check()?;
        self.inner.list(prefix, opts).await
    }
    async fn delete(&self, key: &[u8]) -> Result<DeleteResponse> {
        self.check()?;
        self.inner.delete(key).await
    }
    async fn delete_prefix(&self, prefix: &[u8]) -> Result<DeleteResponse> {
        self.check()?;
        self.inner.delete_prefix(prefix).await
    }
    async fn compact(&self, revision: Revision) -> Result<Revision> {
        self.check()?;
        self.inner.compact(revision).await
    }
    async fn watch(&self, prefix: &[u8], opts: WatchOptions) -> Result<WatchStream> {
        self.check()?;
        let stream = self.inner.watch(prefix, opts).await?;
        let mut up = self.up.subscribe();
        let name = self.name.clone();
        let cut = async move {
            // A dropped sender means the links are gone with the backend: end the watch too.
            let _ = up.wait_for(|up| !*up).await;
        };
        let ended = futures::stream::once(async move {
            Err(Error::unavailable(format!(
                "the link of client `{name}` was cut"
            )))
        });
        Ok(stream.map_events(|events| events.take_until(cut).chain(ended).boxed()))
    }
}
