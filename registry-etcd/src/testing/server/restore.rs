//! Backups and restores of a test server, as an operator makes them: `etcdctl snapshot save`,
//! then `etcdutl snapshot restore` into a fresh data dir and a restart on it.

use super::super::process::{etcd_binary, url};
use super::EtcdServer;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `etcdctl` or `etcdutl`, beside the etcd binary the harness runs.
fn tool(name: &str) -> io::Result<PathBuf> {
    let tool = etcd_binary()?.with_file_name(name);
    if tool.is_file() {
        Ok(tool)
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no {name} beside the etcd binary ({}): install it with scripts/install-deps.sh",
                tool.display()
            ),
        ))
    }
}

/// Runs `command`; fails with its output when it does not succeed.
fn run(mut command: Command) -> io::Result<()> {
    let output = command.stdin(Stdio::null()).output()?;
    if output.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{command:?} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )))
}

impl EtcdServer {
    /// Saves a backup of the running server to `path` with `etcdctl snapshot save` (blocking).
    /// Servers started with TLS are not supported.
    pub fn save_snapshot(&self, path: &Path) -> io::Result<()> {
        if self.tls.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "snapshots of a TLS test server are not supported",
            ));
        }
        let mut command = Command::new(tool("etcdctl")?);
        command
            .arg(format!("--endpoints={}", self.endpoint()))
            .args(["snapshot", "save"])
            .arg(path);
        run(command)
    }

    /// Restores the server from the backup at `snapshot` (blocking): kills it if it runs,
    /// replaces its data dir with `etcdutl snapshot restore`'s (same name, peer URL and
    /// cluster token), and starts it on the same ports, waiting until it answers. With
    /// `bump_revision`, the revision is raised by that much and compacted there
    /// (`--bump-revision N --mark-compacted`).
    pub fn restore_snapshot(
        &mut self,
        snapshot: &Path,
        bump_revision: Option<u64>,
    ) -> io::Result<()> {
        let etcdutl = tool("etcdutl")?;
        self.member.kill();
        let spec = &self.member.spec;
        let data_dir = spec.data_dir.clone();
        match std::fs::remove_dir_all(&data_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let peer = url(spec.peer_port);
        let mut command = Command::new(etcdutl);
        command
            .args(["snapshot", "restore"])
            .arg(snapshot)
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--name", &spec.name])
            .args(["--initial-cluster", &spec.initial_cluster])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster-token", &spec.token]);
        if let Some(bump) = bump_revision {
            command
                .arg(format!("--bump-revision={bump}"))
                .arg("--mark-compacted");
        }
        run(command)?;
        self.restart()
    }
}
