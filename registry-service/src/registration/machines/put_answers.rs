//! What a put's answer means for its registration: registered, a change applied or refused,
//! a drain written, a lease found gone, a failure retried or an error that ends it.

use super::super::calls::{ends_registration, shared, Call, MemberId, Purpose};
use super::super::members::Phase;
use super::Machines;
use crate::Error;
use bytes::Bytes;
use registry_api::LeaseId;
use tokio::time::Instant;

impl Machines {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn put_answered(
        &mut self,
        id: MemberId,
        key: Bytes,
        lease: LeaseId,
        purpose: Purpose,
        result: registry_api::Result<registry_api::PutResponse>,
        now: Instant,
        out: &mut Vec<Call>,
    ) {
        let Some(m) = self.members.get_mut(id) else {
            if let Purpose::Change { reply, .. } = purpose {
                reply.send(Err(Error::Stopped("registration"))).ok();
            }
            // Stopped while its put was under way: on a shared lease, which lives on, the key
            // would stay; take it back. (An own lease was revoked, and its keys with it.)
            let shared_lease = self.shared_slot.and_then(|slot| self.slots.lease(slot));
            if result.is_ok() && shared_lease == Some(lease) {
                out.push(Call::Delete {
                    key,
                    limit: self.request_timeout,
                    then: None,
                });
            }
            return;
        };
        m.put_answered();
        let slot = m.slot;
        let current = self.slots.lease(slot) == Some(lease);
        let error = match result {
            Ok(put) => {
                if m.put_succeeded(lease, current, put.revision) {
                    self.slots.registered(slot);
                }
                match purpose {
                    Purpose::Change { reply, .. } => {
                        reply.send(Ok(())).ok();
                    }
                    Purpose::Drain => {
                        m.drain_written(put.revision);
                        self.check_drain(id, now, out);
                    }
                    Purpose::Restore => {
                        if self.slots.release_puts(slot) {
                            self.put_held_back(slot, out);
                        }
                    }
                    Purpose::Register => {}
                }
                return;
            }
            Err(error) => error,
        };
        if matches!(error, registry_api::Error::LeaseNotFound(dead) if dead == lease) {
            if let Purpose::Change { reply, .. } = purpose {
                // Kept: written with the next registration.
                reply.send(Ok(())).ok();
            }
            if current {
                self.lease_lost(slot, now);
            }
            self.drain_put_failed(id, now, out);
            return;
        }
        let value_refused = matches!(
            error,
            registry_api::Error::InvalidArgument(_) | registry_api::Error::TooLarge { .. }
        );
        let terminal = ends_registration(&error);
        let error = shared(error);
        match purpose {
            Purpose::Change { reply, previous } if value_refused => {
                // The backend refused the new value itself: the registration goes on with the
                // one before.
                m.revert(*previous);
                reply.send(Err(Error::clone(&error))).ok();
                self.drain_put_failed(id, now, out);
            }
            purpose if terminal => {
                if let Purpose::Change { reply, .. } = purpose {
                    reply.send(Err(Error::clone(&error))).ok();
                }
                tracing::error!(%error, "the registry refused the registration; it ends");
                self.stop(id, Vec::new(), Some(error), out);
            }
            purpose => {
                tracing::warn!(%error, "put failed");
                m.shared.record(&error);
                let separate_first = m.phase == Phase::Pending
                    && matches!(purpose, Purpose::Register)
                    && !self.slots.is_shared(slot);
                if separate_first && current {
                    // The lease is of no use without the key: let it go and try again later,
                    // as a failed attempt.
                    let limit = self
                        .slots
                        .request_timeout(slot)
                        .unwrap_or(self.request_timeout);
                    out.push(Call::Revoke {
                        lease,
                        limit,
                        then: None,
                    });
                    self.slots.back_off(slot, now, &mut self.timers);
                } else {
                    m.needs_put = true;
                    self.slots.hold_put(slot);
                }
                if let Purpose::Change { reply, .. } = purpose {
                    reply.send(Err(Error::clone(&error))).ok();
                }
                self.drain_put_failed(id, now, out);
            }
        }
    }
}
