//! The end of a sequence: every open watch read up to a fence and judged against the history.

use super::{OpenWatch, Session};
use crate::contract::backend::{Backend, Time};
use crate::contract::observe::{Normalizer, Outcome, WatchLog};
use crate::contract::watch_read::{self, check_properties, read_until};
use crate::failure::{ensure, Check};
use registry_api::PutOptions;
use std::collections::BTreeSet;
use std::time::Duration;

impl<B: Backend + ?Sized> Session<'_, B> {
    /// Writes a fence key under every watched prefix, then reads each watch up to its last
    /// fence: a watch that dropped, reordered or duplicated anything shows it without waiting.
    pub(super) async fn finish_watches(&mut self) -> (Vec<WatchLog>, Vec<String>) {
        let mut problems = Vec::new();
        let prefixes: BTreeSet<Vec<u8>> = self.watches.iter().map(|w| w.prefix.clone()).collect();
        for prefix in prefixes {
            let mut key = prefix.clone();
            key.extend_from_slice(b"~fence");
            let request = self.request(|n| format!("fence put {:?}", n.key(&key)));
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
                "watch {:?} from rev {}",
                self.norm.key(&w.prefix),
                w.start.0
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
            "W4/W5/W8: the watch delivered other events than the history{}:\n    {}",
            if got.timed_out {
                " (timed out waiting)"
            } else {
                ""
            },
            norm.event_diff(&expected, &events).join("\n    ")
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
