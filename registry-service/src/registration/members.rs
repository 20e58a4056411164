//! Members: the registrations a registrar keeps, each waiting for readiness, pending (its lease
//! is not alive or its put is under way) or registered, and possibly draining.
//!
//! A member publishes its state to its handles through [`Shared`]; its transitions take what
//! the lease slots and key watches know as arguments, so each can be tested alone.

use super::calls::{Call, GroupId, MemberId, Purpose, SlotId};
use super::commands::Reply;
use super::key_watches::Observation;
use super::status::{RegistrationState, Shared};
use crate::backoff::deadline_after_from;
use crate::instance::{ServiceInstance, Status};
use crate::Error;
use bytes::Bytes;
use registry_api::limits::{check_put, DEFAULT_MAX_VALUE_BYTES};
use registry_api::{LeaseId, Revision};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Where a member stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    WaitingForReady,
    /// Wants to be in the registry: its lease is not alive yet, or its put is under way.
    Pending,
    Registered(LeaseId),
}

/// A drain under way: the member is written as draining, and stops once the grace period is
/// over and its watch has shown the draining value (or one more request timeout has passed,
/// or the value could not be written).
struct Drain {
    reply: Reply,
    grace_end: Instant,
    hard_end: Instant,
    target: Option<Revision>,
    put_failed: bool,
}

/// What a drain check found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum DrainCheck {
    /// Not draining.
    None,
    /// Not over: check again at this instant (`None`: a check is already due then).
    Wait(Option<Instant>),
    /// Over: stop the member now.
    Over,
}

/// One registration, as the registrar keeps it.
pub(super) struct Member {
    pub(super) key: Bytes,
    pub(super) instance: ServiceInstance,
    pub(super) value: Bytes,
    pub(super) slot: SlotId,
    pub(super) group: GroupId,
    pub(super) phase: Phase,
    pub(super) shared: Arc<Shared>,
    /// The reply `Registrar::register` waits for: the first registration's outcome.
    first: Option<Reply>,
    /// Puts under way.
    puts: u32,
    /// The revision of the last put that succeeded.
    last_put: Revision,
    /// Its put failed or was held back: put again after the next keep-alive that succeeds.
    pub(super) needs_put: bool,
    registered_once: bool,
    drain: Option<Drain>,
}

impl Member {
    /// A new member; `waiting`: for readiness.
    pub(super) fn new(
        key: Bytes,
        instance: ServiceInstance,
        (slot, group): (SlotId, GroupId),
        shared: Arc<Shared>,
        first: Option<Reply>,
        waiting: bool,
    ) -> Member {
        Member {
            key,
            value: Bytes::from(instance.to_json()),
            instance,
            slot,
            group,
            phase: if waiting {
                Phase::WaitingForReady
            } else {
                Phase::Pending
            },
            shared,
            first,
            puts: 0,
            last_put: Revision::default(),
            needs_put: false,
            registered_once: false,
            drain: None,
        }
    }

    /// True once it has been in the registry (its key may be there now).
    pub(super) fn registered_once(&self) -> bool {
        self.registered_once
    }

    pub(super) fn is_draining(&self) -> bool {
        self.drain.is_some()
    }

    /// Ready: it wants to be registered now.
    pub(super) fn ready(&mut self) -> bool {
        if self.phase != Phase::WaitingForReady {
            return false;
        }
        self.phase = Phase::Pending;
        self.shared
            .state
            .send_replace(RegistrationState::Registering);
        self.shared.state_changed();
        true
    }

    /// The call that puts the instance on `lease`.
    pub(super) fn put(
        &mut self,
        id: MemberId,
        lease: LeaseId,
        purpose: Purpose,
        limit: Duration,
    ) -> Call {
        self.puts += 1;
        Call::Put {
            member: id,
            key: self.key.clone(),
            value: self.value.clone(),
            lease,
            purpose,
            limit,
        }
    }

    /// A put is answered (whatever its outcome): one fewer under way.
    pub(super) fn put_answered(&mut self) {
        self.puts = self.puts.saturating_sub(1);
    }

    /// A put on `lease` succeeded at `revision` (`current`: the slot's lease is still that
    /// one). True when it registered the member.
    pub(super) fn put_succeeded(
        &mut self,
        lease: LeaseId,
        current: bool,
        revision: Revision,
    ) -> bool {
        self.last_put = self.last_put.max(revision);
        self.shared.details().revision = Some(revision);
        if self.phase != Phase::Pending || !current {
            self.shared.state.send_modify(|state| {
                if let RegistrationState::Registered { revision: r, .. } = state {
                    *r = revision;
                }
            });
            self.shared.state_changed();
            return false;
        }
        self.phase = Phase::Registered(lease);
        {
            let mut details = self.shared.details();
            details.lease = Some(lease);
            if self.registered_once {
                details.re_registrations += 1;
            }
        }
        self.registered_once = true;
        self.shared
            .state
            .send_replace(RegistrationState::Registered { lease, revision });
        self.shared.state_changed();
        tracing::info!(%lease, %revision, "registered");
        if let Some(first) = self.first.take() {
            first.send(Ok(())).ok();
        }
        true
    }

    /// Registered before and pending again: re-registration `attempt` begins.
    pub(super) fn re_registering(&self, attempt: u32) {
        if self.phase == Phase::Pending && self.registered_once {
            self.shared
                .state
                .send_replace(RegistrationState::ReRegistering { attempt });
            self.shared.state_changed();
        }
    }

    /// The member's lease is gone.
    pub(super) fn lease_lost(&mut self) {
        self.needs_put = false;
        if let Phase::Registered(_) = self.phase {
            self.phase = Phase::Pending;
            {
                let mut details = self.shared.details();
                details.lease_losses += 1;
                details.lease = None;
            }
            self.shared.state.send_replace(RegistrationState::LeaseLost);
            self.shared.state_changed();
        }
    }

    /// The store's revision went back (restored from an older backup): the last put's
    /// revision no longer compares with the store's, so whatever the watch shows from now on
    /// counts, and a drain waiting for the watch to show its value ends with its grace.
    pub(super) fn regressed(&mut self) {
        self.shared.details().regressions += 1;
        self.shared.counted();
        self.last_put = Revision::default();
        if let Some(drain) = &mut self.drain {
            if drain.target.is_some() {
                drain.target = Some(Revision::default());
            }
        }
    }

    /// True when `seen` calls for putting the instance back: the member is registered, no
    /// put of its own is under way, what was seen is newer than its last put, and the key is
    /// missing or not its own (another value, another lease).
    pub(super) fn needs_restore(&self, seen: &Observation) -> bool {
        let Phase::Registered(lease) = self.phase else {
            return false;
        };
        if self.puts > 0 || seen.at <= self.last_put {
            // Overtaken by a put under way, or no newer than the last one (that put's own
            // effect, whatever the backend made of it): says nothing now.
            return false;
        }
        let intact = seen
            .shown
            .as_ref()
            .is_some_and(|shown| shown.lease == Some(lease) && shown.value == self.value);
        !intact
    }

    /// Applies a change of metadata or status: the previous instance and value, to restore if
    /// the registry refuses the new one. Fails, changing nothing, on a value over the limit.
    pub(super) fn change(
        &mut self,
        apply: impl FnOnce(&mut ServiceInstance),
    ) -> crate::Result<Box<(ServiceInstance, Bytes)>> {
        let mut instance = self.instance.clone();
        apply(&mut instance);
        let value = instance.to_json();
        check_put(&self.key, &value, DEFAULT_MAX_VALUE_BYTES)?;
        self.shared.details().status = instance.status;
        let previous_instance = std::mem::replace(&mut self.instance, instance);
        let previous_value = std::mem::replace(&mut self.value, Bytes::from(value));
        Ok(Box::new((previous_instance, previous_value)))
    }

    /// The registry refused a changed value: back to the one before.
    pub(super) fn revert(&mut self, (instance, value): (ServiceInstance, Bytes)) {
        self.shared.details().status = instance.status;
        self.instance = instance;
        self.value = value;
    }

    /// Starts draining: written as draining from now on, stopping once `grace` is over and the
    /// watch has shown it (at most `limit` later).
    pub(super) fn start_drain(
        &mut self,
        now: Instant,
        grace: Duration,
        limit: Duration,
        reply: Reply,
    ) -> Instant {
        let grace_end = deadline_after_from(now, grace);
        self.drain = Some(Drain {
            reply,
            grace_end,
            hard_end: deadline_after_from(grace_end, limit),
            target: None,
            put_failed: false,
        });
        self.instance.status = Status::Draining;
        self.value = Bytes::from(self.instance.to_json());
        self.shared.details().status = Status::Draining;
        tracing::info!(?grace, "draining");
        grace_end
    }

    /// The draining value was written at `revision`.
    pub(super) fn drain_written(&mut self, revision: Revision) {
        if let Some(drain) = &mut self.drain {
            drain.target = Some(revision);
        }
    }

    /// The draining value could not be written: the drain ends at the grace's end.
    pub(super) fn drain_put_failed(&mut self) -> bool {
        match &mut self.drain {
            Some(drain) => {
                drain.put_failed = true;
                true
            }
            None => false,
        }
    }

    /// Whether the drain is over, the watch having shown everything up to `seen`.
    pub(super) fn check_drain(&self, now: Instant, seen: Revision) -> DrainCheck {
        let Some(drain) = &self.drain else {
            return DrainCheck::None;
        };
        if now < drain.grace_end {
            return DrainCheck::Wait(None);
        }
        let shown = drain.target.is_some_and(|target| seen >= target);
        if shown || drain.put_failed || now >= drain.hard_end {
            DrainCheck::Over
        } else {
            DrainCheck::Wait(Some(drain.hard_end))
        }
    }

    /// Everyone waiting on the member, as it leaves: the drain's caller and a caller of
    /// `register` still waiting (told `first_outcome`).
    pub(super) fn leave(&mut self, first_outcome: impl FnOnce() -> Error) -> Vec<Reply> {
        if let Some(first) = self.first.take() {
            first.send(Err(first_outcome())).ok();
        }
        self.drain
            .take()
            .map(|drain| drain.reply)
            .into_iter()
            .collect()
    }
}

/// Every member of a registrar, by id.
#[derive(Default)]
pub(super) struct Members {
    by_id: HashMap<MemberId, Member>,
}

impl Members {
    pub(super) fn insert(&mut self, id: MemberId, member: Member) {
        self.by_id.insert(id, member);
    }

    pub(super) fn get(&self, id: MemberId) -> Option<&Member> {
        self.by_id.get(&id)
    }

    pub(super) fn get_mut(&mut self, id: MemberId) -> Option<&mut Member> {
        self.by_id.get_mut(&id)
    }

    pub(super) fn remove(&mut self, id: MemberId) -> Option<Member> {
        self.by_id.remove(&id)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// True when any of `ids` wants the lease now.
    pub(super) fn want_lease(&self, ids: &[MemberId]) -> bool {
        ids.iter()
            .any(|id| self.get(*id).is_some_and(|m| m.phase == Phase::Pending))
    }

    /// Records `error` as the last one of each of `ids`.
    pub(super) fn record(&self, ids: &[MemberId], error: &Arc<Error>) {
        for id in ids {
            if let Some(member) = self.get(*id) {
                member.shared.record(error);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::key_watches::Shown;
    use super::super::lease_clock::LeaseClock;
    use super::*;
    use tokio::sync::oneshot;

    fn member(first: Option<Reply>) -> Member {
        let clock = Arc::new(LeaseClock::new(Instant::now()));
        let shared = Arc::new(Shared::new(
            RegistrationState::Registering,
            Status::Serving,
            clock,
        ));
        let instance = ServiceInstance::new("hello", "a", "127.0.0.1:80");
        Member::new(
            Bytes::from_static(b"services/hello/a"),
            instance,
            (0, 0),
            shared,
            first,
            false,
        )
    }

    #[test]
    fn the_first_put_registers_and_answers_the_caller_waiting_for_it() {
        let (reply, mut answer) = oneshot::channel();
        let mut m = member(Some(reply));
        let call = m.put(1, LeaseId(7), Purpose::Register, Duration::from_secs(1));
        assert!(matches!(
            call,
            Call::Put {
                lease: LeaseId(7),
                ..
            }
        ));
        m.put_answered();
        assert!(m.put_succeeded(LeaseId(7), true, Revision(3)));
        assert!(matches!(answer.try_recv(), Ok(Ok(()))));
        assert_eq!(
            *m.shared.state.borrow(),
            RegistrationState::Registered {
                lease: LeaseId(7),
                revision: Revision(3)
            }
        );
        // A put for a lease that is no longer the slot's registers nothing.
        m.lease_lost();
        assert!(!m.put_succeeded(LeaseId(7), false, Revision(4)));
        assert_eq!(*m.shared.state.borrow(), RegistrationState::LeaseLost);
        assert_eq!(m.shared.details().lease_losses, 1);
    }

    #[test]
    fn a_key_is_put_back_only_when_what_is_seen_is_newer_and_not_its_own() {
        let mut m = member(None);
        m.put(1, LeaseId(7), Purpose::Register, Duration::from_secs(1));
        let gone = |at| Observation {
            member: 1,
            shown: None,
            at: Revision(at),
        };
        assert!(!m.needs_restore(&gone(9)), "not registered yet");
        m.put_answered();
        m.put_succeeded(LeaseId(7), true, Revision(5));
        assert!(!m.needs_restore(&gone(4)), "older than its put");
        assert!(!m.needs_restore(&gone(5)), "its put itself");
        assert!(m.needs_restore(&gone(6)));
        let own = Observation {
            member: 1,
            shown: Some(Shown {
                lease: Some(LeaseId(7)),
                value: m.value.clone(),
            }),
            at: Revision(6),
        };
        assert!(!m.needs_restore(&own));
        let overwritten = Observation {
            shown: Some(Shown {
                lease: None,
                value: m.value.clone(),
            }),
            ..own
        };
        assert!(m.needs_restore(&overwritten));
        m.put(1, LeaseId(7), Purpose::Restore, Duration::from_secs(1));
        assert!(!m.needs_restore(&overwritten), "a put is under way");
    }

    #[test]
    fn after_the_store_went_back_a_missing_key_below_the_last_put_is_put_back() {
        let mut m = member(None);
        m.put(1, LeaseId(7), Purpose::Register, Duration::from_secs(1));
        m.put_answered();
        m.put_succeeded(LeaseId(7), true, Revision(30));
        // Restored to a backup taken at revision 6: the key is gone, at revisions the member
        // took for its own past.
        let gone = Observation {
            member: 1,
            shown: None,
            at: Revision(8),
        };
        assert!(
            !m.needs_restore(&gone),
            "older than its put, before it is told"
        );
        m.regressed();
        assert!(m.needs_restore(&gone));
    }

    #[test]
    fn a_drain_ends_when_the_watch_shows_it_after_the_grace_or_at_the_hard_end() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(2);
        let limit = Duration::from_secs(5);
        let mut m = member(None);
        let (reply, _answer) = oneshot::channel();
        assert_eq!(m.start_drain(t0, grace, limit, reply), t0 + grace);
        assert!(m.value.windows(8).any(|w| w == b"draining"));
        m.drain_written(Revision(9));
        assert_eq!(m.check_drain(t0, Revision(9)), DrainCheck::Wait(None));
        assert_eq!(
            m.check_drain(t0 + grace, Revision(8)),
            DrainCheck::Wait(Some(t0 + grace + limit))
        );
        assert_eq!(m.check_drain(t0 + grace, Revision(9)), DrainCheck::Over);
        assert_eq!(
            m.check_drain(t0 + grace + limit, Revision(8)),
            DrainCheck::Over
        );
    }

    #[test]
    fn a_refused_change_goes_back_to_the_value_before() {
        let mut m = member(None);
        let before = m.value.clone();
        let previous = m.change(|i| i.status = Status::Draining).unwrap();
        assert_ne!(m.value, before);
        assert_eq!(m.shared.details().status, Status::Draining);
        m.revert(*previous);
        assert_eq!(m.value, before);
        assert_eq!(m.shared.details().status, Status::Serving);
        let huge = "x".repeat(DEFAULT_MAX_VALUE_BYTES + 1);
        assert!(m
            .change(|i| {
                i.metadata.labels.insert("big".into(), huge);
            })
            .is_err());
        assert_eq!(m.value, before, "nothing changed");
    }
}
