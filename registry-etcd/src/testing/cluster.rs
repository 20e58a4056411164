//! A throwaway multi-member etcd cluster on loopback.

use super::process::{free_port, url, Member, MemberSpec, START_TIMEOUT};
use etcd_client::{Client, ConnectOptions};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tempfile::TempDir;

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
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}={}", url(*peer)))
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
                    extra_args: extra_args.clone(),
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
        Ok(EtcdCluster { members, _dir: dir })
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
