//! Telling a quiet watch from a dead one.
//!
//! A watch on a member cut off from its cluster stays open and delivers nothing, forever
//! (etcd #8980, #12142). After `idle_timeout` with nothing heard, the watcher asks the server
//! for progress; a live watch answers with a progress notification, a dead one does not, and
//! after `progress_timeout` more the watch is given up and the prefix listed again. (A watch
//! that answers but stays behind the store is the machine's to catch: it compares what it
//! reached with a fresh read at each idle check.)

use std::time::Duration;
use tokio::time::Instant;

/// What to do when the stall deadline passes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Silent for the idle period: ask the server for progress.
    Ask,
    /// Asked, and no answer in time: the watch is dead.
    Dead {
        /// How long nothing was heard.
        silent_for: Duration,
    },
}

/// The clock of one open watch.
#[derive(Debug)]
pub(super) struct Stall {
    idle: Duration,
    answer: Duration,
    last_heard: Instant,
    asked: Option<Instant>,
}

impl Stall {
    pub(super) fn new(idle: Duration, answer: Duration) -> Self {
        Stall {
            idle,
            answer,
            last_heard: Instant::now(),
            asked: None,
        }
    }

    /// Anything arrived on the watch (events or progress): it is alive.
    pub(super) fn heard(&mut self) {
        self.last_heard = Instant::now();
        self.asked = None;
    }

    /// When the next verdict is due.
    pub(super) fn deadline(&self) -> Instant {
        let (from, wait) = match self.asked {
            None => (self.last_heard, self.idle),
            Some(asked) => (asked, self.answer),
        };
        crate::backoff::deadline_after_from(from, wait)
    }

    /// The deadline passed: ask, or give up if already asked.
    pub(super) fn expired(&mut self) -> Verdict {
        match self.asked {
            None => {
                self.asked = Some(Instant::now());
                Verdict::Ask
            }
            Some(_) => Verdict::Dead {
                silent_for: self.last_heard.elapsed(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn asks_after_the_idle_period_then_gives_up_after_the_answer_period() {
        let mut stall = Stall::new(Duration::from_secs(30), Duration::from_secs(5));
        let start = Instant::now();
        assert_eq!(stall.deadline(), start + Duration::from_secs(30));
        tokio::time::sleep_until(stall.deadline()).await;
        assert_eq!(stall.expired(), Verdict::Ask);
        assert_eq!(stall.deadline(), start + Duration::from_secs(35));
        tokio::time::sleep_until(stall.deadline()).await;
        assert_eq!(
            stall.expired(),
            Verdict::Dead {
                silent_for: Duration::from_secs(35)
            }
        );
        stall.heard();
        assert_eq!(stall.deadline(), Instant::now() + Duration::from_secs(30));
    }
}
