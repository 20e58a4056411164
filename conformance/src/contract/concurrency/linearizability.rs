//! A linearizability checker in the manner of Porcupine: the Wing-Gong algorithm with Lowe's
//! memoization (a set of (calls placed, state) pairs already explored), over a history of
//! calls with their invocation and response times.
//!
//! A call whose outcome is unknown (its answer was lost: the request may or may not have taken
//! effect) has no response time: it may be placed anywhere after its invocation, or left out.
//!
//! Why not a crate: stateright's tester is built for its own model checker and brings a web
//! explorer and a dozen dependencies into every backend's test build; the algorithm is a page.

use std::collections::HashSet;

/// What the checker needs of the sequential specification.
pub(crate) trait Spec {
    /// The specification's state.
    type State: Clone;
    /// One call with its answer (or with none, when the outcome is unknown).
    type Op;
    /// The state after `op`, when its answer is the one the specification gives from
    /// `state` (any answer, for an unknown outcome); `None` when it is not.
    fn step(&self, state: &Self::State, op: &Self::Op) -> Option<Self::State>;
    /// A hash of `state`: equal states must give equal hashes.
    fn fingerprint(&self, state: &Self::State) -> u64;
}

/// One call of the history.
#[derive(Clone, Debug)]
pub(crate) struct Call<O> {
    /// The call and its answer.
    pub(crate) op: O,
    /// When it was invoked (a logical clock shared by every client).
    pub(crate) invoked: u64,
    /// When its answer came; `None` when the outcome is unknown.
    pub(crate) returned: Option<u64>,
}

/// What the checker found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The calls in an order the specification accepts (left-out unknown calls are absent).
    Linearizable(Vec<usize>),
    /// No order fits. `placed` is the longest prefix of calls placed in an order the
    /// specification accepts; `blocked` are the calls that were due next at that point
    /// (invoked, unplaced) and of which none fits.
    NotLinearizable {
        /// The longest order found.
        placed: Vec<usize>,
        /// The calls that could not come next.
        blocked: Vec<usize>,
    },
    /// The search took more than its budget of steps.
    GaveUp,
}

#[derive(Clone, Copy)]
enum Kind {
    Invoke,
    Return,
}

#[derive(Clone, Copy)]
struct Event {
    kind: Kind,
    call: usize,
}

/// A set of call indices, as bits.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize, on: bool) {
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        if on {
            self.0[word] |= bit;
        } else {
            self.0[word] &= !bit;
        }
    }
}

/// Checks `calls` against `spec` from `initial`, exploring at most `budget` steps.
pub(crate) fn check<S: Spec>(
    spec: &S,
    initial: S::State,
    calls: &[Call<S::Op>],
    budget: u64,
) -> Verdict {
    let mut events: Vec<(u64, Event)> = Vec::with_capacity(2 * calls.len());
    for (i, c) in calls.iter().enumerate() {
        events.push((
            c.invoked,
            Event {
                kind: Kind::Invoke,
                call: i,
            },
        ));
        events.push((
            c.returned.unwrap_or(u64::MAX),
            Event {
                kind: Kind::Return,
                call: i,
            },
        ));
    }
    events.sort_by_key(|(t, e)| (*t, matches!(e.kind, Kind::Return)));
    let events: Vec<Event> = events.into_iter().map(|(_, e)| e).collect();
    let mut invoke_at = vec![0; calls.len()];
    for (i, e) in events.iter().enumerate() {
        if let Kind::Invoke = e.kind {
            invoke_at[e.call] = i;
        }
    }
    let mut removed = vec![false; events.len()];
    let mut known_left = calls.iter().filter(|c| c.returned.is_some()).count();
    let mut placed = Bits::new(calls.len());
    let mut seen: HashSet<(Bits, u64)> = HashSet::new();
    let mut stack: Vec<(usize, S::State)> = Vec::new();
    let mut state = initial;
    let mut best: (Vec<usize>, Vec<usize>) = (Vec::new(), Vec::new());
    let next_from = |removed: &[bool], from: usize| (from..removed.len()).find(|&i| !removed[i]);
    let mut at = next_from(&removed, 0);
    let mut steps = 0u64;
    loop {
        if known_left == 0 {
            return Verdict::Linearizable(stack.iter().map(|(c, _)| *c).collect());
        }
        steps += 1;
        if steps > budget {
            return Verdict::GaveUp;
        }
        let Some(i) = at else {
            // Unreachable while a known call is unplaced: its return is still in the list.
            return Verdict::GaveUp;
        };
        let event = events[i];
        match event.kind {
            Kind::Invoke => {
                let call = event.call;
                if let Some(next) = spec.step(&state, &calls[call].op) {
                    let mut with = placed.clone();
                    with.set(call, true);
                    if seen.insert((with.clone(), spec.fingerprint(&next))) {
                        stack.push((call, std::mem::replace(&mut state, next)));
                        placed = with;
                        removed[i] = true;
                        if let Some(r) = return_of(&events, call) {
                            removed[r] = true;
                        }
                        if calls[call].returned.is_some() {
                            known_left -= 1;
                        }
                        at = next_from(&removed, 0);
                        continue;
                    }
                }
                at = next_from(&removed, i + 1);
            }
            Kind::Return => {
                if stack.len() >= best.0.len() {
                    let pending = (0..i)
                        .filter(|&j| !removed[j] && matches!(events[j].kind, Kind::Invoke))
                        .map(|j| events[j].call)
                        .collect();
                    best = (stack.iter().map(|(c, _)| *c).collect(), pending);
                }
                let Some((call, previous)) = stack.pop() else {
                    return Verdict::NotLinearizable {
                        placed: best.0,
                        blocked: best.1,
                    };
                };
                state = previous;
                placed.set(call, false);
                removed[invoke_at[call]] = false;
                if let Some(r) = return_of(&events, call) {
                    removed[r] = false;
                }
                if calls[call].returned.is_some() {
                    known_left += 1;
                }
                at = next_from(&removed, invoke_at[call] + 1);
            }
        }
    }
}

fn return_of(events: &[Event], call: usize) -> Option<usize> {
    events
        .iter()
        .position(|e| matches!(e.kind, Kind::Return) && e.call == call)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A register: writes of a value, reads that answer one (`None`: the outcome is unknown).
    #[derive(Debug)]
    enum Reg {
        Write(u8),
        Read(u8),
        LostWrite(u8),
    }

    struct Register;

    impl Spec for Register {
        type State = u8;
        type Op = Reg;
        fn step(&self, state: &u8, op: &Reg) -> Option<u8> {
            match op {
                Reg::Write(v) | Reg::LostWrite(v) => Some(*v),
                Reg::Read(v) => (v == state).then_some(*state),
            }
        }
        fn fingerprint(&self, state: &u8) -> u64 {
            u64::from(*state)
        }
    }

    fn call(op: Reg, invoked: u64, returned: Option<u64>) -> Call<Reg> {
        Call {
            op,
            invoked,
            returned,
        }
    }

    #[test]
    fn overlapping_calls_may_take_effect_in_either_order() {
        // write 1 and write 2 overlap; a later read sees 1: write 2 went first.
        let history = [
            call(Reg::Write(1), 0, Some(3)),
            call(Reg::Write(2), 1, Some(2)),
            call(Reg::Read(1), 4, Some(5)),
        ];
        assert_eq!(
            check(&Register, 0, &history, 10_000),
            Verdict::Linearizable(vec![1, 0, 2])
        );
    }

    #[test]
    fn a_read_of_a_value_overwritten_before_it_began_is_not_linearizable() {
        let history = [
            call(Reg::Write(1), 0, Some(1)),
            call(Reg::Write(2), 2, Some(3)),
            call(Reg::Read(1), 4, Some(5)),
        ];
        match check(&Register, 0, &history, 10_000) {
            Verdict::NotLinearizable { placed, blocked } => {
                assert_eq!(placed, vec![0, 1]);
                assert_eq!(blocked, vec![2]);
            }
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn a_call_with_a_lost_answer_may_have_taken_effect_or_not() {
        let took_effect = [
            call(Reg::LostWrite(7), 0, None),
            call(Reg::Read(7), 5, Some(6)),
        ];
        assert!(matches!(
            check(&Register, 0, &took_effect, 10_000),
            Verdict::Linearizable(_)
        ));
        let did_not = [
            call(Reg::LostWrite(7), 0, None),
            call(Reg::Read(0), 5, Some(6)),
        ];
        assert_eq!(
            check(&Register, 0, &did_not, 10_000),
            Verdict::Linearizable(vec![1])
        );
        // But never before it was invoked.
        let too_early = [
            call(Reg::Read(7), 0, Some(1)),
            call(Reg::LostWrite(7), 2, None),
        ];
        assert!(matches!(
            check(&Register, 0, &too_early, 10_000),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn many_concurrent_writes_are_explored_within_the_budget_thanks_to_memoization() {
        // Twelve writes of the same value all overlapping, then a read: without memoization
        // the search could try 12! orders.
        let mut history: Vec<Call<Reg>> = (0..12)
            .map(|i| call(Reg::Write(1), i, Some(100 + i)))
            .collect();
        history.push(call(Reg::Read(2), 200, Some(201)));
        assert!(matches!(
            check(&Register, 0, &history, 100_000),
            Verdict::NotLinearizable { .. }
        ));
    }
}
