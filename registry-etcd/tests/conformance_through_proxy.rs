//! The contract suite's concurrency check on a real etcd reached through a loopback TCP proxy
//! that delays every chunk and now and then resets every connection while the clients call:
//! a put whose answer a reset lost is placed where the store's history shows it (or nowhere),
//! a lost delete or revoke may or may not have taken effect; watches cut by a reset are judged
//! up to what they delivered. It prints its wall time.

use async_trait::async_trait;
use registry_api::Registry;
use registry_conformance::{run_case, runtime, Backend, Capabilities};
use registry_etcd::testing::{unique_key_prefix, EtcdServer, ProxyMode, TcpProxy};
use registry_etcd::EtcdRegistry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A client through the proxy, in a fresh namespace per registry.
#[derive(Debug)]
struct ThroughProxy {
    endpoint: String,
}

#[async_trait]
impl Backend for ThroughProxy {
    async fn registry(&self) -> Arc<dyn Registry> {
        // Short timeouts: a call stuck on a connection the proxy reset gives up in a second
        // (its outcome then unknown) instead of the default five.
        match EtcdRegistry::builder([self.endpoint.clone()])
            .connect_timeout(Duration::from_secs(1))
            .request_timeout(Duration::from_secs(1))
            .keep_alive(Duration::from_millis(500), Duration::from_millis(500))
            .key_prefix(unique_key_prefix("conformance-proxy"))
            .connect()
            .await
        {
            Ok(registry) => Arc::new(registry),
            Err(e) => panic!("cannot connect to etcd through the proxy: {e}"),
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::etcd()
    }

    async fn advance(&self, _by: Duration) {}
}

/// Switches the proxy between delays (and a moment of passing) every 200 ms, with a reset of
/// every connection at every 8th switch, until `stop`, then lets everything pass: 30 switches
/// at most, so the faults end within 6 s whatever happens.
fn faults(proxy: Arc<TcpProxy>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let delays = [5, 20, 10, 0, 15].map(Duration::from_millis);
        for i in 0..30 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let mode = match delays[i % delays.len()] {
                _ if i % 8 == 3 => ProxyMode::Reset,
                d if d.is_zero() => ProxyMode::Pass,
                d => ProxyMode::Delay(d),
            };
            proxy.set_mode(mode);
            // A reset is short: the clients reconnect and go on.
            let hold = if mode == ProxyMode::Reset { 30 } else { 200 };
            std::thread::sleep(Duration::from_millis(hold));
        }
        proxy.set_mode(ProxyMode::Pass);
    })
}

#[test]
fn concurrent_clients_are_linearizable_through_delays_and_resets() {
    let server = EtcdServer::start().unwrap_or_else(|e| panic!("etcd did not start: {e}"));
    let proxy = Arc::new(
        TcpProxy::for_endpoint(&server.endpoint())
            .unwrap_or_else(|e| panic!("the proxy did not start: {e}")),
    );
    let backend = ThroughProxy {
        endpoint: proxy.endpoint(),
    };
    let rt = runtime();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let chaos = faults(proxy.clone(), stop.clone());
    let outcome = run_case(
        "concurrent_clients_are_linearizable",
        &backend,
        &rt,
        Some(file!()),
    );
    stop.store(true, Ordering::Relaxed);
    let _ = chaos.join();
    let stats = proxy.stats();
    println!(
        "concurrency check through the proxy: wall time {:.2?}; the proxy reset {} connections and forwarded {} bytes",
        started.elapsed(),
        stats.reset,
        stats.forwarded_bytes
    );
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
    assert!(stats.forwarded_bytes > 0, "nothing went through the proxy");
}
