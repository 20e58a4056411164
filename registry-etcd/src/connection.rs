//! Where the connections to etcd run: a runtime of the backend's own, on one thread of the
//! process, whose clock no caller can pause.
//!
//! A connection's background work (tonic's balancer and buffer, hyper's HTTP/2 connection with
//! its keep-alive pings) runs as tasks on the runtime that made the connection, and sleeps on
//! that runtime's clock. Made on the caller's runtime, a `tokio::time::pause()` there would
//! reach it: the paused clock jumps to the next timer whenever the runtime idles, so the ping
//! interval (10 s) passes in microseconds, pings go out back to back or time out before their
//! answer can arrive, and etcd answers a flood of pings with GOAWAY `too_many_pings`, ending
//! every call and watch on the connection. Made here, the pings keep real time whatever the
//! caller's clock does.
//!
//! The tasks of a connection end when its last `etcd_client::Client` is dropped, so the runtime
//! holds nothing longer than the registries that use it. It lives for the rest of the process
//! once started: one thread, idle while no connection has work.

use etcd_client::{Client, ConnectOptions};
use registry_api::{Error, Result};
use std::sync::OnceLock;
use tokio::runtime::Handle;

/// The runtime, started on first use; the reason it could not start otherwise.
fn handle() -> Result<Handle> {
    static RUNTIME: OnceLock<std::result::Result<Handle, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot build the connection runtime: {e}"))?;
            let handle = runtime.handle().clone();
            std::thread::Builder::new()
                .name("registry-etcd-io".into())
                .spawn(move || runtime.block_on(std::future::pending::<()>()))
                .map_err(|e| format!("cannot start the connection thread: {e}"))?;
            Ok(handle)
        })
        .clone()
        .map_err(Error::backend)
}

/// `Client::connect` on the connection runtime, so that every task of the connection (made now
/// or on a reconnect) runs there. The outer error is the runtime's; the inner one etcd-client's.
pub(crate) async fn connect(
    endpoints: Vec<String>,
    options: ConnectOptions,
) -> Result<std::result::Result<Client, etcd_client::Error>> {
    handle()?
        .spawn(async move { Client::connect(&endpoints, Some(options)).await })
        .await
        .map_err(|e| Error::backend(format!("connecting to etcd failed: {e}")))
}
