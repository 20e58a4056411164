//! Watch deliveries under the simulator's timing: each item reaches the client a seeded delay
//! after the watch could first yield it (its commit, for a watch that keeps up), and never
//! before the item before it, so one watch's events stay in revision order.

use crate::store::Shared;
use crate::timing::ClientTimer;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use registry_api::{Result, WatchBatch};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::time::{Instant, Sleep};

/// How many items are taken from the watch ahead of their delivery. The watch's own history
/// holds the rest, so this bounds the queue.
const IN_FLIGHT: usize = 64;

/// `events`, each delayed by a delivery delay drawn from `timer` (the client's) from the
/// moment the watch yielded it.
pub(crate) fn delayed(
    events: BoxStream<'static, Result<WatchBatch>>,
    shared: Arc<Shared>,
    timer: Arc<ClientTimer>,
) -> BoxStream<'static, Result<WatchBatch>> {
    let now = Instant::now();
    Delayed {
        events: Some(events),
        shared,
        timer,
        in_flight: VecDeque::new(),
        last_due: now,
        sleep: Box::pin(tokio::time::sleep_until(now)),
    }
    .boxed()
}

struct Delayed {
    /// `None` once the watch has ended.
    events: Option<BoxStream<'static, Result<WatchBatch>>>,
    shared: Arc<Shared>,
    timer: Arc<ClientTimer>,
    /// Items taken from the watch with the instant each is due, in order.
    in_flight: VecDeque<(Instant, Result<WatchBatch>)>,
    /// When the last item taken is due: no later item is delivered before it.
    last_due: Instant,
    sleep: Pin<Box<Sleep>>,
}

impl Stream for Delayed {
    type Item = Result<WatchBatch>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        // Take what the watch has now, so each item's delay runs from when it could be taken,
        // not from when the one before it was delivered (a burst arrives together, as etcd
        // sends several revisions in one response).
        while this.in_flight.len() < IN_FLIGHT {
            let Some(events) = this.events.as_mut() else {
                break;
            };
            match events.poll_next_unpin(cx) {
                Poll::Ready(Some(item)) => {
                    let delay = this.timer.delivery(&this.shared.timing);
                    let due = this.last_due.max(Instant::now() + delay);
                    this.last_due = due;
                    this.in_flight.push_back((due, item));
                }
                Poll::Ready(None) => this.events = None,
                Poll::Pending => break,
            }
        }
        let Some(&(due, _)) = this.in_flight.front() else {
            return if this.events.is_none() {
                Poll::Ready(None)
            } else {
                Poll::Pending
            };
        };
        if due > Instant::now() {
            this.sleep.as_mut().reset(due);
            if this.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        Poll::Ready(this.in_flight.pop_front().map(|(_, item)| item))
    }
}
