//! A single throwaway etcd member.

mod restore;

use super::certs::TestCa;
use super::process::{free_port, url, Member, MemberSpec, MemberTls, START_TIMEOUT};
use std::io;
use std::path::{Path, PathBuf};
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
    tls: Option<ServerTls>,
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
        Self::start_inner(args.into_iter().map(Into::into).collect(), None)
    }

    /// Starts a server whose client port speaks only TLS, with certificates made for it by a
    /// new [`TestCa`] (see [`TlsMode`]). Its [`endpoint`](Self::endpoint) is `https://`;
    /// connect with [`tls_options`](Self::tls_options) or
    /// [`client_tls_options`](Self::client_tls_options).
    pub fn start_tls(mode: TlsMode) -> io::Result<Self> {
        Self::start_tls_with_args(mode, std::iter::empty::<String>())
    }

    /// [`start_tls`](Self::start_tls) with extra etcd flags.
    pub fn start_tls_with_args<I, S>(mode: TlsMode, args: I) -> io::Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let ca = TestCa::new("registry-etcd test CA")?;
        let server =
            Self::start_inner(args.into_iter().map(Into::into).collect(), Some((ca, mode)))?;
        if mode == TlsMode::ClientCertIsUser {
            super::auth::enable_with_certificate(&server)?;
        }
        Ok(server)
    }

    fn start_inner(extra_args: Vec<String>, tls: Option<(TestCa, TlsMode)>) -> io::Result<Self> {
        let mut tls = tls;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(extra_args.clone(), &mut tls) {
                Ok(server) => return Ok(server),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(e),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("etcd did not start")))
    }

    fn try_start(extra_args: Vec<String>, tls: &mut Option<(TestCa, TlsMode)>) -> io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("registry-etcd-")
            .tempdir()?;
        let member_tls = match tls {
            Some((ca, mode)) => Some(write_server_files(dir.path(), ca, *mode)?),
            None => None,
        };
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
            tls: member_tls,
            cleanup_dir: dir.path().to_owned(),
        };
        let mut member = Member::new(spec);
        member.spawn()?;
        member.wait_healthy(START_TIMEOUT)?;
        let tls = tls.take().map(|(ca, mode)| ServerTls {
            ca,
            mode,
            dir: dir.path().to_owned(),
        });
        Ok(EtcdServer {
            member,
            tls,
            _dir: dir,
        })
    }

    /// The client URL, `http://127.0.0.1:<port>` (`https://` when started with TLS).
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

    /// How the client port uses TLS; `None` for plain HTTP.
    pub fn tls_mode(&self) -> Option<TlsMode> {
        self.tls.as_ref().map(|tls| tls.mode)
    }

    /// The CA that signed the server's certificate (and signs client certificates), when
    /// started with TLS.
    pub fn ca(&self) -> Option<&TestCa> {
        self.tls.as_ref().map(|tls| &tls.ca)
    }

    /// TLS settings that trust the server's CA and show no client certificate; `None` when the
    /// server speaks plain HTTP.
    pub fn tls_options(&self) -> Option<crate::TlsOptions> {
        self.ca()
            .map(|ca| crate::TlsOptions::new().ca_certificate(ca.certificate()))
    }

    /// TLS settings that trust the server's CA and show a new client certificate whose common
    /// name is `user` (the etcd user, in [`TlsMode::ClientCertIsUser`]).
    pub fn client_tls_options(&self, user: &str) -> io::Result<crate::TlsOptions> {
        let ca = self.ca().ok_or_else(not_tls)?;
        Ok(crate::TlsOptions::new()
            .ca_certificate(ca.certificate())
            .identity(ca.client(user)?.identity()))
    }

    /// The PEM file of the server's CA, for `--cacert`.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.as_ref().map(|tls| tls.dir.join(CA_FILE))
    }

    /// Writes a new client certificate for `user` and its key as PEM files beside the
    /// server's, for `--cert` and `--key`: `(certificate, key)`.
    pub fn client_files(&self, user: &str) -> io::Result<(PathBuf, PathBuf)> {
        let tls = self.tls.as_ref().ok_or_else(not_tls)?;
        let client = tls.ca.client(user)?;
        let cert = tls.dir.join(format!("client-{user}.pem"));
        let key = tls.dir.join(format!("client-{user}-key.pem"));
        std::fs::write(&cert, client.cert_pem)?;
        std::fs::write(&key, client.key_pem)?;
        Ok((cert, key))
    }
}

/// How a server started by [`EtcdServer::start_tls`] uses TLS on its client port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// The server shows a certificate; a client needs only to trust its CA.
    ServerOnly,
    /// A client must also show a certificate signed by the CA (etcd's `--client-cert-auth`).
    ClientCertRequired,
    /// As [`ClientCertRequired`](Self::ClientCertRequired), with auth enabled: the common name
    /// of a client's certificate is the etcd user it acts as, with no password. The server
    /// starts with a `root` user (no password, the `root` role), so
    /// [`client_tls_options("root")`](EtcdServer::client_tls_options) is the administrator.
    ClientCertIsUser,
}

/// The TLS side of a server: its CA and where its files are.
#[derive(Debug)]
struct ServerTls {
    ca: TestCa,
    mode: TlsMode,
    dir: PathBuf,
}

const CA_FILE: &str = "ca.pem";

/// Writes the CA and a new server certificate into `dir`, and picks the health port.
fn write_server_files(dir: &Path, ca: &TestCa, mode: TlsMode) -> io::Result<MemberTls> {
    let server = ca.server()?;
    let tls = MemberTls {
        cert_file: dir.join("server.pem"),
        key_file: dir.join("server-key.pem"),
        trusted_ca_file: dir.join(CA_FILE),
        client_cert_auth: mode != TlsMode::ServerOnly,
        metrics_port: free_port()?,
    };
    std::fs::write(&tls.cert_file, server.cert_pem)?;
    std::fs::write(&tls.key_file, server.key_pem)?;
    std::fs::write(&tls.trusted_ca_file, ca.cert_pem())?;
    Ok(tls)
}

fn not_tls() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "this etcd was started without TLS",
    )
}
