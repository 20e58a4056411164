//! The lease slots' transitions, on a fake clock, without a runtime.

use super::*;

const TTL: Duration = Duration::from_secs(6);

fn slots(t0: Instant) -> (Slots, SlotId) {
    let mut slots = Slots::default();
    let slot = slots.insert(SlotSpec {
        ttl: 6,
        backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(2)),
        request_timeout: Duration::from_secs(5),
        seed: 1,
        clock: Arc::new(LeaseClock::new(t0)),
        shared: false,
    });
    slots.join(slot, 1);
    (slots, slot)
}

fn grant_token(call: Option<Call>) -> u64 {
    match call {
        Some(Call::Grant { token, .. }) => token,
        _ => panic!("a grant"),
    }
}

fn alive(slots: &mut Slots, slot: SlotId, t0: Instant, timers: &mut Timers) -> LeaseId {
    let token = grant_token(slots.grant(slot));
    let grant = LeaseGrant {
        id: LeaseId(7),
        ttl: 6,
    };
    assert!(matches!(
        slots.granted(slot, token, t0, t0, Ok(grant), timers),
        Granted::Alive(LeaseId(7))
    ));
    LeaseId(7)
}

/// Runs the timers due by `at`; the renewals that went out.
fn round(slots: &mut Slots, timers: &mut Timers, at: Instant) -> Vec<Renewal> {
    let mut due = Vec::new();
    timers.take_due(at, &mut due);
    let mut renewals = Vec::new();
    for due in due {
        if let Due::Lease { slot, token } = due {
            slots.fire(slot as SlotId, token, at, &mut renewals);
        }
    }
    slots.join_early(at, timers, &mut renewals);
    renewals
}

#[test]
fn a_granted_lease_is_renewed_every_third_of_its_ttl_from_each_renewal() {
    let t0 = Instant::now();
    let (mut slots, slot) = slots(t0);
    let mut timers = Timers::default();
    alive(&mut slots, slot, t0, &mut timers);
    assert_eq!(timers.next(), Some(t0 + TTL / 3));
    let at = t0 + TTL / 3;
    let renewals = round(&mut slots, &mut timers, at);
    assert_eq!(renewals.len(), 1);
    // Answered 30 ms later: the deadline counts from the sending, the next round from
    // the answer.
    let answered = at + Duration::from_millis(30);
    let renewed = slots.renewed(renewals[0], at, answered, Ok(6), &mut timers);
    assert!(matches!(
        renewed,
        Renewed::Alive {
            puts_held_back: false
        }
    ));
    assert_eq!(timers.next(), Some(answered + TTL / 3));
    let clock = &slots.slab[slot].clock;
    assert_eq!(clock.read(), Some((at, at + TTL)));
    assert_eq!(clock.round_trip(), Some(Duration::from_millis(30)));
    // A second answer to the same keep-alive no longer counts.
    assert!(matches!(
        slots.renewed(renewals[0], at, answered, Ok(6), &mut timers),
        Renewed::Stale
    ));
}

#[test]
fn an_answer_takes_one_transition_whenever_it_comes() {
    // The same keep-alive answered at once and answered late ends in the same state but
    // for the instants: one path for every backend.
    let t0 = Instant::now();
    let mut ends = Vec::new();
    for delay in [Duration::ZERO, Duration::from_millis(700)] {
        let (mut slots, slot) = slots(t0);
        let mut timers = Timers::default();
        alive(&mut slots, slot, t0, &mut timers);
        let at = t0 + TTL / 3;
        let renewals = round(&mut slots, &mut timers, at);
        let renewed = slots.renewed(renewals[0], at, at + delay, Ok(6), &mut timers);
        assert!(matches!(renewed, Renewed::Alive { .. }));
        let clock = &slots.slab[slot].clock;
        ends.push((clock.read(), timers.next().map(|next| next - delay)));
    }
    assert_eq!(ends[0], ends[1]);
}

#[test]
fn a_lease_not_found_is_lost_and_backs_off_from_the_first_attempt() {
    let t0 = Instant::now();
    let (mut slots, slot) = slots(t0);
    let mut timers = Timers::default();
    let lease = alive(&mut slots, slot, t0, &mut timers);
    let at = t0 + TTL / 3;
    let renewals = round(&mut slots, &mut timers, at);
    let gone = Arc::new(Error::from(registry_api::Error::LeaseNotFound(lease)));
    assert!(matches!(
        slots.renewed(renewals[0], at, at, Err(gone), &mut timers),
        Renewed::Lost
    ));
    assert_eq!(slots.lease(slot), None);
    let wait = timers.next().unwrap() - at;
    assert!(wait <= Duration::from_millis(200), "{wait:?}");
    let mut due = Vec::new();
    timers.take_due(at + wait, &mut due);
    let Due::Lease { token, .. } = due[0] else {
        panic!("the backoff's timer")
    };
    assert_eq!(
        slots.fire(slot, token, at + wait, &mut Vec::new()),
        Fired::BackoffOver { attempt: 1 }
    );
}

#[test]
fn a_failed_keep_alive_retries_within_half_a_second_and_is_lost_past_the_deadline() {
    let t0 = Instant::now();
    let (mut slots, slot) = slots(t0);
    let mut timers = Timers::default();
    alive(&mut slots, slot, t0, &mut timers);
    let unavailable = || Arc::new(Error::from(registry_api::Error::unavailable("down")));
    let deadline = t0 + TTL;
    let mut at = t0 + TTL / 3;
    let mut tries = 0;
    // Every failure is retried half a second later, until the try at the deadline itself,
    // where no keep-alive succeeded for a whole TTL.
    while at < deadline {
        let renewals = round(&mut slots, &mut timers, at);
        assert!(matches!(
            slots.renewed(renewals[0], at, at, Err(unavailable()), &mut timers),
            Renewed::Failed(_)
        ));
        tries += 1;
        let next = (at + Duration::from_millis(500)).min(deadline);
        assert_eq!(timers.next(), Some(next), "try {tries}");
        at = next;
    }
    assert_eq!(tries, 8, "from TTL/3 to the deadline, every half second");
    let renewals = round(&mut slots, &mut timers, at);
    assert!(matches!(
        slots.renewed(renewals[0], at, at, Err(unavailable()), &mut timers),
        Renewed::Lost
    ));
}

#[test]
fn a_retry_that_succeeds_keeps_the_lease_and_goes_back_to_rounds() {
    let t0 = Instant::now();
    let (mut slots, slot) = slots(t0);
    let mut timers = Timers::default();
    let lease = alive(&mut slots, slot, t0, &mut timers);
    let at = t0 + TTL / 3;
    let renewals = round(&mut slots, &mut timers, at);
    let unavailable = Arc::new(Error::from(registry_api::Error::unavailable("down")));
    assert!(matches!(
        slots.renewed(renewals[0], at, at, Err(unavailable), &mut timers),
        Renewed::Failed(_)
    ));
    let retry = at + Duration::from_millis(500);
    let renewals = round(&mut slots, &mut timers, retry);
    assert!(matches!(
        slots.renewed(renewals[0], retry, retry, Ok(6), &mut timers),
        Renewed::Alive { .. }
    ));
    assert_eq!(slots.lease(slot), Some(lease));
    assert_eq!(
        timers.next(),
        Some(retry + TTL / 3),
        "back to a round every TTL/3"
    );
}

#[test]
fn a_refusal_ends_the_slot_instead_of_retrying() {
    let t0 = Instant::now();
    let (mut slots, slot) = slots(t0);
    let mut timers = Timers::default();
    let token = grant_token(slots.grant(slot));
    let denied = registry_api::Error::permission_denied("role covers nothing");
    assert!(matches!(
        slots.granted(slot, token, t0, t0, Err(denied), &mut timers),
        Granted::Refused(_)
    ));
    assert!(slots.is_idle(slot));
    assert_eq!(timers.next(), None, "nothing retried");

    let token = grant_token(slots.grant(slot));
    let unavailable = registry_api::Error::unavailable("down");
    assert!(matches!(
        slots.granted(slot, token, t0, t0, Err(unavailable), &mut timers),
        Granted::Failed(_)
    ));
    assert!(timers.next().is_some(), "retried after a backoff");
}

#[test]
fn a_grant_for_a_slot_that_moved_on_is_stale() {
    let t0 = Instant::now();
    let (mut slots, slot) = slots(t0);
    let mut timers = Timers::default();
    let token = grant_token(slots.grant(slot));
    slots.idle(slot);
    let grant = LeaseGrant {
        id: LeaseId(9),
        ttl: 6,
    };
    assert!(matches!(
        slots.granted(slot, token, t0, t0, Ok(grant), &mut timers),
        Granted::Stale
    ));
}

#[test]
fn leases_due_a_moment_later_join_the_round_and_batches_are_capped() {
    let t0 = Instant::now();
    let mut slots = Slots::default();
    let mut timers = Timers::default();
    let mut ids = Vec::new();
    for n in 0..3u64 {
        let slot = slots.insert(SlotSpec {
            ttl: 6,
            backoff: Backoff::default(),
            request_timeout: Duration::from_secs(5),
            seed: n,
            clock: Arc::new(LeaseClock::new(t0)),
            shared: false,
        });
        // Granted 0, 50 and 150 ms after t0.
        let at = t0 + Duration::from_millis([0, 50, 150][n as usize]);
        let token = grant_token(slots.grant(slot));
        let grant = LeaseGrant {
            id: LeaseId(n as i64 + 1),
            ttl: 6,
        };
        slots.granted(slot, token, at, at, Ok(grant), &mut timers);
        ids.push(slot);
    }
    let renewals = round(&mut slots, &mut timers, t0 + TTL / 3);
    let renewed: Vec<_> = renewals.iter().map(|r| r.slot).collect();
    assert_eq!(renewed, ids[..2], "the one 50 ms later joins, not 150 ms");

    let many: Vec<_> = (0..2_500)
        .map(|n| Renewal {
            slot: n,
            token: 1,
            lease: LeaseId(n as i64 + 1),
            limit: Duration::from_secs(1),
        })
        .collect();
    let mut calls = Vec::new();
    Slots::keep_alive_calls(many, &mut calls);
    let sizes: Vec<_> = calls
        .iter()
        .map(|call| match call {
            Call::KeepAlive { renewals, .. } => renewals.len(),
            _ => 0,
        })
        .collect();
    assert_eq!(sizes, [1_000, 1_000, 500]);
}
