//! The example binaries as child processes of a test: started quiet and without stdin, read
//! line by line from stdout, stopped with SIGKILL (a crash) or SIGTERM (a clean stop), and
//! killed when their handle drops, so a failing test leaves no process behind; and plain HTTP
//! GETs of what they serve on loopback. Every wait is bounded.

// Each test binary compiles its own copy of this module and uses only part of it.
#![allow(dead_code, unreachable_pub)]

use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStderr, ChildStdout, Command};
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

/// The longest a child may take to print an expected line, to exit after a signal, or to run
/// a one-shot command to the end.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(20);

/// The longest an HTTP request may take to connect, and then to be answered.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(20);

/// `binary args...` with error-level logs only, no stdin, and killed if its handle drops.
pub fn command(binary: &str, args: &[&str]) -> Command {
    let mut command = Command::new(binary);
    command
        .args(args)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs `command` to the end within [`LINE_TIMEOUT`] and echoes what it printed: whether it
/// succeeded, its stdout and its stderr.
pub async fn run(command: &mut Command) -> (bool, String, String) {
    let name = name_of(command);
    let output = timeout(LINE_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("{name} did not finish"))
        .unwrap_or_else(|e| panic!("{name} runs: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    eprintln!("$ {name}\n{stdout}{stderr}");
    (output.status.success(), stdout, stderr)
}

/// Runs the `registry` CLI with exactly `args` (no `REGISTRY_ETCD` or `REGISTRY_NAMESPACE` from
/// the environment) to the end: whether it succeeded, its stdout and its stderr.
pub async fn run_registry<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_registry"));
    command
        .args(args)
        .env("RUST_LOG", "error")
        .env_remove("REGISTRY_ETCD")
        .env_remove("REGISTRY_NAMESPACE")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    run(&mut command).await
}

/// Starts `binary args...`; its stderr goes to the test's own.
pub fn spawn(binary: &str, args: &[&str]) -> Child {
    Child::start(command(binary, args), false)
}

/// Starts `binary args...`, collecting its stderr for [`Child::finish`] (to look for a panic,
/// say).
pub fn spawn_capturing_stderr(binary: &str, args: &[&str]) -> Child {
    Child::start(command(binary, args), true)
}

/// Starts `binary args...` with logs at `level` and up (`RUST_LOG`), collecting its stderr
/// for [`Child::finish`] (to look for a warning, say).
pub fn spawn_logging(binary: &str, args: &[&str], level: &str) -> Child {
    let mut command = command(binary, args);
    command.env("RUST_LOG", level);
    Child::start(command, true)
}

/// A running child and the lines of its stdout.
#[derive(Debug)]
pub struct Child {
    name: String,
    child: tokio::process::Child,
    lines: Lines<BufReader<ChildStdout>>,
    stderr: Option<JoinHandle<String>>,
}

impl Child {
    fn start(mut command: Command, capture_stderr: bool) -> Child {
        let name = name_of(&command);
        let stderr = if capture_stderr {
            Stdio::piped()
        } else {
            Stdio::inherit()
        };
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("{name} starts: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child
            .stderr
            .take()
            .map(|stderr| tokio::spawn(read_all(stderr)));
        Child {
            name,
            child,
            lines: BufReader::new(stdout).lines(),
            stderr,
        }
    }

    /// The next stdout line, within [`LINE_TIMEOUT`].
    pub async fn next_line(&mut self) -> String {
        let line = timeout(LINE_TIMEOUT, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{}: no line in time", self.name))
            .expect("stdout reads")
            .unwrap_or_else(|| panic!("{}: exited before printing a line", self.name));
        eprintln!("[{}] {line}", self.name);
        line
    }

    /// Reads stdout until a line starting with `prefix`, all within [`LINE_TIMEOUT`]; returns
    /// the rest of that line, trimmed.
    pub async fn wait_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + LINE_TIMEOUT;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("{}: no line {prefix:?} in time", self.name))
                .expect("stdout reads")
                .unwrap_or_else(|| panic!("{}: exited before printing {prefix:?}", self.name));
            eprintln!("[{}] {line}", self.name);
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.trim().to_owned();
            }
        }
    }

    /// SIGKILL, as a crash: the child gets no chance to deregister.
    pub async fn kill(&mut self) {
        self.child.start_kill().expect("the child can be killed");
        let _ = timeout(LINE_TIMEOUT, self.child.wait()).await;
    }

    /// SIGTERM, as Ctrl-C or a clean stop; waits for the exit and returns whether it succeeded.
    /// What the child prints meanwhile stays unread, for the test to check.
    pub async fn terminate(&mut self) -> bool {
        self.sigterm().await;
        self.exited_cleanly().await
    }

    /// [`Child::terminate`], echoing the rest of stdout while the child stops (a draining node
    /// prints what it does on the way out).
    pub async fn terminate_echoing_rest(&mut self) -> bool {
        self.sigterm().await;
        let deadline = Instant::now() + LINE_TIMEOUT;
        while let Ok(Ok(Some(line))) =
            tokio::time::timeout_at(deadline, self.lines.next_line()).await
        {
            eprintln!("[{}] {line}", self.name);
        }
        self.exited_cleanly().await
    }

    /// Reads the rest of stdout and waits for the exit, all within `limit`: whether it
    /// succeeded, the lines, and stderr (empty unless started by [`spawn_capturing_stderr`]).
    pub async fn finish(&mut self, limit: Duration) -> (bool, Vec<String>, String) {
        let name = self.name.clone();
        let run = async {
            let mut lines = Vec::new();
            while let Some(line) = self.lines.next_line().await.expect("stdout reads") {
                lines.push(line);
            }
            let status = self.child.wait().await.expect("exit status");
            let stderr = match self.stderr.take() {
                Some(task) => task.await.unwrap_or_default(),
                None => String::new(),
            };
            (status.success(), lines, stderr)
        };
        timeout(limit, run)
            .await
            .unwrap_or_else(|_| panic!("{name}: did not finish in {limit:?}"))
    }

    /// Sends SIGTERM through `kill(1)`: the standard library only sends SIGKILL, and the
    /// binaries deregister only on a signal they can catch.
    async fn sigterm(&self) {
        let pid = self.child.id().expect("still running").to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("kill runs");
        assert!(sent.success());
    }

    async fn exited_cleanly(&mut self) -> bool {
        timeout(LINE_TIMEOUT, self.child.wait())
            .await
            .expect("exits after SIGTERM")
            .expect("exit status")
            .success()
    }
}

/// `binary args...` with the binary's directory left out, to name a child in messages.
fn name_of(command: &Command) -> String {
    let command = command.as_std();
    let program = command.get_program().to_string_lossy();
    let mut name = program.rsplit('/').next().unwrap_or(&program).to_owned();
    for arg in command.get_args() {
        name.push(' ');
        name.push_str(&arg.to_string_lossy());
    }
    name
}

async fn read_all(mut stderr: ChildStderr) -> String {
    let mut text = String::new();
    let _ = stderr.read_to_string(&mut text).await;
    text
}

/// An HTTP response: its head (status line and headers) and its body.
#[derive(Debug)]
pub struct Response {
    pub head: String,
    pub body: String,
}

/// One plain HTTP/1.1 GET of `path` from `address` (`127.0.0.1:PORT`), which must answer 200.
/// Written by hand on a socket, so that the tests need no HTTP client crate.
pub async fn http_get(address: &str, path: &str) -> Response {
    let mut stream = timeout(HTTP_TIMEOUT, tokio::net::TcpStream::connect(address))
        .await
        .expect("connects in time")
        .expect("connects");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("sends");
    let mut response = String::new();
    timeout(HTTP_TIMEOUT, stream.read_to_string(&mut response))
        .await
        .expect("answers in time")
        .expect("reads");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    Response {
        head: head.to_owned(),
        body: body.to_owned(),
    }
}
