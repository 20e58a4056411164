//! The lease steps of a sequence: grants, keep-alives (single and batched), revokes and
//! time-to-live, each compared with the model; the remaining TTL checked against the backend's
//! declared [`TtlReporting`](crate::contract::backend::TtlReporting).

use super::{Session, UNKNOWN_LEASE};
use crate::contract::backend::{Backend, Time};
use crate::contract::observe::Outcome;
use crate::failure::{ensure, Check};
use registry_api::{Error, LeaseId, LeaseTimeToLive, Registry};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

impl<B: Backend + ?Sized> Session<'_, B> {
    /// Whether the model has `id` past its deadline with its keys not deleted yet.
    pub(super) fn is_expired(&self, id: LeaseId) -> bool {
        self.model.lease(id).is_some_and(|l| l.expired)
    }

    pub(super) async fn grant(&mut self, ttl: i64) -> Check {
        let actual = self.registry.lease_grant(ttl, None).await;
        // The model takes the backend's id; a grant the backend refused gets one that no
        // backend issues, so that the lease order stays the same on every backend.
        let id = match &actual {
            Ok(g) => g.id,
            Err(_) => LeaseId(UNKNOWN_LEASE.0 + 1 + self.norm.leases().len() as i64),
        };
        let expected = self.model.lease_grant(ttl, id);
        if expected.is_ok() || actual.is_ok() {
            self.norm.granted(id);
        }
        let request = self.request(|_| format!("grant ttl {ttl}"));
        self.record(request, actual, expected, |n, g| Outcome::Grant {
            lease: n.lease(g.id),
            ttl: g.ttl,
        })?;
        Ok(())
    }

    pub(super) async fn keep_alive(&mut self, id: LeaseId) -> Check {
        let request = self.request(|n| format!("keep_alive {}", n.lease(id)));
        let actual = self.registry.lease_keep_alive(id).await;
        let expected = self.model.lease_keep_alive(id);
        self.record(request, actual, expected, |_, ttl| Outcome::KeepAlive(*ttl))?;
        Ok(())
    }

    pub(super) async fn keep_alive_many(&mut self, ids: &[LeaseId]) -> Check {
        let request = self.request(|n| {
            let named: Vec<String> = ids.iter().map(|id| n.lease(*id)).collect();
            format!("keep_alive_many [{}]", named.join(", "))
        });
        let sent = Instant::now();
        let actual = self.registry.lease_keep_alive_many(ids).await;
        let expected = self.model.lease_keep_alive_many(ids);
        let answers = self.record(request, actual, expected, |n, answers| {
            Outcome::KeepAliveMany(n.renewals(answers))
        })?;
        let renewed: Vec<LeaseId> = ids
            .iter()
            .zip(answers.iter().flatten())
            .filter(|(_, answer)| answer.is_ok())
            .map(|(id, _)| *id)
            .collect();
        self.check_renewed(&renewed, sent).await
    }

    /// Answers that match the model do not show that a batch renewed anything (a missed
    /// renewal shows only if a later advance happens to cross the old deadline): every lease
    /// the batch answered for must have its whole TTL left at once.
    async fn check_renewed(&self, ids: &[LeaseId], sent: Instant) -> Check {
        let live: BTreeSet<LeaseId> = ids
            .iter()
            .copied()
            .filter(|id| self.model.live_lease(*id).is_some())
            .collect();
        for id in live {
            let granted = self.model.live_lease(id).map_or(0, |l| l.granted);
            let left = self
                .registry
                .lease_time_to_live(id)
                .await
                .map_err(|e| format!("time_to_live of {id} after a batch renewed it: {e}"))?
                .ttl;
            let allowed = match self.caps.time {
                Time::Virtual => self.caps.ttl_reporting.allowed(secs(granted)),
                Time::Real => granted - 1 - sent.elapsed().as_secs() as i64..=granted,
            };
            ensure!(
                allowed.contains(&left),
                "L3: keep_alive_many answered for {} but left it {left} s of its {granted} s, expected {allowed:?}",
                self.request(|n| n.lease(id)).1
            );
        }
        Ok(())
    }

    pub(super) async fn revoke(&mut self, id: LeaseId) -> Check {
        let request = self.request(|n| format!("revoke {}", n.lease(id)));
        let actual = self.registry.lease_revoke(id).await;
        // A lease past its deadline whose keys are not deleted yet: etcd revokes it, a backend
        // may answer that it is gone (its keys then go with the late reaper).
        let expected = match &actual {
            Err(Error::LeaseNotFound(_)) if self.is_expired(id) => Err(Error::LeaseNotFound(id)),
            _ => self.model.lease_revoke(id),
        };
        self.record(request, actual, expected, |n, r| Outcome::Revoke(n.rev(*r)))?;
        Ok(())
    }

    pub(super) async fn time_to_live(&mut self, id: LeaseId) -> Check {
        let request = self.request(|n| format!("time_to_live {}", n.lease(id)));
        let actual = self.registry.lease_time_to_live(id).await;
        let expected = match (&actual, self.model.lease(id)) {
            // Past its deadline, keys not deleted yet: gone, or reported with nothing left.
            (Ok(t), Some(lease)) if lease.expired && t.ttl <= 0 => Ok(LeaseTimeToLive {
                id,
                ttl: t.ttl,
                granted_ttl: lease.granted,
                keys: lease.keys.iter().map(|k| k.to_vec()).collect(),
            }),
            _ => self.model.lease_time_to_live(id),
        };
        let remaining = actual.as_ref().ok().map(|t| (t.id, t.ttl));
        let live = self.model.live_lease(id).map(|l| (l.granted, l.deadline));
        let shown = request.1.clone();
        self.record(request, actual, expected, |n, t| Outcome::TimeToLive {
            granted_ttl: t.granted_ttl,
            keys: t.keys.iter().map(|k| n.key(k)).collect(),
        })?;
        if let (Some((got_id, left)), Some((granted, deadline))) = (remaining, live) {
            ensure!(got_id == id, "{shown} answered for lease {got_id}");
            let allowed = match self.caps.time {
                Time::Virtual => self
                    .caps
                    .ttl_reporting
                    .allowed(deadline.saturating_sub(self.model.now())),
                Time::Real => {
                    let elapsed = self.started.elapsed().as_secs() as i64 + 1;
                    (granted - 1 - elapsed).max(0)..=granted
                }
            };
            ensure!(
                allowed.contains(&left),
                "{shown} reported {left} s left, expected {allowed:?} ({:?})",
                self.caps.ttl_reporting
            );
        }
        Ok(())
    }
}

fn secs(s: i64) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}
