//! The whole conformance suite on a real etcd over `https://`, with a client certificate
//! required (`--client-cert-auth`): every call, watch and keep-alive stream goes through TLS.
//! One private server for this test binary, cases one at a time, each under a fresh key prefix.

use async_trait::async_trait;
use registry_api::Registry;
use registry_conformance::{Backend, Capabilities};
use registry_etcd::testing::{unique_key_prefix, EtcdServer, TlsMode};
use registry_etcd::EtcdRegistry;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

fn server() -> &'static EtcdServer {
    static SERVER: OnceLock<Result<EtcdServer, String>> = OnceLock::new();
    match SERVER.get_or_init(|| {
        EtcdServer::start_tls(TlsMode::ClientCertRequired).map_err(|e| e.to_string())
    }) {
        Ok(server) => server,
        Err(why) => panic!("etcd with TLS did not start: {why}"),
    }
}

/// A fresh client over TLS (bound to the calling test's runtime) in a fresh key prefix.
#[derive(Debug)]
struct EtcdTls;

#[async_trait]
impl Backend for EtcdTls {
    async fn registry(&self) -> Arc<dyn Registry> {
        let server = server();
        assert!(server.endpoint().starts_with("https://"));
        let tls = server
            .client_tls_options("conformance")
            .expect("a client certificate");
        match EtcdRegistry::builder(server.endpoints())
            .tls(tls)
            .key_prefix(unique_key_prefix("conformance-tls"))
            .connect()
            .await
        {
            Ok(registry) => Arc::new(registry),
            Err(e) => panic!("cannot connect to etcd at {}: {e}", server.endpoint()),
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::etcd()
    }

    async fn advance(&self, _by: Duration) {
        // Real time: the suite sleeps instead.
    }
}

fn etcd_tls() -> EtcdTls {
    EtcdTls
}

registry_conformance::conformance_suite!(etcd_tls);
