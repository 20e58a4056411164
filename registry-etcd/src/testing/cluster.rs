//! A throwaway multi-member etcd cluster on loopback.

use super::process::{free_port, url, Member, MemberSpec, START_TIMEOUT};
use etcd_client::{Client, ConnectOptions};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// Fast failure detection: a new leader in about 0.5-0.7 s after the old one dies.
const TIMING_ARGS: [&str; 2] = ["--heartbeat-interval=50", "--election-timeout=500"];

/// How long [`EtcdCluster::leader`] waits for each member's status.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// An etcd cluster of several members on loopback ports, with a unique
/// `--initial-cluster-token` and fast elections. Dropping it SIGKILLs every member and removes
/// their data.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    /// With [`start_isolatable`](Self::start_isolatable): the gates every member's peer
    /// traffic goes through.
    gates: Option<PeerGates>,
    // Declared after `members` so the processes die before their directory is removed.
    _dir: TempDir,
}

impl EtcdCluster {
    /// Starts `size` members and waits (up to 10 s) until every one is healthy. Blocking; see
    /// the [module docs](super).
    pub fn start(size: usize) -> io::Result<Self> {
        Self::start_with_args(size, std::iter::empty::<String>())
    }

    /// Starts `size` members with extra etcd flags for each.
    pub fn start_with_args<I, S>(size: usize, args: I) -> io::Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::start_inner(size, args, false)
    }

    /// Starts `size` members whose peer traffic (raft messages between members) passes through
    /// a gate per member, so that [`isolate`](Self::isolate) can cut one member off from its
    /// peers while its client port keeps serving: the partition that leaves a member's clients
    /// connected to a member that knows nothing new (etcd #8980).
    pub fn start_isolatable(size: usize) -> io::Result<Self> {
        Self::start_inner(size, std::iter::empty::<String>(), true)
    }

    fn start_inner<I, S>(size: usize, args: I, isolatable: bool) -> io::Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        if size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a cluster needs at least one member",
            ));
        }
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let token = format!(
            "registry-cluster-{}-{nanos}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut extra_args: Vec<String> = TIMING_ARGS.iter().map(|a| (*a).to_owned()).collect();
        extra_args.extend(args.into_iter().map(Into::into));

        let dir = tempfile::Builder::new()
            .prefix("registry-etcd-cluster-")
            .tempdir()?;
        let ports = (0..size)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<io::Result<Vec<_>>>()?;
        // Isolatable: members advertise their gate's address as their peer URL, so every peer
        // reaches them through it.
        let gates = if isolatable {
            Some(PeerGates::start(ports.iter().map(|(_, peer)| *peer))?)
        } else {
            None
        };
        let advertised: Vec<String> = match &gates {
            Some(gates) => gates.addrs.iter().map(|a| url(a.port())).collect(),
            None => ports.iter().map(|(_, peer)| url(*peer)).collect(),
        };
        let initial_cluster = advertised
            .iter()
            .enumerate()
            .map(|(i, peer)| format!("m{i}={peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members: Vec<Member> = ports
            .iter()
            .enumerate()
            .map(|(i, &(client_port, peer_port))| {
                Member::new(MemberSpec {
                    name: format!("m{i}"),
                    client_port,
                    peer_port,
                    data_dir: dir.path().join(format!("m{i}")),
                    log: dir.path().join(format!("m{i}.log")),
                    initial_cluster: initial_cluster.clone(),
                    token: token.clone(),
                    extra_args: {
                        let mut args = extra_args.clone();
                        if gates.is_some() {
                            // Later flags win: advertise the gate, listen on the real port.
                            args.push(format!("--initial-advertise-peer-urls={}", advertised[i]));
                        }
                        args
                    },
                    tls: None,
                    cleanup_dir: dir.path().to_owned(),
                })
            })
            .collect();
        for member in &mut members {
            member.spawn()?;
        }
        for member in &mut members {
            member.wait_healthy(START_TIMEOUT)?;
        }
        Ok(EtcdCluster {
            members,
            gates,
            _dir: dir,
        })
    }

    /// Cuts member `i` off from its peers: every connection to or from its peer port is closed
    /// and new ones are refused, while its client port keeps serving. It loses its leader
    /// within an election timeout (0.5 s here); the other members keep a quorum. Fails unless
    /// the cluster was started with [`start_isolatable`](Self::start_isolatable).
    pub async fn isolate(&self, i: usize) -> io::Result<()> {
        let gates = self.gates.as_ref().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                "start the cluster with start_isolatable to isolate members",
            )
        })?;
        let endpoint = self
            .endpoints()
            .into_iter()
            .enumerate()
            .find(|(j, _)| *j != i)
            .map(|(_, endpoint)| endpoint)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no other member"))?;
        let gate_url = gates
            .addrs
            .get(i)
            .map(|addr| url(addr.port()))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no member {i}")))?;
        let options = ConnectOptions::new()
            .with_connect_timeout(STATUS_TIMEOUT)
            .with_timeout(STATUS_TIMEOUT);
        let mut client = Client::connect([endpoint], Some(options))
            .await
            .map_err(io::Error::other)?;
        let members = client.member_list().await.map_err(io::Error::other)?;
        let id = members
            .members()
            .iter()
            .find(|member| member.peer_urls().contains(&gate_url))
            .map(|member| member.id())
            .ok_or_else(|| io::Error::other(format!("member {i} is not in the member list")))?;
        gates.isolated.send_replace(Some((i, format!("{id:x}"))));
        Ok(())
    }

    /// Lets every member reach its peers again.
    pub fn heal(&self) {
        if let Some(gates) = &self.gates {
            gates.isolated.send_replace(None);
        }
    }

    /// How many members the cluster has (running or not).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always false: a cluster has at least one member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Every member's client URL, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    /// Member `i`'s client URL, if there is such a member.
    pub fn endpoint(&self, i: usize) -> Option<String> {
        self.members.get(i).map(Member::endpoint)
    }

    /// True while member `i` runs.
    pub fn is_running(&mut self, i: usize) -> bool {
        self.members.get_mut(i).is_some_and(Member::is_running)
    }

    /// SIGKILLs member `i` (its data stays). Out-of-range indexes are ignored.
    pub fn kill(&mut self, i: usize) {
        if let Some(member) = self.members.get_mut(i) {
            member.kill();
        }
    }

    /// Restarts member `i` on its data dir and ports and waits until it is healthy (it has
    /// rejoined and sees a leader).
    pub fn restart(&mut self, i: usize) -> io::Result<()> {
        let member = self
            .members
            .get_mut(i)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no member {i}")))?;
        member.spawn()?;
        member.wait_healthy(START_TIMEOUT)
    }

    /// The index of the current leader, asked of every running member through the maintenance
    /// status API; `None` when no running member knows one (during an election).
    pub async fn leader(&self) -> Option<usize> {
        let mut leader_id = None;
        let mut ids = Vec::with_capacity(self.members.len());
        for member in &self.members {
            let status = member_status(&member.endpoint()).await;
            if let Some((own, leader)) = status {
                if leader != 0 {
                    leader_id = Some(leader);
                }
                ids.push(Some(own));
            } else {
                ids.push(None);
            }
        }
        let leader_id = leader_id?;
        ids.iter().position(|id| *id == Some(leader_id))
    }
}

/// `(member id, leader id)` as member at `endpoint` reports them.
async fn member_status(endpoint: &str) -> Option<(u64, u64)> {
    let options = ConnectOptions::new()
        .with_connect_timeout(STATUS_TIMEOUT)
        .with_timeout(STATUS_TIMEOUT);
    let ask = async {
        let mut client = Client::connect([endpoint], Some(options)).await.ok()?;
        let status = client.status().await.ok()?;
        Some((status.header()?.member_id(), status.leader()))
    };
    tokio::time::timeout(STATUS_TIMEOUT * 2, ask)
        .await
        .ok()
        .flatten()
}

/// One gate per member in front of its peer port. Each connection's first request names the
/// member that opened it (etcd's peer requests carry `X-Server-From: <member id in hex>`), so a
/// gate can refuse the isolated member's connections to others as well as others' connections
/// to it: a partition in both directions, which a plain per-member proxy cannot make (a member
/// also receives through connections it opened itself).
#[derive(Debug)]
struct PeerGates {
    addrs: Vec<SocketAddr>,
    /// The isolated member: its index and its id as peers name it.
    isolated: watch::Sender<Option<(usize, String)>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The most bytes of a connection's first request read to find who opened it.
const MAX_HEAD: usize = 16 * 1024;

impl PeerGates {
    fn start(targets: impl Iterator<Item = u16>) -> io::Result<Self> {
        let mut listeners = Vec::new();
        let mut addrs = Vec::new();
        let mut ports = Vec::new();
        for target in targets {
            let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
            listener.set_nonblocking(true)?;
            addrs.push(listener.local_addr()?);
            listeners.push(listener);
            ports.push(target);
        }
        let (isolated, isolated_rx) = watch::channel(None);
        let (stop, stop_rx) = oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("etcd-peer-gates".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    for (index, (listener, target)) in listeners.into_iter().zip(ports).enumerate()
                    {
                        let Ok(listener) = TcpListener::from_std(listener) else {
                            continue;
                        };
                        tokio::spawn(gate(index, listener, target, isolated_rx.clone()));
                    }
                    stop_rx.await.ok();
                });
            })?;
        Ok(PeerGates {
            addrs,
            isolated,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for PeerGates {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
        if let Some(thread) = self.thread.take() {
            thread.join().ok();
        }
    }
}

async fn gate(
    index: usize,
    listener: TcpListener,
    target: u16,
    isolated: watch::Receiver<Option<(usize, String)>>,
) {
    while let Ok((client, _)) = listener.accept().await {
        tokio::spawn(pass(index, client, target, isolated.clone()));
    }
}

/// Forwards one connection to member `index`'s peer port until it is to be cut.
async fn pass(
    index: usize,
    mut client: TcpStream,
    target: u16,
    mut isolated: watch::Receiver<Option<(usize, String)>>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let from = String::from_utf8_lossy(&head).lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("x-server-from")
            .then(|| value.trim().to_ascii_lowercase())
    });
    let cut = move |state: &Option<(usize, String)>| match state {
        Some((isolated, id)) => *isolated == index || from.as_deref() == Some(id.as_str()),
        None => false,
    };
    if cut(&isolated.borrow_and_update()) {
        return;
    }
    let Ok(mut server) = TcpStream::connect((Ipv4Addr::LOCALHOST, target)).await else {
        return;
    };
    if server.write_all(&head).await.is_err() {
        return;
    }
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = isolated.wait_for(|state| cut(state)) => {}
    }
}
