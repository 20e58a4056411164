//! The registrations of one registrar as the handle side knows them, so that when the
//! registrar's task dies (a panic, its runtime gone) every one of them is told at once, in the
//! manner of linkerd2-proxy's balancer worker handing each waiting handle its terminal error.

use super::status::Shared;
use crate::Error;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

/// See the module docs. Holds one entry per live handle: a handle joins when it is made and
/// leaves when it is dropped.
#[derive(Debug, Default)]
pub(super) struct Roster {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    live: HashMap<u64, Weak<Shared>>,
    failure: Option<Arc<Error>>,
}

impl Roster {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a registration; one that joins a registrar whose task already failed fails at once.
    pub(super) fn join(&self, id: u64, shared: &Arc<Shared>) {
        let mut inner = self.lock();
        match &inner.failure {
            Some(failure) => shared.fail(failure.clone()),
            None => {
                inner.live.insert(id, Arc::downgrade(shared));
            }
        }
    }

    /// Removes a registration whose handle is gone.
    pub(super) fn leave(&self, id: u64) {
        self.lock().live.remove(&id);
    }

    /// The task died of `error`: every live registration fails with it, and so does every
    /// later command.
    pub(super) fn fail(&self, error: Error) {
        let error = Arc::new(error);
        let live = {
            let mut inner = self.lock();
            inner.failure = Some(error.clone());
            std::mem::take(&mut inner.live)
        };
        for shared in live.values().filter_map(Weak::upgrade) {
            shared.fail(error.clone());
        }
    }

    /// What the task died of, if it did.
    pub(super) fn failure(&self) -> Option<Arc<Error>> {
        self.lock().failure.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::super::lease_clock::LeaseClock;
    use super::super::status::RegistrationState;
    use super::*;
    use crate::instance::Status;
    use tokio::time::Instant;

    fn registration() -> Arc<Shared> {
        let clock = Arc::new(LeaseClock::new(Instant::now()));
        Arc::new(Shared::new(
            RegistrationState::Registering,
            Status::Serving,
            clock,
        ))
    }

    #[test]
    fn a_death_fails_every_live_registration_and_every_later_one() {
        let roster = Roster::default();
        let (a, b, gone) = (registration(), registration(), registration());
        roster.join(1, &a);
        roster.join(2, &b);
        roster.join(3, &gone);
        roster.leave(3);
        b.state.send_replace(RegistrationState::Deregistered);
        roster.fail(Error::TaskFailed {
            task: "registrar",
            cause: "boom".to_owned(),
        });
        assert_eq!(*a.state.borrow(), RegistrationState::Failed);
        assert!(matches!(a.failure(), Some(Error::TaskFailed { .. })));
        assert_eq!(
            *b.state.borrow(),
            RegistrationState::Deregistered,
            "a registration that ended stays ended"
        );
        assert_eq!(*gone.state.borrow(), RegistrationState::Registering);
        let late = registration();
        roster.join(4, &late);
        assert_eq!(*late.state.borrow(), RegistrationState::Failed);
        assert!(roster.failure().is_some());
    }
}
