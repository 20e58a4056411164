//! A bounded subscription to a store's changes that recovers exactly from lagging.

use super::{Published, Snapshot, Store, StoreEvent};
use futures::{FutureExt, Stream, StreamExt};
use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

/// One step of a [`Subscription`]: the events that take the subscriber from its last state
/// to `snapshot`.
#[derive(Debug)]
pub struct Update<T> {
    /// What changed, in key order within a batch.
    pub events: Vec<StoreEvent<T>>,
    /// The state after these events.
    pub snapshot: Arc<Snapshot<T>>,
    /// True when the subscriber fell behind and `events` are the differences between what it
    /// had and the current state, instead of the changes as they happened.
    pub lagged: bool,
}

/// The changes of a [`Store`], from [`Store::subscribe`]: an `Added` per entry held when it
/// was made, then every change.
///
/// # Bounded
///
/// All subscribers share one ring of the store's capacity (in published batches); a
/// subscriber that does not read keeps nothing alive but its place in that ring and the
/// snapshot it last reached, so memory does not grow however far behind it is. When it falls
/// more than the capacity behind, its next [`Update`] has `lagged` set and carries exactly the
/// differences between the state it had reached and the current one: a consumer that only
/// applies events stays correct, and no event is applied twice.
pub struct Subscription<T> {
    receiver: BroadcastStream<Arc<Published<T>>>,
    store: Store<T>,
    /// The state this subscriber has reached.
    at: Arc<Snapshot<T>>,
    /// The `Added`s of the entries held at subscription are still to be handed out. Made on
    /// the first read, not at subscription: a subscriber that never reads costs no copies.
    first: bool,
    pending: VecDeque<StoreEvent<T>>,
    lagged: u64,
}

impl<T: Clone + PartialEq + Send + Sync + 'static> Subscription<T> {
    pub(super) fn new(
        receiver: tokio::sync::broadcast::Receiver<Arc<Published<T>>>,
        store: Store<T>,
        at: Arc<Snapshot<T>>,
    ) -> Self {
        Subscription {
            receiver: BroadcastStream::new(receiver),
            store,
            at,
            first: true,
            pending: VecDeque::new(),
            lagged: 0,
        }
    }

    /// How many times this subscriber fell behind and was resynced.
    pub fn lagged(&self) -> u64 {
        self.lagged
    }

    /// The state this subscriber has reached.
    pub fn snapshot(&self) -> &Arc<Snapshot<T>> {
        &self.at
    }

    /// The next step; `None` once the store's writer is gone and everything was handed out.
    pub fn poll_update(&mut self, cx: &mut Context<'_>) -> Poll<Option<Update<T>>> {
        if std::mem::take(&mut self.first) {
            // Before anything from the channel, so a lag (which diffs from `at`) can only
            // follow these.
            let events: Vec<_> = self
                .at
                .entries
                .values()
                .map(|value| StoreEvent::Added((**value).clone()))
                .collect();
            if !events.is_empty() {
                return Poll::Ready(Some(Update {
                    events,
                    snapshot: self.at.clone(),
                    lagged: false,
                }));
            }
        }
        loop {
            match self.receiver.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Ready(Some(Ok(published))) => {
                    if published.snapshot.version <= self.at.version {
                        // Already in the state this subscriber reached (at subscription or by
                        // a lag resync).
                        continue;
                    }
                    self.at = published.snapshot.clone();
                    return Poll::Ready(Some(Update {
                        events: published.events.clone(),
                        snapshot: self.at.clone(),
                        lagged: false,
                    }));
                }
                Poll::Ready(Some(Err(BroadcastStreamRecvError::Lagged(missed)))) => {
                    self.lagged += 1;
                    let current = self.store.snapshot();
                    tracing::debug!(missed, "subscriber lagged; resyncing from the snapshot");
                    let events = diff(&self.at, &current);
                    self.at = current.clone();
                    return Poll::Ready(Some(Update {
                        events,
                        snapshot: current,
                        lagged: true,
                    }));
                }
            }
        }
    }

    /// The next step; `None` once the store's writer is gone.
    pub async fn recv_update(&mut self) -> Option<Update<T>> {
        futures::future::poll_fn(|cx| self.poll_update(cx)).await
    }

    /// The next event; `None` once the store's writer is gone.
    pub async fn recv(&mut self) -> Option<StoreEvent<T>> {
        self.next().await
    }

    /// The next event if one is ready now.
    pub fn try_recv(&mut self) -> Option<StoreEvent<T>> {
        // Unconstrained: tokio's cooperative budget would otherwise report an empty queue after
        // a hundred or so reads in one task turn, while events are waiting.
        tokio::task::unconstrained(self.next())
            .now_or_never()
            .flatten()
    }
}

/// The events that take a holder of `from` to `to`. Shared subtrees are skipped, so the cost
/// follows what changed, not the size.
fn diff<T: Clone + PartialEq>(from: &Snapshot<T>, to: &Snapshot<T>) -> Vec<StoreEvent<T>> {
    from.entries
        .diff(&to.entries)
        .map(|item| match item {
            imbl::ordmap::DiffItem::Add(_, new) => StoreEvent::Added((**new).clone()),
            imbl::ordmap::DiffItem::Update { old, new } => StoreEvent::Updated {
                old: (**old.1).clone(),
                new: (**new.1).clone(),
            },
            imbl::ordmap::DiffItem::Remove(_, old) => StoreEvent::Removed((**old).clone()),
        })
        .collect()
}

// Nothing in a subscription is pinned in place (its receiver boxes what it polls), whatever
// `T` is.
impl<T> Unpin for Subscription<T> {}

impl<T: Clone + PartialEq + Send + Sync + 'static> Stream for Subscription<T> {
    type Item = StoreEvent<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<StoreEvent<T>>> {
        let this = self.get_mut();
        loop {
            if let Some(event) = this.pending.pop_front() {
                return Poll::Ready(Some(event));
            }
            match this.poll_update(cx) {
                Poll::Ready(Some(update)) => this.pending.extend(update.events),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<T> fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("at", &self.at)
            .field("pending", &self.pending.len())
            .field("lagged", &self.lagged)
            .finish_non_exhaustive()
    }
}
