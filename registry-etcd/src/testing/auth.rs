//! Turning auth on in a TLS test server whose client certificates name the user.

use super::server::EtcdServer;
use crate::acl::{AccessControl, Credentials, ROOT_USER};
use crate::EtcdRegistry;
use std::io;

/// Makes `root` (no password: a certificate named `root` is root) and enables auth, through a
/// client that shows such a certificate. Starting is synchronous and may be called inside a
/// runtime, so this runs on a thread of its own with a runtime of its own.
pub(crate) fn enable_with_certificate(server: &EtcdServer) -> io::Result<()> {
    let endpoints = server.endpoints();
    let tls = server.client_tls_options(ROOT_USER)?;
    let enable = move || -> io::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let root = EtcdRegistry::builder(endpoints)
                .tls(tls)
                .connect()
                .await
                .map_err(io::Error::other)?;
            AccessControl::new(&root)
                .enable(Credentials::Certificate)
                .await
                .map_err(io::Error::other)?;
            Ok(())
        })
    };
    std::thread::spawn(enable)
        .join()
        .map_err(|_| io::Error::other("enabling auth panicked"))?
}
