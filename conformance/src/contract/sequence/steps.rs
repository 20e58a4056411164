//! One generated operation at a time: each sent to the backend and to the model, and compared.

use super::{delete_outcome, OpenWatch, Session, UNKNOWN_LEASE};
use crate::contract::backend::{Backend, Time};
use crate::contract::observe::{Outcome, Step};
use crate::contract::ops::{self, LeaseSel, Op, RevSel};
use crate::contract::watch_read::read_until;
use crate::failure::{ensure, Check};
use registry_api::{LeaseId, ListOptions, PutOptions, Registry, Revision, WatchOptions};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

impl<B: Backend + ?Sized> Session<'_, B> {
    pub(super) async fn step(&mut self, op: &Op) -> Check {
        match op {
            Op::Put {
                key,
                value,
                lease,
                prev_kv,
            } => {
                let (key, lease) = (self.key(*key), self.lease(*lease));
                let value = ops::value_bytes(*value, key.len(), &self.caps);
                let request = format!(
                    "put {:?} ({} bytes) lease {:?}",
                    self.norm.key(&key),
                    value.len(),
                    lease.map(|l| self.norm.lease(l))
                );
                let opts = PutOptions {
                    lease,
                    prev_kv: *prev_kv,
                };
                let actual = self.registry.put(&key, &value, opts).await;
                let expected = self.model.put(&key, &value, lease, *prev_kv);
                self.record(request, actual, expected, |n, r| Outcome::Put {
                    revision: n.rev(r.revision),
                    prev_kv: r.prev_kv.as_ref().map(|kv| n.kv(kv)),
                })?;
            }
            Op::Get { key } => {
                let key = self.key(*key);
                let request = format!("get {:?}", self.norm.key(&key));
                let actual = self.registry.get(&key).await;
                let expected = self.model.get(&key);
                self.record(request, actual, expected, |n, r| Outcome::Get {
                    revision: n.rev(r.revision),
                    kv: r.kv.as_ref().map(|kv| n.kv(kv)),
                })?;
            }
            Op::List { prefix, at } => {
                let prefix = self.prefix_of(*prefix);
                let at = at.map(|s| self.revision(s));
                let request = format!(
                    "list {:?} at {:?}",
                    self.norm.key(&prefix),
                    at.map(|r| self.norm.rev(r))
                );
                let actual = self
                    .registry
                    .list(&prefix, ListOptions { revision: at })
                    .await;
                let expected = self.model.list(&prefix, at);
                self.record(request, actual, expected, |n, r| Outcome::List {
                    revision: n.rev(r.revision),
                    kvs: n.kvs(&r.kvs),
                })?;
            }
            Op::Delete { key } => {
                let key = self.key(*key);
                let request = format!("delete {:?}", self.norm.key(&key));
                let actual = self.registry.delete(&key).await;
                let expected = self.model.delete(&key);
                self.record(request, actual, expected, delete_outcome)?;
            }
            Op::DeletePrefix { prefix } => {
                let prefix = self.prefix_of(*prefix);
                let request = format!("delete_prefix {:?}", self.norm.key(&prefix));
                let actual = self.registry.delete_prefix(&prefix).await;
                let expected = self.model.delete_prefix(&prefix);
                self.record(request, actual, expected, delete_outcome)?;
            }
            Op::Grant { ttl } => self.grant(*ttl).await?,
            Op::KeepAlive { lease } => {
                let id = self.lease(*lease).unwrap_or(UNKNOWN_LEASE);
                let request = format!("keep_alive {:?}", self.norm.lease(id));
                let actual = self.registry.lease_keep_alive(id).await;
                let expected = self.model.lease_keep_alive(id);
                self.record(request, actual, expected, |_, ttl| Outcome::KeepAlive(*ttl))?;
            }
            Op::KeepAliveMany { leases } => {
                let ids: Vec<LeaseId> = leases
                    .iter()
                    .map(|sel| self.lease(*sel).unwrap_or(UNKNOWN_LEASE))
                    .collect();
                let named: Vec<_> = ids.iter().map(|id| self.norm.lease(*id)).collect();
                let request = format!("keep_alive_many {named:?}");
                let sent = Instant::now();
                let actual = self.registry.lease_keep_alive_many(&ids).await;
                let expected = self.model.lease_keep_alive_many(&ids);
                let answers = self.record(request, actual, expected, |n, answers| {
                    Outcome::KeepAliveMany(n.renewals(answers))
                })?;
                let renewed: Vec<LeaseId> = ids
                    .iter()
                    .zip(answers.iter().flatten())
                    .filter(|(_, answer)| answer.is_ok())
                    .map(|(id, _)| *id)
                    .collect();
                self.check_renewed(&renewed, sent).await?;
            }
            Op::Revoke { lease } => {
                let id = self.lease(*lease).unwrap_or(UNKNOWN_LEASE);
                let request = format!("revoke {:?}", self.norm.lease(id));
                let actual = self.registry.lease_revoke(id).await;
                let expected = self.model.lease_revoke(id);
                self.record(request, actual, expected, |n, r| Outcome::Revoke(n.rev(*r)))?;
            }
            Op::TimeToLive { lease } => self.time_to_live(*lease).await?,
            Op::Watch {
                prefix,
                start,
                prev_kv,
            } => self.watch(*prefix, *start, *prev_kv).await?,
            Op::Compact { at } => self.compact(*at).await?,
            Op::Advance { millis } => {
                let by = Duration::from_millis(*millis);
                let outcome = match self.caps.time {
                    Time::Virtual => {
                        self.backend.advance(by).await;
                        self.model.advance(by);
                        Outcome::Advanced
                    }
                    Time::Real => Outcome::Skipped,
                };
                self.steps.push(Step {
                    request: format!("advance {millis} ms"),
                    outcome,
                });
            }
        }
        Ok(())
    }

    async fn grant(&mut self, ttl: i64) -> Check {
        let request = format!("grant ttl {ttl}");
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
        self.record(request, actual, expected, |n, g| Outcome::Grant {
            lease: n.lease(g.id),
            ttl: g.ttl,
        })?;
        Ok(())
    }

    /// Answers that match the model do not show that a batch renewed anything (a missed
    /// renewal shows only if a later advance happens to cross the old deadline): every lease
    /// the batch answered for must have its whole TTL left at once.
    async fn check_renewed(&self, ids: &[LeaseId], sent: Instant) -> Check {
        let live: BTreeSet<LeaseId> = ids
            .iter()
            .copied()
            .filter(|id| self.model.lease(*id).is_some())
            .collect();
        for id in live {
            let granted = self.model.lease(id).map_or(0, |l| l.granted);
            let left = self
                .registry
                .lease_time_to_live(id)
                .await
                .map_err(|e| format!("time_to_live of {id} after a batch renewed it: {e}"))?
                .ttl;
            let lowest = match self.caps.time {
                Time::Virtual => granted,
                Time::Real => granted - 1 - sent.elapsed().as_secs() as i64,
            };
            ensure!(
                (lowest..=granted).contains(&left),
                "L3: keep_alive_many answered for {:?} but left it {left} s of its {granted} s, expected {lowest}..={granted}",
                self.norm.lease(id)
            );
        }
        Ok(())
    }

    async fn time_to_live(&mut self, lease: LeaseSel) -> Check {
        let id = self.lease(lease).unwrap_or(UNKNOWN_LEASE);
        let request = format!("time_to_live {:?}", self.norm.lease(id));
        let actual = self.registry.lease_time_to_live(id).await;
        let expected = self.model.lease_time_to_live(id);
        let remaining = actual.as_ref().ok().map(|t| (t.id, t.ttl));
        let granted = self.model.lease(id).map(|l| (l.granted, l.deadline));
        self.record(request, actual, expected, |n, t| Outcome::TimeToLive {
            granted_ttl: t.granted_ttl,
            keys: t.keys.iter().map(|k| n.key(k)).collect(),
        })?;
        if let (Some((got_id, left)), Some((granted, deadline))) = (remaining, granted) {
            ensure!(got_id == id, "time_to_live of {id} answered for {got_id}");
            let (lo, hi) = match self.caps.time {
                Time::Virtual => {
                    let exact = deadline.saturating_sub(self.model.now());
                    let floor = exact.as_secs() as i64;
                    let ceil = floor + i64::from(exact.subsec_nanos() > 0);
                    (floor - 1, ceil)
                }
                Time::Real => {
                    let elapsed = self.started.elapsed().as_secs() as i64 + 1;
                    (granted - 1 - elapsed, granted)
                }
            };
            ensure!(
                (lo.max(0)..=hi).contains(&left),
                "time_to_live of {id} reported {left} s left, expected {lo}..={hi}"
            );
        }
        Ok(())
    }

    async fn watch(&mut self, prefix: u8, start: RevSel, prev_kv: bool) -> Check {
        let prefix = self.prefix_of(prefix);
        let start = self.revision(start);
        let request = format!(
            "watch {:?} from {} prev_kv {prev_kv}",
            self.norm.key(&prefix),
            self.norm.rev(start)
        );
        let opts = WatchOptions {
            start_revision: Some(start),
            prev_kv,
            progress_notify: false,
        };
        let expected = self.model.watch(&prefix, start, prev_kv);
        let mut actual = self.registry.watch(&prefix, opts).await;
        if expected.is_err() {
            // A compacted start: the error is the stream's only item.
            if let Ok(stream) = &mut actual {
                let got = read_until(stream, None, self.caps.watch_timeout()).await;
                actual = match (got.error, got.batches.first()) {
                    (Some(e), _) => Err(e),
                    (None, Some(b)) => {
                        return Err(format!(
                            "{request}: W9 a watch from a compacted revision delivered revision {}",
                            b.revision
                        ))
                    }
                    (None, None) => {
                        return Err(format!(
                            "{request}: W9 a watch from a compacted revision delivered no error"
                        ))
                    }
                };
            }
        }
        let compacted_at_open = self.model.compacted();
        let (stream, actual) = match actual {
            Ok(s) => (Some(s), Ok(())),
            Err(e) => (None, Err(e)),
        };
        self.record(request, actual, expected.map(|_| ()), |_, _| {
            Outcome::Watching
        })?;
        if let Some(stream) = stream {
            if start <= self.model.revision() {
                self.catching_up = true;
            }
            self.watches.push(OpenWatch {
                prefix,
                start,
                prev_kv,
                compacted_at_open,
                stream,
            });
        }
        Ok(())
    }

    async fn compact(&mut self, at: RevSel) -> Check {
        let floor = self.model.compacted().unwrap_or(self.model.base());
        let floor = floor.max(self.model.base());
        let span = self.model.revision().0 - floor.0;
        if span <= 0 {
            self.steps.push(Step {
                request: "compact (nothing to compact)".into(),
                outcome: Outcome::Skipped,
            });
            return Ok(());
        }
        let at = Revision(floor.0 + 1 + i64::from(at.0) % span);
        if self.catching_up && self.caps.time == Time::Real {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        self.catching_up = false;
        let request = format!("compact at {}", self.norm.rev(at));
        let actual = self.registry.compact(at).await;
        let expected = self.model.compact(at);
        self.record(request, actual, expected, |n, r| {
            Outcome::Compact(n.rev(*r))
        })?;
        Ok(())
    }
}
