//! The registrar's timer queue: one ordered map of due instants (the driver sleeps until the
//! earliest).
//!
//! Registrations started together (a fleet at boot, a test at one virtual instant) share their
//! due instants, so one entry holds them all and one wake-up serves them all: the cost of a
//! round is one map operation per instant, not one timer per registration.

use super::calls::MemberId;
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
    Drain { registration: MemberId },
}

#[derive(Debug, Default)]
pub(super) struct Timers {
    due: BTreeMap<Instant, Vec<Due>>,
    /// The instant scheduled last and what is due then, not yet in the map: a round schedules
    /// its leases' next rounds one after another at the same instant, and this keeps that to
    /// one map operation per round instead of one per lease.
    staged: Option<(Instant, Vec<Due>)>,
    /// Emptied vectors, kept for the next instants: a round at scale moves thousands of entries
    /// from one instant to the next, and reusing the buffer saves an allocation per round.
    spare: Vec<Vec<Due>>,
}

impl Timers {
    pub(super) fn schedule(&mut self, at: Instant, due: Due) {
        if let Some((staged_at, staged)) = &mut self.staged {
            if *staged_at == at {
                staged.push(due);
                return;
            }
        }
        self.unstage();
        let mut batch = self.spare.pop().unwrap_or_default();
        batch.push(due);
        self.staged = Some((at, batch));
    }

    fn unstage(&mut self) {
        if let Some((at, mut batch)) = self.staged.take() {
            match self.due.get_mut(&at) {
                Some(existing) => {
                    existing.append(&mut batch);
                    if self.spare.len() < 8 {
                        self.spare.push(batch);
                    }
                }
                None => {
                    self.due.insert(at, batch);
                }
            }
        }
    }

    /// The earliest instant anything is due.
    pub(super) fn next(&self) -> Option<Instant> {
        let first = self.due.first_key_value().map(|(at, _)| *at);
        match (&self.staged, first) {
            (Some((staged, _)), Some(first)) => Some(first.min(*staged)),
            (Some((staged, _)), None) => Some(*staged),
            (None, first) => first,
        }
    }

    /// Takes everything due at or before `now`, earliest first, in scheduling order within an
    /// instant (which keeps runs deterministic).
    pub(super) fn take_due(&mut self, now: Instant, into: &mut Vec<Due>) {
        self.unstage();
        while let Some(entry) = self.due.first_entry() {
            if *entry.key() > now {
                break;
            }
            let mut batch = entry.remove();
            into.append(&mut batch);
            if self.spare.len() < 8 {
                batch.clear();
                self.spare.push(batch);
            }
        }
    }

    /// Takes the lease rounds due after `after` and at or before `until`, with their instants,
    /// earliest first; everything else stays. For a round that is going out anyway: leases
    /// that come due a moment later can join it.
    pub(super) fn take_leases_between(
        &mut self,
        after: Instant,
        until: Instant,
        into: &mut Vec<(Instant, Due)>,
    ) {
        use std::ops::Bound::{Excluded, Included};
        if until <= after {
            return;
        }
        self.unstage();
        let mut emptied = Vec::new();
        for (at, batch) in self.due.range_mut((Excluded(after), Included(until))) {
            batch.retain(|due| match due {
                Due::Lease { .. } => {
                    into.push((*at, *due));
                    false
                }
                Due::Drain { .. } => true,
            });
            if batch.is_empty() {
                emptied.push(*at);
            }
        }
        for at in emptied {
            if let Some(batch) = self.due.remove(&at) {
                if self.spare.len() < 8 {
                    self.spare.push(batch);
                }
            }
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.due.values().map(Vec::len).sum::<usize>()
            + self.staged.as_ref().map_or(0, |(_, staged)| staged.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn takes_what_is_due_in_order_and_keeps_the_rest() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        timers.schedule(t0 + Duration::from_secs(2), Due::Drain { registration: 2 });
        timers.schedule(t0 + Duration::from_secs(1), Due::Drain { registration: 1 });
        timers.schedule(t0 + Duration::from_secs(1), Due::Drain { registration: 3 });
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(1)));
        let mut due = Vec::new();
        timers.take_due(t0 + Duration::from_millis(1500), &mut due);
        assert_eq!(
            due,
            vec![
                Due::Drain { registration: 1 },
                Due::Drain { registration: 3 }
            ]
        );
        assert_eq!(timers.len(), 1);
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(2)));
    }

    #[test]
    fn takes_only_lease_rounds_from_a_later_window() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut timers = Timers::default();
        timers.schedule(at(10), Due::Lease { slot: 1, token: 1 });
        timers.schedule(at(10), Due::Drain { registration: 7 });
        timers.schedule(at(50), Due::Lease { slot: 2, token: 2 });
        timers.schedule(at(200), Due::Lease { slot: 3, token: 3 });
        let mut early = Vec::new();
        timers.take_leases_between(t0, at(100), &mut early);
        assert_eq!(
            early,
            vec![
                (at(10), Due::Lease { slot: 1, token: 1 }),
                (at(50), Due::Lease { slot: 2, token: 2 })
            ]
        );
        assert_eq!(timers.len(), 2, "the drain and the later round stay");
        assert_eq!(timers.next(), Some(at(10)));
        let mut due = Vec::new();
        timers.take_due(at(10), &mut due);
        assert_eq!(due, vec![Due::Drain { registration: 7 }]);
    }
}
