//! The clients of the concurrency check: each issues a seeded sequence of calls while the
//! others do, and every invocation and answer is recorded on one logical clock.

use super::spec::{answer_of, Answer, Recorded, Request};
use registry_api::wrap::{CallKind, Intercept, Intercepted, SplitMix64};
use registry_api::{
    async_trait, Bytes, LeaseId, ListOptions, PutOptions, Registry, Result, Revision, WatchOptions,
    WatchStream,
};
use std::cell::{Cell, RefCell};
use std::sync::{Arc, Mutex, PoisonError};

/// The keys clients write, relative to the run's prefix.
const KEYS: [&str; 6] = ["k/0", "k/1", "k/2", "k/3", "l/0", "l/1"];

/// The prefixes clients delete and watch, relative to the run's prefix.
const PREFIXES: [&str; 4] = ["", "k/", "l/", "k/1"];

/// A recorded call with its times on the logical clock (`returned`: `None` when the answer
/// was lost).
#[derive(Clone, Debug)]
pub(crate) struct Timed {
    pub(crate) call: Recorded,
    pub(crate) invoked: u64,
    pub(crate) returned: Option<u64>,
}

/// A watch a client opened: what it asked, when, and its stream (read after the run).
pub(crate) struct OpenedWatch {
    pub(crate) client: usize,
    pub(crate) prefix: Bytes,
    pub(crate) start: Option<Revision>,
    pub(crate) prev_kv: bool,
    pub(crate) invoked: u64,
    pub(crate) returned: u64,
    pub(crate) stream: WatchStream,
}

/// What every client of one run shares: the clock, the record, the leases granted so far.
#[derive(Default)]
pub(crate) struct Record {
    clock: Cell<u64>,
    pub(crate) calls: RefCell<Vec<Timed>>,
    pub(crate) watches: RefCell<Vec<OpenedWatch>>,
    leases: RefCell<Vec<LeaseId>>,
    pub(crate) progress_requests: Cell<usize>,
}

impl Record {
    /// The next tick of the logical clock.
    pub(crate) fn tick(&self) -> u64 {
        let t = self.clock.get() + 1;
        self.clock.set(t);
        t
    }

    pub(crate) fn push(&self, call: Recorded, invoked: u64) {
        let returned = call.answer.is_some().then(|| self.tick());
        self.calls.borrow_mut().push(Timed {
            call,
            invoked,
            returned,
        });
    }
}

/// On virtual time every call of the simulator answers at once; this hook yields a few times
/// before and after each call (the number drawn from the client's seed), so that the calls of
/// different clients interleave and overlap as they do over a network.
#[derive(Debug)]
pub(crate) struct Jitter(Mutex<SplitMix64>);

impl Jitter {
    pub(crate) fn new(seed: u64) -> Self {
        Jitter(Mutex::new(SplitMix64::new(seed)))
    }

    async fn pause(&self) {
        let n = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .below(4);
        for _ in 0..n {
            tokio::task::yield_now().await;
        }
    }
}

#[async_trait]
impl Intercept for Jitter {
    async fn before(&self, _: CallKind) -> Result<()> {
        self.pause().await;
        Ok(())
    }
    async fn after(&self, _: CallKind, _: Result<(), &registry_api::Error>) -> Result<()> {
        self.pause().await;
        Ok(())
    }
}

/// A client's registry: the shared one, with jitter on virtual time.
pub(crate) fn client_registry(
    shared: &Arc<dyn Registry>,
    jitter: bool,
    seed: u64,
) -> Arc<dyn Registry> {
    if jitter {
        Arc::new(Intercepted::new(shared.clone(), Jitter::new(seed)))
    } else {
        shared.clone()
    }
}

/// One client's run: `calls` calls drawn from `seed`, recorded in `record`.
pub(crate) async fn client(
    id: usize,
    registry: Arc<dyn Registry>,
    prefix: &[u8],
    seed: u64,
    calls: usize,
    lease_ttl: i64,
    record: &Record,
) {
    let mut rng = SplitMix64::new(seed);
    let under = |rel: &str| {
        let mut k = prefix.to_vec();
        k.extend_from_slice(rel.as_bytes());
        Bytes::from(k)
    };
    // The highest revision this client has seen in an answer.
    let mut seen = 1i64;
    for i in 0..calls {
        let key = under(KEYS[rng.below(KEYS.len() as u64) as usize]);
        let pick = under(PREFIXES[rng.below(PREFIXES.len() as u64) as usize]);
        let lease = {
            let leases = record.leases.borrow();
            (!leases.is_empty()).then(|| leases[rng.below(leases.len() as u64) as usize])
        };
        let roll = rng.below(100);
        let request = match roll {
            0..=29 => Request::Put {
                key,
                value: Bytes::from(format!("c{id}-{i}")),
                lease: lease.filter(|_| rng.chance(0.3)),
            },
            30..=39 => Request::Get { key },
            40..=47 => Request::List { prefix: pick },
            48..=57 => Request::Delete { key },
            58..=62 => Request::DeletePrefix { prefix: pick },
            63..=70 => Request::Grant { ttl: lease_ttl },
            71..=76 => match lease {
                Some(lease) => Request::KeepAlive { lease },
                None => Request::Grant { ttl: lease_ttl },
            },
            77..=82 => match lease {
                Some(lease) => Request::Revoke { lease },
                None => Request::Get { key },
            },
            83..=94 => {
                let start = match rng.below(5) {
                    0 | 1 => None,
                    2 | 3 => Some(Revision((seen - rng.below(4) as i64).max(1))),
                    _ => Some(Revision(seen + 1 + rng.below(4) as i64)),
                };
                open_watch(id, &registry, pick, start, rng.chance(0.5), record).await;
                continue;
            }
            _ => {
                request_progress(id, record, &mut rng).await;
                continue;
            }
        };
        let invoked = record.tick();
        let answer = send(&registry, &request).await;
        if let Some(Answer::Grant(g)) = &answer {
            record.leases.borrow_mut().push(g.id);
        }
        seen = seen.max(answer.as_ref().and_then(revision_of).unwrap_or(0));
        record.push(
            Recorded {
                client: id,
                request,
                answer,
            },
            invoked,
        );
    }
}

/// The store revision an answer tells (its header), if any.
pub(crate) fn revision_of(answer: &Answer) -> Option<i64> {
    match answer {
        Answer::Put(r) => Some(r.revision.0),
        Answer::Get(r) => Some(r.revision.0),
        Answer::List(r) => Some(r.revision.0),
        Answer::Delete(r) => Some(r.revision.0),
        Answer::Revoke(r) => Some(r.0),
        Answer::PutAt(r) => Some(r.0),
        _ => None,
    }
}

/// Sends `request`; its answer, `None` when the outcome is unknown.
pub(crate) async fn send(registry: &Arc<dyn Registry>, request: &Request) -> Option<Answer> {
    match request {
        Request::Put { key, value, lease } => {
            let opts = PutOptions {
                lease: *lease,
                prev_kv: true,
            };
            answer_of(&registry.put(key, value, opts).await, |r| {
                Answer::Put(r.clone())
            })
        }
        Request::Get { key } => answer_of(&registry.get(key).await, |r| Answer::Get(r.clone())),
        Request::List { prefix } => {
            answer_of(&registry.list(prefix, ListOptions::default()).await, |r| {
                Answer::List(r.clone())
            })
        }
        Request::Delete { key } => {
            answer_of(&registry.delete(key).await, |r| Answer::Delete(r.clone()))
        }
        Request::DeletePrefix { prefix } => answer_of(&registry.delete_prefix(prefix).await, |r| {
            Answer::Delete(r.clone())
        }),
        Request::Grant { ttl } => answer_of(&registry.lease_grant(*ttl, None).await, |g| {
            Answer::Grant(g.clone())
        }),
        Request::KeepAlive { lease } => answer_of(&registry.lease_keep_alive(*lease).await, |t| {
            Answer::KeepAlive(*t)
        }),
        Request::Revoke { lease } => {
            answer_of(&registry.lease_revoke(*lease).await, |r| Answer::Revoke(*r))
        }
    }
}

async fn open_watch(
    client: usize,
    registry: &Arc<dyn Registry>,
    prefix: Bytes,
    start: Option<Revision>,
    prev_kv: bool,
    record: &Record,
) {
    let opts = WatchOptions {
        start_revision: start,
        prev_kv,
        progress_notify: false,
    };
    let invoked = record.tick();
    let opened = registry.watch(&prefix, opts).await;
    let returned = record.tick();
    // A watch that could not be opened (its request lost) has nothing to check.
    if let Ok(stream) = opened {
        record.watches.borrow_mut().push(OpenedWatch {
            client,
            prefix,
            start,
            prev_kv,
            invoked,
            returned,
            stream,
        });
    }
}

/// Asks one of the client's open watches for progress; the answer comes on its stream, where
/// the progress validator judges it.
async fn request_progress(client: usize, record: &Record, rng: &mut SplitMix64) {
    let request = {
        let watches = record.watches.borrow();
        let mine: Vec<&OpenedWatch> = watches.iter().filter(|w| w.client == client).collect();
        if mine.is_empty() {
            return;
        }
        let w = mine[rng.below(mine.len() as u64) as usize];
        w.stream.request_progress()
    };
    if request.await.is_ok() {
        record
            .progress_requests
            .set(record.progress_requests.get() + 1);
    }
}
