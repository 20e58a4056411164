//! A tower `Discover` over a [`Discovery`], fed by a task that never stops draining it; the
//! why is on [`discover`].

use crate::backoff::Backoff;
use crate::discovery::{Discovery, DiscoveryEvent, DiscoveryEvents};
use crate::instance::ServiceInstance;
use crate::owned::OwnedTask;
use crate::seed::{seed_for, SplitMix64};
use crate::{Error, Result};
use ::tower::discover::Change;
use ::tower::load::Load;
use ::tower::Service;
use futures::Stream;
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// How a [`Discover`] behaves.
#[derive(Clone, Debug, PartialEq)]
pub struct DiscoverOptions {
    /// Waits before an evicted endpoint is inserted again, growing with each eviction in a
    /// row of the same instance.
    pub reinsert: Backoff,
    /// Seeds the backoff's jitter; `None` (the default): a seed of the process's own.
    pub seed: Option<u64>,
}

impl Default for DiscoverOptions {
    /// Re-insertion after 1 s doubling to 30 s, half of it random.
    fn default() -> Self {
        DiscoverOptions {
            reinsert: Backoff::new(Duration::from_secs(1), Duration::from_secs(30)),
            seed: None,
        }
    }
}

impl DiscoverOptions {
    /// Sets the re-insertion backoff.
    pub fn reinsert(mut self, backoff: Backoff) -> Self {
        self.reinsert = backoff;
        self
    }

    /// Sets the jitter seed: the same seed gives the same waits.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
}

/// What the task has done so far; see [`DiscoverHandle::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiscoverStats {
    /// Discovery events read.
    pub events: u64,
    /// Changes the balancer took.
    pub forwarded: u64,
    /// Changes waiting for the balancer (at most one per instance id).
    pub pending: usize,
    /// Endpoints the balancer evicted.
    pub evicted: u64,
    /// Evicted endpoints inserted again.
    pub reinserted: u64,
}

/// The changes waiting for the balancer, shared by the task (writer) and the stream (reader).
#[derive(Debug, Default)]
struct Book {
    /// The latest change per id not yet taken: `Some` insert, `None` remove.
    pending: BTreeMap<String, Option<ServiceInstance>>,
    /// The generation of the last insert taken per id.
    generations: HashMap<String, u64>,
    next_generation: u64,
    /// Set when the task has ended: the stream ends once `pending` is empty.
    ended: bool,
    waker: Option<std::task::Waker>,
}

#[derive(Debug)]
struct TaskShared {
    book: Mutex<Book>,
    /// Evictions reported by endpoints and not yet seen by the task: the last generation per
    /// id, so it holds at most one entry per instance.
    evicted: Mutex<HashMap<String, u64>>,
    wake: Notify,
    stop: AtomicBool,
    events: AtomicU64,
    forwarded: AtomicU64,
    pending: AtomicUsize,
    evictions: AtomicU64,
    reinserted: AtomicU64,
    running: watch::Sender<bool>,
    /// What the task died of, when it did not end by stopping.
    failure: Mutex<Option<Arc<Error>>>,
    /// The task, owned by every handle.
    task: OnceLock<OwnedTask>,
}

impl TaskShared {
    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a change for the balancer and wakes it.
    fn offer(&self, id: String, change: Option<ServiceInstance>) {
        let mut book = self.book();
        if change.is_none() {
            book.generations.remove(&id);
        }
        book.pending.insert(id, change);
        self.pending.store(book.pending.len(), Ordering::Relaxed);
        if let Some(waker) = book.waker.take() {
            waker.wake();
        }
    }

    /// The task ended: the stream ends once what is pending is taken.
    fn end(&self) {
        let mut book = self.book();
        book.ended = true;
        if let Some(waker) = book.waker.take() {
            waker.wake();
        }
        drop(book);
        self.running.send_replace(false);
    }

    /// The task died of `error`: every handle reports it, and the stream ends.
    fn fail(&self, error: Error) {
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(error));
        self.end();
    }

    fn report_eviction(&self, id: &str, generation: u64) {
        self.evicted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), generation);
        self.wake.notify_one();
    }
}

/// A view of the task behind a [`Discover`]: its counters, and a way to stop it and wait.
#[derive(Clone, Debug)]
pub struct DiscoverHandle {
    shared: Arc<TaskShared>,
}

impl DiscoverHandle {
    /// The task's counters now.
    pub fn stats(&self) -> DiscoverStats {
        let s = &self.shared;
        DiscoverStats {
            events: s.events.load(Ordering::Relaxed),
            forwarded: s.forwarded.load(Ordering::Relaxed),
            pending: s.pending.load(Ordering::Relaxed),
            evicted: s.evictions.load(Ordering::Relaxed),
            reinserted: s.reinserted.load(Ordering::Relaxed),
        }
    }

    /// True until the task has ended (stopped, the discovery gone, the stream dropped, or
    /// the task died: see [`failure`](Self::failure)).
    pub fn is_running(&self) -> bool {
        *self.shared.running.borrow()
    }

    /// What the task died of, when it ended by failing (a panic, or its runtime shut down)
    /// rather than by stopping. The stream has ended then.
    pub fn failure(&self) -> Option<Arc<Error>> {
        self.shared
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Asks the task to stop; the stream then ends.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake.notify_one();
    }

    /// Waits until the task has ended.
    pub async fn stopped(&self) {
        let mut running = self.shared.running.subscribe();
        // The sender lives in `shared`, which this handle keeps alive.
        running.wait_for(|running| !running).await.ok();
    }
}

/// A tower `Discover` (a stream of `Change<instance id, Endpoint<S>>`) over a [`Discovery`],
/// for `tower::balance::p2c::Balance`; see [`discover`].
pub struct Discover<F> {
    make_service: F,
    shared: Arc<TaskShared>,
}

/// The task ends with the stream.
impl<F> Drop for Discover<F> {
    fn drop(&mut self) {
        DiscoverHandle {
            shared: self.shared.clone(),
        }
        .stop();
    }
}

impl<F> fmt::Debug for Discover<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discover")
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

/// A `Discover` over `discovery` with default [`DiscoverOptions`], each instance made into a
/// service by `make_service` (wrapped in an [`Endpoint`]). Spawns its task on the current
/// tokio runtime; fails outside one. The task ends when the stream is dropped, when
/// [`DiscoverHandle::stop`] is called, or when the discovery's cache is gone.
///
/// A tower `Discover` over a [`Discovery`], fed by a task that never stops draining it.
///
/// tower's balancer reads its discover stream only while it is polled for a request: with rare
/// requests, changes wait (tonic #1581, linkerd2 #2550), and a feeder blocked on a full channel
/// stops reading discovery altogether. Here a spawned task owns the discovery subscription and
/// reads every event as it comes, whether the balancer polls or not (linkerd2-proxy's
/// `discover/buffer.rs` does the same). What the balancer has not taken yet is kept as one
/// pending change per instance id (the latest wins), so memory stays bounded by the number of
/// instances; the balancer takes the latest of each when it next polls, never a stale change
/// queued before it.
///
/// tower's p2c drops a service whose `poll_ready` fails, for good (tonic #1147, #2839). Each
/// service is wrapped in an [`Endpoint`] that tells the task when that happens; while discovery
/// still lists the instance, the task inserts a fresh service for it after a backoff, growing
/// with each eviction in a row.
///
/// ```
/// use registry_service::tower_discover::discover;
/// use registry_service::{Discovery, DiscoveryOptions, Registration, RegistrationOptions,
///     ServiceInstance};
/// use registry_memory::MemoryRegistry;
/// use std::convert::Infallible;
/// use std::sync::Arc;
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> registry_service::Result<()> {
/// let registry: Arc<dyn registry_api::Registry> = Arc::new(MemoryRegistry::new());
/// let instance = ServiceInstance::new("hello", "a", "127.0.0.1:8080");
/// let _a = Registration::start(registry.clone(), instance, RegistrationOptions::default()).await?;
/// let discovery = Discovery::start(registry, "hello", DiscoveryOptions::default())?;
/// discovery.wait_synced(std::time::Duration::from_secs(5)).await?;
///
/// // Each instance becomes a service (here one answering with the instance's id); tower's
/// // p2c balances over them, and its view keeps up even while no request flows.
/// let endpoints = discover(&discovery, |instance: &ServiceInstance| {
///     let id = instance.id.clone();
///     tower::load::PendingRequests::new(
///         tower::service_fn(move |()| std::future::ready(Ok::<_, Infallible>(id.clone()))),
///         tower::load::CompleteOnResponse::default(),
///     )
/// })?;
/// let balance = tower::balance::p2c::Balance::new(endpoints);
/// assert_eq!(balance.oneshot(()).await.unwrap(), "a");
/// # Ok(())
/// # }
/// ```
pub fn discover<F, S>(discovery: &Discovery, make_service: F) -> Result<Discover<F>>
where
    F: FnMut(&ServiceInstance) -> S,
{
    discover_with(discovery, DiscoverOptions::default(), make_service)
}

/// [`discover`] with options.
pub fn discover_with<F, S>(
    discovery: &Discovery,
    options: DiscoverOptions,
    make_service: F,
) -> Result<Discover<F>>
where
    F: FnMut(&ServiceInstance) -> S,
{
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| Error::NoRuntime("tower_discover::discover"))?;
    let shared = Arc::new(TaskShared {
        book: Mutex::new(Book::default()),
        evicted: Mutex::new(HashMap::new()),
        wake: Notify::new(),
        stop: AtomicBool::new(false),
        events: AtomicU64::new(0),
        forwarded: AtomicU64::new(0),
        pending: AtomicUsize::new(0),
        evictions: AtomicU64::new(0),
        reinserted: AtomicU64::new(0),
        running: watch::channel(true).0,
        failure: Mutex::new(None),
        task: OnceLock::new(),
    });
    let events = discovery.subscribe();
    let task = Feeder {
        shared: shared.clone(),
        rng: SplitMix64::new(seed_for(options.seed, discovery.service())),
        options,
        listed: HashMap::new(),
        retries: BTreeMap::new(),
        evictions_in_a_row: HashMap::new(),
    };
    let span = tracing::info_span!("tower.discover", service = %discovery.service());
    let failed = shared.clone();
    let task = OwnedTask::spawn(
        &runtime,
        "tower discover",
        span,
        task.run(events),
        move |e| failed.fail(e),
    );
    shared.task.set(task).ok();
    Ok(Discover {
        make_service,
        shared,
    })
}

impl<F> Discover<F> {
    /// A handle on the feeding task: counters, stop, wait.
    pub fn handle(&self) -> DiscoverHandle {
        DiscoverHandle {
            shared: self.shared.clone(),
        }
    }
}

// Nothing is pinned structurally: the receiver is `Unpin` and the closure is only called.
impl<F> Unpin for Discover<F> {}

impl<F, S> Stream for Discover<F>
where
    F: FnMut(&ServiceInstance) -> S,
{
    type Item = Result<Change<String, Endpoint<S>>, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let mut book = this.shared.book();
        let Some((id, change)) = book.pending.pop_first() else {
            if book.ended {
                return Poll::Ready(None);
            }
            book.waker = Some(cx.waker().clone());
            return Poll::Pending;
        };
        this.shared
            .pending
            .store(book.pending.len(), Ordering::Relaxed);
        this.shared.forwarded.fetch_add(1, Ordering::Relaxed);
        let Some(instance) = change else {
            return Poll::Ready(Some(Ok(Change::Remove(id))));
        };
        book.next_generation += 1;
        let generation = book.next_generation;
        book.generations.insert(id.clone(), generation);
        drop(book);
        let service = (this.make_service)(&instance);
        Poll::Ready(Some(Ok(Change::Insert(
            id,
            Endpoint {
                inner: service,
                instance,
                generation,
                shared: this.shared.clone(),
                evicted: false,
            },
        ))))
    }
}

/// A discovered instance's service as the balancer holds it: forwards calls and load to the
/// inner service, and tells the [`Discover`] task when `poll_ready` fails (the balancer then
/// drops it), so the instance can be inserted again.
pub struct Endpoint<S> {
    inner: S,
    instance: ServiceInstance,
    generation: u64,
    shared: Arc<TaskShared>,
    evicted: bool,
}

impl<S: fmt::Debug> fmt::Debug for Endpoint<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &self.instance.id)
            .field("generation", &self.generation)
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> Endpoint<S> {
    /// The instance it was made from.
    pub fn instance(&self) -> &ServiceInstance {
        &self.instance
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, for a balancer that takes plain services (tonic's
    /// `Channel::balance_channel`); it will not report evictions.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Request> Service<Request> for Endpoint<S>
where
    S: Service<Request>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        let ready = self.inner.poll_ready(cx);
        if let Poll::Ready(Err(_)) = &ready {
            if !self.evicted {
                self.evicted = true;
                self.shared
                    .report_eviction(&self.instance.id, self.generation);
            }
        }
        ready
    }

    fn call(&mut self, request: Request) -> S::Future {
        self.inner.call(request)
    }
}

impl<S: Load> Load for Endpoint<S> {
    type Metric = S::Metric;

    fn load(&self) -> S::Metric {
        self.inner.load()
    }
}

/// The task: reads discovery, coalesces, re-inserts evicted endpoints, feeds the channel.
struct Feeder {
    shared: Arc<TaskShared>,
    rng: SplitMix64,
    options: DiscoverOptions,
    /// What discovery lists now.
    listed: HashMap<String, ServiceInstance>,
    /// Evicted ids waiting to be inserted again, and when.
    retries: BTreeMap<String, Instant>,
    /// Evictions in a row per listed id (reset when discovery reports the instance again).
    evictions_in_a_row: HashMap<String, u32>,
}

impl Feeder {
    async fn run(mut self, mut events: DiscoveryEvents) {
        let shared = self.shared.clone();
        loop {
            if shared.stop.load(Ordering::Relaxed) {
                break;
            }
            let next_retry = self.retries.values().min().copied();
            tokio::select! {
                biased;
                () = shared.wake.notified() => self.take_evictions(),
                event = events.recv() => match event {
                    Some(event) => self.apply(event),
                    None => break,
                },
                () = sleep_until(next_retry), if next_retry.is_some() => self.reinsert_due(),
            }
        }
        shared.end();
    }

    fn apply(&mut self, event: DiscoveryEvent) {
        self.shared.events.fetch_add(1, Ordering::Relaxed);
        match event {
            DiscoveryEvent::Added(instance) | DiscoveryEvent::Updated { new: instance, .. } => {
                let id = instance.id.clone();
                self.retries.remove(&id);
                self.evictions_in_a_row.remove(&id);
                self.shared.offer(id.clone(), Some(instance.clone()));
                self.listed.insert(id, instance);
            }
            DiscoveryEvent::Removed(instance) => {
                let id = instance.id;
                self.retries.remove(&id);
                self.evictions_in_a_row.remove(&id);
                self.listed.remove(&id);
                self.shared.offer(id, None);
            }
        }
    }

    fn take_evictions(&mut self) {
        let evicted = std::mem::take(
            &mut *self
                .shared
                .evicted
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for (id, generation) in evicted {
            // Only the endpoint handed over last for a still-listed id counts; a newer change
            // already waiting replaces it anyway.
            let current = {
                let book = self.shared.book();
                book.generations.get(&id) == Some(&generation) && !book.pending.contains_key(&id)
            };
            if !current || !self.listed.contains_key(&id) {
                continue;
            }
            self.shared.evictions.fetch_add(1, Ordering::Relaxed);
            let attempt = self.evictions_in_a_row.entry(id.clone()).or_default();
            *attempt = attempt.saturating_add(1);
            let wait = self.options.reinsert.delay(*attempt, &mut self.rng);
            tracing::info!(id = %id, ?wait, "the balancer evicted an endpoint; inserting it again later");
            self.retries
                .insert(id, crate::backoff::deadline_after(wait));
        }
    }

    fn reinsert_due(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .retries
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            self.retries.remove(&id);
            if let Some(instance) = self.listed.get(&id) {
                self.shared.offer(id, Some(instance.clone()));
                self.shared.reinserted.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
