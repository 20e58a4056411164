//! The whole service-layer suite on a real etcd: one named test per scenario, all on one
//! private server started for this test binary, scenarios one at a time (the suite's lock for
//! real-time backends), each under a fresh key prefix. A partition cuts one client's link (the
//! suite's [`Links`]); an outage kills the server and restarts it on the same data dir and
//! ports. A lease cannot be made to expire on demand on a real server, so that capability is
//! declared absent.

use async_trait::async_trait;
use registry_api::{LeaseId, Registry};
use registry_conformance::service::{Links, ServiceBackend, ServiceCapabilities};
use registry_etcd::testing::{unique_key_prefix, EtcdServer};
use registry_etcd::EtcdRegistry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// This binary's own server: an outage stops it, so not the harness's shared one.
fn server() -> &'static Mutex<EtcdServer> {
    static SERVER: OnceLock<Mutex<EtcdServer>> = OnceLock::new();
    SERVER.get_or_init(|| match EtcdServer::start() {
        Ok(server) => Mutex::new(server),
        Err(why) => panic!("etcd did not start: {why}"),
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// One scenario's view of the server: a key prefix of its own, one connection per client name
/// (made on first use, on the scenario's runtime), each behind its link.
#[derive(Debug)]
struct Etcd {
    endpoints: Vec<String>,
    namespace: String,
    links: Links,
    // One connection per client name a scenario uses: a handful.
    clients: tokio::sync::Mutex<HashMap<String, Arc<dyn Registry>>>,
}

#[async_trait]
impl ServiceBackend for Etcd {
    async fn client(&self, name: &str) -> Arc<dyn Registry> {
        let mut clients = self.clients.lock().await;
        if let Some(client) = clients.get(name) {
            return client.clone();
        }
        // Short timeouts and HTTP/2 pings: a dead connection is noticed within about a second.
        let registry = EtcdRegistry::builder(self.endpoints.clone())
            .key_prefix(self.namespace.clone())
            .connect_timeout(Duration::from_secs(1))
            .request_timeout(Duration::from_secs(1))
            .keep_alive(Duration::from_millis(500), Duration::from_millis(700))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to etcd at {:?}: {e}", self.endpoints));
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
        let done = tokio::task::spawn_blocking(move || {
            let mut server = lock(server());
            if down {
                server.stop();
                Ok(())
            } else {
                server.restart()
            }
        })
        .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(why)) => panic!("etcd did not restart: {why}"),
            Err(why) => panic!("stopping or restarting etcd panicked: {why}"),
        }
    }

    async fn expire_lease(&self, _lease: LeaseId) {
        // Declared absent in the capabilities: the suite never calls it.
    }
}

fn etcd() -> Etcd {
    Etcd {
        endpoints: lock(server()).endpoints(),
        namespace: unique_key_prefix("service"),
        links: Links::new(),
        clients: tokio::sync::Mutex::new(HashMap::new()),
    }
}

registry_conformance::service_suite!(etcd);
