//! One etcd member process: its command line, its log, its watchdog, and health polling.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a member may take to answer its health check.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The etcd server binary: `$ETCD_BIN`, `<workspace>/.tools/etcd/etcd`, or `etcd` on `PATH`.
pub(crate) fn etcd_binary() -> io::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("ETCD_BIN").filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("ETCD_BIN={} does not exist", bin.display()),
            ))
        };
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let installed = workspace.join(".tools/etcd/etcd");
    if installed.is_file() {
        return Ok(installed);
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("etcd"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .find(|candidate| candidate.is_file());
    on_path.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "no etcd binary: set ETCD_BIN, run scripts/install-deps.sh, or put etcd on PATH",
        )
    })
}

/// A loopback port nobody listens on right now. Ports handed out by this process are never
/// handed out twice, so members started together do not collide with each other.
pub(crate) fn free_port() -> io::Result<u16> {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    for _ in 0..64 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let mut given = GIVEN.lock().unwrap_or_else(PoisonError::into_inner);
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return Ok(port);
        }
    }
    Err(io::Error::other("no free loopback port found"))
}

/// `http://127.0.0.1:<port>`.
pub(crate) fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// A member's client TLS: its certificate files, whether clients must show a certificate, and
/// the plain-HTTP port its `/health` is polled on (the client port speaks only TLS).
#[derive(Debug, Clone)]
pub(crate) struct MemberTls {
    pub(crate) cert_file: PathBuf,
    pub(crate) key_file: PathBuf,
    pub(crate) trusted_ca_file: PathBuf,
    /// Require client certificates signed by `trusted_ca_file`.
    pub(crate) client_cert_auth: bool,
    pub(crate) metrics_port: u16,
}

/// How one member is started.
#[derive(Debug, Clone)]
pub(crate) struct MemberSpec {
    pub(crate) name: String,
    pub(crate) client_port: u16,
    pub(crate) peer_port: u16,
    pub(crate) data_dir: PathBuf,
    pub(crate) log: PathBuf,
    pub(crate) initial_cluster: String,
    pub(crate) token: String,
    pub(crate) extra_args: Vec<String>,
    /// TLS on the client port, if any (peers always talk plain HTTP on loopback).
    pub(crate) tls: Option<MemberTls>,
    /// Removed by the watchdog if the test process dies without cleaning up.
    pub(crate) cleanup_dir: PathBuf,
}

/// A member process and its watchdog.
#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) spec: MemberSpec,
    child: Option<Child>,
    watchdog: Option<Child>,
}

impl Member {
    pub(crate) fn new(spec: MemberSpec) -> Self {
        Member {
            spec,
            child: None,
            watchdog: None,
        }
    }

    pub(crate) fn endpoint(&self) -> String {
        match self.spec.tls {
            Some(_) => format!("https://127.0.0.1:{}", self.spec.client_port),
            None => url(self.spec.client_port),
        }
    }

    /// The plain-HTTP port that answers `/health`.
    fn health_port(&self) -> u16 {
        match &self.spec.tls {
            Some(tls) => tls.metrics_port,
            None => self.spec.client_port,
        }
    }

    /// Starts the process (on its existing data dir, if any). Does not wait for health.
    pub(crate) fn spawn(&mut self) -> io::Result<()> {
        self.kill();
        let bin = etcd_binary()?;
        let spec = &self.spec;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)?;
        writeln!(log, "=== starting {} ({})", spec.name, bin.display())?;
        let client = self.endpoint();
        let peer = url(spec.peer_port);
        let mut command = Command::new(&bin);
        command
            .arg("--name")
            .arg(&spec.name)
            .arg("--data-dir")
            .arg(&spec.data_dir)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &spec.initial_cluster])
            .args(["--initial-cluster-token", &spec.token])
            .args(["--initial-cluster-state", "new"])
            .args(["--log-level", "warn"]);
        if let Some(tls) = &spec.tls {
            command
                .arg("--cert-file")
                .arg(&tls.cert_file)
                .arg("--key-file")
                .arg(&tls.key_file)
                .arg(format!("--listen-metrics-urls={}", url(tls.metrics_port)));
            // etcd requires client certificates whenever it has a trusted CA file, whatever
            // `--client-cert-auth` says: a server-only setup must not name one.
            if tls.client_cert_auth {
                command
                    .arg("--trusted-ca-file")
                    .arg(&tls.trusted_ca_file)
                    .arg("--client-cert-auth");
            }
        }
        command
            .args(&spec.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        let child = command
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run {}: {e}", bin.display())))?;
        self.watchdog = spawn_watchdog(child.id(), &spec.cleanup_dir).ok();
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, and reap. The data dir stays.
    pub(crate) fn kill(&mut self) {
        for mut process in [self.watchdog.take(), self.child.take()]
            .into_iter()
            .flatten()
        {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// True while the process runs.
    pub(crate) fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Polls `/health` until it reports healthy, the process exits, or `timeout` passes.
    pub(crate) fn wait_healthy(&mut self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if healthy(self.health_port()) {
                return Ok(());
            }
            if !self.is_running() {
                return Err(io::Error::other(format!(
                    "etcd member {} exited during start; log tail:\n{}",
                    self.spec.name,
                    log_tail(&self.spec.log)
                )));
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "etcd member {} not healthy after {timeout:?}; log tail:\n{}",
                        self.spec.name,
                        log_tail(&self.spec.log)
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A shell loop that kills `pid` (and removes `dir`) once this test process is gone, so a
/// server in a static, never dropped, does not outlive the test binary.
fn spawn_watchdog(pid: u32, dir: &Path) -> io::Result<Child> {
    const SCRIPT: &str = r#"while kill -0 "$1" 2>/dev/null; do sleep 0.3; done; kill -9 "$2" 2>/dev/null; rm -rf "$3""#;
    Command::new("sh")
        .args(["-c", SCRIPT, "etcd-watchdog"])
        .arg(std::process::id().to_string())
        .arg(pid.to_string())
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

/// One `GET /health`: true when etcd reports itself healthy (it has a leader, no alarms).
pub(crate) fn healthy(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(1000)));
    let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
    let request =
        format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.contains(r#""health":"true""#)
}

fn log_tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
