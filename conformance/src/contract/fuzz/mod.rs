//! `public_api_survives_arbitrary_input`: generated sequences of calls with arbitrary input
//! (keys of any bytes, every `i64` as a TTL, lease id or revision, values around the size
//! limit). Every call returns a result or one of the contract's typed errors and never panics;
//! bad input is refused with its documented error; a call that fails changes nothing that can
//! be looked at (revision, compaction point, keys under the case's prefix, the case's leases and,
//! on virtual time, the seconds they have left). A keep-alive batch answers each id as a single
//! keep-alive would, and keep-alives change nothing but the time leases have left.
//!
//! Every sequence works under a fresh prefix, so the case can run on a shared server. Time
//! moves only on virtual time; on real time short TTLs are raised so nothing expires mid-run.

mod input;
mod request;
mod snapshot;

use crate::contract::backend::{Backend, Capabilities, Sharing, Time};
use crate::contract::generated::{self, Site};
use crate::contract::prefix::unique_prefix;
use crate::contract::proptest_setup::{cases_from_env, full_mode};
use crate::failure::{ensure, Check, Failure};
use futures::{FutureExt, StreamExt};
use input::Call;
use registry_api::limits::MAX_KEEP_ALIVE_BATCH;
use registry_api::{
    Error, LeaseId, ListOptions, PutOptions, Registry, Result, WatchOptions, WatchStream,
};
use request::{is_typed, Refusal, Renewal, Request, Scope};
use snapshot::{Compaction, Snapshot};
use std::cell::Cell;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Runtime;

/// The case's name.
pub(crate) const NAME: &str = "public_api_survives_arbitrary_input";

/// How many sequences run when `PROPTEST_CASES` is not set: (CI, `REGISTRY_FAULTS_FULL=1`).
fn default_cases(caps: &Capabilities) -> u32 {
    let (ci, full) = match caps.time {
        Time::Virtual => (192, 2_048),
        Time::Real => (32, 256),
    };
    if full_mode() {
        full
    } else {
        ci
    }
}

/// What the calls did, for the figure `scripts/faults.sh` collects.
#[derive(Default)]
struct Tally {
    calls: Cell<u64>,
    failed: Cell<u64>,
    refused: Cell<u64>,
}

impl Tally {
    fn add(counter: &Cell<u64>) {
        counter.set(counter.get() + 1);
    }
}

/// Runs the case: `PROPTEST_CASES` sequences, else a count by the backend's time (raised by
/// `REGISTRY_FAULTS_FULL=1`). A failure is shrunk and reported with its number, the seed and
/// the command that replays exactly it (see [`generated`](crate::contract::generated)).
pub(crate) fn run<B: Backend>(
    backend: &B,
    rt: &Runtime,
    site: Site,
) -> std::result::Result<(), Failure> {
    let source_file = site.file;
    let caps = backend.capabilities();
    let cases = cases_from_env().unwrap_or_else(|| default_cases(&caps));
    let tally = Tally::default();
    let result = generated::run(NAME, site, cases, &input::calls(&caps), |calls| {
        rt.block_on(sequence(backend, calls, &tally))
    });
    println!(
        "FIGURE fuzz-{}: {} calls, {} failed with a typed error, {} of them bad input refused; {}",
        label(source_file),
        tally.calls.get(),
        tally.failed.get(),
        tally.refused.get(),
        if result.is_ok() {
            "0 panics"
        } else {
            "FAILED (see below)"
        },
    );
    result
}

/// The backend's short name for the figure, from the test file's package directory
/// (`registry-memory/tests/conformance.rs` gives `memory`).
fn label(source_file: Option<&str>) -> String {
    let package = source_file.and_then(|file| {
        let parts: Vec<&str> = file.split(['/', '\\']).collect();
        let tests = parts.iter().rposition(|p| *p == "tests")?;
        parts.get(tests.checked_sub(1)?).copied()
    });
    match package {
        Some(p) => p.strip_prefix("registry-").unwrap_or(p).to_string(),
        None => "backend".to_string(),
    }
}

/// One generated sequence on a fresh registry, under a fresh prefix.
async fn sequence<B: Backend + ?Sized>(backend: &B, calls: &[Call], tally: &Tally) -> Check {
    let mut s = Sequence {
        registry: backend.registry().await,
        backend,
        caps: backend.capabilities(),
        prefix: unique_prefix(NAME),
        granted: Vec::new(),
        known: BTreeSet::new(),
    };
    let mut outcome = Ok(());
    for (i, call) in calls.iter().enumerate() {
        if let Err(m) = s.step(call, tally).await {
            outcome = Err(format!("call {i} {call:?}: {m}"));
            break;
        }
    }
    // Leases are not under any prefix: leave none behind on a shared server.
    for &id in &s.granted {
        let _ = s.registry.lease_revoke(id).await;
    }
    outcome
}

struct Sequence<'b, B: ?Sized> {
    backend: &'b B,
    registry: Arc<dyn Registry>,
    caps: Capabilities,
    prefix: Vec<u8>,
    /// The leases granted, in order (what `LeaseRef::Granted` picks from).
    granted: Vec<LeaseId>,
    /// Every lease id the sequence granted or asked for: the leases a failed call must leave as
    /// they were.
    known: BTreeSet<LeaseId>,
}

impl<B: Backend + ?Sized> Sequence<'_, B> {
    /// A look at the store; the compaction point is read on virtual time (where it is cheap)
    /// and around the calls that meet it: compactions, which move it, and watches, whose
    /// compacted error must name it.
    async fn snapshot(&self, call: &Call) -> Check<Snapshot> {
        let exclusive = self.caps.sharing == Sharing::Exclusive;
        let read_compaction = self.caps.time == Time::Virtual
            || matches!(call, Call::Compact(_) | Call::Watch { .. });
        Snapshot::take(
            &*self.registry,
            &self.prefix,
            &self.known,
            exclusive,
            read_compaction,
            self.caps.time == Time::Virtual,
        )
        .await
    }

    /// Sends one call, judges its answer, and checks that a failure changed nothing.
    async fn step(&mut self, call: &Call, tally: &Tally) -> Check {
        if let Call::Grant { id: Some(id), .. } = call {
            if *id > 0 {
                self.known.insert(LeaseId(*id));
            }
        }
        let before = self.snapshot(call).await?;
        let request = Scope {
            prefix: &self.prefix,
            granted: &self.granted,
            current: before.revision,
            caps: &self.caps,
        }
        .resolve(call);
        let outcome = self.send(&request, &before).await?;
        Tally::add(&tally.calls);
        let failed = match (outcome, Refusal::owed(&request, &self.caps)) {
            (Ok(()), None) => false,
            (Ok(()), Some(refusal)) => {
                return Err(format!(
                    "succeeded, but bad input must be refused ({refusal:?})"
                ))
            }
            (Err(e), refusal) => {
                Tally::add(&tally.failed);
                if let Some(refusal) = refusal {
                    Tally::add(&tally.refused);
                    ensure!(
                        refusal.admits(&e),
                        "refused with {e:?}, not the documented error for {refusal:?}"
                    );
                }
                ensure!(is_typed(&e), "failed with an untyped error: {e:?}");
                ensure!(
                    !e.to_string().is_empty(),
                    "an error without a message: {e:?}"
                );
                true
            }
        };
        let after = self.snapshot(call).await?;
        ensure!(
            after.revision >= before.revision,
            "the revision went down from {} to {}",
            before.revision,
            after.revision
        );
        ensure!(
            !failed || after == before,
            "the failed call changed the store\n  before: {before:?}\n   after: {after:?}"
        );
        ensure!(
            !request.only_renews() || after.same_but_time_left(&before),
            "a keep-alive changed the store\n  before: {before:?}\n   after: {after:?}"
        );
        Ok(())
    }

    /// Sends `request`; the inner result is the backend's answer, the outer one a broken
    /// property seen in a successful answer.
    async fn send(&mut self, request: &Request, before: &Snapshot) -> Check<Result<()>> {
        let r = Arc::clone(&self.registry);
        Ok(match request {
            Request::Grant { ttl, id } => r.lease_grant(*ttl, *id).await.map(|grant| {
                self.granted.push(grant.id);
                self.known.insert(grant.id);
            }),
            Request::KeepAlive(id) => r.lease_keep_alive(*id).await.map(drop),
            Request::KeepAliveMany(ids) => match r.lease_keep_alive_many(ids).await {
                Ok(answers) => {
                    ensure!(
                        answers.len() == ids.len(),
                        "a batch of {} ids answered {} times",
                        ids.len(),
                        answers.len()
                    );
                    for (i, (&id, answer)) in ids.iter().zip(&answers).enumerate() {
                        let owed = Renewal::owed(id, before.lease(id));
                        ensure!(
                            owed.admits(id, answer),
                            "id {i} of the batch ({id:?}) answered {answer:?}, not {owed:?}"
                        );
                    }
                    Ok(())
                }
                // The step judges this refusal as it judges bad input.
                Err(e) if ids.len() > MAX_KEEP_ALIVE_BATCH => Err(e),
                Err(e) => {
                    return Err(format!(
                        "a batch of {} ids, within the limit, failed as a whole: {e:?}",
                        ids.len()
                    ))
                }
            },
            Request::Revoke(id) => r.lease_revoke(*id).await.map(drop),
            Request::TimeToLive(id) => r.lease_time_to_live(*id).await.map(drop),
            Request::Leases => r.leases().await.map(drop),
            Request::Put {
                key,
                value,
                lease,
                prev_kv,
            } => {
                let opts = PutOptions {
                    lease: *lease,
                    prev_kv: *prev_kv,
                };
                match r.put(key, value, opts).await {
                    Ok(put) => {
                        ensure!(
                            put.revision == before.revision.next(),
                            "a put at revision {} answered revision {}, not the next one",
                            before.revision,
                            put.revision
                        );
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Request::Get(key) => r.get(key).await.map(drop),
            Request::List { prefix, at } => r
                .list(prefix, ListOptions { revision: *at })
                .await
                .map(drop),
            Request::Delete(key) => r.delete(key).await.map(drop),
            Request::DeletePrefix(prefix) => r.delete_prefix(prefix).await.map(drop),
            Request::Compact(at) => r.compact(*at).await.map(drop),
            Request::Watch {
                prefix,
                from,
                prev_kv,
            } => {
                let opts = WatchOptions {
                    start_revision: *from,
                    prev_kv: *prev_kv,
                    progress_notify: false,
                };
                match r.watch(prefix, opts).await {
                    Ok(mut stream) => {
                        // Whatever comes first (a replayed batch, nothing yet, or the end), an
                        // error there can only be a compacted start naming the real point.
                        if let Some(Err(e)) = self.first_item(&mut stream).await {
                            ensure!(
                                matches!(e, Error::Compacted { compact_revision } if Compaction::At(compact_revision) == before.compacted),
                                "the watch ended with {e:?}; the compaction point is {:?}",
                                before.compacted
                            );
                        }
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Request::Advance(by) => {
                self.backend.advance(*by).await;
                Ok(())
            }
        })
    }

    /// The watch's first item if it comes at once (virtual time) or within 20 ms (real time).
    async fn first_item(
        &self,
        stream: &mut WatchStream,
    ) -> Option<Result<registry_api::WatchBatch>> {
        match self.caps.time {
            Time::Virtual => stream.next().now_or_never().flatten(),
            Time::Real => tokio::time::timeout(Duration::from_millis(20), stream.next())
                .await
                .ok()
                .flatten(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::label;

    #[test]
    fn the_figure_names_the_backend_by_its_package() {
        assert_eq!(
            label(Some("registry-memory/tests/conformance.rs")),
            "memory"
        );
        assert_eq!(label(Some("registry-etcd/tests/conformance.rs")), "etcd");
        assert_eq!(label(Some("examples/tests/x.rs")), "examples");
        assert_eq!(label(Some("conformance.rs")), "backend");
        assert_eq!(label(None), "backend");
    }
}
