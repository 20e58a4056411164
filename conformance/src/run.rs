//! Running a generated sequence against a backend and the model side by side.

use crate::backend::{Backend, Capabilities, Time};
use crate::failure::{ensure, Check, Failure};
use crate::model::{Model, ModelLimits};
use crate::observe::{Normalizer, ObsKv, Observation, Outcome, Step, WatchLog};
use crate::ops::{self, KeySel, LeaseSel, Op, RevSel, KEYS, PREFIXES};
use crate::prefix::unique_prefix;
use crate::watch_read::{self, check_properties, read_until};
use registry_api::{
    LeaseId, ListOptions, PutOptions, Registry, Result, Revision, WatchOptions, WatchStream,
};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A lease id that no backend under test issues: what "an unknown lease" sends.
pub const UNKNOWN_LEASE: LeaseId = LeaseId(0x0bad_1ea5_0000_0007);

/// Runs `ops` on a fresh registry of `backend` and records what it observed, without judging
/// it: the differential test compares two backends' observations. Requests are resolved against
/// the reference model, so every backend gets the same requests.
pub async fn run<B: Backend + ?Sized>(backend: &B, ops: &[Op]) -> Observation {
    let mut session = Session::start(backend, "run", false).await;
    match &mut session {
        Ok(s) => {
            let _ = s.execute(ops).await;
            s.finish(true).await
        }
        Err(e) => Observation {
            steps: vec![Step {
                request: "start".into(),
                outcome: Outcome::Failed(crate::observe::ErrorKind::Other(e.clone())),
            }],
            ..Observation::default()
        },
    }
}

/// Runs `ops` on a fresh registry of `backend`, checking every result and every watched event
/// against the model, and returns the observation; the first difference is a [`Failure`] of
/// `case`.
pub async fn check<B: Backend + ?Sized>(
    backend: &B,
    case: &str,
    ops: &[Op],
) -> std::result::Result<Observation, Failure> {
    let mut session = Session::start(backend, case, true)
        .await
        .map_err(|m| Failure::new(case, m))?;
    let outcome = session.execute(ops).await;
    let observation = session.finish(outcome.is_ok()).await;
    outcome.map_err(|m| Failure::new(case, m))?;
    match session.problems.first() {
        Some(m) => Err(Failure::new(case, m.clone())),
        None => Ok(observation),
    }
}

struct OpenWatch {
    prefix: Vec<u8>,
    start: Revision,
    prev_kv: bool,
    compacted_at_open: Option<Revision>,
    stream: WatchStream,
}

struct Session<'b, B: ?Sized> {
    backend: &'b B,
    registry: Arc<dyn Registry>,
    caps: Capabilities,
    prefix: Vec<u8>,
    model: Model,
    norm: Normalizer,
    watches: Vec<OpenWatch>,
    steps: Vec<Step>,
    problems: Vec<String>,
    strict: bool,
    started: Instant,
    /// A watch from a past revision may not have caught up yet (etcd syncs such watches every
    /// 100 ms); a compaction now would cancel it, so compactions wait a little first.
    catching_up: bool,
}

impl<'b, B: Backend + ?Sized> Session<'b, B> {
    async fn start(backend: &'b B, label: &str, strict: bool) -> Check<Self> {
        let registry = backend.registry().await;
        let caps = backend.capabilities();
        let prefix = unique_prefix(label);
        let first = registry
            .list(&prefix, ListOptions::default())
            .await
            .map_err(|e| format!("listing a fresh prefix failed: {e}"))?;
        ensure!(
            first.kvs.is_empty(),
            "a fresh prefix is not empty: {} keys",
            first.kvs.len()
        );
        let model = Model::new(
            first.revision,
            ModelLimits {
                min_ttl: caps.min_ttl,
                max_ttl: caps.max_ttl,
                max_value_bytes: caps.max_value_bytes,
            },
        );
        Ok(Session {
            backend,
            registry,
            norm: Normalizer::new(first.revision, prefix.clone()),
            caps,
            prefix,
            model,
            watches: Vec::new(),
            steps: Vec::new(),
            problems: Vec::new(),
            strict,
            started: Instant::now(),
            catching_up: false,
        })
    }

    async fn execute(&mut self, ops: &[Op]) -> Check {
        for (i, op) in ops.iter().enumerate() {
            if let Err(m) = self.step(op).await {
                let m = format!("op {i} {op:?}: {m}");
                if self.strict {
                    return Err(m);
                }
                self.problems.push(m);
            }
        }
        Ok(())
    }

    fn key(&self, sel: KeySel) -> Vec<u8> {
        match sel {
            KeySel::Empty => Vec::new(),
            KeySel::Key(i) => self.under(KEYS[usize::from(i) % KEYS.len()]),
        }
    }

    fn under(&self, rel: &str) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(rel.as_bytes());
        k
    }

    fn prefix_of(&self, i: u8) -> Vec<u8> {
        self.under(PREFIXES[usize::from(i) % PREFIXES.len()])
    }

    fn lease(&self, sel: LeaseSel) -> Option<LeaseId> {
        match sel {
            LeaseSel::None => None,
            LeaseSel::Unknown => Some(UNKNOWN_LEASE),
            LeaseSel::Granted(i) => {
                let granted = self.norm.leases();
                if granted.is_empty() {
                    Some(UNKNOWN_LEASE)
                } else {
                    Some(granted[usize::from(i) % granted.len()])
                }
            }
        }
    }

    /// A revision from the base up to one past the current.
    fn revision(&self, sel: RevSel) -> Revision {
        let base = self.model.base().0;
        let span = (self.model.revision().0 - base + 2).max(1);
        Revision(base + i64::from(sel.0) % span)
    }

    /// Records `actual`, and compares it with `expected` under the normaliser.
    fn record<T>(
        &mut self,
        request: String,
        actual: Result<T>,
        expected: Result<T>,
        outcome: impl Fn(&Normalizer, &T) -> Outcome,
    ) -> Check<Option<T>> {
        let norm = &self.norm;
        let to_outcome = |r: &Result<T>| match r {
            Ok(v) => outcome(norm, v),
            Err(e) => Outcome::Failed(norm.error(e)),
        };
        let (got, want) = (to_outcome(&actual), to_outcome(&expected));
        let same = got == want;
        self.steps.push(Step {
            request: request.clone(),
            outcome: got.clone(),
        });
        ensure!(
            same,
            "{request}: the backend differs from the model\n  expected: {want:?}\n    actual: {got:?}"
        );
        Ok(actual.ok())
    }

    async fn step(&mut self, op: &Op) -> Check {
        match op {
            Op::Put {
                key,
                value,
                lease,
                prev_kv,
            } => {
                let (key, lease) = (self.key(*key), self.lease(*lease));
                let value = ops::value_bytes(*value, key.len(), &self.caps);
                let request = format!(
                    "put {:?} ({} bytes) lease {:?}",
                    self.norm.key(&key),
                    value.len(),
                    lease.map(|l| self.norm.lease(l))
                );
                let opts = PutOptions {
                    lease,
                    prev_kv: *prev_kv,
                };
                let actual = self.registry.put(&key, &value, opts).await;
                let expected = self.model.put(&key, &value, lease, *prev_kv);
                self.record(request, actual, expected, |n, r| Outcome::Put {
                    revision: n.rev(r.revision),
                    prev_kv: r.prev_kv.as_ref().map(|kv| n.kv(kv)),
                })?;
            }
            Op::Get { key } => {
                let key = self.key(*key);
                let request = format!("get {:?}", self.norm.key(&key));
                let actual = self.registry.get(&key).await;
                let expected = self.model.get(&key);
                self.record(request, actual, expected, |n, r| Outcome::Get {
                    revision: n.rev(r.revision),
                    kv: r.kv.as_ref().map(|kv| n.kv(kv)),
                })?;
            }
            Op::List { prefix, at } => {
                let prefix = self.prefix_of(*prefix);
                let at = at.map(|s| self.revision(s));
                let request = format!(
                    "list {:?} at {:?}",
                    self.norm.key(&prefix),
                    at.map(|r| self.norm.rev(r))
                );
                let actual = self
                    .registry
                    .list(&prefix, ListOptions { revision: at })
                    .await;
                let expected = self.model.list(&prefix, at);
                self.record(request, actual, expected, |n, r| Outcome::List {
                    revision: n.rev(r.revision),
                    kvs: n.kvs(&r.kvs),
                })?;
            }
            Op::Delete { key } => {
                let key = self.key(*key);
                let request = format!("delete {:?}", self.norm.key(&key));
                let actual = self.registry.delete(&key).await;
                let expected = self.model.delete(&key);
                self.record(request, actual, expected, delete_outcome)?;
            }
            Op::DeletePrefix { prefix } => {
                let prefix = self.prefix_of(*prefix);
                let request = format!("delete_prefix {:?}", self.norm.key(&prefix));
                let actual = self.registry.delete_prefix(&prefix).await;
                let expected = self.model.delete_prefix(&prefix);
                self.record(request, actual, expected, delete_outcome)?;
            }
            Op::Grant { ttl } => self.grant(*ttl).await?,
            Op::KeepAlive { lease } => {
                let id = self.lease(*lease).unwrap_or(UNKNOWN_LEASE);
                let request = format!("keep_alive {:?}", self.norm.lease(id));
                let actual = self.registry.lease_keep_alive(id).await;
                let expected = self.model.lease_keep_alive(id);
                self.record(request, actual, expected, |_, ttl| Outcome::KeepAlive(*ttl))?;
            }
            Op::KeepAliveMany { leases } => {
                let ids: Vec<LeaseId> = leases
                    .iter()
                    .map(|sel| self.lease(*sel).unwrap_or(UNKNOWN_LEASE))
                    .collect();
                let named: Vec<_> = ids.iter().map(|id| self.norm.lease(*id)).collect();
                let request = format!("keep_alive_many {named:?}");
                let sent = Instant::now();
                let actual = self.registry.lease_keep_alive_many(&ids).await;
                let expected = self.model.lease_keep_alive_many(&ids);
                let answers = self.record(request, actual, expected, |n, answers| {
                    Outcome::KeepAliveMany(n.renewals(answers))
                })?;
                let renewed: Vec<LeaseId> = ids
                    .iter()
                    .zip(answers.iter().flatten())
                    .filter(|(_, answer)| answer.is_ok())
                    .map(|(id, _)| *id)
                    .collect();
                self.check_renewed(&renewed, sent).await?;
            }
            Op::Revoke { lease } => {
                let id = self.lease(*lease).unwrap_or(UNKNOWN_LEASE);
                let request = format!("revoke {:?}", self.norm.lease(id));
                let actual = self.registry.lease_revoke(id).await;
                let expected = self.model.lease_revoke(id);
                self.record(request, actual, expected, |n, r| Outcome::Revoke(n.rev(*r)))?;
            }
            Op::TimeToLive { lease } => self.time_to_live(*lease).await?,
            Op::Watch {
                prefix,
                start,
                prev_kv,
            } => self.watch(*prefix, *start, *prev_kv).await?,
            Op::Compact { at } => self.compact(*at).await?,
            Op::Advance { millis } => {
                let by = Duration::from_millis(*millis);
                let outcome = match self.caps.time {
                    Time::Virtual => {
                        self.backend.advance(by).await;
                        self.model.advance(by);
                        Outcome::Advanced
                    }
                    Time::Real => Outcome::Skipped,
                };
                self.steps.push(Step {
                    request: format!("advance {millis} ms"),
                    outcome,
                });
            }
        }
        Ok(())
    }

    async fn grant(&mut self, ttl: i64) -> Check {
        let request = format!("grant ttl {ttl}");
        let actual = self.registry.lease_grant(ttl, None).await;
        // The model takes the backend's id; a grant the backend refused gets one that no
        // backend issues, so that the lease order stays the same on every backend.
        let id = match &actual {
            Ok(g) => g.id,
            Err(_) => LeaseId(UNKNOWN_LEASE.0 + 1 + self.norm.leases().len() as i64),
        };
        let expected = self.model.lease_grant(ttl, id);
        if expected.is_ok() || actual.is_ok() {
            self.norm.granted(id);
        }
        self.record(request, actual, expected, |n, g| Outcome::Grant {
            lease: n.lease(g.id),
            ttl: g.ttl,
        })?;
        Ok(())
    }

    /// Answers that match the model do not show that a batch renewed anything (a missed
    /// renewal shows only if a later advance happens to cross the old deadline): every lease
    /// the batch answered for must have its whole TTL left at once.
    async fn check_renewed(&self, ids: &[LeaseId], sent: Instant) -> Check {
        let live: BTreeSet<LeaseId> = ids
            .iter()
            .copied()
            .filter(|id| self.model.lease(*id).is_some())
            .collect();
        for id in live {
            let granted = self.model.lease(id).map_or(0, |l| l.granted);
            let left = self
                .registry
                .lease_time_to_live(id)
                .await
                .map_err(|e| format!("time_to_live of {id} after a batch renewed it: {e}"))?
                .ttl;
            let lowest = match self.caps.time {
                Time::Virtual => granted,
                Time::Real => granted - 1 - sent.elapsed().as_secs() as i64,
            };
            ensure!(
                (lowest..=granted).contains(&left),
                "L3: keep_alive_many answered for {:?} but left it {left} s of its {granted} s, expected {lowest}..={granted}",
                self.norm.lease(id)
            );
        }
        Ok(())
    }

    async fn time_to_live(&mut self, lease: LeaseSel) -> Check {
        let id = self.lease(lease).unwrap_or(UNKNOWN_LEASE);
        let request = format!("time_to_live {:?}", self.norm.lease(id));
        let actual = self.registry.lease_time_to_live(id).await;
        let expected = self.model.lease_time_to_live(id);
        let remaining = actual.as_ref().ok().map(|t| (t.id, t.ttl));
        let granted = self.model.lease(id).map(|l| (l.granted, l.deadline));
        self.record(request, actual, expected, |n, t| Outcome::TimeToLive {
            granted_ttl: t.granted_ttl,
            keys: t.keys.iter().map(|k| n.key(k)).collect(),
        })?;
        if let (Some((got_id, left)), Some((granted, deadline))) = (remaining, granted) {
            ensure!(got_id == id, "time_to_live of {id} answered for {got_id}");
            let (lo, hi) = match self.caps.time {
                Time::Virtual => {
                    let exact = deadline.saturating_sub(self.model.now());
                    let floor = exact.as_secs() as i64;
                    let ceil = floor + i64::from(exact.subsec_nanos() > 0);
                    (floor - 1, ceil)
                }
                Time::Real => {
                    let elapsed = self.started.elapsed().as_secs() as i64 + 1;
                    (granted - 1 - elapsed, granted)
                }
            };
            ensure!(
                (lo.max(0)..=hi).contains(&left),
                "time_to_live of {id} reported {left} s left, expected {lo}..={hi}"
            );
        }
        Ok(())
    }

    async fn watch(&mut self, prefix: u8, start: RevSel, prev_kv: bool) -> Check {
        let prefix = self.prefix_of(prefix);
        let start = self.revision(start);
        let request = format!(
            "watch {:?} from {} prev_kv {prev_kv}",
            self.norm.key(&prefix),
            self.norm.rev(start)
        );
        let opts = WatchOptions {
            start_revision: Some(start),
            prev_kv,
            progress_notify: false,
        };
        let expected = self.model.watch(&prefix, start, prev_kv);
        let mut actual = self.registry.watch(&prefix, opts).await;
        if expected.is_err() {
            // A compacted start: the error is the stream's only item.
            if let Ok(stream) = &mut actual {
                let got = read_until(stream, None, self.caps.watch_timeout()).await;
                actual = match (got.error, got.batches.first()) {
                    (Some(e), _) => Err(e),
                    (None, Some(b)) => {
                        return Err(format!(
                            "{request}: W9 a watch from a compacted revision delivered revision {}",
                            b.revision
                        ))
                    }
                    (None, None) => {
                        return Err(format!(
                            "{request}: W9 a watch from a compacted revision delivered no error"
                        ))
                    }
                };
            }
        }
        let compacted_at_open = self.model.compacted();
        let (stream, actual) = match actual {
            Ok(s) => (Some(s), Ok(())),
            Err(e) => (None, Err(e)),
        };
        self.record(request, actual, expected.map(|_| ()), |_, _| {
            Outcome::Watching
        })?;
        if let Some(stream) = stream {
            if start <= self.model.revision() {
                self.catching_up = true;
            }
            self.watches.push(OpenWatch {
                prefix,
                start,
                prev_kv,
                compacted_at_open,
                stream,
            });
        }
        Ok(())
    }

    async fn compact(&mut self, at: RevSel) -> Check {
        let floor = self.model.compacted().unwrap_or(self.model.base());
        let floor = floor.max(self.model.base());
        let span = self.model.revision().0 - floor.0;
        if span <= 0 {
            self.steps.push(Step {
                request: "compact (nothing to compact)".into(),
                outcome: Outcome::Skipped,
            });
            return Ok(());
        }
        let at = Revision(floor.0 + 1 + i64::from(at.0) % span);
        if self.catching_up && self.caps.time == Time::Real {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        self.catching_up = false;
        let request = format!("compact at {}", self.norm.rev(at));
        let actual = self.registry.compact(at).await;
        let expected = self.model.compact(at);
        self.record(request, actual, expected, |n, r| {
            Outcome::Compact(n.rev(*r))
        })?;
        Ok(())
    }

    /// Reads every watch to the end of the history, checks the final state, releases leases.
    async fn finish(&mut self, read_watches: bool) -> Observation {
        let watch_problems = if read_watches {
            self.finish_watches().await
        } else {
            self.watches.clear();
            (Vec::new(), Vec::new())
        };
        let mut observation = Observation {
            steps: std::mem::take(&mut self.steps),
            watches: watch_problems.0,
            final_state: Vec::new(),
        };
        self.problems.extend(watch_problems.1);
        match self
            .registry
            .list(&self.prefix, ListOptions::default())
            .await
        {
            Ok(list) => {
                observation.final_state = self.norm.kvs(&list.kvs);
                let want: Vec<ObsKv> = self
                    .model
                    .list(&self.prefix, None)
                    .map(|l| self.norm.kvs(&l.kvs))
                    .unwrap_or_default();
                if observation.final_state != want {
                    self.problems.push(format!(
                        "final state differs from the model\n  expected: {want:?}\n    actual: {:?}",
                        observation.final_state
                    ));
                }
            }
            Err(e) => self.problems.push(format!("final list failed: {e}")),
        }
        if let Err(m) = self.check_leases().await {
            self.problems.push(m);
        }
        for id in self.model.leases() {
            let _ = self.registry.lease_revoke(id).await;
        }
        observation
    }

    /// Live leases are listed, dead ones are not (other leases may exist on a shared server).
    async fn check_leases(&self) -> Check {
        let listed: BTreeSet<LeaseId> = self
            .registry
            .leases()
            .await
            .map_err(|e| format!("leases() failed: {e}"))?
            .into_iter()
            .collect();
        let live: BTreeSet<LeaseId> = self.model.leases().into_iter().collect();
        for id in self.norm.leases() {
            ensure!(
                listed.contains(id) == live.contains(id),
                "leases(): lease {id} ({:?}) is {} but the model has it {}",
                self.norm.lease(*id),
                if listed.contains(id) {
                    "listed"
                } else {
                    "not listed"
                },
                if live.contains(id) { "live" } else { "gone" }
            );
        }
        Ok(())
    }

    /// Writes a fence key under every watched prefix, then reads each watch up to its last
    /// fence: a watch that dropped, reordered or duplicated anything shows it without waiting.
    async fn finish_watches(&mut self) -> (Vec<WatchLog>, Vec<String>) {
        let mut problems = Vec::new();
        let prefixes: BTreeSet<Vec<u8>> = self.watches.iter().map(|w| w.prefix.clone()).collect();
        for prefix in prefixes {
            let mut key = prefix.clone();
            key.extend_from_slice(b"~fence");
            let request = format!("fence put {:?}", self.norm.key(&key));
            let actual = self
                .registry
                .put(&key, b"fence", PutOptions::default())
                .await;
            let expected = self.model.put(&key, b"fence", None, false);
            if let Err(m) = self.record(request, actual, expected, |n, r| Outcome::Put {
                revision: n.rev(r.revision),
                prev_kv: None,
            }) {
                problems.push(m);
            }
        }
        let timeout = self.caps.watch_timeout();
        let mut logs = Vec::new();
        let mut received = Vec::new();
        for w in &mut self.watches {
            let want = self
                .model
                .changes_since(&w.prefix, w.start, w.prev_kv, w.compacted_at_open);
            let until = want.last().map(|b| b.revision);
            let got = match until {
                Some(until) => read_until(&mut w.stream, Some(until), timeout).await,
                None => watch_read::Received::default(),
            };
            received.push((got, want));
        }
        // Anything beyond the history must not be there, once it has had time to arrive.
        match self.caps.time {
            Time::Real => tokio::time::sleep(Duration::from_millis(100)).await,
            Time::Virtual => {
                for _ in 0..8 {
                    tokio::task::yield_now().await;
                }
            }
        }
        for (w, (mut got, want)) in self.watches.iter_mut().zip(received) {
            let extra = watch_read::ready_now(&mut w.stream);
            let label = format!(
                "watch {:?} from {}",
                self.norm.key(&w.prefix),
                self.norm.rev(w.start)
            );
            if let Err(m) = judge_watch(&got, &extra, &want, w, &self.norm) {
                problems.push(format!("{label}: {m}"));
            }
            got.batches.extend(extra.batches);
            logs.push(WatchLog {
                prefix: self.norm.key(&w.prefix),
                start: self.norm.rev(w.start),
                prev_kv: w.prev_kv,
                batches: got
                    .batches
                    .iter()
                    .filter(|b| !b.is_progress())
                    .map(|b| self.norm.batch(b))
                    .collect(),
                error: got.error.or(extra.error).map(|e| self.norm.error(&e)),
            });
        }
        self.watches.clear();
        (logs, problems)
    }
}

fn judge_watch(
    got: &watch_read::Received,
    extra: &watch_read::Received,
    want: &[registry_api::WatchBatch],
    w: &OpenWatch,
    norm: &Normalizer,
) -> Check {
    let mut all = got.batches.clone();
    all.extend(extra.batches.iter().cloned());
    check_properties(&all, &w.prefix, w.start)?;
    if let Some(e) = &got.error {
        return Err(format!("W4 reliable: the watch failed with {e}"));
    }
    ensure!(!got.ended, "W4 reliable: the watch ended early");
    let events: Vec<_> = got.event_batches().iter().map(|b| norm.batch(b)).collect();
    let expected: Vec<_> = want.iter().map(|b| norm.batch(b)).collect();
    if events != expected {
        return Err(format!(
            "W4/W5/W8: the watch delivered other events than the history{}\n  expected: {expected:?}\n    actual: {events:?}",
            if got.timed_out { " (timed out waiting)" } else { "" }
        ));
    }
    let more: Vec<_> = extra.event_batches().iter().map(|b| b.revision).collect();
    ensure!(
        more.is_empty(),
        "W2/W4: the watch delivered revisions {more:?} beyond the history"
    );
    if let Some(e) = &extra.error {
        return Err(format!("the watch failed after the history: {e}"));
    }
    Ok(())
}

fn delete_outcome(n: &Normalizer, r: &registry_api::DeleteResponse) -> Outcome {
    Outcome::Delete {
        revision: n.rev(r.revision),
        deleted: r.deleted,
        prev_kvs: n.kvs(&r.prev_kvs),
    }
}
