//! The dashboard in a real browser: `registry ui` on a real etcd, a fleet registered by the test,
//! and headless Chromium showing the page while the fleet changes under it.
//!
//! Chromium is driven through the DevTools protocol over a pipe (`--remote-debugging-pipe`:
//! JSON messages ending in a NUL byte on its file descriptors 3 and 4), so no driver crate and
//! no debugging port are needed. One page stays open for the whole test, so what it shows comes
//! from the live event stream, not from reloads.
//!
//! Chromium must be installed (`scripts/install-chromium.sh`, which `scripts/test.sh` runs): the
//! test fails, never skips, without it. With `DASHBOARD_SCREENSHOT_DIR` set, it also saves a
//! screenshot of the page there.

mod support;

use registry_api::{PutOptions, Registry};
use registry_etcd::testing::{shared_endpoints, unique_key_prefix};
use registry_etcd::EtcdRegistry;
use registry_service::{Metadata, Registration, RegistrationOptions, ServiceInstance, Status};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::{timeout, Instant};

/// Where the test expects Debian's `chromium` package to have put the browser.
const CHROMIUM: &str = "/usr/bin/chromium";
/// The lease TTL of the test's instances: how long the crashed one stays on the page.
const TTL: Duration = Duration::from_secs(2);
/// The longest the page may take to show a change (a crashed instance needs its TTL on top).
const SHOW_TIMEOUT: Duration = Duration::from_secs(20);

/// A headless Chromium with one page, driven over the DevTools pipe.
struct Browser {
    child: Child,
    commands: ChildStdin,
    replies: BufReader<ChildStdout>,
    next_id: u64,
    session: String,
    profile: PathBuf,
}

impl Browser {
    /// Starts Chromium with a fresh profile and opens `url` in a 1200x800 page.
    async fn open(url: &str) -> Browser {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: the dashboard test needs Debian's chromium package; \
             run scripts/install-chromium.sh (scripts/test.sh does)"
        );
        let profile = std::env::temp_dir().join(unique_key_prefix("chromium").replace('/', "-"));
        std::fs::create_dir_all(&profile).expect("a profile directory");
        // The shell maps the pipe onto the descriptors Chromium's DevTools pipe uses: it reads
        // commands from 3 (our stdin) and writes replies to 4 (our stdout).
        let script = format!(
            "exec {CHROMIUM} --headless --no-sandbox --disable-gpu --disable-quic \
             --no-first-run --disable-background-networking --disable-component-update \
             --disable-sync --hide-scrollbars --user-data-dir='{}' --remote-debugging-pipe \
             about:blank 3<&0 4>&1 0</dev/null 1>/dev/null 2>'{}'",
            profile.display(),
            profile.join("chromium.log").display()
        );
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("sh starts");
        let commands = child.stdin.take().expect("stdin is piped");
        let replies = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut browser = Browser {
            child,
            commands,
            replies,
            next_id: 0,
            session: String::new(),
            profile,
        };
        let target = browser
            .call("Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let target_id = target["targetId"].as_str().expect("a target id").to_owned();
        let attached = browser
            .call(
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await;
        browser.session = attached["sessionId"]
            .as_str()
            .expect("a session")
            .to_owned();
        browser
            .call(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": 1200, "height": 800, "deviceScaleFactor": 1, "mobile": false}),
            )
            .await;
        browser.call("Page.navigate", json!({"url": url})).await;
        browser
    }

    /// Sends one command (to the page once attached) and waits for its result.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&message).expect("JSON");
        bytes.push(0);
        let log = self.profile.join("chromium.log");
        self.commands
            .write_all(&bytes)
            .await
            .unwrap_or_else(|e| panic!("Chromium is gone ({e}); its log: {}", log.display()));
        loop {
            let mut reply = Vec::new();
            let read = timeout(SHOW_TIMEOUT, self.replies.read_until(0, &mut reply))
                .await
                .unwrap_or_else(|_| panic!("Chromium did not answer {method} in time"))
                .expect("Chromium's pipe reads");
            assert!(
                read > 0,
                "Chromium exited; its log: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            reply.pop();
            let reply: Value = serde_json::from_slice(&reply).expect("Chromium sends JSON");
            // Events (no id) and answers to earlier commands are not this command's answer.
            if reply["id"] != json!(id) {
                continue;
            }
            assert!(reply["error"].is_null(), "{method} failed: {reply}");
            return reply["result"].clone();
        }
    }

    /// What the page shows now: its connection state, its instance rows, its change log.
    async fn shown(&mut self) -> Shown {
        let expression = r#"JSON.stringify({
            state: document.body ? document.body.dataset.state : null,
            rows: [...document.querySelectorAll("tr[data-instance]")].map(row => ({
                service: row.dataset.service,
                id: row.dataset.instance,
                status: row.dataset.status,
                badge: row.querySelector(".badge").textContent,
                address: row.querySelector(".addr").textContent,
                lease: row.querySelector(".lease") ? row.querySelector(".lease").textContent : "",
            })),
            changes: [...document.querySelectorAll("li[data-event]")].map(li =>
                li.dataset.event + " " + li.dataset.service + "/" + li.dataset.instance),
        })"#;
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        let text = result["result"]["value"].as_str().unwrap_or("{}");
        serde_json::from_str(text).expect("the page's state as JSON")
    }

    /// Polls the page until `ready` holds for what it shows; panics with the last state if it
    /// does not within `limit`.
    async fn wait_for(
        &mut self,
        what: &str,
        limit: Duration,
        ready: impl Fn(&Shown) -> bool,
    ) -> Shown {
        let deadline = Instant::now() + limit;
        loop {
            let shown = self.shown().await;
            if ready(&shown) {
                return shown;
            }
            assert!(
                Instant::now() < deadline,
                "the page did not show {what} within {limit:?}; it shows {shown:#?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn screenshot(&mut self, path: &Path) {
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let data = shot["data"].as_str().expect("image data");
        std::fs::write(path, base64_decode(data)).expect("the screenshot is written");
    }

    async fn close(mut self) {
        self.session.clear();
        let _ = timeout(
            Duration::from_secs(5),
            self.call("Browser.close", json!({})),
        )
        .await;
        if timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

#[derive(Debug, serde::Deserialize)]
struct Shown {
    state: Option<String>,
    rows: Vec<Row>,
    changes: Vec<String>,
}

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)] // `address` and `lease` are read through the Debug print of a failure.
struct Row {
    service: String,
    id: String,
    status: String,
    badge: String,
    address: String,
    lease: String,
}

impl Shown {
    fn row(&self, service: &str, id: &str) -> Option<&Row> {
        self.rows
            .iter()
            .find(|row| row.service == service && row.id == id)
    }
}

/// Standard base64 (the screenshot's encoding), without pulling in a crate for one test.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &d)| n | u32::from(d) << (18 - 6 * i));
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

/// `registry ui` on the test's etcd prefix.
struct Ui {
    _child: support::Child,
    url: String,
}

async fn start_ui(endpoint: &str, prefix: &str) -> Ui {
    let mut child = support::spawn(
        env!("CARGO_BIN_EXE_registry"),
        &[
            "ui",
            "--listen",
            "127.0.0.1:0",
            "--json",
            "--etcd",
            endpoint,
            "--key-prefix",
            prefix,
        ],
    );
    let line = child.next_line().await;
    let listening: Value = serde_json::from_str(&line).expect("JSON");
    let url = listening["url"].as_str().expect("a URL").to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    Ui { _child: child, url }
}

async fn register(registry: &Arc<dyn Registry>, instance: ServiceInstance) -> Registration {
    Registration::start(
        registry.clone(),
        instance,
        RegistrationOptions::default().ttl(TTL),
    )
    .await
    .expect("the test registers an instance")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_instances_come_drain_and_expire_live() {
    let endpoints = shared_endpoints().expect("an etcd server for the tests");
    let prefix = unique_key_prefix("dashboard");
    let registry: Arc<dyn Registry> = Arc::new(
        EtcdRegistry::builder(endpoints.clone())
            .key_prefix(prefix.clone())
            .connect()
            .await
            .expect("the test connects to etcd"),
    );
    let meta = |zone: &str| Metadata::default().with_version("1.4.2").with_zone(zone);
    let a = register(
        &registry,
        ServiceInstance::new("hello", "hello-a", "127.0.0.1:9001").with_metadata(meta("eu-1")),
    )
    .await;
    let crashing = register(
        &registry,
        ServiceInstance::new("hello", "hello-b", "127.0.0.1:9002").with_metadata(meta("eu-2")),
    )
    .await;
    let billing = register(
        &registry,
        ServiceInstance::new("billing", "billing-1", "127.0.0.1:9101")
            .with_metadata(Metadata::default().with_label("tier", "backend")),
    )
    .await;
    // A draining instance as a shutting-down process writes it: its value with
    // "status":"draining", on a lease of its own.
    let lease = registry.lease_grant(60, None).await.expect("a lease").id;
    let draining = ServiceInstance::new("hello", "hello-c", "127.0.0.1:9003")
        .with_metadata(meta("eu-1"))
        .with_status(Status::Draining);
    registry
        .put(
            b"services/hello/hello-c",
            &draining.to_json(),
            PutOptions::with_lease(lease),
        )
        .await
        .expect("the test writes the draining instance");

    let ui = start_ui(&endpoints.join(","), &prefix).await;
    let started = Instant::now();
    let mut browser = Browser::open(&ui.url).await;
    eprintln!("Chromium started in {:?}", started.elapsed());

    let shown = browser
        .wait_for("the fleet", SHOW_TIMEOUT, |shown| {
            shown.state.as_deref() == Some("live")
                && ["hello-a", "hello-b", "hello-c"]
                    .iter()
                    .all(|id| shown.row("hello", id).is_some())
                && shown.row("billing", "billing-1").is_some()
                // Lease times are read once a second, so they may come one update later.
                && shown.rows.iter().all(|row| row.lease.contains("s left"))
        })
        .await;
    eprintln!(
        "first render {:?} after start: {shown:#?}",
        started.elapsed()
    );
    for (service, id) in [
        ("hello", "hello-a"),
        ("hello", "hello-b"),
        ("billing", "billing-1"),
    ] {
        let row = shown.row(service, id).expect("shown");
        assert_eq!(
            (row.status.as_str(), row.badge.as_str()),
            ("serving", "serving"),
            "{row:?}"
        );
        assert!(
            row.lease.contains("s left"),
            "a lease with its time left: {row:?}"
        );
    }
    let c = shown.row("hello", "hello-c").expect("shown");
    assert_eq!(
        (c.status.as_str(), c.badge.as_str()),
        ("draining", "draining"),
        "{c:?}"
    );
    assert_eq!(c.address, "127.0.0.1:9003");

    // A new instance appears on the open page.
    let _d = register(
        &registry,
        ServiceInstance::new("hello", "hello-d", "127.0.0.1:9004").with_metadata(meta("eu-2")),
    )
    .await;
    browser
        .wait_for("the new instance", SHOW_TIMEOUT, |shown| {
            shown
                .row("hello", "hello-d")
                .is_some_and(|row| row.status == "serving")
                && shown.changes.iter().any(|c| c == "added hello/hello-d")
        })
        .await;

    if let Some(dir) = std::env::var_os("DASHBOARD_SCREENSHOT_DIR") {
        // Let the lease bars settle on a second tick before the picture.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        browser
            .screenshot(&Path::new(&dir).join("dashboard.png"))
            .await;
    }

    // A crash: nobody deregisters, so the instance stays until its lease runs out.
    crashing.abandon();
    let crashed_at = Instant::now();
    browser
        .wait_for("the crashed instance gone", TTL + SHOW_TIMEOUT, |shown| {
            shown.row("hello", "hello-b").is_none()
                && shown.changes.iter().any(|c| c == "removed hello/hello-b")
        })
        .await;
    let gone_after = crashed_at.elapsed();
    eprintln!("the crashed instance left the page {gone_after:?} after the crash");
    assert!(
        gone_after >= Duration::from_millis(500),
        "the crashed instance left after {gone_after:?}: too soon for a lease expiry"
    );
    let shown = browser.shown().await;
    assert!(shown.row("hello", "hello-a").is_some(), "{shown:#?}");
    assert_eq!(
        shown.row("hello", "hello-c").map(|row| row.status.as_str()),
        Some("draining")
    );

    if let Some(dir) = std::env::var_os("DASHBOARD_SCREENSHOT_DIR") {
        browser
            .screenshot(&Path::new(&dir).join("dashboard-after-crash.png"))
            .await;
    }
    browser.close().await;
    a.deregister().await.expect("deregisters");
    billing.deregister().await.expect("deregisters");
    registry.lease_revoke(lease).await.expect("revokes");
    eprintln!("the browser test took {:?}", started.elapsed());
}

#[test]
fn base64_decodes_the_standard_alphabet() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGk="), b"hi");
    assert_eq!(base64_decode("YWJj"), b"abc");
}
