//! Watchers: a cursor into the shared history log per open watch, and the stream that reads it.
//!
//! A watcher has no queue of its own: the history log is the queue. A write appends one record
//! and wakes only the parked watchers it concerns; each watcher then copies `Arc`s of the records
//! from its cursor on and filters them by its prefix. So a slow watcher never blocks a writer and
//! never loses an event: it just holds history back from being freed (see the crate docs on
//! memory). Dropping the stream removes its cursor from the table.

use crate::delivery;
use crate::keys::Record;
use crate::store::Shared;
use crate::timing::{ClientTimer, Leg};
use futures::{Stream, StreamExt};
use registry_api::{Error, Result, Revision, WatchBatch, WatchStream};
use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

/// How many records a watcher copies out per lock (its buffer's bound): a burst of writes is
/// read in few locks.
const READ_AHEAD: usize = 256;

#[derive(Debug)]
struct Slot {
    /// The next revision this watcher will read.
    cursor: i64,
    prefix: Arc<[u8]>,
    /// Progress-notifying watchers wake on every write, not only on matching ones.
    wakes_on_any: bool,
    /// Set while the watcher is parked; then its id is in `Watchers::parked`.
    waker: Option<Waker>,
    /// A progress request waits for the watcher to catch up.
    progress_requested: bool,
}

/// The table of open watches.
#[derive(Debug, Default)]
pub(crate) struct Watchers {
    slots: BTreeMap<u64, Slot>,
    parked: Vec<u64>,
    next_id: u64,
}

impl Watchers {
    fn add(&mut self, cursor: i64, prefix: Arc<[u8]>, wakes_on_any: bool) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.slots.insert(
            id,
            Slot {
                cursor,
                prefix,
                wakes_on_any,
                waker: None,
                progress_requested: false,
            },
        );
        id
    }

    fn remove(&mut self, id: u64) -> Option<i64> {
        let slot = self.slots.remove(&id)?;
        if slot.waker.is_some() {
            self.parked.retain(|parked| *parked != id);
        }
        Some(slot.cursor)
    }

    fn park(&mut self, id: u64, waker: &Waker) {
        if let Some(slot) = self.slots.get_mut(&id) {
            if slot.waker.is_none() {
                self.parked.push(id);
            }
            slot.waker = Some(waker.clone());
        }
    }

    /// Marks the watch as asked for progress and wakes it if parked. False when the watch is
    /// gone.
    fn request_progress(&mut self, id: u64, to_wake: &mut Vec<Waker>) -> bool {
        let Some(slot) = self.slots.get_mut(&id) else {
            return false;
        };
        slot.progress_requested = true;
        if let Some(waker) = slot.waker.take() {
            self.parked.retain(|parked| *parked != id);
            to_wake.push(waker);
        }
        true
    }

    /// Clears and returns the watch's pending progress request.
    fn take_progress_request(&mut self, id: u64) -> bool {
        self.slots
            .get_mut(&id)
            .is_some_and(|slot| std::mem::take(&mut slot.progress_requested))
    }

    /// Open watches.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// The oldest revision any open watch still has to read.
    pub(crate) fn min_cursor(&self) -> Option<i64> {
        self.slots.values().map(|slot| slot.cursor).min()
    }

    /// A new revision: queue the wakers of the parked watchers it concerns. The others are
    /// already past it, so their cursors skip it.
    pub(crate) fn notify(&mut self, record: &Record, to_wake: &mut Vec<Waker>) {
        let Watchers { slots, parked, .. } = self;
        parked.retain(|id| {
            let Some(slot) = slots.get_mut(id) else {
                return false;
            };
            if slot.wakes_on_any || record.touches(&slot.prefix) {
                to_wake.extend(slot.waker.take());
                return false;
            }
            if slot.cursor == record.revision {
                slot.cursor += 1;
            }
            true
        });
    }

    /// Wakes every parked watcher (an outage cuts them all).
    pub(crate) fn wake_all(&mut self, to_wake: &mut Vec<Waker>) {
        for id in self.parked.drain(..) {
            if let Some(slot) = self.slots.get_mut(&id) {
                to_wake.extend(slot.waker.take());
            }
        }
    }
}

/// What a watch asked for.
#[derive(Debug)]
pub(crate) struct WatchSpec {
    pub(crate) prefix: Arc<[u8]>,
    pub(crate) start: Option<i64>,
    pub(crate) prev_kv: bool,
    pub(crate) progress_notify: bool,
}

/// Opens a watch on the locked state: `Err(Compacted)` as the stream's only item when the start
/// is below the compaction point. With `timer` (the client's, when it is timed), deliveries and
/// progress requests take that client's delays.
pub(crate) fn open(
    shared: Arc<Shared>,
    state: &mut crate::store::State,
    spec: WatchSpec,
    timer: Option<Arc<ClientTimer>>,
) -> WatchStream {
    let compact = state.mvcc.compact_revision();
    let current = state.mvcc.revision();
    if let Some(start) = spec.start {
        if start < compact {
            let err = Error::Compacted {
                compact_revision: Revision(compact),
            };
            return WatchStream::failed(err);
        }
    }
    let cursor = spec.start.unwrap_or(current + 1);
    let id = state
        .watchers
        .add(cursor, spec.prefix.clone(), spec.progress_notify);
    let requester = Arc::new(ProgressRequester {
        shared: shared.clone(),
        id,
        outage: state.outages,
        timer: timer.clone(),
    });
    let watch = MemoryWatch {
        shared: shared.clone(),
        id,
        prefix: spec.prefix,
        prev_kv: spec.prev_kv,
        progress_notify: spec.progress_notify,
        // etcd looks previous values up at revision - 1; at the compaction point that is gone.
        no_prev_at: if spec.start == Some(compact) {
            compact
        } else {
            0
        },
        outage: state.outages,
        buffer: VecDeque::new(),
        reported: 0,
        finished: false,
    };
    let events = match timer {
        Some(timer) if !timer.delivers_at_once(&shared.timing) => {
            delivery::delayed(watch.boxed(), shared, timer)
        }
        _ => watch.boxed(),
    };
    WatchStream::new(events).with_progress_requests(move || requester.clone().send())
}

/// What a watch's [`WatchStream::request_progress`] calls: marks the watch's slot, which its
/// next poll that finds it caught up answers with an empty batch at the current revision.
#[derive(Debug)]
struct ProgressRequester {
    shared: Arc<Shared>,
    id: u64,
    /// The outage count when the watch was opened: a later outage has cut it.
    outage: u64,
    /// The client's timing, when it is timed: a request is a call like any other.
    timer: Option<Arc<ClientTimer>>,
}

impl ProgressRequester {
    /// Sends the request, with the client's delays on either side of the server's part.
    fn send(self: Arc<Self>) -> futures::future::BoxFuture<'static, Result<()>> {
        let legs = self
            .timer
            .as_ref()
            .and_then(|timer| timer.legs(&self.shared.timing, Leg::Call));
        let Some((before, after)) = legs else {
            return Box::pin(futures::future::ready(self.request()));
        };
        Box::pin(async move {
            crate::registry::pause(before).await;
            let answer = self.request();
            crate::registry::pause(after).await;
            answer
        })
    }

    fn request(&self) -> Result<()> {
        let _span =
            tracing::debug_span!("memory.watch.request_progress", watch = self.id).entered();
        self.shared.call(|state, _| {
            if state.outages != self.outage {
                return Err(Error::unavailable(
                    "memory registry made unavailable by fault injection: watch cut",
                ));
            }
            if state.watchers.request_progress(self.id, &mut state.to_wake) {
                Ok(())
            } else {
                Err(Error::WatchCancelled {
                    reason: "the watch has ended".to_owned(),
                })
            }
        })
    }
}

/// An open watch's stream.
#[derive(Debug)]
struct MemoryWatch {
    shared: Arc<Shared>,
    id: u64,
    prefix: Arc<[u8]>,
    prev_kv: bool,
    progress_notify: bool,
    /// Records at or below this revision are delivered without previous values.
    no_prev_at: i64,
    /// The outage count when the watch was opened.
    outage: u64,
    /// Records copied out of the log, not yet delivered.
    buffer: VecDeque<Arc<Record>>,
    /// The highest revision delivered or reported by a progress notification.
    reported: i64,
    finished: bool,
}

impl MemoryWatch {
    fn finish(&mut self) {
        self.finished = true;
        self.buffer.clear();
        let mut state = self.shared.lock();
        if let Some(cursor) = state.watchers.remove(self.id) {
            if cursor <= state.mvcc.compact_revision() {
                state.prune();
            }
        }
    }
}

impl Stream for MemoryWatch {
    type Item = Result<WatchBatch>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        loop {
            while let Some(record) = this.buffer.pop_front() {
                let with_prev = this.prev_kv && record.revision > this.no_prev_at;
                if let Some(batch) = record.batch_for(&this.prefix, with_prev) {
                    this.reported = record.revision;
                    return Poll::Ready(Some(Ok(batch)));
                }
            }
            let shared = this.shared.clone();
            let mut state = shared.lock();
            if state.outages != this.outage {
                drop(state);
                this.finish();
                return Poll::Ready(Some(Err(Error::unavailable(
                    "memory registry made unavailable by fault injection: watch cut",
                ))));
            }
            let now = shared.now(&state);
            state.expire_due(now);
            let Some(slot) = state.watchers.slots.get(&this.id) else {
                this.finished = true;
                return Poll::Ready(None);
            };
            let cursor = state
                .mvcc
                .read_log(slot.cursor, READ_AHEAD, &mut this.buffer);
            if let Some(slot) = state.watchers.slots.get_mut(&this.id) {
                slot.cursor = cursor;
            }
            let mut outcome = None;
            if this.buffer.is_empty() {
                let current = state.mvcc.revision();
                let caught_up_to = (cursor - 1).min(current);
                if state.watchers.take_progress_request(this.id) {
                    // Answered even when this revision was reported already: the caller waits
                    // for an answer, not for news.
                    this.reported = this.reported.max(current);
                    outcome = Some(Poll::Ready(Some(Ok(WatchBatch {
                        revision: Revision(current),
                        events: Vec::new(),
                    }))));
                } else if this.progress_notify && this.reported < caught_up_to {
                    this.reported = caught_up_to;
                    outcome = Some(Poll::Ready(Some(Ok(WatchBatch {
                        revision: Revision(caught_up_to),
                        events: Vec::new(),
                    }))));
                } else {
                    state.watchers.park(this.id, cx.waker());
                    outcome = Some(Poll::Pending);
                }
            }
            let wake = std::mem::take(&mut state.to_wake);
            drop(state);
            wake.into_iter().for_each(Waker::wake);
            if let Some(outcome) = outcome {
                return outcome;
            }
        }
    }
}

impl Drop for MemoryWatch {
    fn drop(&mut self) {
        if !self.finished {
            self.finish();
        }
    }
}
