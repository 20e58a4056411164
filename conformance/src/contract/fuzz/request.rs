//! A generated [`Call`] made concrete against the sequence so far (its prefix, the leases it
//! was granted, the current revision), and what the contract says about it before it is sent.

use super::input::{Batch, Call, Key, LeaseRef, RevRef, Value};
use super::snapshot::LeaseSeen;
use crate::contract::backend::Capabilities;
use registry_api::limits::MAX_KEEP_ALIVE_BATCH;
use registry_api::{Error, InvalidArgument, LeaseId, Result, Revision};
use std::time::Duration;

/// What the sequence knows when it resolves a call.
pub(super) struct Scope<'a> {
    pub(super) prefix: &'a [u8],
    pub(super) granted: &'a [LeaseId],
    pub(super) current: Revision,
    pub(super) caps: &'a Capabilities,
}

/// The exact arguments of one call.
pub(super) enum Request {
    Grant {
        ttl: i64,
        id: Option<LeaseId>,
    },
    KeepAlive(LeaseId),
    KeepAliveMany(Vec<LeaseId>),
    Revoke(LeaseId),
    TimeToLive(LeaseId),
    Leases,
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: Option<LeaseId>,
        prev_kv: bool,
    },
    Get(Vec<u8>),
    List {
        prefix: Vec<u8>,
        at: Option<Revision>,
    },
    Delete(Vec<u8>),
    DeletePrefix(Vec<u8>),
    Compact(Revision),
    Watch {
        prefix: Vec<u8>,
        from: Option<Revision>,
        prev_kv: bool,
    },
    Advance(Duration),
}

impl Request {
    /// Whether the request is a keep-alive: it may give a lease time back and must change
    /// nothing else, whether it succeeds or not.
    pub(super) fn only_renews(&self) -> bool {
        matches!(self, Request::KeepAlive(_) | Request::KeepAliveMany(_))
    }
}

impl Scope<'_> {
    pub(super) fn resolve(&self, call: &Call) -> Request {
        let lease = |l: &LeaseRef| self.lease(l);
        let rev = |r: &RevRef| self.revision(r);
        match call {
            Call::Grant { ttl, id } => Request::Grant {
                ttl: *ttl,
                id: id.map(LeaseId),
            },
            Call::KeepAlive(l) => Request::KeepAlive(lease(l)),
            Call::KeepAliveMany(batch) => Request::KeepAliveMany(self.batch(batch)),
            Call::Revoke(l) => Request::Revoke(lease(l)),
            Call::TimeToLive(l) => Request::TimeToLive(lease(l)),
            Call::Leases => Request::Leases,
            Call::Put {
                key,
                value,
                lease: l,
                prev_kv,
            } => {
                let key = self.key(key);
                let value = self.value(value, key.len());
                Request::Put {
                    key,
                    value,
                    lease: l.as_ref().map(lease),
                    prev_kv: *prev_kv,
                }
            }
            Call::Get(key) => Request::Get(self.key(key)),
            Call::List { prefix, at } => Request::List {
                prefix: self.under(prefix),
                at: at.as_ref().map(rev),
            },
            Call::Delete(key) => Request::Delete(self.key(key)),
            Call::DeletePrefix(prefix) => Request::DeletePrefix(self.under(prefix)),
            Call::Compact(at) => Request::Compact(rev(at)),
            Call::Watch {
                prefix,
                from,
                prev_kv,
            } => Request::Watch {
                prefix: self.under(prefix),
                from: from.as_ref().map(rev),
                prev_kv: *prev_kv,
            },
            Call::Advance(ms) => Request::Advance(Duration::from_millis(*ms)),
        }
    }

    fn under(&self, rel: &[u8]) -> Vec<u8> {
        [self.prefix, rel].concat()
    }

    fn key(&self, key: &Key) -> Vec<u8> {
        match key {
            Key::Empty => Vec::new(),
            Key::Under(rel) => self.under(rel),
        }
    }

    fn value(&self, value: &Value, key_len: usize) -> Vec<u8> {
        match value {
            Value::Bytes(bytes) => bytes.clone(),
            Value::AroundLimit(delta) => {
                let room = self.caps.max_value_bytes.saturating_sub(key_len);
                let len = if *delta < 0 {
                    room.saturating_sub(usize::try_from(delta.unsigned_abs()).unwrap_or(usize::MAX))
                } else {
                    room.saturating_add(usize::try_from(*delta).unwrap_or(0))
                };
                vec![b'v'; len]
            }
        }
    }

    fn lease(&self, lease: &LeaseRef) -> LeaseId {
        match lease {
            LeaseRef::Granted(i) if !self.granted.is_empty() => {
                self.granted[i % self.granted.len()]
            }
            // Deliberately wrapping: a huge index becomes a negative id, more bad input.
            LeaseRef::Granted(i) => LeaseId(*i as i64),
            LeaseRef::Raw(raw) => LeaseId(*raw),
        }
    }

    fn batch(&self, batch: &Batch) -> Vec<LeaseId> {
        let (leases, len) = match batch {
            Batch::Of(leases) => (leases, leases.len()),
            Batch::Full(leases) => (leases, MAX_KEEP_ALIVE_BATCH),
            Batch::Oversized(leases) => (leases, MAX_KEEP_ALIVE_BATCH + 1),
        };
        leases
            .iter()
            .map(|l| self.lease(l))
            .cycle()
            .take(len)
            .collect()
    }

    fn revision(&self, rev: &RevRef) -> Revision {
        match rev {
            RevRef::Near(delta) => Revision(self.current.0.saturating_add(*delta)),
            RevRef::Raw(raw) => Revision(*raw),
        }
    }
}

/// Why the contract says a request must be refused before the store is touched.
#[derive(Clone, Copy, Debug)]
pub(super) enum Refusal {
    Ttl,
    LeaseId,
    EmptyKey,
    TooLarge,
    Revision,
    /// A keep-alive batch of this many ids, over the limit: refused whole.
    BatchTooLarge(usize),
}

impl Refusal {
    /// The refusal `request` is owed, checked in the order the contract checks.
    pub(super) fn owed(request: &Request, caps: &Capabilities) -> Option<Self> {
        let bad_lease = |id: &LeaseId| id.0 <= 0;
        match request {
            // Zero and below are granted the minimum, as etcd does: not bad input.
            Request::Grant { ttl, .. } if *ttl > caps.max_ttl => Some(Refusal::Ttl),
            Request::Grant { id: Some(id), .. } if bad_lease(id) => Some(Refusal::LeaseId),
            // Before any id in it: a batch refused whole answers for none of them.
            Request::KeepAliveMany(ids) if ids.len() > MAX_KEEP_ALIVE_BATCH => {
                Some(Refusal::BatchTooLarge(ids.len()))
            }
            Request::KeepAlive(id) | Request::Revoke(id) | Request::TimeToLive(id)
                if bad_lease(id) =>
            {
                Some(Refusal::LeaseId)
            }
            Request::Put { key, .. } | Request::Get(key) | Request::Delete(key)
                if key.is_empty() =>
            {
                Some(Refusal::EmptyKey)
            }
            Request::Put { key, value, .. }
                if key.len().saturating_add(value.len()) > caps.max_value_bytes =>
            {
                Some(Refusal::TooLarge)
            }
            Request::Put {
                lease: Some(id), ..
            } if bad_lease(id) => Some(Refusal::LeaseId),
            Request::List { at: Some(r), .. }
            | Request::Compact(r)
            | Request::Watch { from: Some(r), .. }
                if r.0 <= 0 =>
            {
                Some(Refusal::Revision)
            }
            _ => None,
        }
    }

    /// Whether `err` is the documented error for this refusal.
    pub(super) fn admits(self, err: &Error) -> bool {
        match self {
            Refusal::Ttl => matches!(
                err,
                Error::InvalidArgument(InvalidArgument::TtlTooLarge { .. })
            ),
            Refusal::LeaseId => matches!(err, Error::InvalidArgument(InvalidArgument::LeaseId(_))),
            Refusal::EmptyKey => matches!(err, Error::InvalidArgument(InvalidArgument::EmptyKey)),
            Refusal::TooLarge => matches!(err, Error::TooLarge { .. }),
            Refusal::Revision => {
                matches!(err, Error::InvalidArgument(InvalidArgument::Revision(_)))
            }
            Refusal::BatchTooLarge(sent) => matches!(
                err,
                Error::InvalidArgument(InvalidArgument::BatchTooLarge { len, max })
                    if *len == sent && *max == MAX_KEEP_ALIVE_BATCH
            ),
        }
    }
}

/// How the contract says one id of a keep-alive batch is answered: as a single keep-alive of
/// it would be, judged from the look at the store taken just before the batch.
#[derive(Clone, Copy, Debug)]
pub(super) enum Renewal {
    /// An id of zero or below: refused as bad input.
    BadId,
    /// Gone, or never granted.
    NotFound,
    /// Live: renewed, answering its whole granted TTL.
    Renewed(i64),
    /// An id the case does not know, on a store it shares: someone else's lease, renewed, or
    /// none at all.
    Unseen,
}

impl Renewal {
    /// The answer owed for `id`, which the store looked like `seen` just before the batch.
    pub(super) fn owed(id: LeaseId, seen: LeaseSeen) -> Self {
        if id.0 <= 0 {
            return Renewal::BadId;
        }
        match seen {
            LeaseSeen::Live(granted) => Renewal::Renewed(granted),
            LeaseSeen::Absent => Renewal::NotFound,
            LeaseSeen::Unseen => Renewal::Unseen,
        }
    }

    /// Whether `answer` is that answer. Errors must name `id` itself: an answer meant for
    /// another id of the batch is wrong even when its kind is right.
    pub(super) fn admits(self, id: LeaseId, answer: &Result<i64>) -> bool {
        let not_found = matches!(answer, Err(Error::LeaseNotFound(gone)) if *gone == id);
        match self {
            Renewal::BadId => matches!(
                answer,
                Err(Error::InvalidArgument(InvalidArgument::LeaseId(bad))) if *bad == id.0
            ),
            Renewal::NotFound => not_found,
            Renewal::Renewed(granted) => matches!(answer, Ok(ttl) if *ttl == granted),
            Renewal::Unseen => not_found || answer.is_ok(),
        }
    }
}

/// The error kinds a caller can act on. A fuzzed call may fail only with one of these: a
/// catch-all (a backend or transport error) means input reached somewhere it should not.
pub(super) fn is_typed(err: &Error) -> bool {
    matches!(
        err,
        Error::LeaseNotFound(_)
            | Error::LeaseExists(_)
            | Error::Compacted { .. }
            | Error::FutureRevision { .. }
            | Error::InvalidArgument(_)
            | Error::TooLarge { .. }
    )
}
