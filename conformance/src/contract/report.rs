//! What a failure shows: requests and outcomes with the revisions and lease ids the backend
//! used (one numbering for the whole transcript), and watch deliveries as an event diff.

use crate::contract::observe::{
    ErrorKind, LeaseRef, Normalizer, ObsBatch, ObsEvent, ObsKv, Outcome,
};
use registry_api::{EventKind, LeaseId, Revision};
use std::collections::BTreeMap;

/// The most lines an event diff shows.
const MAX_DIFF_LINES: usize = 12;

/// Names revisions and leases in a request: relative (for observations, which must not depend
/// on the backend) or absolute (for the transcript a failure prints).
#[derive(Clone, Copy)]
pub(crate) struct Names<'a> {
    pub(crate) norm: &'a Normalizer,
    pub(crate) absolute: bool,
}

impl Names<'_> {
    /// A revision: `rev 12` (absolute) or `rev +3` (relative to the sequence's first).
    pub(crate) fn rev(&self, r: Revision) -> String {
        if self.absolute {
            format!("rev {}", r.0)
        } else {
            format!("rev +{}", self.norm.rev(r))
        }
    }

    /// A lease: `L0 (id 7)` (absolute) or `L0` (by grant order).
    pub(crate) fn lease(&self, id: LeaseId) -> String {
        show_lease_ref(self.norm.lease(id), self.absolute.then_some(id))
    }

    /// A key, relative to the sequence's prefix.
    pub(crate) fn key(&self, key: &[u8]) -> String {
        self.norm.key(key)
    }
}

fn show_lease_ref(lease: LeaseRef, id: Option<LeaseId>) -> String {
    match (lease, id) {
        (LeaseRef::Granted(n), Some(id)) => format!("L{n} (id {id})"),
        (LeaseRef::Granted(n), None) => format!("L{n}"),
        (LeaseRef::Unknown, Some(id)) => format!("unknown lease (id {id})"),
        (LeaseRef::Unknown, None) => "unknown lease".to_owned(),
    }
}

impl Normalizer {
    fn abs(&self, rel: i64) -> i64 {
        self.base().0 + rel
    }

    fn lease_name(&self, lease: LeaseRef) -> String {
        let id = match lease {
            LeaseRef::Granted(n) => self.leases().get(n).copied(),
            LeaseRef::Unknown => None,
        };
        show_lease_ref(lease, id)
    }

    /// A key-value as the transcript shows it: `a/0="v1" created rev 3, modified rev 5, version 2,
    /// lease L0 (id 7)`.
    pub(crate) fn show_kv(&self, kv: &ObsKv) -> String {
        let mut s = format!(
            "{}={:?} created rev {}, modified rev {}, version {}",
            kv.key,
            kv.value,
            self.abs(kv.create_revision),
            self.abs(kv.mod_revision),
            kv.version
        );
        if let Some(lease) = kv.lease {
            s.push_str(&format!(", lease {}", self.lease_name(lease)));
        }
        s
    }

    fn show_kvs(&self, kvs: &[ObsKv]) -> String {
        let shown: Vec<String> = kvs.iter().map(|kv| self.show_kv(kv)).collect();
        format!("[{}]", shown.join("; "))
    }

    /// An error as the transcript shows it.
    pub(crate) fn show_error(&self, e: &ErrorKind) -> String {
        match e {
            ErrorKind::LeaseNotFound(l) => format!("LeaseNotFound({})", self.lease_name(*l)),
            ErrorKind::LeaseExists(l) => format!("LeaseExists({})", self.lease_name(*l)),
            ErrorKind::Compacted(r) => format!("Compacted(at rev {})", self.abs(*r)),
            ErrorKind::FutureRevision(r) => format!("FutureRevision(rev {})", self.abs(*r)),
            other => format!("{other:?}"),
        }
    }

    /// An outcome as the transcript shows it, revisions absolute and leases named.
    pub(crate) fn show_outcome(&self, o: &Outcome) -> String {
        match o {
            Outcome::Put { revision, prev_kv } => match prev_kv {
                Some(prev) => format!(
                    "rev {}, previous {}",
                    self.abs(*revision),
                    self.show_kv(prev)
                ),
                None => format!("rev {}", self.abs(*revision)),
            },
            Outcome::Get { revision, kv } => match kv {
                Some(kv) => format!("at rev {}: {}", self.abs(*revision), self.show_kv(kv)),
                None => format!("at rev {}: absent", self.abs(*revision)),
            },
            Outcome::List { revision, kvs } => {
                format!("at rev {}: {}", self.abs(*revision), self.show_kvs(kvs))
            }
            Outcome::Delete {
                revision,
                deleted,
                prev_kvs,
            } => format!(
                "rev {}, {deleted} deleted {}",
                self.abs(*revision),
                self.show_kvs(prev_kvs)
            ),
            Outcome::Grant { lease, ttl } => format!("{}, ttl {ttl}", self.lease_name(*lease)),
            Outcome::KeepAlive(ttl) => format!("ttl {ttl}"),
            Outcome::KeepAliveMany(answers) => {
                let shown: Vec<String> = answers
                    .iter()
                    .map(|a| match a {
                        Ok(ttl) => format!("ttl {ttl}"),
                        Err(e) => self.show_error(e),
                    })
                    .collect();
                format!("[{}]", shown.join(", "))
            }
            Outcome::Revoke(r) => format!("rev {}", self.abs(*r)),
            Outcome::TimeToLive { granted_ttl, keys } => {
                format!("granted ttl {granted_ttl}, keys {keys:?}")
            }
            Outcome::Compact(r) => format!("rev {}", self.abs(*r)),
            Outcome::Watching => "watching".to_owned(),
            Outcome::Advanced => "done".to_owned(),
            Outcome::Skipped => "skipped".to_owned(),
            Outcome::Failed(e) => format!("failed: {}", self.show_error(e)),
        }
    }

    fn show_event(&self, revision: i64, e: &ObsEvent) -> String {
        let what = match e.kind {
            EventKind::Put => format!("put {}={:?}", e.kv.key, e.kv.value),
            EventKind::Delete => format!("delete {}", e.kv.key),
        };
        format!("rev {} {what}", self.abs(revision))
    }

    /// The difference between the events a watch should have delivered and those it did, one
    /// line per event: `missing: rev 7 delete a/1`, `unexpected: rev 9 put a/2="v1"`, or
    /// `differs: ...` for an event delivered with other contents (previous value, create
    /// flag, revisions); then `out of order` if the same events came in another order. Empty
    /// when they are equal.
    pub(crate) fn event_diff(&self, want: &[ObsBatch], got: &[ObsBatch]) -> Vec<String> {
        let flat = |batches: &[ObsBatch]| -> Vec<((i64, String), ObsEvent)> {
            batches
                .iter()
                .flat_map(|b| {
                    b.events
                        .iter()
                        .map(move |e| ((b.revision, e.kv.key.clone()), e.clone()))
                })
                .collect()
        };
        let (want, got) = (flat(want), flat(got));
        let wanted: BTreeMap<_, _> = want.iter().cloned().collect();
        let delivered: BTreeMap<_, _> = got.iter().cloned().collect();
        let mut lines = Vec::new();
        for ((rev, key), w) in &wanted {
            match delivered.get(&(*rev, key.clone())) {
                None => lines.push(format!("missing: {}", self.show_event(*rev, w))),
                Some(g) if g != w => lines.push(format!(
                    "differs: {}: expected {}, got {}",
                    self.show_event(*rev, w),
                    self.show_details(w),
                    self.show_details(g)
                )),
                Some(_) => {}
            }
        }
        for ((rev, key), g) in &delivered {
            if !wanted.contains_key(&(*rev, key.clone())) {
                lines.push(format!("unexpected: {}", self.show_event(*rev, g)));
            }
        }
        let duplicates = got.len() - delivered.len();
        if duplicates > 0 {
            lines.push(format!("delivered twice: {duplicates} events"));
        }
        if lines.is_empty() && want != got {
            let order: Vec<String> = got
                .iter()
                .map(|((r, _), e)| self.show_event(*r, e))
                .collect();
            lines.push(format!("out of order: delivered {}", order.join(", ")));
        }
        if lines.len() > MAX_DIFF_LINES {
            let more = lines.len() - MAX_DIFF_LINES;
            lines.truncate(MAX_DIFF_LINES);
            lines.push(format!("... and {more} more differences"));
        }
        lines
    }

    fn show_details(&self, e: &ObsEvent) -> String {
        let prev = e
            .prev_kv
            .as_ref()
            .map_or_else(|| "none".to_owned(), |p| self.show_kv(p));
        format!(
            "{} (created: {}, previous: {prev})",
            self.show_kv(&e.kv),
            e.created
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::observe::{ObsEvent, ObsKv};

    fn event(kind: EventKind, key: &str, rev: i64, value: &str) -> ObsEvent {
        ObsEvent {
            kind,
            kv: ObsKv {
                key: key.into(),
                value: value.into(),
                create_revision: if kind == EventKind::Put { rev } else { 0 },
                mod_revision: rev,
                version: i64::from(kind == EventKind::Put),
                lease: None,
            },
            prev_kv: None,
            created: kind == EventKind::Put,
        }
    }

    fn batch(rev: i64, events: Vec<ObsEvent>) -> ObsBatch {
        ObsBatch {
            revision: rev,
            events,
        }
    }

    #[test]
    fn the_diff_names_each_missing_unexpected_and_changed_event_with_absolute_revisions() {
        let norm = Normalizer::new(Revision(10), b"p/".to_vec());
        let want = vec![
            batch(1, vec![event(EventKind::Put, "a/0", 1, "v")]),
            batch(2, vec![event(EventKind::Delete, "a/1", 2, "")]),
            batch(3, vec![event(EventKind::Put, "a/2", 3, "x")]),
        ];
        let got = vec![
            batch(1, vec![event(EventKind::Put, "a/0", 1, "v")]),
            batch(3, vec![event(EventKind::Put, "a/2", 3, "y")]),
            batch(4, vec![event(EventKind::Put, "b", 4, "z")]),
        ];
        let diff = norm.event_diff(&want, &got);
        assert_eq!(diff[0], "missing: rev 12 delete a/1");
        assert!(
            diff[1].starts_with("differs: rev 13 put a/2=\"x\""),
            "{diff:?}"
        );
        assert_eq!(diff[2], "unexpected: rev 14 put b=\"z\"");
        assert_eq!(diff.len(), 3);
        assert!(norm.event_diff(&want, &want).is_empty());
    }

    #[test]
    fn the_diff_tells_a_reordering_and_a_duplicate() {
        let norm = Normalizer::new(Revision(0), Vec::new());
        let a = batch(1, vec![event(EventKind::Put, "a", 1, "v")]);
        let b = batch(2, vec![event(EventKind::Put, "b", 2, "v")]);
        let reordered = norm.event_diff(&[a.clone(), b.clone()], &[b.clone(), a.clone()]);
        assert_eq!(reordered.len(), 1);
        assert!(reordered[0].starts_with("out of order"), "{reordered:?}");
        let twice = norm.event_diff(std::slice::from_ref(&a), &[a.clone(), a.clone()]);
        assert_eq!(twice, ["delivered twice: 1 events"]);
    }

    #[test]
    fn outcomes_show_absolute_revisions_and_named_leases() {
        let mut norm = Normalizer::new(Revision(40), b"p/".to_vec());
        norm.granted(LeaseId(0x1f));
        let shown = norm.show_outcome(&Outcome::Put {
            revision: 3,
            prev_kv: None,
        });
        assert_eq!(shown, "rev 43");
        let failed = norm.show_outcome(&Outcome::Failed(ErrorKind::LeaseNotFound(
            LeaseRef::Granted(0),
        )));
        assert_eq!(failed, "failed: LeaseNotFound(L0 (id 1f))");
        let names = Names {
            norm: &norm,
            absolute: true,
        };
        assert_eq!(names.rev(Revision(45)), "rev 45");
        assert_eq!(names.lease(LeaseId(0x1f)), "L0 (id 1f)");
        let relative = Names {
            norm: &norm,
            absolute: false,
        };
        assert_eq!(relative.rev(Revision(45)), "rev +5");
        assert_eq!(relative.lease(LeaseId(0x1f)), "L0");
    }
}
