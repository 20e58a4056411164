//! The registrar's task: every registration's state machine, one timer wheel, one set of
//! in-flight calls, one watch per registered service.
//!
//! A *lease slot* is a lease the task keeps alive: one per registration, or one for all on a
//! registrar with a shared lease. It is idle (no lease, nobody ready), granting, alive (a
//! keep-alive every TTL/3 from when the last grant or keep-alive was *sent*), or waiting out a
//! backoff before the next grant. It is lost when a keep-alive answers "not found" or none has
//! succeeded for a whole TTL. A registration is waiting for readiness, pending (its lease is not
//! alive or its put is under way), or registered.

use super::registrar::RegistrarOptions;
use super::wheel::{Due, Wheel};
use super::{LeaseClock, RegistrationOptions, RegistrationState, Shared};
use crate::backoff::{deadline_after, Backoff};
use crate::instance::{Metadata, ServiceInstance, Status};
use crate::rng::{seed_for, SplitMix64};
use bytes::Bytes;
use futures::future::{AbortHandle, BoxFuture};
use futures::stream::{BoxStream, FuturesUnordered, SelectAll};
use futures::{FutureExt, StreamExt};
use registry_api::limits::{check_put, DEFAULT_MAX_VALUE_BYTES, MAX_KEEP_ALIVE_BATCH};
use registry_api::{
    Error, EventKind, LeaseGrant, LeaseId, ListOptions, ListResponse, PutOptions, PutResponse,
    Registry, Revision, WatchBatch, WatchOptions, WatchStream,
};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

type Reply = oneshot::Sender<crate::Result<()>>;

/// What a handle asks of the task.
#[derive(Debug)]
pub(crate) enum Command {
    Start(Box<Start>),
    Metadata {
        id: u64,
        metadata: Metadata,
        reply: Reply,
    },
    Status {
        id: u64,
        status: Status,
        reply: Reply,
    },
    Stop {
        id: u64,
        how: Stop,
        reply: Reply,
    },
}

/// How to stop.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Stop {
    /// Revoke now.
    Now,
    /// Mark draining, wait the grace period and for the watch, then revoke.
    Drain(Duration),
}

/// A new registration, validated by the handle.
pub(crate) struct Start {
    pub(crate) id: u64,
    pub(crate) key: String,
    pub(crate) prefix: String,
    pub(crate) instance: ServiceInstance,
    pub(crate) ttl: i64,
    pub(crate) options: RegistrationOptions,
    pub(crate) shared: Arc<Shared>,
    pub(crate) first: Option<Reply>,
    pub(crate) ready: Option<BoxFuture<'static, ()>>,
}

impl std::fmt::Debug for Start {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Start")
            .field("id", &self.id)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Handles that were dropped or abandoned, for the task to act on. Drop cannot wait for room
/// in the command channel; this list holds at most one entry per registration ever started and
/// not yet seen by the task, so it cannot grow without bound.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    dropped: Mutex<Vec<(u64, bool)>>,
    notify: Notify,
}

impl Inbox {
    pub(crate) fn push(&self, id: u64, abandoned: bool) {
        self.dropped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((id, abandoned));
        self.notify.notify_one();
    }

    fn take(&self) -> Vec<(u64, bool)> {
        std::mem::take(
            &mut *self
                .dropped
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// A finished call or event, handled by the task.
enum Done {
    Grant {
        slot: u32,
        token: u64,
        sent_at: Instant,
        result: registry_api::Result<LeaseGrant>,
    },
    KeepAlive {
        slot: u32,
        token: u64,
        sent_at: Instant,
        result: registry_api::Result<i64>,
    },
    KeepAlives {
        renewals: Vec<Renewal>,
        sent_at: Instant,
        result: registry_api::Result<Vec<registry_api::Result<i64>>>,
    },
    Put {
        id: u64,
        key: Bytes,
        lease: LeaseId,
        purpose: Purpose,
        result: registry_api::Result<PutResponse>,
    },
    Stopped {
        shared: Arc<Shared>,
        replies: Vec<Reply>,
        result: registry_api::Result<()>,
    },
    Ready {
        id: u64,
    },
    Listed {
        group: u32,
        token: u64,
        result: registry_api::Result<ListResponse>,
    },
    Watching {
        group: u32,
        token: u64,
        result: registry_api::Result<WatchStream>,
    },
    Ignored,
}

/// How much earlier than its own time a lease may be renewed to join a round that is going
/// out: a tenth of a second, against rounds seconds apart at the usual TTLs.
const RENEW_EARLY_AT_MOST: Duration = Duration::from_millis(100);

/// A lease whose keep-alive is due in this round, and the token its answer must carry.
#[derive(Clone, Copy)]
struct Renewal {
    slot: u32,
    token: u64,
    lease: LeaseId,
    /// How long the answer is worth waiting for: until the lease's deadline, at most the
    /// request timeout.
    limit: Duration,
}

/// Why an instance is put.
enum Purpose {
    /// First registration or re-registration.
    Register,
    /// The watch showed the key missing or overwritten.
    Restore,
    /// New metadata or status from the handle; `previous` is restored if the value is refused.
    Change {
        reply: Reply,
        previous: Box<(ServiceInstance, Bytes)>,
    },
    /// Marked draining by a shutdown.
    Drain,
}

enum Phase {
    /// No lease, and no member wants one yet.
    Idle,
    /// Waiting out a backoff before the next grant.
    Backoff,
    Granting,
    Alive {
        lease: LeaseId,
        ttl: Duration,
        deadline: Instant,
        in_flight: bool,
    },
}

struct Slot {
    members: Vec<u64>,
    ttl: i64,
    backoff: Backoff,
    request_timeout: Duration,
    rng: SplitMix64,
    phase: Phase,
    attempt: u32,
    /// The token of the timer that counts, and of the grant or keep-alive in flight.
    timer: u64,
    call: u64,
    /// A member's put failed: put again after the next keep-alive that succeeds.
    needs_put: bool,
    clock: Arc<LeaseClock>,
    shared: bool,
}

impl Slot {
    fn lease(&self) -> Option<LeaseId> {
        match self.phase {
            Phase::Alive { lease, .. } => Some(lease),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RegPhase {
    WaitingForReady,
    Pending,
    Registered(LeaseId),
}

struct Drain {
    reply: Reply,
    grace_end: Instant,
    hard_end: Instant,
    target: Option<Revision>,
    put_failed: bool,
}

struct Reg {
    key: Bytes,
    instance: ServiceInstance,
    value: Bytes,
    slot: u32,
    group: u32,
    phase: RegPhase,
    first: Option<Reply>,
    shared: Arc<Shared>,
    puts: u32,
    last_put: Revision,
    needs_put: bool,
    registered_once: bool,
    drain: Option<Drain>,
}

/// One watch on a service's prefix, shared by the task's registrations of that service.
struct Group {
    prefix: String,
    /// Ordered, so that a list's put-backs happen in the same order in every run.
    members: BTreeMap<Bytes, u64>,
    /// The revision the watch has shown everything up to.
    seen: Revision,
    token: u64,
    abort: Option<AbortHandle>,
    attempt: u32,
    draining: usize,
}

/// A vector with reusable holes: slot and group indices stay small and timers find them in one
/// step. Stale references are told apart by tokens, not by the index.
struct Slab<T> {
    items: Vec<Option<T>>,
    free: Vec<u32>,
}

impl<T> Slab<T> {
    fn new() -> Self {
        Slab {
            items: Vec::new(),
            free: Vec::new(),
        }
    }
    fn insert(&mut self, item: T) -> u32 {
        if let Some(index) = self.free.pop() {
            self.items[index as usize] = Some(item);
            index
        } else {
            self.items.push(Some(item));
            u32::try_from(self.items.len() - 1).unwrap_or(u32::MAX)
        }
    }
    fn get(&self, index: u32) -> Option<&T> {
        self.items.get(index as usize).and_then(Option::as_ref)
    }
    fn get_mut(&mut self, index: u32) -> Option<&mut T> {
        self.items.get_mut(index as usize).and_then(Option::as_mut)
    }
    fn remove(&mut self, index: u32) -> Option<T> {
        let item = self.items.get_mut(index as usize).and_then(Option::take);
        if item.is_some() {
            self.free.push(index);
        }
        item
    }
}

type WatchItem = (u32, u64, Option<registry_api::Result<WatchBatch>>);

/// The slot that keep-alive `token` was sent for, its in-flight mark cleared; `None` when the
/// answer no longer counts (the slot stopped, lost its lease or sent another since). A function
/// of the slots alone, so that the caller can go on using the task's other fields.
fn answered(slots: &mut Slab<Slot>, slot: u32, token: u64) -> Option<&mut Slot> {
    let s = slots.get_mut(slot).filter(|s| s.call == token)?;
    let Phase::Alive { in_flight, .. } = &mut s.phase else {
        return None;
    };
    *in_flight = false;
    Some(s)
}

pub(crate) struct Task<'r> {
    /// Borrowed from the `Arc` that [`run`] owns, so that a call's future borrows it instead
    /// of holding a clone of the `Arc` in a box of its own: at scale the keep-alive round is
    /// the hot path, and that is one allocation and two atomic operations less per call.
    registry: &'r dyn Registry,
    options: RegistrarOptions,
    shared_ttl: Option<i64>,
    shared_clock: Option<Arc<LeaseClock>>,
    shared_slot: Option<u32>,
    commands: mpsc::Receiver<Command>,
    inbox: Arc<Inbox>,
    regs: HashMap<u64, Reg>,
    slots: Slab<Slot>,
    groups: Slab<Group>,
    group_by_prefix: HashMap<String, u32>,
    wheel: Wheel,
    in_flight: FuturesUnordered<BoxFuture<'r, Done>>,
    completed: VecDeque<Done>,
    watches: SelectAll<BoxStream<'static, WatchItem>>,
    rng: SplitMix64,
    tokens: u64,
    now: Instant,
    /// What the keep-alives answered at once in this round share: their renewed deadline,
    /// their next round and their stored renewal, computed once per (instant, TTL).
    round: Option<Round>,
    /// The keep-alives due in this round, sent together once the round's timers are handled.
    renewals: Vec<Renewal>,
}

#[derive(Clone, Copy)]
struct Round {
    now: Instant,
    ttl: Duration,
    renewed: Instant,
    next: Instant,
    stored: (u64, u64),
}

/// What the registrar's task starts from.
pub(crate) struct Init {
    pub(crate) options: RegistrarOptions,
    pub(crate) shared_ttl: Option<i64>,
    pub(crate) shared_clock: Option<Arc<LeaseClock>>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) inbox: Arc<Inbox>,
}

/// The registrar's task: runs until every handle is gone and every registration stopped.
pub(crate) async fn run(registry: Arc<dyn Registry>, init: Init) {
    Task::new(&*registry, init).run().await;
}

impl<'r> Task<'r> {
    fn new(registry: &'r dyn Registry, init: Init) -> Self {
        let Init {
            options,
            shared_ttl,
            shared_clock,
            commands,
            inbox,
        } = init;
        let rng = SplitMix64::new(seed_for(options.seed, &["registrar"]));
        Task {
            registry,
            options,
            shared_ttl,
            shared_clock,
            shared_slot: None,
            commands,
            inbox,
            regs: HashMap::new(),
            slots: Slab::new(),
            groups: Slab::new(),
            group_by_prefix: HashMap::new(),
            wheel: Wheel::default(),
            in_flight: FuturesUnordered::new(),
            completed: VecDeque::new(),
            watches: SelectAll::new(),
            rng,
            tokens: 0,
            now: Instant::now(),
            round: None,
            renewals: Vec::new(),
        }
    }

    fn token(&mut self) -> u64 {
        self.tokens += 1;
        self.tokens
    }

    async fn run(mut self) {
        let sleep = tokio::time::sleep_until(deadline_after(Duration::from_secs(86_400)));
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        let mut closing = false;
        let inbox = self.inbox.clone();
        let mut due = Vec::new();
        loop {
            self.take_inbox(&mut closing);
            while let Some(done) = self.completed.pop_front() {
                self.on_done(done);
            }
            if closing && self.regs.is_empty() && self.in_flight.is_empty() {
                break;
            }
            match self.wheel.next() {
                Some(at) if armed != Some(at) => {
                    sleep.as_mut().reset(at);
                    armed = Some(at);
                }
                None => armed = None,
                _ => {}
            }
            tokio::select! {
                biased;
                command = self.commands.recv(), if !closing => {
                    self.now = Instant::now();
                    match command {
                        Some(command) => self.on_command(command),
                        None => closing = true,
                    }
                }
                _ = inbox.notify.notified() => {
                    self.now = Instant::now();
                }
                Some(done) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.now = Instant::now();
                    self.completed.push_back(done);
                }
                Some(item) = self.watches.next(), if !self.watches.is_empty() => {
                    self.now = Instant::now();
                    self.on_watch(item);
                }
                _ = &mut sleep, if armed.is_some() => {
                    armed = None;
                    self.now = Instant::now();
                    self.wheel.take_due(self.now, &mut due);
                    for item in due.drain(..) {
                        self.on_due(item);
                    }
                    self.join_round_early();
                    self.send_keep_alives();
                }
            }
        }
        tracing::debug!("registrar stopped");
    }

    /// Commands first, so that a registration dropped right after it was started is known
    /// when its drop is handled.
    fn take_inbox(&mut self, closing: &mut bool) {
        loop {
            match self.commands.try_recv() {
                Ok(command) => {
                    self.now = Instant::now();
                    self.on_command(command);
                }
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    *closing = true;
                    break;
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
            }
        }
        for (id, abandoned) in self.inbox.take() {
            if abandoned {
                self.forget(id);
            } else {
                self.stop_now(id, Vec::new());
            }
        }
    }

    /// Runs `call`: at once when it is ready at once (the simulator's calls are), else among
    /// the calls in flight, failed as unavailable after `limit`.
    fn launch<T: Send + 'r>(
        &mut self,
        limit: Duration,
        mut call: BoxFuture<'r, registry_api::Result<T>>,
        done: impl FnOnce(registry_api::Result<T>) -> Done + Send + 'r,
    ) {
        if let Some(result) = (&mut call).now_or_never() {
            self.completed.push_back(done(result));
            return;
        }
        let deadline = self
            .now
            .checked_add(limit)
            .unwrap_or_else(|| deadline_after(limit));
        self.in_flight.push(Box::pin(async move {
            let result = match tokio::time::timeout_at(deadline, call).await {
                Ok(result) => result,
                Err(_) => Err(Error::unavailable(format!("no answer within {limit:?}"))),
            };
            done(result)
        }));
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Start(start) => self.start(*start),
            Command::Metadata {
                id,
                metadata,
                reply,
            } => self.change(id, reply, |instance| instance.metadata = metadata),
            Command::Status { id, status, reply } => {
                self.change(id, reply, |instance| instance.status = status)
            }
            Command::Stop { id, how, reply } => match how {
                Stop::Now => self.stop_now(id, vec![reply]),
                Stop::Drain(grace) => self.drain(id, grace, reply),
            },
        }
    }

    fn start(&mut self, start: Start) {
        let Start {
            id,
            key,
            prefix,
            instance,
            ttl,
            options,
            shared,
            first,
            ready,
        } = start;
        let key = Bytes::from(key.into_bytes());
        let group = match self.group_by_prefix.get(&prefix) {
            Some(group) => *group,
            None => {
                let group = self.groups.insert(Group {
                    prefix: prefix.clone(),
                    members: BTreeMap::new(),
                    seen: Revision::default(),
                    token: 0,
                    abort: None,
                    attempt: 0,
                    draining: 0,
                });
                self.group_by_prefix.insert(prefix, group);
                self.open_watch(group);
                group
            }
        };
        if let Some(g) = self.groups.get_mut(group) {
            g.members.insert(key.clone(), id);
        }
        let slot = match (self.shared_ttl, self.shared_slot) {
            (Some(_), Some(slot)) => slot,
            (Some(ttl), None) => {
                let slot = self.slots.insert(Slot {
                    members: Vec::new(),
                    ttl,
                    backoff: self.options.backoff.clone(),
                    request_timeout: self.options.request_timeout,
                    rng: SplitMix64::new(seed_for(self.options.seed, &["shared lease"])),
                    phase: Phase::Idle,
                    attempt: 0,
                    timer: 0,
                    call: 0,
                    needs_put: false,
                    clock: self
                        .shared_clock
                        .clone()
                        .unwrap_or_else(|| shared.clock.clone()),
                    shared: true,
                });
                self.shared_slot = Some(slot);
                slot
            }
            (None, _) => self.slots.insert(Slot {
                members: Vec::new(),
                ttl,
                backoff: options.backoff.clone(),
                request_timeout: options.request_timeout,
                rng: SplitMix64::new(seed_for(options.seed, &[&instance.service, &instance.id])),
                phase: Phase::Idle,
                attempt: 0,
                timer: 0,
                call: 0,
                needs_put: false,
                clock: shared.clock.clone(),
                shared: false,
            }),
        };
        if let Some(s) = self.slots.get_mut(slot) {
            s.members.push(id);
        }
        let value = Bytes::from(instance.to_json());
        let waiting = ready.is_some();
        self.regs.insert(
            id,
            Reg {
                key,
                instance,
                value,
                slot,
                group,
                phase: if waiting {
                    RegPhase::WaitingForReady
                } else {
                    RegPhase::Pending
                },
                first,
                shared,
                puts: 0,
                last_put: Revision::default(),
                needs_put: false,
                registered_once: false,
                drain: None,
            },
        );
        match ready {
            Some(ready) => self.in_flight.push(Box::pin(async move {
                ready.await;
                Done::Ready { id }
            })),
            None => self.kick(slot, id),
        }
    }

    /// A member wants to be registered: grant if nothing is under way, put if the lease lives.
    fn kick(&mut self, slot: u32, id: u64) {
        let Some(s) = self.slots.get(slot) else {
            return;
        };
        match s.phase {
            Phase::Idle => self.grant(slot),
            Phase::Alive { .. } => self.put(id, Purpose::Register),
            Phase::Backoff | Phase::Granting => {}
        }
    }

    fn grant(&mut self, slot: u32) {
        let token = self.token();
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        s.phase = Phase::Granting;
        s.call = token;
        let (ttl, limit) = (s.ttl, s.request_timeout);
        let sent_at = self.now;
        self.launch(limit, self.registry.lease_grant(ttl, None), move |result| {
            Done::Grant {
                slot,
                token,
                sent_at,
                result,
            }
        });
    }

    fn put(&mut self, id: u64, purpose: Purpose) {
        let Some(reg) = self.regs.get_mut(&id) else {
            return;
        };
        let Some(slot) = self.slots.get(reg.slot) else {
            return;
        };
        let Some(lease) = slot.lease() else {
            if let Purpose::Change { reply, .. } = purpose {
                reply.send(Ok(())).ok();
            }
            return;
        };
        let limit = slot.request_timeout;
        reg.puts += 1;
        let (key, value) = (reg.key.clone(), reg.value.clone());
        let put_key = key.clone();
        let registry = self.registry;
        self.launch(
            limit,
            Box::pin(async move {
                registry
                    .put(&put_key, &value, PutOptions::with_lease(lease))
                    .await
            }),
            move |result| Done::Put {
                id,
                key,
                lease,
                purpose,
                result,
            },
        );
    }

    fn revoke(&mut self, lease: LeaseId, limit: Duration, then: Option<(Arc<Shared>, Vec<Reply>)>) {
        let call = self.registry.lease_revoke(lease);
        self.launch(
            limit,
            Box::pin(async move { call.await.map(|_| ()) }),
            move |result| match then {
                Some((shared, replies)) => Done::Stopped {
                    shared,
                    replies,
                    result,
                },
                None => Done::Ignored,
            },
        );
    }

    fn on_due(&mut self, due: Due) {
        match due {
            Due::Lease { slot, token } => self.on_lease_timer(slot, token),
            Due::Drain { registration } => self.check_drain(registration),
            Due::Watch { group, token } => {
                if self.groups.get(group).is_some_and(|g| g.token == token) {
                    self.open_watch(group);
                }
            }
        }
    }

    fn schedule_lease(&mut self, slot: u32, at: Instant) {
        let token = self.token();
        if let Some(s) = self.slots.get_mut(slot) {
            s.timer = token;
            self.wheel.schedule(at, Due::Lease { slot, token });
        }
    }

    fn on_lease_timer(&mut self, slot: u32, token: u64) {
        let now = self.now;
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        if s.timer != token {
            return;
        }
        match &mut s.phase {
            Phase::Backoff => {
                let attempt = s.attempt;
                let members = s.members.clone();
                let mut wanted = false;
                for id in members {
                    if let Some(reg) = self.regs.get(&id) {
                        if reg.phase == RegPhase::Pending {
                            wanted = true;
                            if reg.registered_once {
                                reg.shared
                                    .state
                                    .send_replace(RegistrationState::ReRegistering { attempt });
                            }
                        }
                    }
                }
                if wanted {
                    self.grant(slot);
                } else if let Some(s) = self.slots.get_mut(slot) {
                    s.phase = Phase::Idle;
                }
            }
            Phase::Alive {
                lease,
                deadline,
                in_flight,
                ..
            } if !*in_flight => {
                *in_flight = true;
                // A keep-alive answered after the deadline is worthless: wait no longer.
                let limit = deadline
                    .saturating_duration_since(now)
                    .min(s.request_timeout);
                let lease = *lease;
                self.tokens += 1;
                s.call = self.tokens;
                self.renewals.push(Renewal {
                    slot,
                    token: self.tokens,
                    lease,
                    limit,
                });
            }
            _ => {}
        }
    }

    /// Lets leases that come due a moment after this round go out with it, a little early.
    /// Renewing early costs nothing (a lease's deadline counts from its renewal), and the
    /// leases renewed together are due together from then on: registrations started one after
    /// another on real time fall into step, and their rounds become batches instead of one
    /// call each. At most [`RENEW_EARLY_AT_MOST`], and at most an eighth of the lease's own
    /// interval, so no lease is renewed noticeably more often than every TTL/3.
    fn join_round_early(&mut self) {
        if self.renewals.is_empty() {
            return;
        }
        let now = self.now;
        let Some(until) = now.checked_add(RENEW_EARLY_AT_MOST) else {
            return;
        };
        let mut early = Vec::new();
        self.wheel.take_leases_between(now, until, &mut early);
        for (at, due) in early {
            let Due::Lease { slot, token } = due else {
                continue;
            };
            let Some(s) = self.slots.get(slot).filter(|s| s.timer == token) else {
                continue; // rescheduled or gone since: a stale timer
            };
            let joins = match s.phase {
                Phase::Alive { ttl, in_flight, .. } => {
                    !in_flight && at.saturating_duration_since(now) <= ttl / 24
                }
                _ => false,
            };
            if joins {
                self.on_lease_timer(slot, token);
            } else {
                self.wheel.schedule(at, due);
            }
        }
    }

    /// Sends the keep-alives due in this round: one call for a lone lease, batches of up to
    /// [`MAX_KEEP_ALIVE_BATCH`] for many (a fleet started together renews together, and a
    /// batch is one round trip and one lock on the server instead of one per lease).
    fn send_keep_alives(&mut self) {
        let mut renewals = std::mem::take(&mut self.renewals);
        let sent_at = self.now;
        if let [one] = renewals[..] {
            let call = self.registry.lease_keep_alive(one.lease);
            self.launch(one.limit, call, move |result| Done::KeepAlive {
                slot: one.slot,
                token: one.token,
                sent_at,
                result,
            });
        } else {
            for chunk in renewals.chunks(MAX_KEEP_ALIVE_BATCH) {
                self.send_batch(chunk.to_vec(), sent_at);
            }
        }
        renewals.clear();
        self.renewals = renewals;
    }

    fn send_batch(&mut self, renewals: Vec<Renewal>, sent_at: Instant) {
        let ids: Vec<LeaseId> = renewals.iter().map(|r| r.lease).collect();
        let registry = self.registry;
        let mut call: BoxFuture<'r, _> =
            Box::pin(async move { registry.lease_keep_alive_many(&ids).await });
        // The simulator answers at once: handle the batch here rather than through the
        // finished calls, so that a round at scale costs no more than the renewals themselves.
        if let Some(result) = (&mut call).now_or_never() {
            self.on_keep_alives(renewals, sent_at, result);
            return;
        }
        let limit = renewals
            .iter()
            .map(|r| r.limit)
            .min()
            .unwrap_or(self.options.request_timeout);
        self.launch(limit, call, move |result| Done::KeepAlives {
            renewals,
            sent_at,
            result,
        });
    }

    fn on_keep_alives(
        &mut self,
        renewals: Vec<Renewal>,
        sent_at: Instant,
        result: registry_api::Result<Vec<registry_api::Result<i64>>>,
    ) {
        match result {
            Ok(answers) => {
                let short = answers.len() < renewals.len();
                let mut answers = answers.into_iter();
                for renewal in renewals {
                    let answer = answers.next().unwrap_or_else(|| {
                        Err(Error::backend(
                            "the keep-alive batch was answered only in part",
                        ))
                    });
                    match answer {
                        Ok(_) if sent_at == self.now => {
                            self.renewed_at_once(renewal.slot, renewal.token)
                        }
                        answer => self.on_keep_alive(renewal.slot, renewal.token, sent_at, answer),
                    }
                }
                if short {
                    tracing::warn!("the keep-alive batch was answered only in part");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, leases = renewals.len(), "keep-alive batch failed");
                let error = Arc::new(e);
                for renewal in renewals {
                    self.keep_alive_failed(renewal.slot, renewal.token, error.clone());
                }
            }
        }
    }

    /// The hot path at scale: a keep-alive answered at the instant it was sent. It does what
    /// [`on_keep_alive`](Self::on_keep_alive) does for that success, with what the round's
    /// renewals share computed once.
    fn renewed_at_once(&mut self, slot: u32, token: u64) {
        let now = self.now;
        if self.slots.get(slot).is_some_and(|s| s.needs_put) {
            return self.keep_alive_succeeded(slot, token, now);
        }
        let Some(s) = answered(&mut self.slots, slot, token) else {
            return;
        };
        let Phase::Alive { ttl, deadline, .. } = &mut s.phase else {
            return;
        };
        let ttl = *ttl;
        let round = match self.round {
            Some(round) if round.now == now && round.ttl == ttl => round,
            _ => {
                let renewed = now.checked_add(ttl).unwrap_or(*deadline);
                let round = Round {
                    now,
                    ttl,
                    renewed,
                    next: now.checked_add(ttl / 3).unwrap_or(renewed).min(renewed),
                    stored: s.clock.encode(now, ttl),
                };
                self.round = Some(round);
                round
            }
        };
        *deadline = round.renewed;
        s.clock.store(round.stored);
        s.clock.answered_after(Duration::ZERO);
        self.tokens += 1;
        s.timer = self.tokens;
        self.wheel.schedule(
            round.next,
            Due::Lease {
                slot,
                token: self.tokens,
            },
        );
    }

    fn on_done(&mut self, done: Done) {
        match done {
            Done::Grant {
                slot,
                token,
                sent_at,
                result,
            } => self.on_grant(slot, token, sent_at, result),
            Done::KeepAlive {
                slot,
                token,
                sent_at,
                result,
            } => self.on_keep_alive(slot, token, sent_at, result),
            Done::KeepAlives {
                renewals,
                sent_at,
                result,
            } => self.on_keep_alives(renewals, sent_at, result),
            Done::Put {
                id,
                key,
                lease,
                purpose,
                result,
            } => self.on_put(id, key, lease, purpose, result),
            Done::Stopped {
                shared,
                replies,
                result,
            } => {
                let ok = matches!(result, Ok(()) | Err(Error::LeaseNotFound(_)));
                shared.details().lease = None;
                shared.state.send_replace(RegistrationState::Deregistered);
                tracing::info!(ok, "deregistered");
                let mut result = match result {
                    Ok(()) | Err(Error::LeaseNotFound(_)) => Ok(()),
                    Err(e) => Err(e),
                };
                for reply in replies {
                    let outcome = match &mut result {
                        Ok(()) => Ok(()),
                        Err(e) => Err(crate::Error::Registry(std::mem::replace(
                            e,
                            Error::unavailable("reported to an earlier caller"),
                        ))),
                    };
                    reply.send(outcome).ok();
                }
            }
            Done::Ready { id } => {
                let Some(reg) = self.regs.get_mut(&id) else {
                    return;
                };
                if reg.phase == RegPhase::WaitingForReady {
                    reg.phase = RegPhase::Pending;
                    reg.shared
                        .state
                        .send_replace(RegistrationState::Registering);
                    let slot = reg.slot;
                    self.kick(slot, id);
                }
            }
            Done::Listed {
                group,
                token,
                result,
            } => self.on_listed(group, token, result),
            Done::Watching {
                group,
                token,
                result,
            } => self.on_watching(group, token, result),
            Done::Ignored => {}
        }
    }

    fn on_grant(
        &mut self,
        slot: u32,
        token: u64,
        sent_at: Instant,
        result: registry_api::Result<LeaseGrant>,
    ) {
        let live = self
            .slots
            .get(slot)
            .is_some_and(|s| s.call == token && matches!(s.phase, Phase::Granting));
        if !live {
            // Granted for a registration that has stopped meanwhile: let it go.
            if let Ok(grant) = result {
                let limit = self.options.request_timeout;
                self.revoke(grant.id, limit, None);
            }
            return;
        }
        match result {
            Ok(grant) => {
                let ttl = Duration::from_secs(u64::try_from(grant.ttl.max(1)).unwrap_or(1));
                let deadline = sent_at
                    .checked_add(ttl)
                    .unwrap_or_else(|| deadline_after(ttl));
                let next = self
                    .now
                    .checked_add(ttl / 3)
                    .unwrap_or(deadline)
                    .min(deadline);
                let members = match self.slots.get_mut(slot) {
                    Some(s) => {
                        s.phase = Phase::Alive {
                            lease: grant.id,
                            ttl,
                            deadline,
                            in_flight: false,
                        };
                        s.needs_put = false;
                        s.clock.renewed(sent_at, ttl);
                        s.clock
                            .answered_after(self.now.saturating_duration_since(sent_at));
                        s.members.clone()
                    }
                    None => return,
                };
                self.schedule_lease(slot, next);
                tracing::debug!(lease = %grant.id, "lease granted");
                for id in members {
                    if self
                        .regs
                        .get(&id)
                        .is_some_and(|r| r.phase == RegPhase::Pending)
                    {
                        self.put(id, Purpose::Register);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "lease grant failed");
                self.record_error(slot, e);
                self.backoff(slot);
            }
        }
    }

    /// Waits before the next grant, the wait growing with each failed attempt.
    fn backoff(&mut self, slot: u32) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        s.phase = Phase::Backoff;
        s.attempt = s.attempt.saturating_add(1);
        let attempt = s.attempt;
        let wait = s.backoff.delay(attempt, &mut s.rng);
        let at = self
            .now
            .checked_add(wait)
            .unwrap_or_else(|| deadline_after(wait));
        self.schedule_lease(slot, at);
    }

    fn on_keep_alive(
        &mut self,
        slot: u32,
        token: u64,
        sent_at: Instant,
        result: registry_api::Result<i64>,
    ) {
        let error = match result {
            Ok(_) => return self.keep_alive_succeeded(slot, token, sent_at),
            Err(error) => error,
        };
        if !matches!(error, Error::LeaseNotFound(_)) {
            let counts = self.slots.get(slot).filter(|s| s.call == token);
            if let Some(lease) = counts.and_then(Slot::lease) {
                tracing::warn!(%lease, error = %error, "keep-alive failed");
            }
        }
        self.keep_alive_failed(slot, token, Arc::new(error));
    }

    fn keep_alive_succeeded(&mut self, slot: u32, token: u64, sent_at: Instant) {
        let now = self.now;
        let Some(s) = answered(&mut self.slots, slot, token) else {
            return;
        };
        let Phase::Alive { ttl, deadline, .. } = &mut s.phase else {
            return;
        };
        let ttl = *ttl;
        *deadline = sent_at.checked_add(ttl).unwrap_or(*deadline);
        s.clock.renewed(sent_at, ttl);
        s.clock
            .answered_after(now.saturating_duration_since(sent_at));
        self.flush_puts(slot);
        self.schedule_next_round(slot);
    }

    /// A keep-alive failed (alone, or with its whole batch, which shares one error): a lease
    /// that is gone, or whose deadline passed, is lost; else the next round tries again.
    fn keep_alive_failed(&mut self, slot: u32, token: u64, error: Arc<Error>) {
        let now = self.now;
        let Some(s) = answered(&mut self.slots, slot, token) else {
            return;
        };
        let past_deadline = match s.phase {
            Phase::Alive { deadline, .. } => now >= deadline,
            _ => return,
        };
        if matches!(*error, Error::LeaseNotFound(_)) {
            self.lease_lost(slot);
            return;
        }
        tracing::debug!(error = %error, "keep-alive failed");
        self.record_error(slot, error);
        if past_deadline {
            self.lease_lost(slot);
            return;
        }
        self.schedule_next_round(slot);
    }

    /// Schedules the next keep-alive a third of the TTL from now (no later than the deadline).
    fn schedule_next_round(&mut self, slot: u32) {
        let now = self.now;
        let Some(Slot {
            phase: Phase::Alive { ttl, deadline, .. },
            ..
        }) = self.slots.get(slot)
        else {
            return;
        };
        let next = now
            .checked_add(*ttl / 3)
            .unwrap_or(*deadline)
            .min(*deadline);
        self.schedule_lease(slot, next);
    }

    /// Puts every member of `slot` whose put failed or was held back, now that the lease is
    /// known to live.
    fn flush_puts(&mut self, slot: u32) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        if !std::mem::take(&mut s.needs_put) {
            return;
        }
        for id in s.members.clone() {
            let wants = self.regs.get_mut(&id).is_some_and(|r| {
                r.phase != RegPhase::WaitingForReady && std::mem::take(&mut r.needs_put)
            });
            if wants {
                let purpose = match self.regs.get(&id).map(|r| r.phase) {
                    Some(RegPhase::Registered(_)) => Purpose::Restore,
                    _ => Purpose::Register,
                };
                self.put(id, purpose);
            }
        }
    }

    fn record_error(&mut self, slot: u32, error: impl Into<Arc<Error>>) {
        let Some(s) = self.slots.get(slot) else {
            return;
        };
        let error = error.into();
        for id in &s.members {
            if let Some(reg) = self.regs.get(id) {
                reg.shared.details().last_error = Some(error.clone());
            }
        }
    }

    fn lease_lost(&mut self, slot: u32) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        let lease = s.lease();
        tracing::warn!(lease = ?lease, "lease lost; re-registering");
        s.attempt = 0;
        s.call = 0;
        s.needs_put = false;
        for id in s.members.clone() {
            let Some(reg) = self.regs.get_mut(&id) else {
                continue;
            };
            reg.needs_put = false;
            match reg.phase {
                RegPhase::Registered(_) => {
                    reg.phase = RegPhase::Pending;
                    {
                        let mut details = reg.shared.details();
                        details.lease_losses += 1;
                        details.lease = None;
                    }
                    reg.shared.state.send_replace(RegistrationState::LeaseLost);
                }
                RegPhase::Pending | RegPhase::WaitingForReady => {}
            }
        }
        self.backoff(slot);
    }

    fn on_put(
        &mut self,
        id: u64,
        key: Bytes,
        lease: LeaseId,
        purpose: Purpose,
        result: registry_api::Result<PutResponse>,
    ) {
        let Some(reg) = self.regs.get_mut(&id) else {
            if let Purpose::Change { reply, .. } = purpose {
                reply.send(Err(crate::Error::Stopped("registration"))).ok();
            }
            // Stopped while its put was under way: on a shared lease, which lives on, the key
            // would stay; take it back. (An own lease was revoked, and its keys with it.)
            let shared_lease = self
                .shared_slot
                .and_then(|slot| self.slots.get(slot))
                .and_then(Slot::lease);
            if result.is_ok() && shared_lease == Some(lease) {
                let registry = self.registry;
                self.launch(
                    self.options.request_timeout,
                    Box::pin(async move { registry.delete(&key).await.map(|_| ()) }),
                    |_| Done::Ignored,
                );
            }
            return;
        };
        reg.puts = reg.puts.saturating_sub(1);
        let slot = reg.slot;
        let current = self.slots.get(slot).and_then(Slot::lease) == Some(lease);
        match result {
            Ok(put) => {
                reg.last_put = reg.last_put.max(put.revision);
                reg.shared.details().revision = Some(put.revision);
                if reg.phase == RegPhase::Pending && current {
                    reg.phase = RegPhase::Registered(lease);
                    {
                        let mut details = reg.shared.details();
                        details.lease = Some(lease);
                        if reg.registered_once {
                            details.re_registrations += 1;
                        }
                    }
                    reg.registered_once = true;
                    reg.shared
                        .state
                        .send_replace(RegistrationState::Registered {
                            lease,
                            revision: put.revision,
                        });
                    tracing::info!(%lease, revision = %put.revision, "registered");
                    if let Some(first) = reg.first.take() {
                        first.send(Ok(())).ok();
                    }
                    if let Some(s) = self.slots.get_mut(slot) {
                        s.attempt = 0;
                    }
                } else {
                    reg.shared.state.send_modify(|state| {
                        if let RegistrationState::Registered { revision, .. } = state {
                            *revision = put.revision;
                        }
                    });
                }
                match purpose {
                    Purpose::Change { reply, .. } => {
                        reply.send(Ok(())).ok();
                    }
                    Purpose::Drain => {
                        if let Some(drain) = &mut reg.drain {
                            drain.target = Some(put.revision);
                        }
                        self.check_drain(id);
                    }
                    Purpose::Restore => self.flush_puts(slot),
                    Purpose::Register => {}
                }
            }
            Err(Error::LeaseNotFound(dead)) if dead == lease => {
                if let Purpose::Change { reply, .. } = purpose {
                    reply.send(Ok(())).ok();
                }
                if current {
                    self.lease_lost(slot);
                }
                self.drain_put_failed(id);
            }
            Err(e @ (Error::InvalidArgument(_) | Error::TooLarge { .. })) => {
                // The backend refused the value itself: no retry can fix that.
                if let Some(first) = reg.first.take() {
                    first.send(Err(e.into())).ok();
                    self.stop_now(id, Vec::new());
                    return;
                }
                if let Purpose::Change { reply, previous } = purpose {
                    let (instance, value) = *previous;
                    reg.shared.details().status = instance.status;
                    reg.instance = instance;
                    reg.value = value;
                    reply.send(Err(e.into())).ok();
                }
                self.drain_put_failed(id);
            }
            Err(e) => {
                tracing::warn!(error = %e, "put failed");
                let error = Arc::new(e);
                reg.shared.details().last_error = Some(error.clone());
                let separate_first = reg.phase == RegPhase::Pending
                    && matches!(purpose, Purpose::Register)
                    && self.slots.get(slot).is_some_and(|s| !s.shared);
                if separate_first && current {
                    // The lease is of no use without the key: let it go and try again later,
                    // as a failed attempt.
                    let limit = self
                        .slots
                        .get(slot)
                        .map_or(Duration::ZERO, |s| s.request_timeout);
                    self.revoke(lease, limit, None);
                    self.backoff(slot);
                } else {
                    reg.needs_put = true;
                    if let Some(s) = self.slots.get_mut(slot) {
                        s.needs_put = true;
                    }
                }
                if let Purpose::Change { reply, .. } = purpose {
                    reply
                        .send(Err(crate::Error::Registry(Error::unavailable(
                            error.to_string(),
                        ))))
                        .ok();
                }
                self.drain_put_failed(id);
            }
        }
    }

    fn change(&mut self, id: u64, reply: Reply, apply: impl FnOnce(&mut ServiceInstance)) {
        let Some(reg) = self.regs.get_mut(&id) else {
            reply.send(Err(crate::Error::Stopped("registration"))).ok();
            return;
        };
        let mut instance = reg.instance.clone();
        apply(&mut instance);
        let value = instance.to_json();
        if let Err(e) = check_put(&reg.key, &value, DEFAULT_MAX_VALUE_BYTES) {
            reply.send(Err(e.into())).ok();
            return;
        }
        reg.shared.details().status = instance.status;
        let previous_instance = std::mem::replace(&mut reg.instance, instance);
        let previous_value = std::mem::replace(&mut reg.value, Bytes::from(value));
        if matches!(reg.phase, RegPhase::Registered(_)) {
            self.put(
                id,
                Purpose::Change {
                    reply,
                    previous: Box::new((previous_instance, previous_value)),
                },
            );
        } else {
            reply.send(Ok(())).ok();
        }
    }

    fn drain(&mut self, id: u64, grace: Duration, reply: Reply) {
        let now = self.now;
        let Some(reg) = self.regs.get_mut(&id) else {
            reply.send(Ok(())).ok();
            return;
        };
        if !matches!(reg.phase, RegPhase::Registered(_)) || reg.drain.is_some() {
            self.stop_now(id, vec![reply]);
            return;
        }
        let limit = self
            .slots
            .get(reg.slot)
            .map_or(self.options.request_timeout, |s| s.request_timeout);
        let grace_end = now
            .checked_add(grace)
            .unwrap_or_else(|| deadline_after(grace));
        reg.drain = Some(Drain {
            reply,
            grace_end,
            hard_end: grace_end.checked_add(limit).unwrap_or(grace_end),
            target: None,
            put_failed: false,
        });
        reg.instance.status = Status::Draining;
        reg.value = Bytes::from(reg.instance.to_json());
        reg.shared.details().status = Status::Draining;
        let group = reg.group;
        if let Some(g) = self.groups.get_mut(group) {
            g.draining += 1;
        }
        self.wheel
            .schedule(grace_end, Due::Drain { registration: id });
        tracing::info!(?grace, "draining");
        self.put(id, Purpose::Drain);
    }

    fn drain_put_failed(&mut self, id: u64) {
        if let Some(drain) = self.regs.get_mut(&id).and_then(|r| r.drain.as_mut()) {
            drain.put_failed = true;
            self.check_drain(id);
        }
    }

    /// Ends a drain once the grace period is over and the watch has shown the draining value
    /// (or one more request timeout has passed, or the value could not be written).
    fn check_drain(&mut self, id: u64) {
        let now = self.now;
        let Some(reg) = self.regs.get(&id) else {
            return;
        };
        let Some(drain) = &reg.drain else {
            return;
        };
        if now < drain.grace_end {
            return;
        }
        let seen = self
            .groups
            .get(reg.group)
            .map_or(Revision::default(), |g| g.seen);
        let shown = drain.target.is_some_and(|target| seen >= target);
        if shown || drain.put_failed || now >= drain.hard_end {
            let reply = self
                .regs
                .get_mut(&id)
                .and_then(|r| r.drain.take())
                .map(|d| d.reply);
            self.stop_now(id, reply.into_iter().collect());
        } else {
            let hard_end = drain.hard_end;
            self.wheel
                .schedule(hard_end, Due::Drain { registration: id });
        }
    }

    /// Removes a registration and gives up its key: revokes its own lease, or on a shared lease
    /// deletes its key (and revokes the lease when it was the last).
    fn stop_now(&mut self, id: u64, mut replies: Vec<Reply>) {
        let Some(mut reg) = self.regs.remove(&id) else {
            for reply in replies {
                reply.send(Ok(())).ok();
            }
            return;
        };
        if let Some(drain) = reg.drain.take() {
            replies.push(drain.reply);
        }
        if let Some(first) = reg.first.take() {
            first.send(Err(crate::Error::Stopped("registration"))).ok();
        }
        self.leave_group(&reg);
        let slot = reg.slot;
        let Some(s) = self.slots.get_mut(slot) else {
            self.finish(reg.shared, replies);
            return;
        };
        s.members.retain(|m| *m != id);
        let limit = s.request_timeout;
        if !s.shared {
            let lease = s.lease();
            self.slots.remove(slot);
            match lease {
                Some(lease) => self.revoke(lease, limit, Some((reg.shared, replies))),
                None => self.finish(reg.shared, replies),
            }
            return;
        }
        let last = s.members.is_empty();
        let lease = s.lease();
        if last {
            s.phase = Phase::Idle;
            s.timer = 0;
            s.call = 0;
            s.attempt = 0;
        }
        match (lease, last) {
            (Some(lease), true) => self.revoke(lease, limit, Some((reg.shared, replies))),
            (Some(_), false) if reg.registered_once => {
                let registry = self.registry;
                let key = reg.key.clone();
                let shared = reg.shared;
                self.launch(
                    limit,
                    Box::pin(async move { registry.delete(&key).await.map(|_| ()) }),
                    move |result| Done::Stopped {
                        shared,
                        replies,
                        result,
                    },
                );
            }
            _ => self.finish(reg.shared, replies),
        }
    }

    fn finish(&mut self, shared: Arc<Shared>, replies: Vec<Reply>) {
        self.completed.push_back(Done::Stopped {
            shared,
            replies,
            result: Ok(()),
        });
    }

    /// Forgets an abandoned registration without touching the registry: its key stays until
    /// its lease expires.
    fn forget(&mut self, id: u64) {
        let Some(reg) = self.regs.remove(&id) else {
            return;
        };
        self.leave_group(&reg);
        if let Some(s) = self.slots.get_mut(reg.slot) {
            s.members.retain(|m| *m != id);
            if !s.shared {
                self.slots.remove(reg.slot);
            }
        }
        tracing::info!("abandoned");
    }

    fn leave_group(&mut self, reg: &Reg) {
        let Some(group) = self.groups.get_mut(reg.group) else {
            return;
        };
        group.members.remove(&reg.key);
        if reg.drain.is_some() {
            group.draining = group.draining.saturating_sub(1);
        }
        if group.members.is_empty() {
            if let Some(abort) = group.abort.take() {
                abort.abort();
            }
            let prefix = group.prefix.clone();
            self.groups.remove(reg.group);
            self.group_by_prefix.remove(&prefix);
        }
    }

    /// Lists the service's prefix (to catch up on anything missed), then watches from there.
    fn open_watch(&mut self, group: u32) {
        let token = self.token();
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        g.token = token;
        if let Some(abort) = g.abort.take() {
            abort.abort();
        }
        let prefix = g.prefix.clone();
        let registry = self.registry;
        self.launch(
            self.options.request_timeout,
            Box::pin(async move {
                registry
                    .list(prefix.as_bytes(), ListOptions::default())
                    .await
            }),
            move |result| Done::Listed {
                group,
                token,
                result,
            },
        );
    }

    fn retry_watch(&mut self, group: u32) {
        let token = self.token();
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        if let Some(abort) = g.abort.take() {
            abort.abort();
        }
        g.token = token;
        g.attempt = g.attempt.saturating_add(1);
        let wait = self.options.backoff.delay(g.attempt, &mut self.rng);
        let at = self
            .now
            .checked_add(wait)
            .unwrap_or_else(|| deadline_after(wait));
        self.wheel.schedule(at, Due::Watch { group, token });
    }

    fn on_listed(&mut self, group: u32, token: u64, result: registry_api::Result<ListResponse>) {
        if !self.groups.get(group).is_some_and(|g| g.token == token) {
            return;
        }
        let list = match result {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "listing a registered service failed");
                self.retry_watch(group);
                return;
            }
        };
        let mut restore = Vec::new();
        if let Some(g) = self.groups.get_mut(group) {
            g.seen = g.seen.max(list.revision);
            for (key, id) in &g.members {
                let Some(reg) = self.regs.get(id) else {
                    continue;
                };
                let RegPhase::Registered(lease) = reg.phase else {
                    continue;
                };
                if reg.puts > 0 || reg.last_put > list.revision {
                    continue;
                }
                let intact = list
                    .kvs
                    .iter()
                    .any(|kv| kv.key == *key && kv.lease == Some(lease) && kv.value == reg.value);
                if !intact {
                    restore.push(*id);
                }
            }
        }
        for id in restore {
            tracing::warn!("instance key missing or changed; putting it back");
            self.put(id, Purpose::Restore);
        }
        let registry = self.registry;
        let prefix = self
            .groups
            .get(group)
            .map(|g| g.prefix.clone())
            .unwrap_or_default();
        let from = list.revision.next();
        self.launch(
            self.options.request_timeout,
            Box::pin(async move {
                registry
                    .watch(prefix.as_bytes(), WatchOptions::from_revision(from))
                    .await
            }),
            move |result| Done::Watching {
                group,
                token,
                result,
            },
        );
    }

    fn on_watching(&mut self, group: u32, token: u64, result: registry_api::Result<WatchStream>) {
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        if g.token != token {
            return;
        }
        match result {
            Ok(stream) => {
                let (stream, abort) = futures::stream::abortable(stream);
                g.abort = Some(abort);
                let items = stream
                    .map(move |item| (group, token, Some(item)))
                    .chain(futures::stream::once(async move { (group, token, None) }));
                self.watches.push(items.boxed());
            }
            Err(e) => {
                tracing::warn!(error = %e, "watching a registered service failed");
                self.retry_watch(group);
            }
        }
    }

    fn on_watch(&mut self, (group, token, item): WatchItem) {
        if !self.groups.get(group).is_some_and(|g| g.token == token) {
            return;
        }
        let batch = match item {
            Some(Ok(batch)) => batch,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "key watch ended; reopening");
                self.retry_watch(group);
                return;
            }
            None => {
                self.retry_watch(group);
                return;
            }
        };
        let mut restore = Vec::new();
        let mut draining = Vec::new();
        if let Some(g) = self.groups.get_mut(group) {
            g.attempt = 0;
            g.seen = g.seen.max(batch.revision);
            for event in &batch.events {
                let Some(id) = g.members.get(&event.kv.key) else {
                    continue;
                };
                let Some(reg) = self.regs.get(id) else {
                    continue;
                };
                let RegPhase::Registered(lease) = reg.phase else {
                    continue;
                };
                // An event older than our last put, or overtaken by a put under way, says
                // nothing about the key now.
                if reg.puts > 0 || event.kv.mod_revision <= reg.last_put {
                    continue;
                }
                let intact = event.kind == EventKind::Put
                    && event.kv.lease == Some(lease)
                    && event.kv.value == reg.value;
                if !intact {
                    restore.push(*id);
                }
            }
            if g.draining > 0 {
                draining.extend(g.members.values().copied());
            }
        }
        // One put per lease first: when the lease itself is gone (it expired and took every
        // key on it), that one put finds out, and the others wait for the new lease instead
        // of failing too.
        let mut tried = Vec::new();
        for id in restore {
            let Some(slot) = self.regs.get(&id).map(|r| r.slot) else {
                continue;
            };
            if tried.contains(&slot) {
                if let Some(reg) = self.regs.get_mut(&id) {
                    reg.needs_put = true;
                }
                if let Some(s) = self.slots.get_mut(slot) {
                    s.needs_put = true;
                }
                continue;
            }
            tried.push(slot);
            tracing::warn!("instance key deleted or overwritten; putting it back");
            self.put(id, Purpose::Restore);
        }
        for id in draining {
            self.check_drain(id);
        }
    }
}
