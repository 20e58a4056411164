//! Observations: what a sequence saw, in a form that does not depend on where it ran.
//!
//! Revisions are relative to the sequence's first observed revision, keys relative to its
//! prefix, lease ids replaced by the order they were granted in. Two backends that behave the
//! same give equal observations.

use registry_api::{Error, EventKind, InvalidArgument, KeyValue, LeaseId, Revision, WatchBatch};

/// A lease as an observation names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LeaseRef {
    /// The n-th lease granted in the sequence (0-based).
    Granted(usize),
    /// An id the sequence never was granted.
    Unknown,
}

/// A key-value, normalised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObsKv {
    /// The key, relative to the sequence's prefix.
    pub key: String,
    /// The value, or its length when long.
    pub value: String,
    /// Relative create revision (0 when unset, as in delete events).
    pub create_revision: i64,
    /// Relative mod revision.
    pub mod_revision: i64,
    /// Puts since creation.
    pub version: i64,
    /// The attached lease.
    pub lease: Option<LeaseRef>,
}

/// A watch event, normalised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObsEvent {
    /// Put or delete.
    pub kind: EventKind,
    /// The key-value after the change.
    pub kv: ObsKv,
    /// The previous value, when delivered.
    pub prev_kv: Option<ObsKv>,
    /// Whether the event reports a creation.
    pub created: bool,
}

/// One watch batch, normalised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObsBatch {
    /// Relative revision.
    pub revision: i64,
    /// The events.
    pub events: Vec<ObsEvent>,
}

/// An error, reduced to what every backend reports the same way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// [`Error::LeaseNotFound`].
    LeaseNotFound(LeaseRef),
    /// [`Error::LeaseExists`].
    LeaseExists(LeaseRef),
    /// [`Error::Compacted`], relative compact revision.
    Compacted(i64),
    /// [`Error::FutureRevision`], relative requested revision.
    FutureRevision(i64),
    /// [`Error::InvalidArgument`], with the reason's name and the bad number where it has one.
    InvalidArgument(String),
    /// [`Error::TooLarge`].
    TooLarge,
    /// [`Error::Unavailable`].
    Unavailable,
    /// [`Error::WatchCancelled`].
    WatchCancelled,
    /// Anything else, with its message.
    Other(String),
}

/// What one operation returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A put: its revision and previous value.
    Put {
        /// Relative revision.
        revision: i64,
        /// The previous value, when asked and present.
        prev_kv: Option<ObsKv>,
    },
    /// A get.
    Get {
        /// Relative revision.
        revision: i64,
        /// The key-value.
        kv: Option<ObsKv>,
    },
    /// A list.
    List {
        /// Relative revision.
        revision: i64,
        /// The key-values.
        kvs: Vec<ObsKv>,
    },
    /// A delete or prefix delete.
    Delete {
        /// Relative revision.
        revision: i64,
        /// How many keys.
        deleted: i64,
        /// The deleted key-values.
        prev_kvs: Vec<ObsKv>,
    },
    /// A grant.
    Grant {
        /// Which lease it was.
        lease: LeaseRef,
        /// The granted TTL.
        ttl: i64,
    },
    /// A keep-alive: the TTL it reported.
    KeepAlive(i64),
    /// A batch of keep-alives: per lease, in the order sent, the TTL or the error.
    KeepAliveMany(Vec<std::result::Result<i64, ErrorKind>>),
    /// A revoke: the relative revision after it.
    Revoke(i64),
    /// A time-to-live (the remaining TTL depends on timing and is checked, not recorded).
    TimeToLive {
        /// The granted TTL.
        granted_ttl: i64,
        /// The attached keys.
        keys: Vec<String>,
    },
    /// A compaction: the relative revision it returned.
    Compact(i64),
    /// A watch was opened (what it delivered is in [`Observation::watches`]).
    Watching,
    /// Time moved.
    Advanced,
    /// The operation did not apply to the model's state (nothing to compact) and was not sent.
    Skipped,
    /// The call failed.
    Failed(ErrorKind),
}

/// Everything a watch delivered, read at the end of its sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchLog {
    /// The watched prefix, relative.
    pub prefix: String,
    /// Relative start revision.
    pub start: i64,
    /// Whether previous values were asked for.
    pub prev_kv: bool,
    /// The batches with events, then the final error if the watch ended with one.
    pub batches: Vec<ObsBatch>,
    /// The error that ended the watch, if any.
    pub error: Option<ErrorKind>,
}

/// One operation and what it returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The concrete request, relative.
    pub request: String,
    /// What came back.
    pub outcome: Outcome,
}

/// What a whole sequence observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// Each operation's outcome.
    pub steps: Vec<Step>,
    /// Each watch's deliveries.
    pub watches: Vec<WatchLog>,
    /// The keys under the prefix at the end.
    pub final_state: Vec<ObsKv>,
}

impl Observation {
    /// The first difference from `other`, described, or `None` when equal.
    pub fn diff(&self, other: &Observation) -> Option<String> {
        for (i, (a, b)) in self.steps.iter().zip(&other.steps).enumerate() {
            if a != b {
                return Some(format!("step {i}:\n  left:  {a:?}\n  right: {b:?}"));
            }
        }
        if self.steps.len() != other.steps.len() {
            return Some(format!(
                "step counts differ: {} vs {}",
                self.steps.len(),
                other.steps.len()
            ));
        }
        for (i, (a, b)) in self.watches.iter().zip(&other.watches).enumerate() {
            if a != b {
                return Some(format!("watch {i}:\n  left:  {a:?}\n  right: {b:?}"));
            }
        }
        if self.watches.len() != other.watches.len() {
            return Some("watch counts differ".into());
        }
        if self.final_state != other.final_state {
            return Some(format!(
                "final state:\n  left:  {:?}\n  right: {:?}",
                self.final_state, other.final_state
            ));
        }
        None
    }
}

/// Turns backend values into observations.
#[derive(Clone, Debug)]
pub(crate) struct Normalizer {
    base: Revision,
    prefix: Vec<u8>,
    leases: Vec<LeaseId>,
}

impl Normalizer {
    pub(crate) fn new(base: Revision, prefix: Vec<u8>) -> Self {
        Normalizer {
            base,
            prefix,
            leases: Vec::new(),
        }
    }

    /// The sequence's first observed revision: relative revisions count from it.
    pub(crate) fn base(&self) -> Revision {
        self.base
    }

    /// Records a granted lease; returns its reference.
    pub(crate) fn granted(&mut self, id: LeaseId) -> LeaseRef {
        self.leases.push(id);
        LeaseRef::Granted(self.leases.len() - 1)
    }

    /// The leases granted so far, in order.
    pub(crate) fn leases(&self) -> &[LeaseId] {
        &self.leases
    }

    pub(crate) fn lease(&self, id: LeaseId) -> LeaseRef {
        // The newest grant wins, should a backend reuse an id after a revoke.
        self.leases
            .iter()
            .rposition(|l| *l == id)
            .map_or(LeaseRef::Unknown, LeaseRef::Granted)
    }

    pub(crate) fn rev(&self, r: Revision) -> i64 {
        r.0 - self.base.0
    }

    fn kv_rev(&self, r: Revision) -> i64 {
        if r.0 == 0 {
            0
        } else {
            self.rev(r)
        }
    }

    pub(crate) fn key(&self, key: &[u8]) -> String {
        match key.strip_prefix(self.prefix.as_slice()) {
            Some(rest) => String::from_utf8_lossy(rest).into_owned(),
            None => format!("<outside the prefix: {}>", String::from_utf8_lossy(key)),
        }
    }

    pub(crate) fn kv(&self, kv: &KeyValue) -> ObsKv {
        ObsKv {
            key: self.key(&kv.key),
            value: value(&kv.value),
            create_revision: self.kv_rev(kv.create_revision),
            mod_revision: self.kv_rev(kv.mod_revision),
            version: kv.version,
            lease: kv.lease.map(|l| self.lease(l)),
        }
    }

    pub(crate) fn kvs(&self, kvs: &[KeyValue]) -> Vec<ObsKv> {
        kvs.iter().map(|kv| self.kv(kv)).collect()
    }

    pub(crate) fn batch(&self, b: &WatchBatch) -> ObsBatch {
        ObsBatch {
            revision: self.rev(b.revision),
            events: b
                .events
                .iter()
                .map(|e| ObsEvent {
                    kind: e.kind,
                    kv: self.kv(&e.kv),
                    prev_kv: e.prev_kv.as_ref().map(|p| self.kv(p)),
                    created: e.is_create(),
                })
                .collect(),
        }
    }

    /// The answers of a keep-alive batch, each normalised.
    pub(crate) fn renewals(&self, answers: &[Result<i64, Error>]) -> Vec<Result<i64, ErrorKind>> {
        answers
            .iter()
            .map(|a| a.as_ref().map(|ttl| *ttl).map_err(|e| self.error(e)))
            .collect()
    }

    pub(crate) fn error(&self, e: &Error) -> ErrorKind {
        match e {
            Error::LeaseNotFound(id) => ErrorKind::LeaseNotFound(self.lease(*id)),
            Error::LeaseExists(id) => ErrorKind::LeaseExists(self.lease(*id)),
            Error::Compacted { compact_revision } => {
                ErrorKind::Compacted(self.rev(*compact_revision))
            }
            Error::FutureRevision { requested, .. } => {
                ErrorKind::FutureRevision(self.rev(*requested))
            }
            Error::InvalidArgument(why) => ErrorKind::InvalidArgument(invalid(why)),
            Error::TooLarge { .. } => ErrorKind::TooLarge,
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::WatchCancelled { .. } => ErrorKind::WatchCancelled,
            other => ErrorKind::Other(other.to_string()),
        }
    }
}

/// The reason's name, with the offending number where it is the caller's own input.
fn invalid(why: &InvalidArgument) -> String {
    match why {
        InvalidArgument::EmptyKey => "EmptyKey".into(),
        InvalidArgument::TtlNotPositive(ttl) => format!("TtlNotPositive({ttl})"),
        InvalidArgument::TtlTooLarge { ttl, .. } => format!("TtlTooLarge({ttl})"),
        InvalidArgument::LeaseId(id) => format!("LeaseId({id})"),
        InvalidArgument::BatchTooLarge { len, .. } => format!("BatchTooLarge({len})"),
        InvalidArgument::Revision(_) => "Revision".into(),
        InvalidArgument::Config(_) => "Config".into(),
        other => format!("Other({other})"),
    }
}

fn value(v: &[u8]) -> String {
    if v.len() <= 32 {
        String::from_utf8_lossy(v).into_owned()
    } else {
        format!("<{} bytes>", v.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use registry_api::Bytes;

    #[test]
    fn diff_finds_the_first_difference() {
        let step = |revision| Step {
            request: "put".into(),
            outcome: Outcome::Put {
                revision,
                prev_kv: None,
            },
        };
        let a = Observation {
            steps: vec![step(1), step(2)],
            ..Observation::default()
        };
        assert_eq!(a.diff(&a.clone()), None);
        let b = Observation {
            steps: vec![step(1), step(3)],
            ..Observation::default()
        };
        assert!(a.diff(&b).is_some_and(|d| d.starts_with("step 1")));
    }

    #[test]
    fn revisions_are_relative_and_leases_by_grant_order() {
        let mut n = Normalizer::new(Revision(40), b"pre/".to_vec());
        n.granted(LeaseId(99));
        let kv = KeyValue {
            key: Bytes::from_static(b"pre/k"),
            value: Bytes::from_static(b"v"),
            create_revision: Revision(41),
            mod_revision: Revision(43),
            version: 2,
            lease: Some(LeaseId(99)),
        };
        let o = n.kv(&kv);
        assert_eq!(
            (o.key.as_str(), o.create_revision, o.mod_revision),
            ("k", 1, 3)
        );
        assert_eq!(o.lease, Some(LeaseRef::Granted(0)));
        assert_eq!(n.lease(LeaseId(7)), LeaseRef::Unknown);
        assert_eq!(n.kv(&KeyValue::default()).create_revision, 0);
    }
}
