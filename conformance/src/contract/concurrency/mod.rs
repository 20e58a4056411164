//! `concurrent_clients_are_linearizable`: several clients issue overlapping calls on one store;
//! every invocation and answer is recorded, the history is checked for linearizability against
//! the reference model, and every watch opened during the run is checked by the named watch
//! validators of etcd's robustness suite against the history the check found.
//!
//! The clients share one registry (a backend hands out one per case): on etcd their calls are
//! in flight together on its connection; on virtual time, where the simulator answers at once,
//! each client's calls pass through a hook that yields a seeded number of times before and
//! after the call, so that calls interleave and overlap. Calls whose answer is lost (the link
//! reset, say) may or may not have taken effect; the check allows both.

mod clients;
mod linearizability;
mod spec;
mod validators;

use crate::contract::backend::Time;
use crate::contract::cases::ctx::Ctx;
use crate::contract::generated::{self, Site, CASE_VAR, SEED_VAR};
use crate::contract::model::{Model, ModelLimits};
use crate::contract::watch_read::{read_until, ready_now};
use crate::failure::Check;
use clients::{client, client_registry, revision_of, send, Record, Timed};
use linearizability::{check, Call, Verdict};
use registry_api::wrap::SplitMix64;
use registry_api::{Bytes, EventKind, Registry, Revision, WatchBatch, WatchOptions};
use spec::{model_answer, replay, Answer, ModelSpec, Recorded, Request};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use validators::{validate, Start, WatchLog};

/// How many clients call at once.
const CLIENTS: usize = 4;

/// How many calls each client makes in a run.
const CALLS_PER_CLIENT: usize = 30;

/// How many steps the linearizability search may take.
const SEARCH_BUDGET: u64 = 500_000;

/// Runs, by the backend's time: the simulator is fast, a real server is not.
fn runs(time: Time) -> u32 {
    match time {
        Time::Virtual => 8,
        Time::Real => 2,
    }
}

/// The named case: `runs` runs of [`CLIENTS`] clients, each under a fresh prefix, from the
/// run's seed (`REGISTRY_CONFORMANCE_CASE` replays one run).
pub(crate) async fn concurrent_clients_are_linearizable(cx: &mut Ctx<'_>) -> Check {
    let seed = generated::seed();
    let numbers: Vec<u32> = match generated::only_case() {
        Some(n) => vec![n],
        None => (0..runs(cx.caps.time)).collect(),
    };
    // Keys in messages relative to the case's prefix: `run0/k/1`.
    let case_prefix = String::from_utf8_lossy(&cx.key("")).into_owned();
    for n in numbers {
        let started = Instant::now();
        let summary = run(cx, seed, n).await.map_err(|m| {
            let m = m.replace(&case_prefix, "");
            format!(
                "concurrency run {n} (seed {seed:#x}) failed: {m}\nReplay exactly this run:\n    \
                 {SEED_VAR}={seed:#x} {CASE_VAR}={n} {}",
                Site::default().command("concurrent_clients_are_linearizable")
            )
        })?;
        println!(
            "concurrency check, run {n}: {summary}; wall time {:.2?}",
            started.elapsed()
        );
    }
    Ok(())
}

/// One run: the clients, the fences, the linearizability check, the watch validators.
async fn run(cx: &mut Ctx<'_>, seed: u64, n: u32) -> Check<String> {
    let run_seed = SplitMix64::derive(seed ^ u64::from(n), "concurrency");
    let prefix = cx.key(&format!("run{n}/"));
    let base = cx.revision().await?;
    let initial = Model::new(
        base,
        ModelLimits {
            min_ttl: cx.caps.min_ttl,
            max_ttl: cx.caps.max_ttl,
            max_value_bytes: cx.caps.max_value_bytes,
        },
    );
    let record = Record::default();
    let jitter = cx.caps.time == Time::Virtual;
    let lease_ttl = cx.caps.min_ttl.max(300);
    let registry = cx.registry.clone();
    futures::future::join_all((0..CLIENTS).map(|id| {
        let client_seed = SplitMix64::derive(run_seed, format!("client {id}"));
        let registry = client_registry(&registry, jitter, client_seed);
        client(
            id,
            registry,
            &prefix,
            client_seed,
            CALLS_PER_CLIENT,
            lease_ttl,
            &record,
        )
    }))
    .await;
    let fences = write_fences(&registry, &prefix, &record, cx.caps.time).await?;
    let calls: Vec<Timed> = record.calls.borrow().clone();
    let end = fences.values().copied().max().unwrap_or(base);
    let puts_seen = puts_seen(cx, &prefix, base.next(), end).await;
    let history = resolve(&calls, puts_seen.as_ref());
    let checking = Instant::now();
    let verdict = check(&ModelSpec, initial.clone(), &history, SEARCH_BUDGET);
    let check_time = checking.elapsed();
    let order = match verdict {
        Verdict::Linearizable(order) => order,
        Verdict::GaveUp { placed, blocked } => {
            return Err(format!(
                "the linearizability search gave up after {SEARCH_BUDGET} steps over {} calls; \
                 the furthest it got:\n{}",
                history.len(),
                not_linearizable(&initial, &history, &placed, &blocked)
            ))
        }
        Verdict::NotLinearizable { placed, blocked } => {
            return Err(not_linearizable(&initial, &history, &placed, &blocked))
        }
    };
    let ops: Vec<Recorded> = history.iter().map(|c| c.op.clone()).collect();
    let after = replay(&initial, &ops, &order);
    let changes = after.changes_since(&prefix, base.next(), true, None);
    let (watches, events) = check_watches(cx, &record, &calls, &changes, &fences).await?;
    // Leases are not under any prefix: leave none behind on a shared server.
    for id in after.leases() {
        let _ = registry.lease_revoke(id).await;
    }
    let lost = calls.iter().filter(|t| t.returned.is_none()).count();
    // A call overlaps another when that one was invoked before this one's answer came and
    // answered after this one was invoked.
    let overlapping = calls
        .iter()
        .filter(|a| {
            let end = a.returned.unwrap_or(u64::MAX);
            calls.iter().any(|b| {
                !std::ptr::eq(*a, b)
                    && b.invoked < end
                    && b.returned.unwrap_or(u64::MAX) > a.invoked
            })
        })
        .count();
    Ok(format!(
        "{CLIENTS} clients, {} calls ({overlapping} overlapping another, {lost} answers lost), {} \
         revisions, linearizable (checked in {check_time:.2?}); {watches} watches ({} progress \
         requests) delivering {events} events, each ordered, unique, atomic, filtered, resumable, \
         reliable and progress-correct",
        calls.len(),
        after.revision().0 - base.0,
        record.progress_requests.get(),
    ))
}

/// The revision of every put under `prefix` from `from` to `end`, by value (every value the
/// clients write is unique), read from a watch opened after the run; `None` when it could not be
/// read to the end.
async fn puts_seen(
    cx: &Ctx<'_>,
    prefix: &[u8],
    from: Revision,
    end: Revision,
) -> Option<BTreeMap<Bytes, Revision>> {
    let mut watch = cx
        .registry
        .watch(prefix, WatchOptions::from_revision(from))
        .await
        .ok()?;
    let got = read_until(&mut watch, Some(end), cx.caps.watch_timeout()).await;
    let reached = got.batches.last().is_some_and(|b| b.revision >= end);
    if got.error.is_some() || !reached {
        return None;
    }
    Some(
        got.batches
            .iter()
            .flat_map(|b| &b.events)
            .filter(|e| e.kind == EventKind::Put)
            .map(|e| (e.kv.value.clone(), e.kv.mod_revision))
            .collect(),
    )
}

/// The history the check judges. A call whose answer was lost is resolved where the store
/// shows what became of it, as etcd's robustness suite does: a put whose (unique) value is in
/// the store's history took effect at that revision, one whose value is not never did. Other
/// lost calls stay optional if they may have changed the keys or the revision (a lost grant,
/// keep-alive or read changes neither, and is left out).
fn resolve(calls: &[Timed], puts_seen: Option<&BTreeMap<Bytes, Revision>>) -> Vec<Call<Recorded>> {
    calls
        .iter()
        .filter_map(|t| {
            let call = |op: Recorded, optional| Call {
                op,
                invoked: t.invoked,
                returned: t.returned,
                optional,
            };
            if t.call.answer.is_some() {
                return Some(call(t.call.clone(), false));
            }
            match (&t.call.request, puts_seen) {
                (Request::Put { value, .. }, Some(seen)) => seen.get(value).map(|at| {
                    let mut op = t.call.clone();
                    op.answer = Some(Answer::PutAt(*at));
                    call(op, false)
                }),
                (
                    Request::Put { .. }
                    | Request::Delete { .. }
                    | Request::DeletePrefix { .. }
                    | Request::Revoke { .. },
                    _,
                ) => Some(call(t.call.clone(), true)),
                _ => None,
            }
        })
        .collect()
}

/// Writes a fence key under every watched prefix (retrying a lost answer: the link may still
/// be faulty), recorded as calls of a client of its own; the fence revision of each prefix.
async fn write_fences(
    registry: &std::sync::Arc<dyn Registry>,
    prefix: &[u8],
    record: &Record,
    time: Time,
) -> Check<BTreeMap<Bytes, Revision>> {
    let watched: Vec<Bytes> = {
        let watches = record.watches.borrow();
        // The run's prefix too: the history of the whole run ends at its fence.
        let mut p: Vec<Bytes> = watches.iter().map(|w| w.prefix.clone()).collect();
        p.push(Bytes::copy_from_slice(prefix));
        p.sort();
        p.dedup();
        p
    };
    let mut fences = BTreeMap::new();
    for watched in watched {
        let mut key = watched.to_vec();
        key.extend_from_slice(b"~fence");
        for attempt in 0.. {
            // Unique, as every value of the run: a lost answer is found by its value.
            let request = Request::Put {
                key: Bytes::from(key.clone()),
                value: Bytes::from(format!("fence-{}-{attempt}", fences.len())),
                lease: None,
            };
            let invoked = record.tick();
            let answer = send(registry, &request).await;
            let revision = answer.as_ref().and_then(revision_of);
            record.push(
                Recorded {
                    client: CLIENTS,
                    request,
                    answer,
                },
                invoked,
            );
            if let Some(r) = revision {
                fences.insert(watched.clone(), Revision(r));
                break;
            }
            if attempt >= 50 {
                return Err(format!(
                    "a fence put under {:?} lost its answer 50 times",
                    String::from_utf8_lossy(&watched)
                ));
            }
            if time == Time::Real {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    Ok(fences)
}

/// Reads every watch up to its prefix's fence and runs the validators on it; the number of
/// watches and of events they delivered.
async fn check_watches(
    cx: &Ctx<'_>,
    record: &Record,
    calls: &[Timed],
    changes: &[WatchBatch],
    fences: &BTreeMap<Bytes, Revision>,
) -> Check<(usize, usize)> {
    let timeout = cx.caps.watch_timeout();
    let mut watches = std::mem::take(&mut *record.watches.borrow_mut());
    let mut problems = Vec::new();
    let mut events = 0;
    let count = watches.len();
    for (i, w) in watches.iter_mut().enumerate() {
        let fence = fences.get(&w.prefix).copied().unwrap_or(Revision(0));
        let start = match w.start {
            Some(r) => Start::At(r),
            None => next_write_bounds(calls, w.invoked, w.returned),
        };
        let from = match start {
            Start::At(r) => r,
            Start::Next { lo, .. } => lo,
        };
        // Up to its fence the watch must have delivered everything; what comes after it may
        // not have arrived yet, and is judged only as far as it goes.
        let (mut batches, mut read_to) = (Vec::new(), fence);
        if from <= fence {
            let got = read_until(&mut w.stream, Some(fence), timeout).await;
            if got.error.is_some() || got.ended || got.timed_out {
                read_to = Revision(0);
            }
            batches = got.batches;
        }
        cx.settle().await;
        if read_to == fence {
            batches.extend(ready_now(&mut w.stream).batches);
        }
        events += batches.iter().map(|b| b.events.len()).sum::<usize>();
        let log = WatchLog {
            prefix: w.prefix.clone(),
            start,
            prev_kv: w.prev_kv,
            batches,
            read_to,
        };
        for broken in validate(&log, changes) {
            let from = match w.start {
                Some(r) => format!("rev {}", r.0),
                None => "the next write".to_owned(),
            };
            problems.push(format!(
                "watch {i} (client {}, {:?} from {from}): {broken}",
                w.client,
                String::from_utf8_lossy(&w.prefix)
            ));
        }
    }
    if problems.is_empty() {
        return Ok((count, events));
    }
    Err(format!(
        "watch guarantees broken:\n    {}",
        problems.join("\n    ")
    ))
}

/// Where a watch from the next write may start: after every revision answered before it was
/// asked for, and no later than the first write asked for after it was answered.
fn next_write_bounds(calls: &[Timed], invoked: u64, returned: u64) -> Start {
    let answered_before = calls
        .iter()
        .filter(|t| t.returned.is_some_and(|r| r < invoked))
        .filter_map(|t| t.call.answer.as_ref().and_then(revision_of))
        .max()
        .unwrap_or(0);
    // A write that made a revision bounds the start by that revision; any other answer tells
    // a revision the store had reached, so the start is at most one above it.
    let written_after = calls
        .iter()
        .filter(|t| t.invoked > returned)
        .filter_map(|t| match t.call.answer.as_ref()? {
            Answer::Put(r) => Some(r.revision.0),
            Answer::PutAt(r) => Some(r.0),
            Answer::Delete(d) if d.deleted > 0 => Some(d.revision.0),
            other => revision_of(other).map(|r| r + 1),
        })
        .min()
        .unwrap_or(i64::MAX);
    Start::Next {
        lo: Revision(answered_before + 1),
        hi: Revision(written_after.max(answered_before + 1)),
    }
}

/// What the failure of the linearizability check shows: the calls placed, and the calls that
/// could not come next with what the model would have answered instead.
fn not_linearizable(
    initial: &Model,
    history: &[Call<Recorded>],
    placed: &[usize],
    blocked: &[usize],
) -> String {
    let ops: Vec<Recorded> = history.iter().map(|c| c.op.clone()).collect();
    let state = replay(initial, &ops, placed);
    let shown: Vec<String> = placed
        .iter()
        .rev()
        .take(8)
        .rev()
        .map(|&i| format!("{}", ops[i]))
        .collect();
    let stuck: Vec<String> = blocked
        .iter()
        .map(|&i| {
            format!(
                "{} (the model, after the calls above, answers {})",
                ops[i],
                model_answer(&state, &ops[i])
            )
        })
        .collect();
    format!(
        "not linearizable: no order of the {} calls agrees with the model (revisions are as the \
         backend gave them).\n  The longest agreeing order places {} calls, ending with:\n    \
         {}\n  Then none of the calls in flight can come next:\n    {}",
        history.len(),
        placed.len(),
        shown.join("\n    "),
        stuck.join("\n    ")
    )
}
