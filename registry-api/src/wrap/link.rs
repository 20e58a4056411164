//! A network link between one client and its server, under the test's control.

use super::{CallKind, Intercept, Intercepted, SplitMix64};
use crate::{Error, Registry, Result, WatchBatch, WatchStream};
use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::watch;

/// How long a call or a watch delivery takes on a [`Link`], on tokio's clock (so virtual time
/// works).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Latency {
    /// No delay.
    #[default]
    None,
    /// Always this long.
    Fixed(Duration),
    /// Uniform in `[min, max]` at millisecond grain, drawn from the link's seeded generator.
    Uniform {
        /// The shortest delay.
        min: Duration,
        /// The longest delay.
        max: Duration,
    },
}

impl Latency {
    fn draw(self, rng: &mut SplitMix64) -> Duration {
        match self {
            Latency::None => Duration::ZERO,
            Latency::Fixed(d) => d,
            Latency::Uniform { min, max } => rng.duration(min, max),
        }
    }
}

/// What waiting calls and deliveries look at: changes wake them.
#[derive(Debug, Default)]
struct Gate {
    cut: bool,
    /// Counts partitions: a watch opened before the latest one has been cut.
    epoch: u64,
    held: bool,
    stalled: bool,
    /// Tickets of calls that arrived while the link was held (or behind such calls), so that
    /// they go on in the order they were made.
    next_ticket: u64,
    serving: u64,
    /// Tickets whose call was dropped while waiting: skipped when their turn comes.
    abandoned: BTreeSet<u64>,
}

impl Gate {
    fn advance(&mut self) {
        self.serving += 1;
        while self.abandoned.remove(&self.serving) {
            self.serving += 1;
        }
    }

    fn queued(&self) -> u64 {
        self.next_ticket - self.serving - self.abandoned.len() as u64
    }
}

/// The knobs that draw from the seeded generator.
#[derive(Debug)]
struct Knobs {
    call_latency: Latency,
    delivery_latency: Latency,
    lose_next: u64,
    loss_rate: f64,
    error_rate: f64,
    rng: SplitMix64,
    lost: u64,
    injected: u64,
}

#[derive(Debug)]
struct State {
    gate: watch::Sender<Gate>,
    knobs: Mutex<Knobs>,
}

/// A link between one client and its server, and the handle that controls it: wrap a
/// registry with [`wrap`](Link::wrap) (any backend, a real etcd included), keep the handle, and
/// stage faults on it. Clones control the same link; every registry wrapped with one link
/// fails together.
///
/// - [`partition`](Link::partition) / [`heal`](Link::heal): calls fail with
///   [`Error::Unavailable`] without reaching the server, calls in flight lose their reply, open
///   watches end with `Unavailable`. The server goes on: leases the client cannot keep alive
///   expire.
/// - [`set_call_latency`](Link::set_call_latency), [`set_delivery_latency`](Link::set_delivery_latency):
///   each call waits before it is sent; each watch delivery waits after the one before it.
/// - [`hold`](Link::hold) / [`release`](Link::release): calls and deliveries wait; on release
///   the calls go on in the order they were made.
/// - [`lose_next_replies`](Link::lose_next_replies), [`set_loss_rate`](Link::set_loss_rate):
///   the call reaches the server and takes effect, then the caller gets `Unavailable`.
/// - [`stall_watches`](Link::stall_watches): open watches stop delivering, without ending, and
///   answer no progress request (a member cut off from its cluster).
/// - [`set_error_rate`](Link::set_error_rate): a seeded fraction of calls fail with
///   `Unavailable` before reaching the server.
///
/// Randomness comes from the seed ([`Link::with_seed`]): the same seed and the same calls
/// give the same faults.
///
/// ```
/// use registry_api::wrap::Link;
/// use registry_api::{Error, PutOptions, Registry};
/// use registry_memory::MemoryRegistry;
///
/// # tokio_test::block_on(async {
/// let server = MemoryRegistry::with_manual_clock();
/// let link = Link::new();
/// let client = link.wrap(server.clone());
///
/// // The reply of the next put is lost: the client sees an error, the key is there.
/// link.lose_next_replies(1);
/// let put = client.put(b"a", b"1", PutOptions::default()).await;
/// assert!(matches!(put, Err(Error::Unavailable { .. })));
/// assert!(server.get(b"a").await?.kv.is_some());
///
/// link.partition();
/// assert!(client.get(b"a").await.is_err());
/// link.heal();
/// assert!(client.get(b"a").await?.kv.is_some());
/// # Ok::<(), Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct Link {
    state: Arc<State>,
}

impl Default for Link {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gate = self.state.gate.borrow();
        f.debug_struct("Link")
            .field("partitioned", &gate.cut)
            .field("held", &gate.held)
            .field("stalled", &gate.stalled)
            .field("queued", &gate.queued())
            .finish_non_exhaustive()
    }
}

fn unavailable(why: &'static str) -> Error {
    Error::unavailable(why)
}

impl Link {
    /// A healthy link, seeded with 0.
    pub fn new() -> Self {
        Self::with_seed(0)
    }

    /// A healthy link whose random faults draw from `seed`.
    pub fn with_seed(seed: u64) -> Self {
        Link {
            state: Arc::new(State {
                gate: watch::channel(Gate::default()).0,
                knobs: Mutex::new(Knobs {
                    call_latency: Latency::None,
                    delivery_latency: Latency::None,
                    lose_next: 0,
                    loss_rate: 0.0,
                    error_rate: 0.0,
                    rng: SplitMix64::new(seed),
                    lost: 0,
                    injected: 0,
                }),
            }),
        }
    }

    /// `inner`, reached through this link.
    pub fn wrap<R: Registry>(&self, inner: R) -> Intercepted<R, Link> {
        Intercepted::new(inner, self.clone())
    }

    fn knobs(&self) -> MutexGuard<'_, Knobs> {
        self.state
            .knobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Cuts the link: see the [type docs](Link). Lasts until [`heal`](Link::heal).
    pub fn partition(&self) {
        self.state.gate.send_modify(|gate| {
            if !gate.cut {
                gate.cut = true;
                gate.epoch += 1;
            }
        });
    }

    /// Restores a cut link. Watches that a partition ended stay ended (open them again).
    pub fn heal(&self) {
        self.state.gate.send_if_modified(|gate| {
            let changed = gate.cut;
            gate.cut = false;
            changed
        });
    }

    /// True while the link is cut.
    pub fn is_partitioned(&self) -> bool {
        self.state.gate.borrow().cut
    }

    /// Holds calls and watch deliveries until [`release`](Link::release).
    pub fn hold(&self) {
        self.state.gate.send_modify(|gate| gate.held = true);
    }

    /// Lets held calls go on, in the order they were made, and held deliveries with them.
    pub fn release(&self) {
        self.state.gate.send_if_modified(|gate| {
            let changed = gate.held;
            gate.held = false;
            changed
        });
    }

    /// True while the link is held.
    pub fn is_held(&self) -> bool {
        self.state.gate.borrow().held
    }

    /// Calls waiting for their turn now (held, or behind held calls).
    pub fn queued_calls(&self) -> u64 {
        self.state.gate.borrow().queued()
    }

    /// Stalls (`true`) or resumes (`false`) open watches: while stalled they deliver nothing
    /// and drop progress answers, without ending; on resume they deliver what they held back.
    pub fn stall_watches(&self, stalled: bool) {
        self.state.gate.send_if_modified(|gate| {
            let changed = gate.stalled != stalled;
            gate.stalled = stalled;
            changed
        });
    }

    /// Sets the latency of every call (before it is sent).
    pub fn set_call_latency(&self, latency: Latency) {
        self.knobs().call_latency = latency;
    }

    /// Sets the latency of every watch delivery.
    pub fn set_delivery_latency(&self, latency: Latency) {
        self.knobs().delivery_latency = latency;
    }

    /// Loses the replies of the next `n` calls (added to any still pending): they take effect
    /// on the server and their callers get `Unavailable`.
    pub fn lose_next_replies(&self, n: u64) {
        let mut knobs = self.knobs();
        knobs.lose_next = knobs.lose_next.saturating_add(n);
    }

    /// Loses a seeded fraction `rate` (0 to 1) of replies from now on.
    pub fn set_loss_rate(&self, rate: f64) {
        self.knobs().loss_rate = rate;
    }

    /// Fails a seeded fraction `rate` (0 to 1) of calls with `Unavailable` before they are sent.
    pub fn set_error_rate(&self, rate: f64) {
        self.knobs().error_rate = rate;
    }

    /// Replies lost so far (by [`lose_next_replies`](Link::lose_next_replies),
    /// [`set_loss_rate`](Link::set_loss_rate) or a partition during the call).
    pub fn lost_replies(&self) -> u64 {
        self.knobs().lost
    }

    /// Calls failed by [`set_error_rate`](Link::set_error_rate) so far.
    pub fn injected_errors(&self) -> u64 {
        self.knobs().injected
    }

    /// Heals, releases, resumes watches and clears every latency, loss and error setting.
    pub fn reset(&self) {
        self.heal();
        self.release();
        self.stall_watches(false);
        let mut knobs = self.knobs();
        knobs.call_latency = Latency::None;
        knobs.delivery_latency = Latency::None;
        knobs.lose_next = 0;
        knobs.loss_rate = 0.0;
        knobs.error_rate = 0.0;
    }

    /// Waits until the link is cut after `epoch`'s partition count.
    async fn cut_after(&self, epoch: u64) {
        let mut gate = self.state.gate.subscribe();
        // The sender lives in `self`, so this cannot fail.
        let _ = gate.wait_for(|gate| gate.epoch != epoch).await;
    }

    /// Waits for this call's turn while the link is held; fails if it is cut meanwhile.
    async fn wait_turn(&self) -> Result<()> {
        {
            // The common case reads the gate without writing it.
            let gate = self.state.gate.borrow();
            if !gate.held && gate.queued() == 0 {
                return Ok(());
            }
        }
        let mut ticket = None;
        self.state.gate.send_if_modified(|gate| {
            if gate.held || gate.queued() > 0 {
                ticket = Some(gate.next_ticket);
                gate.next_ticket += 1;
            }
            false
        });
        let Some(ticket) = ticket else {
            return Ok(());
        };
        let mut guard = Ticket {
            link: self,
            ticket,
            served: false,
        };
        let mut gate = self.state.gate.subscribe();
        let _ = gate
            .wait_for(|gate| gate.cut || (!gate.held && gate.serving == ticket))
            .await;
        drop(gate);
        guard.served = true;
        let mut cut = false;
        self.state.gate.send_modify(|gate| {
            cut = gate.cut;
            if gate.serving == ticket {
                gate.advance();
            } else {
                gate.abandoned.insert(ticket);
            }
        });
        if cut {
            return Err(unavailable("link partitioned"));
        }
        Ok(())
    }

    /// Waits out one watch delivery's latency, hold and stall. False if the link was cut.
    async fn pass_delivery(&self, epoch: u64) -> bool {
        let delay = {
            let mut knobs = self.knobs();
            let latency = knobs.delivery_latency;
            latency.draw(&mut knobs.rng)
        };
        if !delay.is_zero() {
            tokio::select! {
                biased;
                _ = self.cut_after(epoch) => return false,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        let mut gate = self.state.gate.subscribe();
        let _ = gate
            .wait_for(|gate| gate.epoch != epoch || (!gate.held && !gate.stalled))
            .await;
        let epoch_now = gate.borrow().epoch;
        epoch_now == epoch
    }
}

/// A place in the queue of held calls; given up if the call is dropped while waiting.
struct Ticket<'a> {
    link: &'a Link,
    ticket: u64,
    served: bool,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.served {
            return;
        }
        let ticket = self.ticket;
        self.link.state.gate.send_modify(|gate| {
            if gate.serving == ticket {
                gate.advance();
            } else if gate.serving < ticket {
                gate.abandoned.insert(ticket);
            }
        });
    }
}

#[async_trait]
impl Intercept for Link {
    async fn before(&self, kind: CallKind) -> Result<()> {
        if self.state.gate.borrow().cut {
            return Err(unavailable("link partitioned"));
        }
        let delay = {
            let mut knobs = self.knobs();
            if knobs.error_rate > 0.0 {
                let rate = knobs.error_rate;
                if knobs.rng.chance(rate) {
                    knobs.injected += 1;
                    return Err(unavailable("injected error"));
                }
            }
            let latency = knobs.call_latency;
            latency.draw(&mut knobs.rng)
        };
        self.wait_turn().await?;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if kind == CallKind::ProgressRequest && self.state.gate.borrow().stalled {
            // A stalled member takes the request and never answers it.
            return Err(unavailable("watch stalled: progress request not answered"));
        }
        if self.state.gate.borrow().cut {
            return Err(unavailable("link partitioned"));
        }
        Ok(())
    }

    async fn after(&self, _kind: CallKind, _outcome: Result<(), &Error>) -> Result<()> {
        let cut = self.state.gate.borrow().cut;
        let mut knobs = self.knobs();
        let lose = if cut {
            true
        } else if knobs.lose_next > 0 {
            knobs.lose_next -= 1;
            true
        } else {
            let rate = knobs.loss_rate;
            rate > 0.0 && knobs.rng.chance(rate)
        };
        if lose {
            knobs.lost += 1;
            return Err(unavailable("reply lost"));
        }
        Ok(())
    }

    fn watch(&self, stream: WatchStream) -> WatchStream {
        let link = self.clone();
        let epoch = self.state.gate.borrow().epoch;
        stream.map_events(move |events| deliver(events, link, epoch))
    }
}

/// The deliveries of one watch over the link: each waits its latency, the hold and the stall;
/// a partition ends the stream with `Unavailable`.
fn deliver(
    events: BoxStream<'static, Result<WatchBatch>>,
    link: Link,
    epoch: u64,
) -> BoxStream<'static, Result<WatchBatch>> {
    futures::stream::unfold(Some((events, link)), move |state| async move {
        let (mut events, link) = state?;
        loop {
            let next = tokio::select! {
                biased;
                _ = link.cut_after(epoch) => None,
                item = events.next() => Some(item),
            };
            let item = match next {
                None => return Some((Err(unavailable("link partitioned")), None)),
                Some(None) => return None,
                Some(Some(item)) => item,
            };
            if matches!(&item, Ok(batch) if batch.is_progress()) && link.state.gate.borrow().stalled
            {
                continue;
            }
            if !link.pass_delivery(epoch).await {
                return Some((Err(unavailable("link partitioned")), None));
            }
            let last = item.is_err();
            return Some((item, (!last).then_some((events, link))));
        }
    })
    .boxed()
}
