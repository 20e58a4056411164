//! The registrar's timers: one ordered map of due instants, one sleep for the earliest.
//!
//! Registrations started together (a fleet at boot, a test at one virtual instant) share their
//! due instants, so one entry holds them all and one wake-up serves them all: the cost of a
//! round is one map operation per instant, not one timer per registration.

use std::collections::BTreeMap;
use tokio::time::Instant;

/// What is due at an instant. Each carries the token its owner held when it was scheduled; an
/// owner that rescheduled or went away since ignores it (timers are never cancelled in place:
/// finding one in a `Vec` would cost more than skipping it when it fires).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Due {
    /// A lease's keep-alive round, or the end of its backoff wait.
    Lease { slot: u32, token: u64 },
    /// A draining registration's grace period, or its last wait for the watch, ends.
    Drain { registration: u64 },
    /// A key watch's reopening after a failure.
    Watch { group: u32, token: u64 },
}

#[derive(Debug, Default)]
pub(super) struct Wheel {
    due: BTreeMap<Instant, Vec<Due>>,
    /// Emptied vectors, kept for the next instants: a round at scale moves thousands of entries
    /// from one instant to the next, and reusing the buffer saves an allocation per round.
    spare: Vec<Vec<Due>>,
}

impl Wheel {
    pub(super) fn schedule(&mut self, at: Instant, due: Due) {
        let spare = &mut self.spare;
        self.due
            .entry(at)
            .or_insert_with(|| spare.pop().unwrap_or_default())
            .push(due);
    }

    /// The earliest instant anything is due.
    pub(super) fn next(&self) -> Option<Instant> {
        self.due.first_key_value().map(|(at, _)| *at)
    }

    /// Takes everything due at or before `now`, earliest first, in scheduling order within an
    /// instant (which keeps runs deterministic).
    pub(super) fn take_due(&mut self, now: Instant, into: &mut Vec<Due>) {
        while let Some(entry) = self.due.first_entry() {
            if *entry.key() > now {
                break;
            }
            let mut batch = entry.remove();
            into.append(&mut batch);
            if self.spare.len() < 8 {
                self.spare.push(batch);
            }
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.due.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn takes_what_is_due_in_order_and_keeps_the_rest() {
        let t0 = Instant::now();
        let mut wheel = Wheel::default();
        wheel.schedule(t0 + Duration::from_secs(2), Due::Drain { registration: 2 });
        wheel.schedule(t0 + Duration::from_secs(1), Due::Drain { registration: 1 });
        wheel.schedule(t0 + Duration::from_secs(1), Due::Drain { registration: 3 });
        assert_eq!(wheel.next(), Some(t0 + Duration::from_secs(1)));
        let mut due = Vec::new();
        wheel.take_due(t0 + Duration::from_millis(1500), &mut due);
        assert_eq!(
            due,
            vec![
                Due::Drain { registration: 1 },
                Due::Drain { registration: 3 }
            ]
        );
        assert_eq!(wheel.len(), 1);
        assert_eq!(wheel.next(), Some(t0 + Duration::from_secs(2)));
    }
}
