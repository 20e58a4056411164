//! A ready-made [`ServiceBackend`] on a real etcd, for an app's own scenarios stamped with
//! [`registry_testing::scenarios!`].

use super::{unique_key_prefix, EtcdServer};
use crate::EtcdRegistry;
use registry_api::wrap::Link;
use registry_api::{async_trait, Registry};
use registry_testing::{Links, ServiceBackend, ServiceCapabilities};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// A real etcd as a scenario's backend.
///
/// - **Server**: one etcd per test process on free 127.0.0.1 ports, started by the first
///   [`backend()`] (blocking about a second) and shared by every scenario of the process,
///   each under a key prefix of its own ([`unique_key_prefix`]). Its own, never
///   `$REGISTRY_TEST_ETCD_ENDPOINTS`: an outage stops it. Real-time scenarios take turns
///   ([`registry_testing::take_turn`]), so an outage never reaches another scenario.
/// - **Clients**: one connection per name, made when the scenario first asks for it (so ask for
///   each process's client before an outage, as real processes connect before one), with
///   short timeouts and HTTP/2 pings, so a dead connection is noticed within about a second.
/// - **Faults**: a partition cuts the client's [`Link`] (its calls fail with `Unavailable` and
///   its watches end, while etcd and the other clients go on); an outage stops the server and
///   brings it back on the same data and ports (if the scenario ends or panics during one, the
///   server is restarted when the backend is dropped). A lease cannot be expired on demand on a
///   real server: [`ServiceCapabilities::expire_lease`] is false.
///
/// ```no_run
/// use registry_testing::ServiceBackend;
///
/// async fn keys_survive_an_outage(etcd: &dyn ServiceBackend) {
///     let client = etcd.client("app").await;
///     client.put(b"k", b"v", Default::default()).await.unwrap();
///     etcd.outage(true).await;
///     assert!(client.get(b"k").await.is_err());
///     etcd.outage(false).await;
///     assert!(client.get(b"k").await.unwrap().kv.is_some());
/// }
///
/// registry_testing::scenarios! {
///     keys_survive_an_outage;
///     etcd: registry_etcd::testing::backend(),
/// }
/// # fn main() {}
/// ```
pub fn backend() -> EtcdBackend {
    EtcdBackend {
        endpoints: lock(server()).endpoints(),
        key_prefix: unique_key_prefix("scenario"),
        links: Links::new(),
        clients: tokio::sync::Mutex::new(HashMap::new()),
        down: AtomicBool::new(false),
    }
}

/// One scenario's view of the process's etcd: see [`backend()`].
pub struct EtcdBackend {
    endpoints: Vec<String>,
    key_prefix: String,
    links: Links,
    // One connection per client name a scenario uses: a handful.
    clients: tokio::sync::Mutex<HashMap<String, Arc<dyn Registry>>>,
    /// The scenario stopped the server and has not brought it back yet.
    down: AtomicBool,
}

impl fmt::Debug for EtcdBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdBackend")
            .field("endpoints", &self.endpoints)
            .field("key_prefix", &self.key_prefix)
            .field("links", &self.links)
            .field("down", &self.down.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl EtcdBackend {
    /// The server's endpoints.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The key prefix of this scenario's clients.
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }
}

/// The process's scenario server. A server that cannot start fails the scenario: tests never
/// skip.
fn server() -> &'static Mutex<EtcdServer> {
    static SERVER: OnceLock<Mutex<EtcdServer>> = OnceLock::new();
    SERVER.get_or_init(|| match EtcdServer::start() {
        Ok(server) => Mutex::new(server),
        Err(why) => panic!("etcd did not start for the scenarios: {why}"),
    })
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Stops the server, or restarts it on its data and ports. Blocking.
fn set_down(down: bool) -> std::io::Result<()> {
    let mut server = lock(server());
    if down {
        server.stop();
        Ok(())
    } else {
        server.restart()
    }
}

#[async_trait]
impl ServiceBackend for EtcdBackend {
    async fn client(&self, name: &str) -> Arc<dyn Registry> {
        let mut clients = self.clients.lock().await;
        if let Some(client) = clients.get(name) {
            return client.clone();
        }
        let connected = EtcdRegistry::builder(self.endpoints.clone())
            .key_prefix(self.key_prefix.clone())
            .connect_timeout(Duration::from_secs(1))
            .request_timeout(Duration::from_secs(1))
            .keep_alive(Duration::from_millis(500), Duration::from_millis(700))
            .connect()
            .await;
        let registry = match connected {
            Ok(registry) => registry,
            Err(e) if self.down.load(Ordering::Relaxed) => panic!(
                "client {name:?} asked for during the scenario's outage cannot connect ({e}): \
                 ask for every client before the outage"
            ),
            Err(e) => panic!("cannot connect to etcd at {:?}: {e}", self.endpoints),
        };
        let client = self.links.wrap(name, Arc::new(registry));
        clients.insert(name.to_owned(), client.clone());
        client
    }

    fn capabilities(&self) -> ServiceCapabilities {
        ServiceCapabilities {
            expire_lease: false,
            ..ServiceCapabilities::etcd()
        }
    }

    async fn partition(&self, name: &str, cut: bool) {
        self.links.cut(name, cut);
    }

    async fn outage(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
        match tokio::task::spawn_blocking(move || set_down(down)).await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => panic!("etcd did not restart after the scenario's outage: {why}"),
            Err(why) => panic!("stopping or restarting etcd panicked: {why}"),
        }
    }

    fn link(&self, name: &str) -> Option<Link> {
        Some(self.links.link(name))
    }
}

impl Drop for EtcdBackend {
    /// Brings the server back if the scenario left it down (it ended, or panicked, mid-outage),
    /// so the next scenario finds it serving.
    fn drop(&mut self) {
        if self.down.swap(false, Ordering::Relaxed) {
            // No panic here: this may run while a failed scenario unwinds.
            if let Err(why) = set_down(false) {
                eprintln!("etcd did not restart after the scenario's outage: {why}");
            }
        }
    }
}
