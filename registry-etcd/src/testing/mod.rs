//! Throwaway etcd servers for tests (feature `testing`).
//!
//! - [`EtcdServer`]: one etcd on free loopback ports with a temporary data dir; stop, restart
//!   on the same data and ports, kill; save a backup and restore it (`etcdctl snapshot save`,
//!   `etcdutl snapshot restore`, plain or with the revision bumped and compacted).
//! - [`EtcdCluster`]: three (or more) members on loopback, fast elections; kill and restart
//!   members, find the leader.
//! - [`EtcdServer::start_tls`]: one etcd whose client port speaks TLS, with certificates made
//!   in the test by a [`TestCa`]: server certificate only, client certificates required, or
//!   client certificates whose common name is the etcd user ([`TlsMode`]).
//! - [`TcpProxy`]: a loopback TCP proxy between client and server that delays, resets or
//!   black-holes connections on demand ([`ProxyMode`]).
//! - [`backend()`]: a ready-made `registry_testing::ServiceBackend` on a throwaway etcd, for an
//!   app's own scenarios (`registry_testing::scenarios!`): named clients on their own links, a
//!   partition per client, an outage that stops and restarts the server.
//! - [`shared_endpoints`] / [`isolated_registry`]: one server shared by every test of a test
//!   binary, each test in its own [`unique_key_prefix`]. Set `REGISTRY_TEST_ETCD_ENDPOINTS`
//!   (comma-separated URLs) to use an existing etcd instead; tests stay isolated by key prefix,
//!   so sharing it is safe.
//!
//! The etcd binary is `$ETCD_BIN`, else `<workspace>/.tools/etcd/etcd` (installed by
//! `scripts/install-deps.sh`), else `etcd` on `PATH`. When none starts, the harness returns an
//! error: tests fail, they never skip.
//!
//! Starting is synchronous (it spawns a process and polls its `/health` for up to 10 s, usually
//! about 1 s): call it from a plain `#[test]`, or from async code, where blocking one test's
//! thread that long is harmless. Every process is killed with SIGKILL when its handle is dropped,
//! and a small watchdog process kills it too if the test binary exits without dropping it (as
//! with the shared server, which lives in a static).
//!
//! ```no_run
//! use registry_api::{PutOptions, Registry};
//!
//! #[tokio::test]
//! async fn puts_and_reads() {
//!     let registry = registry_etcd::testing::isolated_registry("puts_and_reads")
//!         .await
//!         .expect("etcd");
//!     registry.put(b"k", b"v", PutOptions::default()).await.unwrap();
//! }
//! ```

mod auth;
mod certs;
mod cluster;
mod process;
mod proxy;
mod scenario_backend;
mod server;

pub use certs::{CertifiedKey, TestCa};
pub use cluster::EtcdCluster;
pub use proxy::{ProxyMode, ProxyStats, TcpProxy};
pub use scenario_backend::{backend, EtcdBackend};
pub use server::{EtcdServer, TlsMode};

use crate::EtcdRegistry;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// The environment variable naming an existing etcd for the tests (comma-separated URLs).
pub const ENDPOINTS_ENV: &str = "REGISTRY_TEST_ETCD_ENDPOINTS";

/// A key prefix no other test (of this or another process) uses: `registry-test/<label>/<pid>-<time>-<n>/`.
pub fn unique_key_prefix(label: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("registry-test/{label}/{}-{nanos}-{n}/", std::process::id())
}

/// The endpoints of the etcd the tests of this process share: `$REGISTRY_TEST_ETCD_ENDPOINTS`
/// if set, else one [`EtcdServer`] started on first use and killed when the process exits.
///
/// Use a fresh [`EtcdRegistry`] per test (one per tokio runtime) with a
/// [`unique_key_prefix`]; only the server is shared.
pub fn shared_endpoints() -> io::Result<Vec<String>> {
    if let Some(endpoints) = endpoints_from_env() {
        return Ok(endpoints);
    }
    static SHARED: OnceLock<Result<EtcdServer, String>> = OnceLock::new();
    match SHARED.get_or_init(|| EtcdServer::start().map_err(|e| e.to_string())) {
        Ok(server) => Ok(server.endpoints()),
        Err(why) => Err(io::Error::other(format!(
            "the shared etcd did not start: {why}"
        ))),
    }
}

/// `$REGISTRY_TEST_ETCD_ENDPOINTS`, split on commas, if set and not empty.
pub fn endpoints_from_env() -> Option<Vec<String>> {
    let raw = std::env::var(ENDPOINTS_ENV).ok()?;
    let endpoints: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect();
    (!endpoints.is_empty()).then_some(endpoints)
}

/// A registry on the shared etcd ([`shared_endpoints`]) under a fresh [`unique_key_prefix`] of
/// `label`: what most tests want.
pub async fn isolated_registry(label: &str) -> io::Result<EtcdRegistry> {
    let endpoints = shared_endpoints()?;
    EtcdRegistry::builder(endpoints)
        .key_prefix(unique_key_prefix(label))
        .connect()
        .await
        .map_err(io::Error::other)
}
