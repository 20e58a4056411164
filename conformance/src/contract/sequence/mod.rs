//! Running a generated sequence against a backend and the model side by side.
//!
//! Each step is recorded twice: as a [`Step`] with relative revisions and leases by grant
//! order (an observation two backends can be compared on), and as a transcript line with the
//! revisions and lease ids the backend used, which a failure prints.

mod expiry;
mod leases;
mod steps;
mod watches;

use crate::contract::backend::{Backend, Capabilities};
use crate::contract::model::{Model, ModelLimits};
use crate::contract::observe::{Normalizer, ObsKv, Observation, Outcome, Step};
use crate::contract::ops::{KeySel, LeaseSel, Op, RevSel, KEYS, PREFIXES};
use crate::contract::prefix::unique_prefix;
use crate::contract::report::Names;
use crate::failure::{ensure, Check, Failure};
use registry_api::{LeaseId, ListOptions, Registry, Result, Revision, WatchStream};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

/// How far beyond the current revision a generated watch may start.
const FUTURE_REACH: i64 = 16;

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
                outcome: Outcome::Failed(crate::contract::observe::ErrorKind::Other(e.clone())),
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
    let problem = match outcome {
        Err(m) => m,
        Ok(()) => match session.problems.first() {
            Some(m) => m.clone(),
            None => return Ok(observation),
        },
    };
    Err(Failure::new(
        case,
        format!("{problem}\n{}", session.transcript()),
    ))
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
    /// One line per step, revisions and lease ids as the backend gave them.
    lines: Vec<String>,
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
            lines: Vec::new(),
            problems: Vec::new(),
            strict,
            started: Instant::now(),
            catching_up: false,
        })
    }

    async fn execute(&mut self, ops: &[Op]) -> Check {
        for (i, op) in ops.iter().enumerate() {
            let followed = self.follow_the_reaper(false).await;
            if let Err(m) = followed.and(self.step(op).await) {
                let m = format!("step {i}: {m}");
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

    /// A watch's start: one time in four from 2 to [`FUTURE_REACH`] + 1 past the current
    /// revision (a start ahead, which later writes may reach), else as [`Self::revision`].
    fn watch_start(&self, sel: RevSel) -> Revision {
        let n = i64::from(sel.0);
        if n % 4 == 0 {
            Revision(self.model.revision().0 + 2 + (n / 4) % FUTURE_REACH)
        } else {
            self.revision(RevSel(sel.0 / 4))
        }
    }

    /// The request as the observation records it (`relative`) and as the transcript shows it.
    fn request(&self, describe: impl Fn(Names<'_>) -> String) -> (String, String) {
        let names = |absolute| Names {
            norm: &self.norm,
            absolute,
        };
        (describe(names(false)), describe(names(true)))
    }

    /// Adds a transcript line (revisions and lease ids as the backend gave them).
    fn note(&mut self, line: String) {
        self.lines.push(format!("  #{} {line}", self.lines.len()));
    }

    /// Every step so far, one line each, in one numbering.
    fn transcript(&self) -> String {
        format!(
            "the steps, with revisions and lease ids as the backend numbered them (L<n> is the \
             n-th lease granted):\n{}",
            self.lines.join("\n")
        )
    }

    /// Records `actual`, and compares it with `expected` under the normaliser.
    fn record<T>(
        &mut self,
        (request, shown): (String, String),
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
        let (got_shown, want_shown) = (norm.show_outcome(&got), norm.show_outcome(&want));
        let same = got == want;
        self.steps.push(Step {
            request,
            outcome: got,
        });
        if same {
            self.note(format!("{shown} -> {got_shown}"));
        } else {
            self.note(format!(
                "{shown} -> {got_shown}    <- the model answers {want_shown}"
            ));
        }
        ensure!(
            same,
            "{shown}: the backend differs from the model\n  expected: {want_shown}\n    actual: {got_shown}"
        );
        Ok(actual.ok())
    }

    /// Reads every watch to the end of the history, checks the final state, releases leases.
    async fn finish(&mut self, read_watches: bool) -> Observation {
        if let Err(m) = self.follow_the_reaper(false).await {
            self.problems.push(m);
        }
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
                    let show = |kvs: &[ObsKv]| {
                        let shown: Vec<String> =
                            kvs.iter().map(|kv| self.norm.show_kv(kv)).collect();
                        shown.join("\n      ")
                    };
                    self.problems.push(format!(
                        "final state differs from the model\n  expected:\n      {}\n    actual:\n      {}",
                        show(&want),
                        show(&observation.final_state)
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

    /// Live leases are listed, dead ones are not (other leases may exist on a shared server);
    /// an expired lease whose keys are not deleted yet may be either.
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
            if self.model.lease(*id).is_some_and(|l| l.expired) {
                continue;
            }
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
}

fn delete_outcome(n: &Normalizer, r: &registry_api::DeleteResponse) -> Outcome {
    Outcome::Delete {
        revision: n.rev(r.revision),
        deleted: r.deleted,
        prev_kvs: n.kvs(&r.prev_kvs),
    }
}
