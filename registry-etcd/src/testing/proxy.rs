//! A loopback TCP proxy that puts network faults between a client and etcd.
//!
//! A killed server is a clean fault: the client's connection breaks at once. A network that
//! delays, resets or silently swallows packets is not, and only a client with deadlines of its
//! own (keep-alive TTL, HTTP/2 pings, request timeouts) notices it. [`TcpProxy`] forwards one
//! loopback port to a target and switches, at run time, between:
//!
//! - [`ProxyMode::Pass`]: bytes go through as they come;
//! - [`ProxyMode::Delay`]: each chunk is delivered that long after it was read, in both
//!   directions (latency, not a bandwidth limit);
//! - [`ProxyMode::Reset`]: every open connection is reset (RST to both sides), and new ones are
//!   accepted and reset at once, until the mode changes;
//! - [`ProxyMode::BlackHole`]: connections stay open and everything sent is read and thrown
//!   away: no reply, no reset, no close. New connections are accepted and treated the same. A
//!   connection that was black-holed stays so after the fault heals, since bytes it carried were
//!   lost; only connections opened after the heal pass again, so the client must notice by its
//!   own deadlines and reconnect.
//!
//! The proxy runs on a thread of its own with its own runtime, so it keeps forwarding while the
//! test's runtime is blocked (say, in [`EtcdServer::restart`](super::EtcdServer::restart)).
//! Dropping it stops the thread and closes every connection.
//!
//! ```no_run
//! use registry_etcd::testing::{EtcdServer, ProxyMode, TcpProxy};
//! use registry_etcd::EtcdRegistry;
//! use std::time::Duration;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let server = EtcdServer::start()?;
//! let proxy = TcpProxy::for_endpoint(&server.endpoint())?;
//! let registry = EtcdRegistry::builder([proxy.endpoint()])
//!     .keep_alive(Duration::from_millis(300), Duration::from_millis(300))
//!     .connect()
//!     .await?;
//! proxy.set_mode(ProxyMode::BlackHole); // the client hears nothing from now on
//! # Ok(()) }
//! ```

use std::io;
use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

/// How long connecting to the target may take before the client's connection is reset.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The most bytes a direction holds back under [`ProxyMode::Delay`] before it stops reading
/// (TCP's own flow control then slows the sender down).
const MAX_DELAYED_BYTES: usize = 8 << 20;

/// What the proxy does to traffic, switchable at any time with [`TcpProxy::set_mode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward as is.
    Pass,
    /// Deliver each chunk this long after it was read, in both directions.
    Delay(Duration),
    /// Reset every connection, open or new (the client sees "connection reset").
    Reset,
    /// Accept and read, never reply, never reset; black-holed connections never recover.
    BlackHole,
}

/// Counts of what the proxy did, for assertions that the faults really happened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted from clients.
    pub accepted: u64,
    /// Connections reset (at a switch to [`ProxyMode::Reset`] or accepted during it).
    pub reset: u64,
    /// Connections that were black-holed.
    pub black_holed: u64,
    /// Bytes forwarded, both directions.
    pub forwarded_bytes: u64,
    /// Bytes read and thrown away by black-holed connections.
    pub swallowed_bytes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    reset: AtomicU64,
    black_holed: AtomicU64,
    forwarded_bytes: AtomicU64,
    swallowed_bytes: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }
}

/// A TCP proxy from a fresh 127.0.0.1 port to a target, whose [`ProxyMode`] can be switched
/// while it runs: pass, delay, reset or black-hole every connection.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    target: SocketAddr,
    mode: watch::Sender<ProxyMode>,
    counters: Arc<Counters>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TcpProxy {
    /// Starts a proxy to `target` on a free loopback port, in [`ProxyMode::Pass`].
    pub fn start(target: SocketAddr) -> io::Result<Self> {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (mode, mode_rx) = watch::channel(ProxyMode::Pass);
        let counters = Arc::new(Counters::default());
        let (stop, stop_rx) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let thread_counters = Arc::clone(&counters);
        let thread = std::thread::Builder::new()
            .name(format!("tcp-proxy-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::select! {
                        _ = stop_rx => {}
                        _ = accept_loop(listener, target, mode_rx, thread_counters) => {}
                    }
                });
                // Dropping the runtime here drops every connection task and its sockets.
            })?;
        Ok(TcpProxy {
            addr,
            target,
            mode,
            counters,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Starts a proxy to an etcd client URL such as `http://127.0.0.1:2379`.
    pub fn for_endpoint(endpoint: &str) -> io::Result<Self> {
        let authority = endpoint
            .split_once("://")
            .map_or(endpoint, |(_, rest)| rest)
            .trim_end_matches('/');
        let target = authority.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{endpoint:?} names no address"),
            )
        })?;
        Self::start(target)
    }

    /// The proxy's own address, where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the proxy forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// `http://127.0.0.1:<port>` of the proxy, ready for
    /// [`EtcdRegistry::builder`](crate::EtcdRegistry::builder).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The current mode.
    pub fn mode(&self) -> ProxyMode {
        *self.mode.borrow()
    }

    /// Switches the mode; open connections follow at once.
    pub fn set_mode(&self, mode: ProxyMode) {
        tracing::debug!(proxy = %self.addr, ?mode, "proxy mode");
        self.mode.send_replace(mode);
    }

    /// What the proxy did so far.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.counters;
        ProxyStats {
            accepted: c.accepted.load(Ordering::Relaxed),
            reset: c.reset.load(Ordering::Relaxed),
            black_holed: c.black_holed.load(Ordering::Relaxed),
            forwarded_bytes: c.forwarded_bytes.load(Ordering::Relaxed),
            swallowed_bytes: c.swallowed_bytes.load(Ordering::Relaxed),
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    mode: watch::Receiver<ProxyMode>,
    counters: Arc<Counters>,
) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(e) => {
                // Out of descriptors or similar: wait a moment rather than spin.
                tracing::warn!(error = %e, "proxy accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        Counters::bump(&counters.accepted, 1);
        let _ = client.set_nodelay(true);
        tokio::spawn(serve(client, target, mode.clone(), Arc::clone(&counters)));
    }
}

/// Closes a socket with RST rather than FIN.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

async fn serve(
    client: TcpStream,
    target: SocketAddr,
    mut mode: watch::Receiver<ProxyMode>,
    counters: Arc<Counters>,
) {
    let current = *mode.borrow_and_update();
    match current {
        ProxyMode::Reset => {
            Counters::bump(&counters.reset, 1);
            reset(&client);
            return;
        }
        ProxyMode::BlackHole => {
            Counters::bump(&counters.black_holed, 1);
            swallow(client, mode, &counters).await;
            return;
        }
        ProxyMode::Pass | ProxyMode::Delay(_) => {}
    }
    let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
        Ok(Ok(upstream)) => upstream,
        // The target is down: the client sees its connection reset, as close to "refused" as
        // an accepted connection gets.
        _ => {
            reset(&client);
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let end = {
        let up = pump(
            &mut client_read,
            &mut upstream_write,
            mode.clone(),
            &counters,
            true,
        );
        let down = pump(
            &mut upstream_read,
            &mut client_write,
            mode.clone(),
            &counters,
            false,
        );
        tokio::pin!(up, down);
        // A half-close goes through and the other direction drains; a reset or a black-holed
        // connection ends both directions together.
        tokio::select! {
            end = &mut up => if end == End::Eof { down.await } else { end },
            end = &mut down => if end == End::Eof { up.await } else { end },
        }
    };
    if end == End::Reset {
        Counters::bump(&counters.reset, 1);
        // Whole sockets, so that closing them sends RST only: dropping a write half alone
        // would send FIN first.
        if let (Ok(client), Ok(upstream)) = (
            client_read.reunite(client_write),
            upstream_read.reunite(upstream_write),
        ) {
            reset(&client);
            reset(&upstream);
        }
    }
}

/// Reads and discards until the client goes away or the proxy resets it.
async fn swallow(client: TcpStream, mut mode: watch::Receiver<ProxyMode>, counters: &Counters) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut client = client;
    loop {
        tokio::select! {
            biased;
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                if *mode.borrow_and_update() == ProxyMode::Reset {
                    Counters::bump(&counters.reset, 1);
                    reset(&client);
                    return;
                }
            }
            read = client.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => Counters::bump(&counters.swallowed_bytes, n as u64),
            },
        }
    }
}

/// How one direction of a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The reader reached end of stream; the writer was shut down after the queue drained.
    Eof,
    /// The proxy reset the connection.
    Reset,
    /// An I/O error, or the black-holed connection's peer went away.
    Closed,
}

/// Copies one direction, honouring the mode: delays each chunk, swallows everything once
/// black-holed, resets on demand.
async fn pump(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    mut mode: watch::Receiver<ProxyMode>,
    counters: &Counters,
    counts_connection: bool,
) -> End {
    let mut buf = vec![0u8; 16 * 1024];
    let mut queue: std::collections::VecDeque<(Instant, Vec<u8>)> = Default::default();
    let mut queued_bytes = 0usize;
    let mut delay = match *mode.borrow_and_update() {
        ProxyMode::Delay(delay) => delay,
        _ => Duration::ZERO,
    };
    let mut black_holed = false;
    let mut eof = false;
    loop {
        if eof && queue.is_empty() {
            if black_holed {
                return End::Closed;
            }
            let _ = to.shutdown().await;
            return End::Eof;
        }
        let due = queue.front().map(|(due, _)| *due);
        tokio::select! {
            // A switch applies before anything read after it is forwarded; due chunks go out
            // before more is read.
            biased;
            changed = mode.changed() => {
                if changed.is_err() {
                    return End::Closed;
                }
                match *mode.borrow_and_update() {
                    ProxyMode::Reset => return End::Reset,
                    ProxyMode::BlackHole => {
                        if !black_holed && counts_connection {
                            Counters::bump(&counters.black_holed, 1);
                        }
                        black_holed = true;
                        Counters::bump(&counters.swallowed_bytes, queued_bytes as u64);
                        queue.clear();
                        queued_bytes = 0;
                    }
                    // A healed network does not bring back bytes it lost.
                    ProxyMode::Pass => delay = Duration::ZERO,
                    ProxyMode::Delay(d) => delay = d,
                }
            }
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                if let Some((_, chunk)) = queue.pop_front() {
                    queued_bytes -= chunk.len();
                    if to.write_all(&chunk).await.is_err() {
                        return End::Closed;
                    }
                    Counters::bump(&counters.forwarded_bytes, chunk.len() as u64);
                }
            }
            read = from.read(&mut buf), if !eof && queued_bytes < MAX_DELAYED_BYTES => match read {
                Ok(0) => eof = true,
                Ok(n) if black_holed => Counters::bump(&counters.swallowed_bytes, n as u64),
                Ok(n) => {
                    queued_bytes += n;
                    queue.push_back((Instant::now() + delay, buf[..n].to_vec()));
                }
                Err(_) => return End::Closed,
            },
        }
        if black_holed && eof {
            // The peer is gone; nothing more will ever be swallowed.
            return End::Closed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// An echo server on loopback, on its own thread.
    fn echo_server() -> SocketAddr {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn connect(proxy: &TcpProxy) -> std::net::TcpStream {
        let stream = std::net::TcpStream::connect(proxy.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(800)))
            .unwrap();
        stream
    }

    fn round_trip(stream: &mut std::net::TcpStream, msg: &[u8]) -> io::Result<Vec<u8>> {
        stream.write_all(msg)?;
        let mut got = vec![0u8; msg.len()];
        stream.read_exact(&mut got)?;
        Ok(got)
    }

    #[test]
    fn passes_delays_resets_and_black_holes() {
        let proxy = TcpProxy::start(echo_server()).unwrap();
        let mut a = connect(&proxy);
        assert_eq!(round_trip(&mut a, b"hello").unwrap(), b"hello");

        proxy.set_mode(ProxyMode::Delay(Duration::from_millis(150)));
        let started = std::time::Instant::now();
        assert_eq!(round_trip(&mut a, b"slow").unwrap(), b"slow");
        // Both directions are delayed.
        assert!(started.elapsed() >= Duration::from_millis(300));

        proxy.set_mode(ProxyMode::BlackHole);
        a.write_all(b"lost").unwrap();
        let mut buf = [0u8; 8];
        let err = a.read(&mut buf).unwrap_err();
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "a black hole neither replies nor closes: {err:?}"
        );
        let mut b = connect(&proxy);
        b.write_all(b"also lost").unwrap();
        assert!(b.read(&mut buf).is_err());

        // Healed: new connections pass, black-holed ones stay dead.
        proxy.set_mode(ProxyMode::Pass);
        let mut c = connect(&proxy);
        assert_eq!(round_trip(&mut c, b"back").unwrap(), b"back");
        assert!(round_trip(&mut a, b"x").is_err());

        proxy.set_mode(ProxyMode::Reset);
        let err = c.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err:?}");
        let mut d = connect(&proxy);
        let refused = round_trip(&mut d, b"y").unwrap_err();
        assert!(
            matches!(
                refused.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ),
            "{refused:?}"
        );

        let stats = proxy.stats();
        assert_eq!(stats.accepted, 4);
        // Reset: a (black-holed, still open), b, c, d.
        assert_eq!(stats.reset, 4, "{stats:?}");
        assert_eq!(stats.black_holed, 2, "{stats:?}");
        assert!(stats.swallowed_bytes >= 4 + 9, "{stats:?}");
        assert_eq!(stats.forwarded_bytes, 2 * (5 + 4 + 4), "{stats:?}");
    }
}
