//! A single throwaway etcd member.

use super::process::{free_port, url, Member, MemberSpec, START_TIMEOUT};
use std::io;
use std::path::Path;
use tempfile::TempDir;

/// How many times a start is retried on fresh ports (another process may grab a port between
/// choosing it and etcd binding it).
const START_ATTEMPTS: usize = 3;

/// One etcd on free 127.0.0.1 client and peer ports, with a temporary data dir.
///
/// Dropping it (or [`kill`](Self::kill)) SIGKILLs the process and removes the data dir;
/// [`stop`](Self::stop) SIGKILLs it and keeps the data dir for [`restart`](Self::restart).
#[derive(Debug)]
pub struct EtcdServer {
    member: Member,
    // Declared after `member` so the process dies before its directory is removed.
    _dir: TempDir,
}

impl EtcdServer {
    /// Starts a server with default settings and waits (up to 10 s) until it answers.
    /// Blocking; see the [module docs](super).
    pub fn start() -> io::Result<Self> {
        Self::start_with_args(std::iter::empty::<String>())
    }

    /// Starts a server with extra etcd flags, e.g.
    /// `--experimental-watch-progress-notify-interval=200ms` or
    /// `--auto-compaction-retention=1`.
    pub fn start_with_args<I, S>(args: I) -> io::Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let extra_args: Vec<String> = args.into_iter().map(Into::into).collect();
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(extra_args.clone()) {
                Ok(server) => return Ok(server),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(e),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("etcd did not start")))
    }

    fn try_start(extra_args: Vec<String>) -> io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("registry-etcd-")
            .tempdir()?;
        let (client_port, peer_port) = (free_port()?, free_port()?);
        let name = "s1".to_owned();
        let spec = MemberSpec {
            initial_cluster: format!("{name}={}", url(peer_port)),
            token: format!("registry-test-{}-{client_port}", std::process::id()),
            name,
            client_port,
            peer_port,
            data_dir: dir.path().join("data"),
            log: dir.path().join("etcd.log"),
            extra_args,
            cleanup_dir: dir.path().to_owned(),
        };
        let mut member = Member::new(spec);
        member.spawn()?;
        member.wait_healthy(START_TIMEOUT)?;
        Ok(EtcdServer { member, _dir: dir })
    }

    /// The client URL, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        self.member.endpoint()
    }

    /// The client URLs (one), ready for [`EtcdRegistry::builder`](crate::EtcdRegistry::builder).
    pub fn endpoints(&self) -> Vec<String> {
        vec![self.endpoint()]
    }

    /// The data dir, kept across [`stop`](Self::stop) and [`restart`](Self::restart).
    pub fn data_dir(&self) -> &Path {
        &self.member.spec.data_dir
    }

    /// The server's log file (etcd's stdout and stderr, warnings and up).
    pub fn log_file(&self) -> &Path {
        &self.member.spec.log
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.member.is_running()
    }

    /// Kills the process with SIGKILL (a crash, not a shutdown). The data dir stays.
    pub fn stop(&mut self) {
        self.member.kill();
    }

    /// Starts the server again on the same data dir and ports (killing it first if it runs),
    /// and waits until it answers.
    pub fn restart(&mut self) -> io::Result<()> {
        self.member.spawn()?;
        self.member.wait_healthy(START_TIMEOUT)
    }

    /// Kills the process and removes the data dir (what dropping does).
    pub fn kill(self) {
        drop(self);
    }
}
