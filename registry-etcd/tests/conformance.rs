//! The whole conformance suite on a real etcd: one named test per case, all on one private
//! server started for this test binary, cases one at a time (the suite's lock for shared
//! backends), each under a fresh namespace.

use async_trait::async_trait;
use registry_api::Registry;
use registry_conformance::{Backend, Capabilities};
use registry_etcd::testing::{unique_key_prefix, EtcdServer};
use registry_etcd::EtcdRegistry;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// This binary's own server: revision accounting and compaction need it to ourselves, so not
/// the harness's shared one (which `REGISTRY_TEST_ETCD_ENDPOINTS` may point elsewhere).
fn endpoints() -> Vec<String> {
    static SERVER: OnceLock<Result<EtcdServer, String>> = OnceLock::new();
    match SERVER.get_or_init(|| EtcdServer::start().map_err(|e| e.to_string())) {
        Ok(server) => server.endpoints(),
        Err(why) => panic!("etcd did not start: {why}"),
    }
}

/// A fresh client (bound to the calling test's runtime) in a fresh namespace per registry.
#[derive(Debug)]
struct Etcd {
    endpoints: Vec<String>,
}

#[async_trait]
impl Backend for Etcd {
    async fn registry(&self) -> Arc<dyn Registry> {
        match EtcdRegistry::builder(self.endpoints.clone())
            .key_prefix(unique_key_prefix("conformance"))
            .connect()
            .await
        {
            Ok(registry) => Arc::new(registry),
            Err(e) => panic!("cannot connect to etcd at {:?}: {e}", self.endpoints),
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::etcd()
    }

    async fn advance(&self, _by: Duration) {
        // Real time: the suite sleeps instead.
    }
}

fn etcd() -> Etcd {
    Etcd {
        endpoints: endpoints(),
    }
}

registry_conformance::conformance_suite!(etcd);
