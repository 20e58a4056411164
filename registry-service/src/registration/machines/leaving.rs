//! Registrations leaving: deregistered, failed for good, abandoned, or refused with their
//! whole lease slot; and the answer to everyone waiting on them.

use super::super::calls::{Call, Leaving, MemberId, SlotId};
use super::super::commands::Reply;
use super::super::status::RegistrationState;
use super::Machines;
use crate::Error;
use std::sync::Arc;

impl Machines {
    /// The registry refused what the slot needs for good: every member of it ends.
    pub(super) fn refuse_slot(&mut self, slot: SlotId, error: Arc<Error>, out: &mut Vec<Call>) {
        tracing::error!(%error, "the registry refused the lease; its registrations end");
        for id in self.slots.members(slot).to_vec() {
            self.stop(id, Vec::new(), Some(error.clone()), out);
        }
    }

    /// Removes a registration and gives up its key: revokes its own lease, or on a shared lease
    /// deletes its key (and revokes the lease when it was the last). `failure`: it ends with
    /// that error instead of deregistering.
    pub(super) fn stop(
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
    pub(super) fn forget(&mut self, id: MemberId, out: &mut Vec<Call>) {
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
pub(super) fn finish(leaving: Leaving, result: registry_api::Result<()>) {
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
            shared.state_changed();
            tracing::info!(ok = outcome.is_ok(), "deregistered");
        }
    }
    for reply in replies {
        reply.send(outcome.clone()).ok();
    }
}
