//! A registry wrapper whose open watches can be frozen (they stay open and deliver nothing, as
//! on an etcd member cut off from its cluster) and which answers progress requests the way
//! etcd does while a watch is alive. Until the backends answer progress requests themselves,
//! this is how the tests tell a quiet watch from a dead one.

#![allow(dead_code, unreachable_pub)]

use async_trait::async_trait;
use futures::StreamExt;
use registry_api::wrap::{CallKind, Intercept, Intercepted};
use registry_api::{Error, Registry, Result, Revision, WatchBatch, WatchStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// A registry whose watches can be frozen: `Stalling::new`'s answer.
pub type Stalled = Intercepted<Arc<dyn Registry>, Stalling>;

/// See the module docs: the hook of a [`Stalled`] registry (`stalled.intercept()`).
#[derive(Debug)]
pub struct Stalling {
    /// Bumped by `freeze_open_watches`: a watch opened under an older generation is frozen.
    generation: watch::Sender<u64>,
    /// Bumped by `lag_open_watches`: a watch opened under an older one delivers no more
    /// events but still answers progress requests, at the last revision it delivered.
    lag_generation: watch::Sender<u64>,
    /// Whether progress requests are answered at all (`false`: as a backend that cannot).
    answers: bool,
    /// How long each list takes.
    list_delay: Mutex<Duration>,
    lists: AtomicUsize,
    listing: AtomicUsize,
    max_listing: AtomicUsize,
    watches: AtomicUsize,
    progress_requests: Arc<AtomicUsize>,
}

impl Stalling {
    /// Over `inner`; `answers` says whether progress requests are answered.
    pub fn new(inner: Arc<dyn Registry>, answers: bool) -> Arc<Stalled> {
        Arc::new(Intercepted::new(
            inner,
            Stalling {
                generation: watch::channel(0).0,
                lag_generation: watch::channel(0).0,
                answers,
                list_delay: Mutex::new(Duration::ZERO),
                lists: AtomicUsize::new(0),
                listing: AtomicUsize::new(0),
                max_listing: AtomicUsize::new(0),
                watches: AtomicUsize::new(0),
                progress_requests: Arc::new(AtomicUsize::new(0)),
            },
        ))
    }

    /// Every watch open now stays open but delivers nothing more and answers no progress
    /// request; watches opened after this work.
    pub fn freeze_open_watches(&self) {
        self.generation.send_modify(|generation| *generation += 1);
    }

    /// Every watch open now stops delivering events but keeps answering progress requests,
    /// from the revision it had reached: a member that stopped following its cluster.
    pub fn lag_open_watches(&self) {
        self.lag_generation
            .send_modify(|generation| *generation += 1);
    }

    /// Makes every list take `delay`.
    pub fn set_list_delay(&self, delay: Duration) {
        *self.list_delay.lock().unwrap() = delay;
    }

    /// Lists served so far.
    pub fn lists(&self) -> usize {
        self.lists.load(Ordering::SeqCst)
    }

    /// The most lists that were in flight at once.
    pub fn max_concurrent_lists(&self) -> usize {
        self.max_listing.load(Ordering::SeqCst)
    }

    /// Watches opened so far.
    pub fn watches(&self) -> usize {
        self.watches.load(Ordering::SeqCst)
    }

    /// Progress requests received so far.
    pub fn progress_requests(&self) -> usize {
        self.progress_requests.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Intercept for Stalling {
    async fn before(&self, kind: CallKind) -> Result<()> {
        match kind {
            CallKind::List => {
                self.lists.fetch_add(1, Ordering::SeqCst);
                let now = self.listing.fetch_add(1, Ordering::SeqCst) + 1;
                self.max_listing.fetch_max(now, Ordering::SeqCst);
                let delay = *self.list_delay.lock().unwrap();
                tokio::time::sleep(delay).await;
            }
            CallKind::Watch => {
                self.watches.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        }
        Ok(())
    }

    async fn after(&self, kind: CallKind, _outcome: Result<(), &Error>) -> Result<()> {
        if kind == CallKind::List {
            self.listing.fetch_sub(1, Ordering::SeqCst);
        }
        Ok(())
    }

    fn watch(&self, inner: WatchStream) -> WatchStream {
        let born = *self.generation.borrow();
        let lag_born = *self.lag_generation.borrow();
        let mut lag_generation = self.lag_generation.subscribe();
        let lagging = async move {
            lag_generation.wait_for(|now| *now != lag_born).await.ok();
        };
        let mut generation = self.generation.subscribe();
        let frozen = async move {
            generation.wait_for(|now| *now != born).await.ok();
        };
        // Progress answers travel in the stream, after everything delivered before them, like
        // etcd's. Bounded: one request at a time is all the watcher sends.
        let (asks, answers) = mpsc::channel::<()>(16);
        let delivered = Arc::new(Mutex::new(Revision(0)));
        let seen = delivered.clone();
        let events = inner
            .map(move |item| {
                if let Ok(batch) = &item {
                    *seen.lock().unwrap() = batch.revision;
                }
                Some(item)
            })
            .take_until(lagging)
            .chain(futures::stream::pending())
            .boxed();
        let answered = tokio_stream::wrappers::ReceiverStream::new(answers)
            .map(move |()| {
                let revision = *delivered.lock().unwrap();
                Some(Ok(WatchBatch {
                    revision,
                    events: Vec::new(),
                }))
            })
            .boxed();
        // Frozen: both the events and the answers stop, and the stream stays open.
        let merged = futures::stream::select(events, answered)
            .take_until(frozen)
            .chain(futures::stream::pending())
            .filter_map(|item| async move { item })
            .boxed();
        let stream = WatchStream::new(merged);
        if !self.answers {
            return stream;
        }
        let requests = self.progress_requests.clone();
        stream.with_progress_requests(move || {
            requests.fetch_add(1, Ordering::SeqCst);
            let asks = asks.clone();
            Box::pin(async move {
                // A full queue means requests are already waiting: one answer serves them.
                asks.try_send(()).ok();
                Ok(())
            })
        })
    }
}
