//! The calls clients make in the concurrency check, their answers, and the reference model as
//! the sequential specification the history must be linearizable against.

use super::linearizability::Spec;
use crate::contract::model::Model;
use registry_api::{
    Bytes, DeleteResponse, Error, GetResponse, LeaseGrant, LeaseId, ListResponse, PutResponse,
    Result, Revision,
};
use std::fmt;

/// A call a client made.
#[derive(Clone, Debug)]
pub(crate) enum Request {
    Put {
        key: Bytes,
        value: Bytes,
        lease: Option<LeaseId>,
    },
    Get {
        key: Bytes,
    },
    List {
        prefix: Bytes,
    },
    Delete {
        key: Bytes,
    },
    DeletePrefix {
        prefix: Bytes,
    },
    Grant {
        ttl: i64,
    },
    KeepAlive {
        lease: LeaseId,
    },
    Revoke {
        lease: LeaseId,
    },
}

/// What came back: the whole response, or a definite error (by its `Debug`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    Put(PutResponse),
    Get(GetResponse),
    List(ListResponse),
    Delete(DeleteResponse),
    Grant(LeaseGrant),
    KeepAlive(i64),
    Revoke(Revision),
    /// A put whose answer was lost, seen in the history at this revision.
    PutAt(Revision),
    Failed(String),
}

/// Whether an error tells what happened (the call was refused and changed nothing), or leaves
/// it unknown (the request may have taken effect: its answer was lost).
pub(crate) fn is_definite(e: &Error) -> bool {
    matches!(
        e,
        Error::LeaseNotFound(_)
            | Error::LeaseExists(_)
            | Error::Compacted { .. }
            | Error::FutureRevision { .. }
            | Error::InvalidArgument(_)
            | Error::TooLarge { .. }
    )
}

/// The answer a result gives, `None` when its outcome is unknown.
pub(crate) fn answer_of<T>(result: &Result<T>, ok: impl Fn(&T) -> Answer) -> Option<Answer> {
    match result {
        Ok(v) => Some(ok(v)),
        Err(e) if is_definite(e) => Some(Answer::Failed(format!("{e:?}"))),
        Err(_) => None,
    }
}

/// One recorded call: who made it, what it asked, what it got (`None`: unknown).
#[derive(Clone, Debug)]
pub(crate) struct Recorded {
    pub(crate) client: usize,
    pub(crate) request: Request,
    pub(crate) answer: Option<Answer>,
}

impl fmt::Display for Recorded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
        write!(f, "client {}: ", self.client)?;
        match &self.request {
            Request::Put { key, value, lease } => {
                write!(f, "put {}={}", show(key), show(value))?;
                if let Some(l) = lease {
                    write!(f, " lease {l}")?;
                }
            }
            Request::Get { key } => write!(f, "get {}", show(key))?,
            Request::List { prefix } => write!(f, "list {}", show(prefix))?,
            Request::Delete { key } => write!(f, "delete {}", show(key))?,
            Request::DeletePrefix { prefix } => write!(f, "delete_prefix {}", show(prefix))?,
            Request::Grant { ttl } => write!(f, "grant ttl {ttl}")?,
            Request::KeepAlive { lease } => write!(f, "keep_alive {lease}")?,
            Request::Revoke { lease } => write!(f, "revoke {lease}")?,
        }
        match &self.answer {
            None => write!(f, " -> unknown (the answer was lost)"),
            Some(a) => write!(f, " -> {}", show_answer(a)),
        }
    }
}

fn show_answer(a: &Answer) -> String {
    let kv = |kv: &registry_api::KeyValue| {
        format!(
            "{}={} (created {}, modified {}, version {})",
            kv.key_str(),
            kv.value_str(),
            kv.create_revision.0,
            kv.mod_revision.0,
            kv.version
        )
    };
    match a {
        Answer::Put(r) => format!("rev {}", r.revision.0),
        Answer::Get(r) => match &r.kv {
            Some(v) => format!("at rev {}: {}", r.revision.0, kv(v)),
            None => format!("at rev {}: absent", r.revision.0),
        },
        Answer::List(r) => {
            let kvs: Vec<String> = r.kvs.iter().map(kv).collect();
            format!("at rev {}: [{}]", r.revision.0, kvs.join("; "))
        }
        Answer::Delete(r) => format!("rev {}, {} deleted", r.revision.0, r.deleted),
        Answer::Grant(g) => format!("lease {}, ttl {}", g.id, g.ttl),
        Answer::KeepAlive(ttl) => format!("ttl {ttl}"),
        Answer::Revoke(r) => format!("rev {}", r.0),
        Answer::PutAt(r) => format!("answer lost, seen in the history at rev {}", r.0),
        Answer::Failed(e) => format!("failed: {e}"),
    }
}

/// What the model answers to `request` (applying it), for a grant with the id the backend gave
/// (or, unknown, an id of its own).
fn apply(model: &mut Model, request: &Request, answer: Option<&Answer>) -> Answer {
    let failed = |e: Error| Answer::Failed(format!("{e:?}"));
    match request {
        Request::Put { key, value, lease } => model
            .put(key, value, *lease, true)
            .map_or_else(failed, Answer::Put),
        Request::Get { key } => model.get(key).map_or_else(failed, Answer::Get),
        Request::List { prefix } => model.list(prefix, None).map_or_else(failed, Answer::List),
        Request::Delete { key } => model.delete(key).map_or_else(failed, Answer::Delete),
        Request::DeletePrefix { prefix } => model
            .delete_prefix(prefix)
            .map_or_else(failed, Answer::Delete),
        Request::Grant { ttl } => {
            let id = match answer {
                Some(Answer::Grant(g)) => g.id,
                _ => LeaseId(i64::MAX),
            };
            model
                .lease_grant(*ttl, id)
                .map_or_else(failed, Answer::Grant)
        }
        Request::KeepAlive { lease } => model
            .lease_keep_alive(*lease)
            .map_or_else(failed, Answer::KeepAlive),
        Request::Revoke { lease } => model
            .lease_revoke(*lease)
            .map_or_else(failed, Answer::Revoke),
    }
}

/// The reference model as a sequential specification: a call fits when the model, applying it,
/// answers what the backend answered.
pub(crate) struct ModelSpec;

impl Spec for ModelSpec {
    type State = Model;
    type Op = Recorded;

    fn step(&self, state: &Model, op: &Recorded) -> Option<Model> {
        let mut next = state.clone();
        let answer = apply(&mut next, &op.request, op.answer.as_ref());
        match (&op.answer, &answer) {
            (None, _) => Some(next),
            (Some(Answer::PutAt(at)), Answer::Put(put)) => (put.revision == *at).then_some(next),
            (Some(got), _) => (*got == answer).then_some(next),
        }
    }

    fn fingerprint(&self, state: &Model) -> u64 {
        state.fingerprint()
    }
}

/// What the model would have answered `op` from `state` (for a failure report).
pub(crate) fn model_answer(state: &Model, op: &Recorded) -> String {
    let mut scratch = state.clone();
    show_answer(&apply(&mut scratch, &op.request, op.answer.as_ref()))
}

/// Replays the calls of `order` on `initial`: the model after the history.
pub(crate) fn replay(initial: &Model, calls: &[Recorded], order: &[usize]) -> Model {
    let mut model = initial.clone();
    for &i in order {
        apply(&mut model, &calls[i].request, calls[i].answer.as_ref());
    }
    model
}
