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
    /// When its answer came; `None` when the answer was lost.
    pub(crate) returned: Option<u64>,
    /// Whether it may be left out: its answer was lost and nothing shows that it took effect.
    /// (A call whose answer was lost but whose effect was seen is placed, anywhere after its
    /// invocation.)
    pub(crate) optional: bool,
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
    /// The search took more than its budget of steps; what it had found so far, as for
    /// [`Verdict::NotLinearizable`].
    GaveUp {
        /// The longest order found.
        placed: Vec<usize>,
        /// The calls that could not come next.
        blocked: Vec<usize>,
    },
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
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1u64 << (i % 64)) != 0
    }
}

/// One level of the search: the calls that may come next, the one tried, the state before.
struct Frame<T> {
    candidates: Vec<usize>,
    next: usize,
    /// The call placed from this frame, and the state before it.
    placed: Option<(usize, T)>,
}

/// Checks `calls` against `spec` from `initial`, exploring at most `budget` steps.
///
/// The search is the Wing-Gong one, written as a depth-first search over frames: at each
/// point the calls that may come next are those not placed yet and invoked before the earliest
/// answer of a call not placed yet (a call cannot take effect after a call that was invoked
/// after its answer came). Calls that must be placed are tried before optional ones, and an
/// optional call that would change nothing is not tried: it is the same as leaving it out. A (calls placed, state) pair already explored is not explored again.
pub(crate) fn check<S: Spec>(
    spec: &S,
    initial: S::State,
    calls: &[Call<S::Op>],
    budget: u64,
) -> Verdict {
    let mut by_invoke: Vec<usize> = (0..calls.len()).collect();
    by_invoke.sort_by_key(|&c| calls[c].invoked);
    let mut placed = Bits::new(calls.len());
    let mut required_left = calls.iter().filter(|c| !c.optional).count();
    let mut seen: HashSet<(Bits, u64)> = HashSet::new();
    let mut state = initial;
    let mut order: Vec<usize> = Vec::new();
    let mut best: (Vec<usize>, Vec<usize>) = (Vec::new(), Vec::new());
    let candidates = |placed: &Bits| -> Vec<usize> {
        let horizon = (0..calls.len())
            .filter(|&c| !placed.get(c))
            .filter_map(|c| calls[c].returned)
            .min()
            .unwrap_or(u64::MAX);
        let open = by_invoke
            .iter()
            .copied()
            .filter(|&c| !placed.get(c) && calls[c].invoked < horizon);
        let (known, lost): (Vec<usize>, Vec<usize>) = open.partition(|&c| !calls[c].optional);
        known.into_iter().chain(lost).collect()
    };
    let mut frames: Vec<Frame<S::State>> = vec![Frame {
        candidates: candidates(&placed),
        next: 0,
        placed: None,
    }];
    let mut steps = 0u64;
    loop {
        if required_left == 0 {
            return Verdict::Linearizable(order);
        }
        steps += 1;
        if steps > budget {
            return Verdict::GaveUp {
                placed: best.0,
                blocked: best.1,
            };
        }
        let Some(frame) = frames.last_mut() else {
            return Verdict::NotLinearizable {
                placed: best.0,
                blocked: best.1,
            };
        };
        let Some(&call) = frame.candidates.get(frame.next) else {
            // Nothing fits here: note how far this got, then undo the call that led here.
            if order.len() >= best.0.len() {
                best = (order.clone(), frame.candidates.clone());
            }
            let Some((undone, before)) = frames.pop().and_then(|f| f.placed) else {
                continue;
            };
            state = before;
            placed.set(undone, false);
            order.pop();
            if !calls[undone].optional {
                required_left += 1;
            }
            continue;
        };
        frame.next += 1;
        let unknown = calls[call].optional;
        let Some(next) = spec.step(&state, &calls[call].op) else {
            continue;
        };
        let print = spec.fingerprint(&next);
        if unknown && print == spec.fingerprint(&state) {
            continue;
        }
        let mut with = placed.clone();
        with.set(call, true);
        if !seen.insert((with.clone(), print)) {
            continue;
        }
        let before = std::mem::replace(&mut state, next);
        placed = with;
        order.push(call);
        if !unknown {
            required_left -= 1;
        }
        frames.push(Frame {
            candidates: candidates(&placed),
            next: 0,
            placed: Some((call, before)),
        });
    }
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
            optional: returned.is_none(),
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
