//! The registrar's state: its lease slots, members and key watches, and how each event (a
//! command, an answer, a watch event, a timer) moves through them.
//!
//! Every method takes the event and the time it happens at and pushes the [`Call`]s to make;
//! nothing here awaits or touches the registry, so the whole registrar can be driven by a test
//! on a fake clock (see the tests below), and the driver only makes the calls and feeds the
//! answers back.

use super::calls::{
    ends_registration, shared, Answer, Call, GroupId, Leaving, MemberId, Purpose, Renewal, SlotId,
};
use super::commands::{Command, Reply, Start, Stop};
use super::key_watches::KeyWatches;
use super::lease_clock::LeaseClock;
use super::leases::{Fired, Granted, Renewed, SlotSpec, Slots};
use super::members::{DrainCheck, Member, Members, Phase};
use super::options::RegistrationOptions;
use super::status::RegistrationState;
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
            Answer::Left { leaving, result } => finish(leaving, result),
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

    /// The registry refused what the slot needs for good: every member of it ends.
    fn refuse_slot(&mut self, slot: SlotId, error: Arc<Error>, out: &mut Vec<Call>) {
        tracing::error!(%error, "the registry refused the lease; its registrations end");
        for id in self.slots.members(slot).to_vec() {
            self.stop(id, Vec::new(), Some(error.clone()), out);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn put_answered(
        &mut self,
        id: MemberId,
        key: Bytes,
        lease: LeaseId,
        purpose: Purpose,
        result: registry_api::Result<registry_api::PutResponse>,
        now: Instant,
        out: &mut Vec<Call>,
    ) {
        let Some(m) = self.members.get_mut(id) else {
            if let Purpose::Change { reply, .. } = purpose {
                reply.send(Err(Error::Stopped("registration"))).ok();
            }
            // Stopped while its put was under way: on a shared lease, which lives on, the key
            // would stay; take it back. (An own lease was revoked, and its keys with it.)
            let shared_lease = self.shared_slot.and_then(|slot| self.slots.lease(slot));
            if result.is_ok() && shared_lease == Some(lease) {
                out.push(Call::Delete {
                    key,
                    limit: self.request_timeout,
                    then: None,
                });
            }
            return;
        };
        m.put_answered();
        let slot = m.slot;
        let current = self.slots.lease(slot) == Some(lease);
        let error = match result {
            Ok(put) => {
                if m.put_succeeded(lease, current, put.revision) {
                    self.slots.registered(slot);
                }
                match purpose {
                    Purpose::Change { reply, .. } => {
                        reply.send(Ok(())).ok();
                    }
                    Purpose::Drain => {
                        m.drain_written(put.revision);
                        self.check_drain(id, now, out);
                    }
                    Purpose::Restore => {
                        if self.slots.release_puts(slot) {
                            self.put_held_back(slot, out);
                        }
                    }
                    Purpose::Register => {}
                }
                return;
            }
            Err(error) => error,
        };
        if matches!(error, registry_api::Error::LeaseNotFound(dead) if dead == lease) {
            if let Purpose::Change { reply, .. } = purpose {
                // Kept: written with the next registration.
                reply.send(Ok(())).ok();
            }
            if current {
                self.lease_lost(slot, now);
            }
            self.drain_put_failed(id, now, out);
            return;
        }
        let value_refused = matches!(
            error,
            registry_api::Error::InvalidArgument(_) | registry_api::Error::TooLarge { .. }
        );
        let terminal = ends_registration(&error);
        let error = shared(error);
        match purpose {
            Purpose::Change { reply, previous } if value_refused => {
                // The backend refused the new value itself: the registration goes on with the
                // one before.
                m.revert(previous);
                reply.send(Err(Error::clone(&error))).ok();
                self.drain_put_failed(id, now, out);
            }
            purpose if terminal => {
                if let Purpose::Change { reply, .. } = purpose {
                    reply.send(Err(Error::clone(&error))).ok();
                }
                tracing::error!(%error, "the registry refused the registration; it ends");
                self.stop(id, Vec::new(), Some(error), out);
            }
            purpose => {
                tracing::warn!(%error, "put failed");
                m.shared.record(&error);
                let separate_first = m.phase == Phase::Pending
                    && matches!(purpose, Purpose::Register)
                    && !self.slots.is_shared(slot);
                if separate_first && current {
                    // The lease is of no use without the key: let it go and try again later,
                    // as a failed attempt.
                    let limit = self
                        .slots
                        .request_timeout(slot)
                        .unwrap_or(self.request_timeout);
                    out.push(Call::Revoke {
                        lease,
                        limit,
                        then: None,
                    });
                    self.slots.back_off(slot, now, &mut self.timers);
                } else {
                    m.needs_put = true;
                    self.slots.hold_put(slot);
                }
                if let Purpose::Change { reply, .. } = purpose {
                    reply.send(Err(Error::clone(&error))).ok();
                }
                self.drain_put_failed(id, now, out);
            }
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

    /// Removes a registration and gives up its key: revokes its own lease, or on a shared lease
    /// deletes its key (and revokes the lease when it was the last). `failure`: it ends with
    /// that error instead of deregistering.
    fn stop(
        &mut self,
        id: MemberId,
        mut replies: Vec<Reply>,
        failure: Option<Arc<Error>>,
        out: &mut Vec<Call>,
    ) {
        let Some(mut m) = self.members.remove(id) else {
            for reply in replies {
                reply.send(Ok(())).ok();
            }
            return;
        };
        let draining = m.is_draining();
        replies.extend(m.leave(|| match &failure {
            Some(failure) => Error::clone(failure),
            None => Error::Stopped("registration"),
        }));
        out.extend(self.watches.leave(m.group, &m.key, draining));
        let slot = m.slot;
        let last = self.slots.leave(slot, id);
        let limit = self
            .slots
            .request_timeout(slot)
            .unwrap_or(self.request_timeout);
        let registered_once = m.registered_once();
        let mut leaving = Some(Leaving {
            shared: m.shared,
            replies,
            failure,
        });
        if leaving.as_ref().is_some_and(|l| l.failure.is_some()) {
            // A failure is told at once; the revoke or delete that follows only cleans up.
            if let Some(l) = leaving.take() {
                finish(l, Ok(()));
            }
        }
        if !self.slots.is_shared(slot) {
            match self.slots.remove(slot) {
                Some(lease) => out.push(Call::Revoke {
                    lease,
                    limit,
                    then: leaving,
                }),
                None => leaving.into_iter().for_each(|l| finish(l, Ok(()))),
            }
            return;
        }
        let lease = self.slots.lease(slot);
        if last {
            self.slots.idle(slot);
        }
        match (lease, last) {
            (Some(lease), true) => out.push(Call::Revoke {
                lease,
                limit,
                then: leaving,
            }),
            (Some(_), false) if registered_once => out.push(Call::Delete {
                key: m.key,
                limit,
                then: leaving,
            }),
            _ => leaving.into_iter().for_each(|l| finish(l, Ok(()))),
        }
    }

    /// Forgets an abandoned registration without touching the registry: its key stays until
    /// its lease expires.
    fn forget(&mut self, id: MemberId, out: &mut Vec<Call>) {
        let Some(m) = self.members.remove(id) else {
            return;
        };
        out.extend(self.watches.leave(m.group, &m.key, m.is_draining()));
        self.slots.leave(m.slot, id);
        if !self.slots.is_shared(m.slot) {
            self.slots.remove(m.slot);
        }
        tracing::info!("abandoned");
    }
}

/// A registration has left: its state, and the answer to everyone waiting.
fn finish(leaving: Leaving, result: registry_api::Result<()>) {
    let Leaving {
        shared,
        replies,
        failure,
    } = leaving;
    let outcome = match (&failure, result) {
        (Some(failure), _) => Err(Error::clone(failure)),
        (None, Ok(()) | Err(registry_api::Error::LeaseNotFound(_))) => Ok(()),
        (None, Err(e)) => Err(Error::from(e)),
    };
    match failure {
        Some(failure) => shared.fail(failure),
        None => {
            shared.details().lease = None;
            shared.state.send_replace(RegistrationState::Deregistered);
            tracing::info!(ok = outcome.is_ok(), "deregistered");
        }
    }
    for reply in replies {
        reply.send(outcome.clone()).ok();
    }
}

#[cfg(test)]
mod tests {
    use super::super::calls::Answer;
    use super::*;
    use crate::instance::Status;
    use crate::watcher::Change;
    use registry_api::{KeyValue, LeaseGrant, PutResponse, Revision};
    use tokio::sync::oneshot;

    const KEY: &[u8] = b"services/hello/a";

    /// A registrar's machines with one registration started at `t0`; its handle's state.
    fn started(t0: Instant) -> (Machines, Arc<super::super::status::Shared>, Vec<Call>) {
        let mut machines = Machines::new(None, WatcherConfig::default());
        let clock = Arc::new(LeaseClock::new(t0));
        let shared = Arc::new(super::super::status::Shared::new(
            RegistrationState::Registering,
            Status::Serving,
            clock,
        ));
        let start = Start {
            id: 1,
            key: String::from_utf8(KEY.to_vec()).unwrap(),
            prefix: "services/hello/".to_owned(),
            instance: ServiceInstance::new("hello", "a", "127.0.0.1:80"),
            ttl: 6,
            options: RegistrationOptions::default().seed(1),
            shared: shared.clone(),
            first: None,
            ready: None,
        };
        let mut calls = Vec::new();
        machines.on_command(Command::Start(Box::new(start)), t0, &mut calls);
        (machines, shared, calls)
    }

    /// Answers the grant among `calls` with lease 7, and the put that follows at revision 2.
    fn registered(machines: &mut Machines, calls: Vec<Call>, t0: Instant) {
        let (slot, token) = calls
            .iter()
            .find_map(|call| match call {
                Call::Grant { slot, token, .. } => Some((*slot, *token)),
                _ => None,
            })
            .expect("a grant");
        let mut puts = Vec::new();
        let grant = Answer::Granted {
            slot,
            token,
            sent_at: t0,
            result: Ok(LeaseGrant {
                id: LeaseId(7),
                ttl: 6,
            }),
        };
        machines.on_answer(grant, t0, &mut puts);
        answer_put(machines, puts, Ok(Revision(2)), t0);
    }

    /// Answers the one put among `calls` with `outcome`; the calls that follow.
    fn answer_put(
        machines: &mut Machines,
        calls: Vec<Call>,
        outcome: Result<Revision, registry_api::Error>,
        now: Instant,
    ) -> Vec<Call> {
        let mut next = Vec::new();
        for call in calls {
            if let Call::Put {
                member,
                key,
                lease,
                purpose,
                ..
            } = call
            {
                let result = match &outcome {
                    Ok(revision) => Ok(PutResponse {
                        revision: *revision,
                        prev_kv: None,
                    }),
                    Err(_) => Err(registry_api::Error::permission_denied("not yours")),
                };
                let answer = Answer::Put {
                    member,
                    key,
                    lease,
                    purpose,
                    result,
                };
                machines.on_answer(answer, now, &mut next);
                return next;
            }
        }
        panic!("no put among the calls")
    }

    fn deleted(revision: i64) -> Answer {
        Answer::Watched {
            group: 0,
            event: WatcherEvent::Changed {
                revision: Revision(revision),
                changes: vec![Change::Delete {
                    prev: KeyValue {
                        key: Bytes::from_static(KEY),
                        ..KeyValue::default()
                    },
                }],
                resync: false,
            },
        }
    }

    #[test]
    fn a_start_grants_puts_and_registers() {
        let t0 = Instant::now();
        let (mut machines, shared, calls) = started(t0);
        assert!(
            matches!(calls[0], Call::Watch { .. }),
            "the service's key watch"
        );
        assert!(matches!(calls[1], Call::Grant { ttl: 6, .. }));
        registered(&mut machines, calls, t0);
        assert_eq!(
            *shared.state.borrow(),
            RegistrationState::Registered {
                lease: LeaseId(7),
                revision: Revision(2)
            }
        );
        assert_eq!(machines.next_timer(), Some(t0 + Duration::from_secs(2)));
    }

    #[test]
    fn a_key_the_watch_shows_deleted_is_put_back_on_its_lease() {
        let t0 = Instant::now();
        let (mut machines, _shared, calls) = started(t0);
        registered(&mut machines, calls, t0);
        let mut calls = Vec::new();
        machines.on_answer(deleted(1), t0, &mut calls);
        assert!(calls.is_empty(), "older than the registration's put");
        machines.on_answer(deleted(3), t0, &mut calls);
        assert!(matches!(
            &calls[..],
            [Call::Put {
                lease: LeaseId(7),
                purpose: Purpose::Restore,
                ..
            }]
        ));
    }

    #[test]
    fn a_put_back_refused_for_good_ends_the_registration_and_revokes_its_lease() {
        let t0 = Instant::now();
        let (mut machines, shared, calls) = started(t0);
        registered(&mut machines, calls, t0);
        let mut calls = Vec::new();
        machines.on_answer(deleted(3), t0, &mut calls);
        let after = answer_put(
            &mut machines,
            calls,
            Err(registry_api::Error::backend("")),
            t0,
        );
        assert_eq!(*shared.state.borrow(), RegistrationState::Failed);
        assert!(matches!(
            shared.failure().as_ref().and_then(Error::as_registry),
            Some(registry_api::Error::PermissionDenied { .. })
        ));
        assert!(after.iter().any(|call| matches!(
            call,
            Call::Revoke {
                lease: LeaseId(7),
                ..
            }
        )));
        assert!(after
            .iter()
            .any(|call| matches!(call, Call::Unwatch { .. })));
        assert!(machines.is_empty());
    }

    #[test]
    fn a_deregistration_revokes_and_answers_once_the_revoke_is_answered() {
        let t0 = Instant::now();
        let (mut machines, shared, calls) = started(t0);
        registered(&mut machines, calls, t0);
        let (reply, mut answer) = oneshot::channel();
        let mut calls = Vec::new();
        let stop = Command::Stop {
            id: 1,
            how: Stop::Now,
            reply,
        };
        machines.on_command(stop, t0, &mut calls);
        let leaving = calls.into_iter().find_map(|call| match call {
            Call::Revoke {
                lease: LeaseId(7),
                then: Some(leaving),
                ..
            } => Some(leaving),
            _ => None,
        });
        assert!(answer.try_recv().is_err(), "not before the revoke's answer");
        let left = Answer::Left {
            leaving: leaving.expect("a revoke"),
            result: Ok(()),
        };
        machines.on_answer(left, t0, &mut Vec::new());
        assert!(matches!(answer.try_recv(), Ok(Ok(()))));
        assert_eq!(*shared.state.borrow(), RegistrationState::Deregistered);
    }
}
