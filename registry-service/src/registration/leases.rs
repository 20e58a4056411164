//! Lease slots: the leases the registrar keeps alive, one per registration, or one for all on
//! a registrar with a shared lease.
//!
//! A slot is idle (no lease, and no member wants one yet), granting, alive (a keep-alive every
//! TTL/3 from when the last grant or keep-alive was *sent*), or waiting out a backoff before the
//! next grant. It is lost when a keep-alive answers "not found" or none has succeeded for a
//! whole TTL. Every transition takes the time it happens at and says what follows; none calls
//! the registry.

use super::calls::{ends_registration, Call, MemberId, Renewal, SlotId};
use super::lease_clock::LeaseClock;
use super::timers::{Due, Timers};
use crate::backoff::{deadline_after_from, Backoff};
use crate::seed::SplitMix64;
use crate::Error;
use registry_api::limits::MAX_KEEP_ALIVE_BATCH;
use registry_api::{LeaseGrant, LeaseId};
use slab::Slab;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How much earlier than its own time a lease may be renewed to join a round that is going
/// out: a tenth of a second, against rounds seconds apart at the usual TTLs.
const RENEW_EARLY_AT_MOST: Duration = Duration::from_millis(100);

/// How soon a keep-alive that failed is tried again (at most; never later than the next round
/// would be). Waiting a whole TTL/3 would let two failed rounds put the third on the lease's
/// deadline, so a link healed well before the deadline would still lose the lease; etcd's own
/// client resends every 500 ms once a keep-alive is overdue.
const RETRY_FAILED_KEEP_ALIVE: Duration = Duration::from_millis(500);

/// What a new slot is made of.
pub(super) struct SlotSpec {
    pub(super) ttl: i64,
    pub(super) backoff: Backoff,
    pub(super) request_timeout: Duration,
    pub(super) seed: u64,
    pub(super) clock: Arc<LeaseClock>,
    pub(super) shared: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// One lease kept alive for its members.
pub(super) struct Slot {
    members: Vec<MemberId>,
    ttl: i64,
    backoff: Backoff,
    request_timeout: Duration,
    rng: SplitMix64,
    phase: Phase,
    attempt: u32,
    /// The token of the timer that counts, and of the grant or keep-alive in flight.
    timer: u64,
    call: u64,
    /// A member's put failed or was held back: put again after the next keep-alive that
    /// succeeds.
    needs_put: bool,
    clock: Arc<LeaseClock>,
    shared: bool,
    /// The renewal series of the members, set by each renewal; inline for the one member of
    /// a lease of its own, so that a round touches no memory beyond the slot.
    #[cfg(feature = "metrics")]
    gauges: smallvec::SmallVec<[(MemberId, crate::metrics::RenewalGauges); 1]>,
}

/// What a grant's answer led to.
#[derive(Debug)]
pub(super) enum Granted {
    /// The slot's lease lives: its pending members can be put.
    Alive(LeaseId),
    /// The answer no longer counts (the slot stopped or asked again since): a lease granted
    /// anyway must be let go.
    Stale,
    /// The grant failed; the slot waits out a backoff.
    Failed(Arc<Error>),
    /// The registry refused the grant for good: the slot's members end.
    Refused(Arc<Error>),
}

/// What a keep-alive's answer led to.
#[derive(Debug)]
pub(super) enum Renewed {
    /// Renewed. `puts_held_back`: members whose put failed or waited can be put now.
    Alive { puts_held_back: bool },
    /// The lease is gone (not found, or past its deadline): the slot waits out a backoff
    /// before a new grant, and its registered members are no longer registered.
    Lost,
    /// The keep-alive failed; it is tried again within half a second (or at the next round,
    /// if that comes first).
    Failed(Arc<Error>),
    /// The registry refused the keep-alive for good: the slot's members end.
    Refused(Arc<Error>),
    /// The answer no longer counts.
    Stale,
}

/// What a slot's timer led to.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Fired {
    /// A backoff ended: grant again if a member still wants the lease (this is `attempt`).
    BackoffOver { attempt: u32 },
    /// The lease's keep-alive joined the round.
    Renewing,
    /// A timer that no longer counts.
    Stale,
}

/// What a round's renewals share, computed once per (sent, answered, TTL): at scale a round
/// renews thousands of leases answered together, and this keeps each to a few stores.
#[derive(Clone, Copy)]
struct Round {
    sent_at: Instant,
    now: Instant,
    ttl: Duration,
    deadline: Instant,
    next: Instant,
    stored: (u64, u64),
    round_trip: u64,
    #[cfg(feature = "metrics")]
    series: crate::metrics::RenewalValues,
}

/// Every lease slot of a registrar.
#[derive(Default)]
pub(super) struct Slots {
    slab: Slab<Slot>,
    tokens: u64,
    round: Option<Round>,
}

impl Slots {
    fn token(&mut self) -> u64 {
        self.tokens += 1;
        self.tokens
    }

    pub(super) fn insert(&mut self, spec: SlotSpec) -> SlotId {
        self.slab.insert(Slot {
            members: Vec::new(),
            ttl: spec.ttl,
            backoff: spec.backoff,
            request_timeout: spec.request_timeout,
            rng: SplitMix64::new(spec.seed),
            phase: Phase::Idle,
            attempt: 0,
            timer: 0,
            call: 0,
            needs_put: false,
            clock: spec.clock,
            shared: spec.shared,
            #[cfg(feature = "metrics")]
            gauges: smallvec::SmallVec::new(),
        })
    }

    /// Removes a slot; its timers and answers are stale from now on.
    pub(super) fn remove(&mut self, slot: SlotId) -> Option<LeaseId> {
        self.slab.try_remove(slot).and_then(|s| s.lease())
    }

    pub(super) fn join(&mut self, slot: SlotId, member: MemberId) {
        if let Some(s) = self.slab.get_mut(slot) {
            s.members.push(member);
        }
    }

    /// Sets `gauges` of `member` on every renewal of `slot`'s lease, until the member leaves.
    #[cfg(feature = "metrics")]
    pub(super) fn show_renewals(
        &mut self,
        slot: SlotId,
        member: MemberId,
        gauges: crate::metrics::RenewalGauges,
    ) {
        if let Some(s) = self.slab.get_mut(slot) {
            s.gauges.push((member, gauges));
        }
    }

    /// Takes `member` out; true when it was the last one.
    pub(super) fn leave(&mut self, slot: SlotId, member: MemberId) -> bool {
        let Some(s) = self.slab.get_mut(slot) else {
            return false;
        };
        s.members.retain(|m| *m != member);
        #[cfg(feature = "metrics")]
        s.gauges.retain(|(m, _)| *m != member);
        s.members.is_empty()
    }

    pub(super) fn members(&self, slot: SlotId) -> &[MemberId] {
        self.slab.get(slot).map_or(&[], |s| &s.members)
    }

    pub(super) fn lease(&self, slot: SlotId) -> Option<LeaseId> {
        self.slab.get(slot).and_then(Slot::lease)
    }

    pub(super) fn is_shared(&self, slot: SlotId) -> bool {
        self.slab.get(slot).is_some_and(|s| s.shared)
    }

    pub(super) fn request_timeout(&self, slot: SlotId) -> Option<Duration> {
        self.slab.get(slot).map(|s| s.request_timeout)
    }

    /// True while nothing is under way for the slot: no lease, no grant, no backoff.
    pub(super) fn is_idle(&self, slot: SlotId) -> bool {
        self.slab.get(slot).is_some_and(|s| s.phase == Phase::Idle)
    }

    /// Back to idle, every timer and answer of the slot stale: its last member left a shared
    /// lease, or no member wants the lease any more.
    pub(super) fn idle(&mut self, slot: SlotId) {
        if let Some(s) = self.slab.get_mut(slot) {
            s.phase = Phase::Idle;
            s.timer = 0;
            s.call = 0;
            s.attempt = 0;
            s.needs_put = false;
        }
    }

    /// Asks for a lease.
    pub(super) fn grant(&mut self, slot: SlotId) -> Option<Call> {
        let token = self.token();
        let s = self.slab.get_mut(slot)?;
        s.phase = Phase::Granting;
        s.call = token;
        Some(Call::Grant {
            slot,
            token,
            ttl: s.ttl,
            limit: s.request_timeout,
        })
    }

    /// A grant sent at `sent_at` was answered now.
    pub(super) fn granted(
        &mut self,
        slot: SlotId,
        token: u64,
        sent_at: Instant,
        now: Instant,
        result: registry_api::Result<LeaseGrant>,
        timers: &mut Timers,
    ) -> Granted {
        let live = self
            .slab
            .get(slot)
            .is_some_and(|s| s.call == token && s.phase == Phase::Granting);
        if !live {
            return Granted::Stale;
        }
        match result {
            Ok(grant) => {
                let ttl = Duration::from_secs(u64::try_from(grant.ttl.max(1)).unwrap_or(1));
                let deadline = deadline_after_from(sent_at, ttl);
                let next = deadline_after_from(now, ttl / 3).min(deadline);
                let timer = self.token();
                let Some(s) = self.slab.get_mut(slot) else {
                    return Granted::Stale;
                };
                s.phase = Phase::Alive {
                    lease: grant.id,
                    ttl,
                    deadline,
                    in_flight: false,
                };
                s.needs_put = false;
                s.clock.renewed(sent_at, ttl);
                s.clock
                    .answered_after(now.saturating_duration_since(sent_at));
                s.timer = timer;
                timers.schedule(next, lease_due(slot, timer));
                Granted::Alive(grant.id)
            }
            Err(e) if ends_registration(&e) => {
                self.idle(slot);
                Granted::Refused(Arc::new(e.into()))
            }
            Err(e) => {
                self.back_off(slot, now, timers);
                Granted::Failed(Arc::new(e.into()))
            }
        }
    }

    /// Waits before the next grant, the wait growing with each failed attempt.
    pub(super) fn back_off(&mut self, slot: SlotId, now: Instant, timers: &mut Timers) {
        let timer = self.token();
        let Some(s) = self.slab.get_mut(slot) else {
            return;
        };
        s.phase = Phase::Backoff;
        s.call = 0;
        s.attempt = s.attempt.saturating_add(1);
        let wait = s.backoff.delay(s.attempt, &mut s.rng);
        s.timer = timer;
        timers.schedule(deadline_after_from(now, wait), lease_due(slot, timer));
    }

    /// The lease is gone: a backoff, counted from the first attempt, before a new grant.
    pub(super) fn lose(&mut self, slot: SlotId, now: Instant, timers: &mut Timers) {
        let Some(s) = self.slab.get_mut(slot) else {
            return;
        };
        tracing::warn!(lease = ?s.lease(), "lease lost; re-registering");
        s.attempt = 0;
        s.needs_put = false;
        self.back_off(slot, now, timers);
    }

    /// A member is registered on the slot's lease: the next loss backs off from the start.
    pub(super) fn registered(&mut self, slot: SlotId) {
        if let Some(s) = self.slab.get_mut(slot) {
            s.attempt = 0;
        }
    }

    /// A member's put failed or waits: put it after the next keep-alive that succeeds.
    pub(super) fn hold_put(&mut self, slot: SlotId) {
        if let Some(s) = self.slab.get_mut(slot) {
            s.needs_put = true;
        }
    }

    /// Takes the held-back puts of the slot: true when there were any.
    pub(super) fn release_puts(&mut self, slot: SlotId) -> bool {
        self.slab
            .get_mut(slot)
            .is_some_and(|s| std::mem::take(&mut s.needs_put))
    }

    /// A slot's timer is due: the end of a backoff, or its lease's keep-alive, which joins
    /// `renewals`.
    pub(super) fn fire(
        &mut self,
        slot: SlotId,
        token: u64,
        now: Instant,
        renewals: &mut Vec<Renewal>,
    ) -> Fired {
        let call = self.tokens + 1;
        let Some(s) = self.slab.get_mut(slot).filter(|s| s.timer == token) else {
            return Fired::Stale;
        };
        match &mut s.phase {
            Phase::Backoff => Fired::BackoffOver { attempt: s.attempt },
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
                s.call = call;
                renewals.push(Renewal {
                    slot,
                    token: call,
                    lease: *lease,
                    limit,
                });
                self.tokens = call;
                Fired::Renewing
            }
            _ => Fired::Stale,
        }
    }

    /// Lets leases that come due a moment after this round go out with it, a little early.
    /// Renewing early costs nothing (a lease's deadline counts from its renewal), and the
    /// leases renewed together are due together from then on: registrations started one after
    /// another on real time fall into step, and their rounds become batches instead of one
    /// call each. At most [`RENEW_EARLY_AT_MOST`], and at most an eighth of the lease's own
    /// interval, so no lease is renewed noticeably more often than every TTL/3.
    pub(super) fn join_early(
        &mut self,
        now: Instant,
        timers: &mut Timers,
        renewals: &mut Vec<Renewal>,
    ) {
        if renewals.is_empty() {
            return;
        }
        let Some(until) = now.checked_add(RENEW_EARLY_AT_MOST) else {
            return;
        };
        let mut early = Vec::new();
        timers.take_leases_between(now, until, &mut early);
        for (at, due) in early {
            let Due::Lease { slot, token } = due else {
                continue;
            };
            let slot = slot as SlotId;
            let joins = self.slab.get(slot).is_some_and(|s| {
                s.timer == token
                    && matches!(s.phase, Phase::Alive { ttl, in_flight: false, .. }
                        if at.saturating_duration_since(now) <= ttl / 24)
            });
            if joins {
                self.fire(slot, token, now, renewals);
            } else {
                timers.schedule(at, due);
            }
        }
    }

    /// The calls that send a round's `renewals`: one call for a lone lease, batches of up to
    /// [`MAX_KEEP_ALIVE_BATCH`] for many (a fleet started together renews together, and a
    /// batch is one round trip and one lock on the server instead of one per lease).
    pub(super) fn keep_alive_calls(renewals: Vec<Renewal>, out: &mut Vec<Call>) {
        if renewals.len() <= MAX_KEEP_ALIVE_BATCH {
            if let Some(limit) = renewals.iter().map(|r| r.limit).min() {
                out.push(Call::KeepAlive { renewals, limit });
            }
            return;
        }
        for chunk in renewals.chunks(MAX_KEEP_ALIVE_BATCH) {
            let limit = chunk.iter().map(|r| r.limit).min().unwrap_or_default();
            out.push(Call::KeepAlive {
                renewals: chunk.to_vec(),
                limit,
            });
        }
    }

    /// A keep-alive sent at `sent_at` was answered now: the same transition whenever and from
    /// whichever backend the answer came.
    #[inline]
    pub(super) fn renewed(
        &mut self,
        renewal: Renewal,
        sent_at: Instant,
        now: Instant,
        answer: Result<i64, Arc<Error>>,
        timers: &mut Timers,
    ) -> Renewed {
        let Renewal { slot, token, .. } = renewal;
        let timer = self.tokens + 1;
        let Some(s) = self.slab.get_mut(slot).filter(|s| s.call == token) else {
            return Renewed::Stale;
        };
        let Phase::Alive {
            ttl,
            deadline,
            in_flight: in_flight @ true,
            ..
        } = &mut s.phase
        else {
            return Renewed::Stale;
        };
        *in_flight = false;
        s.call = 0;
        let ttl = *ttl;
        let error = match answer {
            Ok(_) => {
                let cached = self
                    .round
                    .as_ref()
                    .is_some_and(|r| r.sent_at == sent_at && r.now == now && r.ttl == ttl);
                if !cached {
                    let deadline = deadline_after_from(sent_at, ttl);
                    self.round = Some(Round {
                        sent_at,
                        now,
                        ttl,
                        deadline,
                        next: deadline_after_from(now, ttl / 3).min(deadline),
                        stored: s.clock.encode(sent_at, ttl),
                        round_trip: LeaseClock::encode_round_trip(
                            now.saturating_duration_since(sent_at),
                        ),
                        #[cfg(feature = "metrics")]
                        series: crate::metrics::renewal_values(sent_at, now, deadline),
                    });
                }
                let Some(round) = &self.round else {
                    return Renewed::Stale;
                };
                *deadline = round.deadline;
                s.clock.store(round.stored);
                s.clock.store_round_trip(round.round_trip);
                #[cfg(feature = "metrics")]
                for (_, gauges) in &s.gauges {
                    gauges.set(round.series);
                }
                s.timer = timer;
                self.tokens = timer;
                timers.schedule(round.next, lease_due(slot, timer));
                return Renewed::Alive {
                    puts_held_back: std::mem::take(&mut s.needs_put),
                };
            }
            Err(error) => error,
        };
        let past_deadline = now >= *deadline;
        let (deadline, lease) = (*deadline, s.lease());
        match error.as_registry() {
            Some(registry_api::Error::LeaseNotFound(_)) => {
                self.lose(slot, now, timers);
                return Renewed::Lost;
            }
            Some(e) if ends_registration(e) => return Renewed::Refused(error),
            _ => {}
        }
        tracing::warn!(?lease, %error, "keep-alive failed");
        if past_deadline {
            self.lose(slot, now, timers);
            return Renewed::Lost;
        }
        // Again soon: half a second from now, or the next round if that comes first, and no
        // later than the deadline.
        s.timer = timer;
        self.tokens = timer;
        let retry = (ttl / 3).min(RETRY_FAILED_KEEP_ALIVE);
        let next = deadline_after_from(now, retry).min(deadline);
        timers.schedule(next, lease_due(slot, timer));
        Renewed::Failed(error)
    }
}

/// A slot's timer. Slot indices are small (a slab reuses them), so 32 bits keep a timer to 16
/// bytes: a round at scale moves thousands of them.
pub(super) fn lease_due(slot: SlotId, token: u64) -> Due {
    Due::Lease {
        slot: u32::try_from(slot).unwrap_or(u32::MAX),
        token,
    }
}

impl Slot {
    fn lease(&self) -> Option<LeaseId> {
        match self.phase {
            Phase::Alive { lease, .. } => Some(lease),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
