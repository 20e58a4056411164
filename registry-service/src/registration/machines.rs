//! The registrar's state: its lease slots, members and key watches, and how each event (a
//! command, an answer, a watch event, a timer) moves through them.
//!
//! Every method takes the event and the time it happens at and pushes the [`Call`]s to make;
//! nothing here awaits or touches the registry, so the whole registrar can be driven by a test
//! on a fake clock (see the tests below), and the driver only makes the calls and feeds the
//! answers back.

use super::calls::{shared, Answer, Call, GroupId, MemberId, Purpose, Renewal, SlotId};
use super::commands::{Command, Reply, Start, Stop};
use super::key_watches::KeyWatches;
use super::lease_clock::LeaseClock;
use super::leases::{Fired, Granted, Renewed, SlotSpec, Slots};
use super::members::{DrainCheck, Member, Members, Phase};
use super::options::RegistrationOptions;
use super::timers::{Due, Timers};
use crate::instance::ServiceInstance;
use crate::seed::seed_for;
use crate::watcher::{WatcherConfig, WatcherEvent};
use crate::Error;
use bytes::Bytes;
use registry_api::LeaseId;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

mod leaving;
mod put_answers;
#[cfg(test)]
mod tests;

/// The one lease of a registrar with a shared lease.
pub(super) struct SharedLease {
    pub(super) ttl: i64,
    pub(super) options: RegistrationOptions,
    pub(super) clock: Arc<LeaseClock>,
}

/// See the module docs.
pub(super) struct Machines {
    slots: Slots,
    members: Members,
    watches: KeyWatches,
    timers: Timers,
    shared_lease: Option<SharedLease>,
    shared_slot: Option<SlotId>,
    key_watch: WatcherConfig,
    /// For calls that belong to no slot: letting a stale grant go, taking a key back.
    request_timeout: Duration,
    due: Vec<Due>,
}

impl Machines {
    pub(super) fn new(shared_lease: Option<SharedLease>, key_watch: WatcherConfig) -> Self {
        Machines {
            slots: Slots::default(),
            members: Members::default(),
            watches: KeyWatches::default(),
            timers: Timers::default(),
            shared_lease,
            shared_slot: None,
            request_timeout: key_watch.request_timeout,
            key_watch,
            due: Vec::new(),
        }
    }

    /// No registration left.
    pub(super) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// When the next timer is due.
    pub(super) fn next_timer(&self) -> Option<Instant> {
        self.timers.next()
    }

    pub(super) fn on_command(&mut self, command: Command, now: Instant, out: &mut Vec<Call>) {
        match command {
            Command::Start(start) => self.start(*start, out),
            Command::Metadata {
                id,
                metadata,
                reply,
            } => self.change(id, reply, |instance| instance.metadata = metadata, out),
            Command::Status { id, status, reply } => {
                self.change(id, reply, |instance| instance.status = status, out)
            }
            Command::Stop { id, how, reply } => match how {
                Stop::Now => self.stop(id, vec![reply], None, out),
                Stop::Drain(grace) => self.drain(id, grace, reply, now, out),
            },
        }
    }

    /// A handle was dropped: deregister, or (`abandoned`) forget without touching the registry.
    pub(super) fn on_dropped(&mut self, id: MemberId, abandoned: bool, out: &mut Vec<Call>) {
        if abandoned {
            self.forget(id, out);
        } else {
            self.stop(id, Vec::new(), None, out);
        }
    }

    pub(super) fn on_answer(&mut self, answer: Answer, now: Instant, out: &mut Vec<Call>) {
        match answer {
            Answer::Granted {
                slot,
                token,
                sent_at,
                result,
            } => self.granted(slot, token, sent_at, now, result, out),
            Answer::Renewed {
                renewals,
                sent_at,
                result,
            } => match result {
                Ok(answers) => {
                    if answers.len() < renewals.len() {
                        tracing::warn!("the keep-alive batch was answered only in part");
                    }
                    let mut answers = answers.into_iter();
                    for renewal in renewals {
                        let answer = answers.next().unwrap_or_else(|| {
                            Err(registry_api::Error::backend(
                                "the keep-alive batch was answered only in part",
                            ))
                        });
                        self.renewed(renewal, sent_at, now, answer.map_err(shared), out);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, leases = renewals.len(), "keep-alive call failed");
                    let error = shared(e);
                    for renewal in renewals {
                        self.renewed(renewal, sent_at, now, Err(error.clone()), out);
                    }
                }
            },
            Answer::Put {
                member,
                key,
                lease,
                purpose,
                result,
            } => self.put_answered(member, key, lease, purpose, result, now, out),
            Answer::Left { leaving, result } => leaving::finish(leaving, result),
            Answer::Ready { member } => {
                if let Some(m) = self.members.get_mut(member) {
                    if m.ready() {
                        let slot = m.slot;
                        self.kick(slot, member, out);
                    }
                }
            }
            Answer::Watched { group, event } => self.watched(group, event, now, out),
            Answer::Ignored => {}
        }
    }

    /// Runs the timers due by `now`, then sends the round's keep-alives together.
    pub(super) fn on_timers(&mut self, now: Instant, out: &mut Vec<Call>) {
        let mut due = std::mem::take(&mut self.due);
        self.timers.take_due(now, &mut due);
        let mut renewals = Vec::new();
        for item in due.drain(..) {
            match item {
                Due::Lease { slot, token } => {
                    let slot = slot as SlotId;
                    if let Fired::BackoffOver { attempt } =
                        self.slots.fire(slot, token, now, &mut renewals)
                    {
                        self.backoff_over(slot, attempt, out);
                    }
                }
                Due::Drain { registration } => self.check_drain(registration, now, out),
            }
        }
        self.due = due;
        self.slots.join_early(now, &mut self.timers, &mut renewals);
        Slots::keep_alive_calls(renewals, out);
    }

    fn start(&mut self, start: Start, out: &mut Vec<Call>) {
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
        let mut key_watch = self.key_watch.clone();
        key_watch.seed = key_watch.seed.or(options.seed);
        let (group, watch) = self.watches.join(&prefix, key.clone(), id, || key_watch);
        out.extend(watch);
        let slot = match (&self.shared_lease, self.shared_slot) {
            (Some(_), Some(slot)) => slot,
            (Some(lease), None) => {
                let slot = self.slots.insert(SlotSpec {
                    ttl: lease.ttl,
                    backoff: lease.options.backoff.clone(),
                    request_timeout: lease.options.request_timeout,
                    seed: seed_for(lease.options.seed, "shared lease"),
                    clock: lease.clock.clone(),
                    shared: true,
                });
                self.shared_slot = Some(slot);
                slot
            }
            (None, _) => self.slots.insert(SlotSpec {
                ttl,
                backoff: options.backoff.clone(),
                request_timeout: options.request_timeout,
                seed: seed_for(
                    options.seed,
                    &format!("{}/{}", instance.service, instance.id),
                ),
                clock: shared.clock.clone(),
                shared: false,
            }),
        };
        self.slots.join(slot, id);
        #[cfg(feature = "metrics")]
        if let Some(gauges) = shared.renewal_gauges() {
            self.slots.show_renewals(slot, id, gauges);
        }
        let waiting = ready.is_some();
        let member = Member::new(key, instance, (slot, group), shared, first, waiting);
        self.members.insert(id, member);
        match ready {
            Some(ready) => out.push(Call::AwaitReady { member: id, ready }),
            None => self.kick(slot, id, out),
        }
    }

    /// A member wants to be registered: grant if nothing is under way, put if the lease lives.
    fn kick(&mut self, slot: SlotId, id: MemberId, out: &mut Vec<Call>) {
        if self.slots.is_idle(slot) {
            out.extend(self.slots.grant(slot));
        } else if let Some(lease) = self.slots.lease(slot) {
            self.put(id, lease, Purpose::Register, out);
        }
    }

    fn put(&mut self, id: MemberId, lease: LeaseId, purpose: Purpose, out: &mut Vec<Call>) {
        let Some(m) = self.members.get_mut(id) else {
            return;
        };
        let limit = self
            .slots
            .request_timeout(m.slot)
            .unwrap_or(self.request_timeout);
        out.push(m.put(id, lease, purpose, limit));
    }

    fn granted(
        &mut self,
        slot: SlotId,
        token: u64,
        sent_at: Instant,
        now: Instant,
        result: registry_api::Result<registry_api::LeaseGrant>,
        out: &mut Vec<Call>,
    ) {
        let granted = result.as_ref().ok().map(|grant| grant.id);
        match self
            .slots
            .granted(slot, token, sent_at, now, result, &mut self.timers)
        {
            Granted::Alive(lease) => {
                tracing::debug!(%lease, "lease granted");
                for id in self.slots.members(slot).to_vec() {
                    if self
                        .members
                        .get(id)
                        .is_some_and(|m| m.phase == Phase::Pending)
                    {
                        self.put(id, lease, Purpose::Register, out);
                    }
                }
            }
            Granted::Stale => {
                // Granted for registrations that stopped meanwhile: let it go.
                if let Some(lease) = granted {
                    out.push(Call::Revoke {
                        lease,
                        limit: self.request_timeout,
                        then: None,
                    });
                }
            }
            Granted::Failed(error) => {
                tracing::warn!(%error, "lease grant failed");
                self.members.record(self.slots.members(slot), &error);
            }
            Granted::Refused(error) => self.refuse_slot(slot, error, out),
        }
    }

    #[inline]
    fn renewed(
        &mut self,
        renewal: Renewal,
        sent_at: Instant,
        now: Instant,
        answer: Result<i64, Arc<Error>>,
        out: &mut Vec<Call>,
    ) {
        let slot = renewal.slot;
        match self
            .slots
            .renewed(renewal, sent_at, now, answer, &mut self.timers)
        {
            Renewed::Alive { puts_held_back } => {
                if puts_held_back {
                    self.put_held_back(slot, out);
                }
            }
            Renewed::Lost => self.members_lost_lease(slot),
            Renewed::Failed(error) => self.members.record(self.slots.members(slot), &error),
            Renewed::Refused(error) => self.refuse_slot(slot, error, out),
            Renewed::Stale => {}
        }
    }

    fn backoff_over(&mut self, slot: SlotId, attempt: u32, out: &mut Vec<Call>) {
        let members = self.slots.members(slot);
        if !self.members.want_lease(members) {
            self.slots.idle(slot);
            return;
        }
        for id in members {
            if let Some(m) = self.members.get(*id) {
                m.re_registering(attempt);
            }
        }
        out.extend(self.slots.grant(slot));
    }

    /// The slot's lease is gone: its registered members are registered no more.
    fn lease_lost(&mut self, slot: SlotId, now: Instant) {
        self.slots.lose(slot, now, &mut self.timers);
        self.members_lost_lease(slot);
    }

    fn members_lost_lease(&mut self, slot: SlotId) {
        for id in self.slots.members(slot).to_vec() {
            if let Some(m) = self.members.get_mut(id) {
                m.lease_lost();
            }
        }
    }

    /// Puts every member of `slot` whose put failed or was held back, now that the lease is
    /// known to live.
    fn put_held_back(&mut self, slot: SlotId, out: &mut Vec<Call>) {
        let Some(lease) = self.slots.lease(slot) else {
            return;
        };
        for id in self.slots.members(slot).to_vec() {
            let Some(m) = self.members.get_mut(id) else {
                continue;
            };
            if m.phase == Phase::WaitingForReady || !std::mem::take(&mut m.needs_put) {
                continue;
            }
            let purpose = match m.phase {
                Phase::Registered(_) => Purpose::Restore,
                _ => Purpose::Register,
            };
            self.put(id, lease, purpose, out);
        }
    }

    fn change(
        &mut self,
        id: MemberId,
        reply: Reply,
        apply: impl FnOnce(&mut ServiceInstance),
        out: &mut Vec<Call>,
    ) {
        let Some(m) = self.members.get_mut(id) else {
            reply.send(Err(Error::Stopped("registration"))).ok();
            return;
        };
        let previous = match m.change(apply) {
            Ok(previous) => previous,
            Err(e) => {
                reply.send(Err(e)).ok();
                return;
            }
        };
        let lease = match m.phase {
            Phase::Registered(_) => self.slots.lease(m.slot),
            _ => None,
        };
        match lease {
            Some(lease) => self.put(id, lease, Purpose::Change { reply, previous }, out),
            // Written with the next registration.
            None => {
                reply.send(Ok(())).ok();
            }
        }
    }

    fn drain(
        &mut self,
        id: MemberId,
        grace: Duration,
        reply: Reply,
        now: Instant,
        out: &mut Vec<Call>,
    ) {
        let Some(m) = self.members.get_mut(id) else {
            reply.send(Ok(())).ok();
            return;
        };
        if !matches!(m.phase, Phase::Registered(_)) || m.is_draining() {
            self.stop(id, vec![reply], None, out);
            return;
        }
        let limit = self
            .slots
            .request_timeout(m.slot)
            .unwrap_or(self.request_timeout);
        let grace_end = m.start_drain(now, grace, limit, reply);
        let (slot, group) = (m.slot, m.group);
        self.watches.drain_started(group);
        self.timers
            .schedule(grace_end, Due::Drain { registration: id });
        if let Some(lease) = self.slots.lease(slot) {
            self.put(id, lease, Purpose::Drain, out);
        }
    }

    fn drain_put_failed(&mut self, id: MemberId, now: Instant, out: &mut Vec<Call>) {
        if self
            .members
            .get_mut(id)
            .is_some_and(Member::drain_put_failed)
        {
            self.check_drain(id, now, out);
        }
    }

    fn check_drain(&mut self, id: MemberId, now: Instant, out: &mut Vec<Call>) {
        let Some(m) = self.members.get(id) else {
            return;
        };
        match m.check_drain(now, self.watches.seen(m.group)) {
            DrainCheck::None | DrainCheck::Wait(None) => {}
            DrainCheck::Wait(Some(at)) => self.timers.schedule(at, Due::Drain { registration: id }),
            DrainCheck::Over => self.stop(id, Vec::new(), None, out),
        }
    }

    fn watched(&mut self, group: GroupId, event: WatcherEvent, now: Instant, out: &mut Vec<Call>) {
        let seen = self.watches.apply(group, event);
        for id in &seen.regressed {
            if let Some(m) = self.members.get_mut(*id) {
                m.regressed();
            }
        }
        // One put per lease first: when the lease itself is gone (it expired and took every
        // key on it), that one put finds out, and the others wait for the new lease instead
        // of failing too.
        let mut tried: Vec<SlotId> = Vec::new();
        for observation in &seen.observations {
            let Some(m) = self.members.get_mut(observation.member) else {
                continue;
            };
            if !m.needs_restore(observation) {
                continue;
            }
            let slot = m.slot;
            if tried.contains(&slot) {
                m.needs_put = true;
                self.slots.hold_put(slot);
                continue;
            }
            tried.push(slot);
            tracing::warn!("instance key deleted or overwritten; putting it back");
            if let Some(lease) = self.slots.lease(slot) {
                self.put(observation.member, lease, Purpose::Restore, out);
            }
        }
        for id in seen.drains_to_check {
            self.check_drain(id, now, out);
        }
    }
}
