//! Replays the traces recorded from a real etcd 3.5.16 (`/work/shared/data/etcd-traces`, see its
//! README) against the simulator on the manual clock, and compares every normalised response,
//! the final state, the final leases and the whole-history watch.
//!
//! Where our contract deliberately differs from etcd's wire answers, the harness maps ours to
//! etcd's shape, and checks our answer while doing so:
//! - keep-alive of an unknown or expired lease: etcd answers `ttl 0`, we `LeaseNotFound`;
//! - time-to-live of one: etcd answers `TTL -1` (`found: false`), we `LeaseNotFound`;
//! - a grant with a TTL of 0 or below: etcd raises it to its minimum, our contract rejects it
//!   with `InvalidArgument`; the harness checks that, then asks for 1 (also raised to 2);
//! - responses the contract gives no revision (grant, keep-alive, time-to-live, errors) take
//!   the store's current revision, which is what etcd's header carries.

use futures::executor::block_on;
use futures::{FutureExt, StreamExt};
use registry_api::{
    limits, Error, EventKind, InvalidArgument, KeyValue, LeaseId, ListOptions, PutOptions,
    Registry, Revision, WatchEvent, WatchOptions,
};
use registry_memory::MemoryRegistry;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `shared/data/etcd-traces` in the nearest folder above this crate that has it: two levels up
/// from a checkout, three from a git worktree kept one folder deeper. The first candidate when
/// none has it, so the failure names the expected place.
fn trace_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .skip(2)
        .map(|dir| dir.join("shared/data/etcd-traces"))
        .find(|dir| dir.is_dir())
        .unwrap_or_else(|| manifest.join("../../shared/data/etcd-traces"))
}

fn trace_files() -> Vec<PathBuf> {
    let dir = trace_dir();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "the recorded etcd traces are missing: cannot read {} ({e}); they live outside the \
             repository, at ../../shared/data/etcd-traces relative to registry-memory",
            dir.display()
        )
    });
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("trace-") && n.ends_with(".json"))
        })
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no trace-*.json in {}: the recorded etcd traces are missing",
        dir.display()
    );
    files
}

/// How an expiry trace's leases are expired before the `*_after_expiry` ops.
#[derive(Clone, Copy, Debug)]
enum Expiry {
    /// `expire_lease` in the recorded revocation order, as the README prescribes.
    RevokeInOrder,
    /// Move the manual clock past every deadline: expiry must then follow deadline order.
    AdvanceClock,
}

struct Replay {
    registry: MemoryRegistry,
    /// Lease reference n (1-based) -> the simulator's id.
    grants: Vec<LeaseId>,
    /// Negative references -> the raw ids sent for never-granted leases.
    unknown: BTreeMap<i64, i64>,
    mismatches: Vec<String>,
    name: String,
}

fn text(v: &Value, field: &str) -> String {
    v[field].as_str().unwrap_or_default().to_owned()
}

fn int(v: &Value, field: &str) -> i64 {
    v[field].as_i64().unwrap_or_default()
}

fn flag(v: &Value, field: &str) -> bool {
    v[field].as_bool().unwrap_or_default()
}

/// What a trace's `key` / `range_end` pair addresses.
enum Target {
    Key(Vec<u8>),
    Prefix(Vec<u8>),
}

fn target(req: &Value) -> Target {
    let key = text(req, "key").into_bytes();
    let end = text(req, "range_end").into_bytes();
    if end.is_empty() {
        Target::Key(key)
    } else if key == b"\0" && end == b"\0" {
        Target::Prefix(Vec::new())
    } else if limits::prefix_end(&key).as_deref() == Some(&end[..]) {
        Target::Prefix(key)
    } else {
        panic!("range {key:?}..{end:?} is neither a key nor a prefix")
    }
}

fn error_json(err: &Error) -> Value {
    let (status, code, message) = match err {
        Error::LeaseNotFound(_) => (404, 5, "etcdserver: requested lease not found"),
        Error::LeaseExists(_) => (400, 9, "etcdserver: lease already exists"),
        Error::Compacted { .. } => (
            400,
            11,
            "etcdserver: mvcc: required revision has been compacted",
        ),
        Error::FutureRevision { .. } => (
            400,
            11,
            "etcdserver: mvcc: required revision is a future revision",
        ),
        Error::InvalidArgument(InvalidArgument::TtlTooLarge { .. }) => {
            (400, 11, "etcdserver: too large lease TTL")
        }
        Error::InvalidArgument(InvalidArgument::EmptyKey) => {
            (400, 3, "etcdserver: key is not provided")
        }
        other => return json!({"ok": false, "error": {"unmapped": other.to_string()}}),
    };
    json!({"ok": false, "error": {"http_status": status, "code": code, "message": message}})
}

impl Replay {
    fn new(trace: &Value) -> Self {
        let unknown = trace["unknown_lease_raw_ids"]
            .as_object()
            .map(|ids| {
                ids.iter()
                    .filter_map(|(r, raw)| Some((r.parse().ok()?, raw.as_i64()?)))
                    .collect()
            })
            .unwrap_or_default();
        Replay {
            registry: MemoryRegistry::with_manual_clock(),
            grants: Vec::new(),
            unknown,
            mismatches: Vec::new(),
            name: text(trace, "name"),
        }
    }

    fn lease(&self, reference: i64) -> Option<LeaseId> {
        match reference {
            0 => None,
            n if n > 0 => Some(
                *self
                    .grants
                    .get(usize::try_from(n - 1).unwrap_or(usize::MAX))
                    .unwrap_or_else(|| panic!("{}: lease ref {n} before its grant", self.name)),
            ),
            n => Some(LeaseId(*self.unknown.get(&n).unwrap_or_else(|| {
                panic!("{}: no raw id for lease ref {n}", self.name)
            }))),
        }
    }

    fn reference(&self, lease: Option<LeaseId>) -> i64 {
        let Some(id) = lease else { return 0 };
        if let Some(index) = self.grants.iter().rposition(|g| *g == id) {
            return index as i64 + 1;
        }
        self.unknown
            .iter()
            .find(|(_, raw)| **raw == id.0)
            .map(|(r, _)| *r)
            .unwrap_or(i64::MIN)
    }

    fn kv(&self, kv: &KeyValue) -> Value {
        json!({
            "key": kv.key_str(),
            "value": kv.value_str(),
            "create_revision": kv.create_revision.0,
            "mod_revision": kv.mod_revision.0,
            "version": kv.version,
            "lease": self.reference(kv.lease),
        })
    }

    fn event(&self, event: &WatchEvent) -> Value {
        let mut v = self.kv(&event.kv);
        v["type"] = json!(match event.kind {
            EventKind::Put => "PUT",
            EventKind::Delete => "DELETE",
        });
        v["prev_kv"] = event.prev_kv.as_ref().map_or(Value::Null, |p| self.kv(p));
        v
    }

    fn current(&self) -> i64 {
        self.registry.current_revision().0
    }

    fn run(&mut self, req: &Value) -> Value {
        let op = text(req, "op");
        block_on(async {
            match op.as_str() {
                "put" => self.put(req).await,
                "range" => self.range(req).await,
                "delete_range" => self.delete_range(req).await,
                "compact" => match self.registry.compact(Revision(int(req, "revision"))).await {
                    Ok(rev) => json!({"ok": true, "revision": rev.0}),
                    Err(e) => error_json(&e),
                },
                "lease_grant" => self.grant(req).await,
                "lease_revoke" => match self.registry.lease_revoke(self.lease_of(req)).await {
                    Ok(rev) => json!({"ok": true, "revision": rev.0}),
                    Err(e) => error_json(&e),
                },
                "lease_keepalive" => self.keep_alive(int(req, "lease")).await,
                "lease_timetolive" => self.time_to_live(int(req, "lease")).await,
                "watch" => self.watch(req).await,
                other => panic!("{}: unknown op {other}", self.name),
            }
        })
    }

    fn lease_of(&self, req: &Value) -> LeaseId {
        self.lease(int(req, "lease"))
            .unwrap_or_else(|| panic!("{}: lease op without a lease", self.name))
    }

    async fn put(&mut self, req: &Value) -> Value {
        let opts = PutOptions {
            lease: self.lease(int(req, "lease")),
            prev_kv: flag(req, "prev_kv"),
        };
        let key = text(req, "key");
        match self
            .registry
            .put(key.as_bytes(), text(req, "value").as_bytes(), opts)
            .await
        {
            Ok(put) => json!({
                "ok": true,
                "revision": put.revision.0,
                "prev_kv": put.prev_kv.as_ref().map_or(Value::Null, |p| self.kv(p)),
            }),
            Err(e) => error_json(&e),
        }
    }

    async fn range(&mut self, req: &Value) -> Value {
        let at = Some(int(req, "revision")).filter(|r| *r > 0).map(Revision);
        let result = match target(req) {
            Target::Key(key) if at.is_none() => self
                .registry
                .get(&key)
                .await
                .map(|got| (got.kv.into_iter().collect::<Vec<_>>(), got.revision)),
            Target::Key(key) => self
                .registry
                .list(&key, ListOptions { revision: at })
                .await
                .map(|list| {
                    let kvs = list.kvs.into_iter().filter(|kv| kv.key == key).collect();
                    (kvs, list.revision)
                }),
            Target::Prefix(prefix) => self
                .registry
                .list(&prefix, ListOptions { revision: at })
                .await
                .map(|list| (list.kvs, list.revision)),
        };
        match result {
            Ok((kvs, revision)) => json!({
                "ok": true,
                "revision": revision.0,
                "count": kvs.len(),
                "more": false,
                "kvs": kvs.iter().map(|kv| self.kv(kv)).collect::<Vec<_>>(),
            }),
            Err(e) => error_json(&e),
        }
    }

    async fn delete_range(&mut self, req: &Value) -> Value {
        let result = match target(req) {
            Target::Key(key) => self.registry.delete(&key).await,
            Target::Prefix(prefix) => self.registry.delete_prefix(&prefix).await,
        };
        match result {
            Ok(deleted) => {
                // etcd returns previous values only when asked; ours always come.
                let prev_kvs: Vec<Value> = if flag(req, "prev_kv") {
                    deleted.prev_kvs.iter().map(|kv| self.kv(kv)).collect()
                } else {
                    Vec::new()
                };
                json!({
                    "ok": true,
                    "revision": deleted.revision.0,
                    "deleted": deleted.deleted,
                    "prev_kvs": prev_kvs,
                })
            }
            Err(e) => error_json(&e),
        }
    }

    async fn grant(&mut self, req: &Value) -> Value {
        let mut ttl = int(req, "ttl");
        if ttl <= 0 {
            let refused = self.registry.lease_grant(ttl, None).await;
            if !matches!(
                refused,
                Err(Error::InvalidArgument(InvalidArgument::TtlNotPositive(t))) if t == ttl
            ) {
                self.mismatches.push(format!(
                    "{}: grant of TTL {ttl} should fail with TtlNotPositive, got {refused:?}",
                    self.name
                ));
            }
            ttl = 1;
        }
        let id = Some(int(req, "id")).filter(|id| *id != 0).map(LeaseId);
        match self.registry.lease_grant(ttl, id).await {
            Ok(grant) => {
                self.grants.push(grant.id);
                json!({
                    "ok": true,
                    "revision": self.current(),
                    "id": self.grants.len(),
                    "ttl": grant.ttl,
                })
            }
            Err(e) => error_json(&e),
        }
    }

    async fn keep_alive(&mut self, reference: i64) -> Value {
        let id = self.lease(reference).unwrap_or(LeaseId(0));
        match self.registry.lease_keep_alive(id).await {
            Ok(ttl) => json!({"ok": true, "revision": self.current(), "id": reference, "ttl": ttl}),
            Err(Error::LeaseNotFound(gone)) if gone == id => {
                json!({"ok": true, "revision": self.current(), "id": reference, "ttl": 0})
            }
            Err(e) => error_json(&e),
        }
    }

    async fn time_to_live(&mut self, reference: i64) -> Value {
        let id = self.lease(reference).unwrap_or(LeaseId(0));
        match self.registry.lease_time_to_live(id).await {
            Ok(ttl) => {
                let mut keys: Vec<String> = ttl
                    .keys
                    .iter()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .collect();
                keys.sort();
                json!({
                    "ok": true,
                    "revision": self.current(),
                    "id": reference,
                    "found": true,
                    "granted_ttl": ttl.granted_ttl,
                    "keys": keys,
                })
            }
            Err(Error::LeaseNotFound(gone)) if gone == id => json!({
                "ok": true,
                "revision": self.current(),
                "id": reference,
                "found": false,
                "granted_ttl": 0,
                "keys": [],
            }),
            Err(e) => error_json(&e),
        }
    }

    /// Opens the watch, takes every batch available without waiting (the recorder had no
    /// concurrent writers either), then drops it.
    async fn watch(&mut self, req: &Value) -> Value {
        let (prefix, only_key) = match target(req) {
            Target::Key(key) => (key.clone(), Some(key)),
            Target::Prefix(prefix) => (prefix, None),
        };
        let opts = WatchOptions {
            start_revision: Some(int(req, "start_revision"))
                .filter(|r| *r > 0)
                .map(Revision),
            prev_kv: flag(req, "prev_kv"),
            progress_notify: false,
        };
        let created_revision = self.current();
        let mut stream = match self.registry.watch(&prefix, opts).await {
            Ok(stream) => stream,
            Err(e) => return error_json(&e),
        };
        let mut events = Vec::new();
        let mut canceled = false;
        let mut compact_revision = 0;
        let mut last_revision = 0;
        while let Some(item) = stream.next().now_or_never() {
            match item {
                None => break,
                Some(Ok(batch)) => {
                    if batch.revision.0 <= last_revision || batch.events.is_empty() {
                        self.mismatches.push(format!(
                            "{}: watch batch at {} after {last_revision}, {} events",
                            self.name,
                            batch.revision,
                            batch.events.len()
                        ));
                    }
                    last_revision = batch.revision.0;
                    for event in &batch.events {
                        if event.kv.mod_revision != batch.revision {
                            self.mismatches.push(format!(
                                "{}: event at {} in the batch of {}",
                                self.name, event.kv.mod_revision, batch.revision
                            ));
                        }
                        if only_key.as_ref().map_or(true, |k| *k == event.kv.key) {
                            events.push(self.event(event));
                        }
                    }
                }
                Some(Err(Error::Compacted {
                    compact_revision: c,
                })) => {
                    canceled = true;
                    compact_revision = c.0;
                    break;
                }
                Some(Err(e)) => return error_json(&e),
            }
        }
        json!({
            "ok": true,
            "created": true,
            "created_revision": created_revision,
            "canceled": canceled,
            "compact_revision": compact_revision,
            "cancel_reason": "",
            "events": events,
        })
    }

    fn check(&mut self, what: &str, expected: &Value, got: &Value) {
        if expected != got {
            self.mismatches.push(format!(
                "{}: {what}\n  expected {expected}\n  got      {got}",
                self.name
            ));
        }
    }

    fn expire_all(&mut self, trace: &Value, how: Expiry) {
        match how {
            Expiry::RevokeInOrder => {
                let order = trace["expiry"]["revocation_order"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{}: no revocation_order", self.name))
                    .clone();
                for reference in order {
                    let id = self.lease(reference.as_i64().unwrap_or_default());
                    if let Some(id) = id {
                        if let Err(e) = self.registry.expire_lease(id) {
                            self.mismatches
                                .push(format!("{}: expire_lease({id}) failed: {e}", self.name));
                        }
                    }
                }
            }
            Expiry::AdvanceClock => {
                let longest = trace["scenario"]["requested_ttls"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_i64)
                    .max()
                    .unwrap_or_default()
                    .max(limits::DEFAULT_MIN_LEASE_TTL);
                let last_keepalive = trace["scenario"]["keepalives"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|k| k["at_s"].as_f64())
                    .fold(0.0, f64::max);
                let until = Duration::from_secs_f64(last_keepalive)
                    + Duration::from_secs(u64::try_from(longest).unwrap_or_default());
                self.registry
                    .advance(until.saturating_sub(self.registry.now()));
            }
        }
    }

    fn replay(&mut self, trace: &Value, how: Expiry) {
        let ops = trace["ops"].as_array().cloned().unwrap_or_default();
        let mut expired = false;
        for op in &ops {
            let intent = text(op, "intent");
            if !expired && intent.ends_with("_after_expiry") {
                self.expire_all(trace, how);
                expired = true;
            }
            let got = self.run(&op["req"]);
            let what = format!("op {} ({intent}) {}", int(op, "i"), op["req"]);
            self.check(&what, &op["resp"], &got);
        }
        self.check_final(trace);
    }

    fn check_final(&mut self, trace: &Value) {
        let fin = &trace["final"];
        let got = json!(self.current());
        self.check("final revision", &fin["revision"], &got);
        let got = json!(self.registry.compact_revision().0);
        self.check("final compact_revision", &fin["compact_revision"], &got);
        let got = self.run(&json!({"op": "range", "key": "\0", "range_end": "\0", "revision": 0}));
        self.check("final state", &fin["state"], &got);
        for reference in 1..=self.grants.len() as i64 {
            let got = block_on(self.time_to_live(reference));
            let expected = &fin["leases"][(reference - 1) as usize];
            self.check(&format!("final lease {reference}"), expected, &got);
        }
        let history = &fin["history"];
        let got = self.run(&json!({
            "op": "watch", "key": "\0", "range_end": "\0", "prev_kv": true,
            "start_revision": int(history, "start_revision"),
        }));
        self.check("whole-history watch", &history["watch"], &got);
    }
}

fn replay_all(how: Expiry, only_kind: Option<&str>) {
    let mut mismatches = Vec::new();
    let mut replayed = 0;
    for path in trace_files() {
        let raw = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let trace: Value = serde_json::from_str(&raw)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        if only_kind.is_some_and(|kind| trace["kind"] != kind) {
            continue;
        }
        let mut replay = Replay::new(&trace);
        replay.replay(&trace, how);
        mismatches.append(&mut replay.mismatches);
        replayed += 1;
    }
    assert!(replayed > 0, "no trace of the kind asked for was replayed");
    assert!(
        mismatches.is_empty(),
        "{} mismatches against etcd:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[test]
fn every_recorded_trace_matches_the_simulator() {
    replay_all(Expiry::RevokeInOrder, None);
}

#[test]
fn expiry_traces_match_when_the_clock_runs_out() {
    replay_all(Expiry::AdvanceClock, Some("expiry"));
}

#[test]
fn the_trace_folder_is_found() {
    // A missing folder must fail the run, never skip it.
    assert!(trace_dir().is_dir(), "{} is missing", trace_dir().display());
    assert!(trace_files().len() >= 11);
}
