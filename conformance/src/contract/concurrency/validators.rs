//! The watch guarantees of etcd's robustness suite (`tests/robustness/validate/watch.go`), each
//! a named validator over what one watch delivered and the history it should follow: ordered,
//! unique, atomic, reliable, resumable, progress (bookmarkable), and filtered.

use registry_api::{Bytes, Revision, WatchBatch, WatchEvent};
use std::collections::{BTreeMap, HashSet};

/// Where a watch starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Start {
    /// From this revision (inclusive).
    At(Revision),
    /// From the next write after it was opened: the first revision it may deliver is between
    /// `lo` (after every write answered before the watch was asked for) and `hi` (no later
    /// than the first write asked for after the watch was answered).
    Next {
        /// The lowest revision it may start at.
        lo: Revision,
        /// The highest revision it may start at.
        hi: Revision,
    },
}

/// What one watch delivered, in order, and how it ended.
#[derive(Clone, Debug)]
pub(crate) struct WatchLog {
    /// The watched prefix.
    pub(crate) prefix: Bytes,
    /// Where it starts.
    pub(crate) start: Start,
    /// Whether previous values were asked for.
    pub(crate) prev_kv: bool,
    /// Every batch, progress notifications included, in the order received.
    pub(crate) batches: Vec<WatchBatch>,
    /// The revision up to which the watch must have delivered every change (its fence, when
    /// the reader reached it; 0 when the watch failed or stopped early, so that it is judged
    /// only up to what it delivered).
    pub(crate) read_to: Revision,
}

/// A validator: what broke in a watch's log, judged against the history.
type Validator = fn(&WatchLog, &[WatchBatch]) -> Result<(), String>;

/// The validators, in the order they run.
pub(crate) const VALIDATORS: [(&str, Validator); 7] = [
    ("ordered", ordered),
    ("unique", unique),
    ("atomic", atomic),
    ("filtered", filtered),
    ("resumable", resumable),
    ("reliable", reliable),
    ("progress", progress),
];

/// Runs every validator on `log` against `history` (every change of the store, one batch per
/// revision, with previous values); the failures, each named.
pub(crate) fn validate(log: &WatchLog, history: &[WatchBatch]) -> Vec<String> {
    VALIDATORS
        .iter()
        .filter_map(|(name, check)| check(log, history).err().map(|m| format!("{name}: {m}")))
        .collect()
}

fn events(log: &WatchLog) -> impl Iterator<Item = &WatchBatch> {
    log.batches.iter().filter(|b| !b.is_progress())
}

/// The history's batches under the watch's prefix, as the watch must deliver them.
fn expected(log: &WatchLog, history: &[WatchBatch]) -> Vec<WatchBatch> {
    history
        .iter()
        .filter_map(|b| {
            let events: Vec<WatchEvent> = b
                .events
                .iter()
                .filter(|e| e.kv.key.starts_with(&log.prefix))
                .map(|e| WatchEvent {
                    prev_kv: if log.prev_kv { e.prev_kv.clone() } else { None },
                    ..e.clone()
                })
                .collect();
            (!events.is_empty()).then_some(WatchBatch {
                revision: b.revision,
                events,
            })
        })
        .collect()
}

fn show(e: &WatchEvent) -> String {
    format!("{:?} {}", e.kind, e.kv.key_str())
}

/// Event revisions never go down.
fn ordered(log: &WatchLog, _: &[WatchBatch]) -> Result<(), String> {
    let revs: Vec<Revision> = events(log).map(|b| b.revision).collect();
    match revs.windows(2).find(|w| w[1] < w[0]) {
        Some(w) => Err(format!("rev {} delivered after rev {}", w[1].0, w[0].0)),
        None => Ok(()),
    }
}

/// No (revision, key) is delivered twice.
fn unique(log: &WatchLog, _: &[WatchBatch]) -> Result<(), String> {
    let mut seen = HashSet::new();
    for b in events(log) {
        for e in &b.events {
            if !seen.insert((b.revision, e.kv.key.clone())) {
                return Err(format!("rev {} {} delivered twice", b.revision.0, show(e)));
            }
        }
    }
    Ok(())
}

/// A revision's events under the prefix come whole, in one batch.
fn atomic(log: &WatchLog, history: &[WatchBatch]) -> Result<(), String> {
    let want: BTreeMap<Revision, WatchBatch> = expected(log, history)
        .into_iter()
        .map(|b| (b.revision, b))
        .collect();
    let mut seen = HashSet::new();
    for b in events(log) {
        if !seen.insert(b.revision) {
            return Err(format!("rev {} split across batches", b.revision.0));
        }
        if let Some(w) = want.get(&b.revision) {
            if w.events.len() != b.events.len() {
                return Err(format!(
                    "rev {} delivered {} of its {} events",
                    b.revision.0,
                    b.events.len(),
                    w.events.len()
                ));
            }
        }
    }
    Ok(())
}

/// Every event is under the watched prefix.
fn filtered(log: &WatchLog, _: &[WatchBatch]) -> Result<(), String> {
    for b in events(log) {
        for e in &b.events {
            if !e.kv.key.starts_with(&log.prefix) {
                return Err(format!(
                    "rev {} {} is outside {:?}",
                    b.revision.0,
                    show(e),
                    String::from_utf8_lossy(&log.prefix)
                ));
            }
        }
    }
    Ok(())
}

/// The first revision the watch must deliver from, given what it delivered.
fn first_allowed(log: &WatchLog, want: &[WatchBatch]) -> Result<Revision, String> {
    let first = events(log).next().map(|b| b.revision);
    match log.start {
        Start::At(r) => {
            if let Some(f) = first.filter(|f| *f < r) {
                return Err(format!("a watch from rev {} delivered rev {}", r.0, f.0));
            }
            Ok(r)
        }
        Start::Next { lo, hi } => {
            let Some(f) = first else { return Ok(hi) };
            if f < lo {
                return Err(format!(
                    "a watch from the next write delivered rev {}, written before the watch was asked for (from rev {} on)",
                    f.0, lo.0
                ));
            }
            // Started at some revision in lo..=hi, and the first event it delivered is the
            // first change under the prefix at or after that start.
            let start = want
                .iter()
                .map(|b| b.revision)
                .filter(|r| *r >= lo && *r < f)
                .max()
                .map_or(lo, |r| r.next());
            Ok(start.min(hi).max(lo))
        }
    }
}

/// A watch from revision r begins at the first change under its prefix at or after r.
fn resumable(log: &WatchLog, history: &[WatchBatch]) -> Result<(), String> {
    let want = expected(log, history);
    let start = first_allowed(log, &want)?;
    let first_wanted = want
        .iter()
        .find(|b| b.revision >= start)
        .map(|b| b.revision);
    let first_got = events(log).next().map(|b| b.revision);
    match (first_got, first_wanted) {
        (Some(g), Some(w)) if g != w => Err(format!(
            "from rev {} the first change is at rev {}, the watch began at rev {}",
            start.0, w.0, g.0
        )),
        (Some(g), None) => Err(format!(
            "from rev {} there is no change, the watch delivered rev {}",
            start.0, g.0
        )),
        (None, Some(w)) if w <= log.read_to => Err(format!(
            "from rev {} the first change is at rev {}, the watch delivered nothing",
            start.0, w.0
        )),
        _ => Ok(()),
    }
}

/// No gap: from its start to the last revision it delivered (to its fence at least, when it
/// was read that far without an error), the watch delivered exactly the history under its
/// prefix, previous values and create flags included.
fn reliable(log: &WatchLog, history: &[WatchBatch]) -> Result<(), String> {
    let want = expected(log, history);
    let start = first_allowed(log, &want)?;
    let got: Vec<&WatchBatch> = events(log).collect();
    let upto = got
        .last()
        .map_or(log.read_to, |b| b.revision.max(log.read_to));
    let want: Vec<&WatchBatch> = want
        .iter()
        .filter(|b| b.revision >= start && b.revision <= upto)
        .collect();
    let delivered: BTreeMap<(Revision, Bytes), &WatchEvent> = got
        .iter()
        .flat_map(|b| {
            b.events
                .iter()
                .map(move |e| ((b.revision, e.kv.key.clone()), e))
        })
        .collect();
    for b in &want {
        for e in &b.events {
            match delivered.get(&(b.revision, e.kv.key.clone())) {
                None => return Err(format!("missing: rev {} {}", b.revision.0, show(e))),
                Some(d) if *d != e => {
                    return Err(format!(
                        "rev {} {} delivered as {:?}, the history has {:?}",
                        b.revision.0,
                        show(e),
                        d,
                        e
                    ))
                }
                Some(_) => {}
            }
        }
    }
    let wanted: HashSet<(Revision, &Bytes)> = want
        .iter()
        .flat_map(|b| b.events.iter().map(move |e| (b.revision, &e.kv.key)))
        .collect();
    for b in &got {
        for e in &b.events {
            if !wanted.contains(&(b.revision, &e.kv.key)) {
                return Err(format!("unexpected: rev {} {}", b.revision.0, show(e)));
            }
        }
    }
    Ok(())
}

/// After a progress notification at R, no event at or below R comes, and every change under
/// the prefix from the watch's start up to R came before it.
fn progress(log: &WatchLog, history: &[WatchBatch]) -> Result<(), String> {
    let want = expected(log, history);
    let start = match first_allowed(log, &want) {
        Ok(s) => s,
        Err(_) => return Ok(()), // resumable reports it
    };
    let mut delivered: HashSet<Revision> = HashSet::new();
    let mut bookmark: Option<Revision> = None;
    for b in &log.batches {
        if b.is_progress() {
            if let Some(missing) = want.iter().find(|w| {
                w.revision >= start && w.revision <= b.revision && !delivered.contains(&w.revision)
            }) {
                return Err(format!(
                    "a progress notification at rev {} came before the change at rev {}",
                    b.revision.0, missing.revision.0
                ));
            }
            bookmark = Some(bookmark.map_or(b.revision, |r| r.max(b.revision)));
            continue;
        }
        if let Some(r) = bookmark.filter(|r| b.revision <= *r) {
            return Err(format!(
                "rev {} delivered after a progress notification at rev {}",
                b.revision.0, r.0
            ));
        }
        delivered.insert(b.revision);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::watch_read::tests_support::batch;

    fn history() -> Vec<WatchBatch> {
        vec![
            batch(2, &["a/1"]),
            batch(3, &["b/1"]),
            batch(4, &["a/2", "a/3"]),
            batch(5, &["a0"]),
            batch(6, &["a/1"]),
        ]
    }

    fn log(start: Start, batches: Vec<WatchBatch>) -> WatchLog {
        WatchLog {
            prefix: Bytes::from_static(b"a/"),
            start,
            prev_kv: false,
            batches,
            read_to: Revision(6),
        }
    }

    fn broken(start: Start, batches: Vec<WatchBatch>) -> Vec<String> {
        validate(&log(start, batches), &history())
    }

    #[test]
    fn a_correct_watch_passes_every_validator() {
        let good = vec![
            batch(2, &["a/1"]),
            batch(4, &["a/2", "a/3"]),
            batch(6, &[]),
            batch(6, &["a/1"]),
        ];
        // A progress notification at 6 before rev 6's event breaks "progress"; at 5 it does not.
        let mut ok = good.clone();
        ok[2] = batch(5, &[]);
        assert_eq!(broken(Start::At(Revision(1)), ok), Vec::<String>::new());
        let next = vec![batch(4, &["a/2", "a/3"]), batch(6, &["a/1"])];
        let from_next = Start::Next {
            lo: Revision(3),
            hi: Revision(5),
        };
        assert_eq!(broken(from_next, next), Vec::<String>::new());
        assert!(broken(Start::At(Revision(1)), good)[0].starts_with("progress"));
    }

    #[test]
    fn each_broken_guarantee_is_named() {
        let at = Start::At(Revision(1));
        let first = |v: Vec<String>| v.first().cloned().unwrap_or_default();
        assert!(first(broken(
            at,
            vec![
                batch(4, &["a/2", "a/3"]),
                batch(2, &["a/1"]),
                batch(6, &["a/1"])
            ]
        ))
        .starts_with("ordered"));
        assert!(first(broken(
            at,
            vec![
                batch(2, &["a/1", "a/1"]),
                batch(4, &["a/2", "a/3"]),
                batch(6, &["a/1"])
            ]
        ))
        .starts_with("unique"));
        assert!(first(broken(
            at,
            vec![
                batch(2, &["a/1"]),
                batch(4, &["a/2"]),
                batch(4, &["a/3"]),
                batch(6, &["a/1"])
            ]
        ))
        .starts_with("atomic"));
        assert!(first(broken(
            at,
            vec![
                batch(2, &["a/1"]),
                batch(4, &["a/2", "a/3"]),
                batch(5, &["a0"]),
                batch(6, &["a/1"])
            ]
        ))
        .starts_with("filtered"));
        assert!(first(broken(
            at,
            vec![batch(4, &["a/2", "a/3"]), batch(6, &["a/1"])]
        ))
        .starts_with("resumable"));
        assert!(
            first(broken(at, vec![batch(2, &["a/1"]), batch(6, &["a/1"])]))
                .starts_with("reliable: missing: rev 4")
        );
        let late = vec![
            batch(2, &["a/1"]),
            batch(4, &["a/2", "a/3"]),
            batch(6, &[]),
            batch(6, &["a/1"]),
        ];
        assert!(first(broken(at, late)).starts_with("progress"));
        // From the next write: a write answered before the watch was asked for is not its.
        let next = Start::Next {
            lo: Revision(3),
            hi: Revision(5),
        };
        assert!(first(broken(
            next,
            vec![
                batch(2, &["a/1"]),
                batch(4, &["a/2", "a/3"]),
                batch(6, &["a/1"])
            ]
        ))
        .starts_with("resumable"));
        // Nor may it skip a write asked for after it was answered.
        let late_start = Start::Next {
            lo: Revision(3),
            hi: Revision(4),
        };
        assert!(first(broken(late_start, vec![batch(6, &["a/1"])])).starts_with("resumable"));
    }

    #[test]
    fn a_watch_that_ended_early_is_judged_up_to_what_it_delivered() {
        let mut cut = log(Start::At(Revision(1)), vec![batch(2, &["a/1"])]);
        cut.read_to = Revision(0);
        assert!(validate(&cut, &history()).is_empty());
    }
}
