//! One generated operation at a time: each sent to the backend and to the model, and compared.

use super::{delete_outcome, OpenWatch, Session, UNKNOWN_LEASE};
use crate::contract::backend::{Backend, Time};
use crate::contract::observe::{Outcome, Step};
use crate::contract::ops::{self, Op, RevSel};
use crate::contract::watch_read::read_until;
use crate::failure::Check;
use registry_api::{Error, ListOptions, PutOptions, Revision, WatchOptions};
use std::time::Duration;

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
                let request = self.request(|n| {
                    let lease = lease.map_or_else(|| "no lease".to_owned(), |l| n.lease(l));
                    format!("put {:?} ({} bytes) {lease}", n.key(&key), value.len())
                });
                let opts = PutOptions {
                    lease,
                    prev_kv: *prev_kv,
                };
                let actual = self.registry.put(&key, &value, opts).await;
                // A lease past its deadline whose keys are not deleted yet: etcd still accepts
                // it (the key goes with the lease's keys), a backend may refuse it as gone.
                let expected = match (lease, &actual) {
                    (Some(id), Err(Error::LeaseNotFound(_))) if self.is_expired(id) => {
                        Err(Error::LeaseNotFound(id))
                    }
                    _ => self.model.put(&key, &value, lease, *prev_kv),
                };
                self.record(request, actual, expected, |n, r| Outcome::Put {
                    revision: n.rev(r.revision),
                    prev_kv: r.prev_kv.as_ref().map(|kv| n.kv(kv)),
                })?;
            }
            Op::Get { key } => {
                let key = self.key(*key);
                let request = self.request(|n| format!("get {:?}", n.key(&key)));
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
                let request = self.request(|n| {
                    let at = at.map_or_else(|| "now".to_owned(), |r| format!("at {}", n.rev(r)));
                    format!("list {:?} {at}", n.key(&prefix))
                });
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
                let request = self.request(|n| format!("delete {:?}", n.key(&key)));
                let actual = self.registry.delete(&key).await;
                let expected = self.model.delete(&key);
                self.record(request, actual, expected, delete_outcome)?;
            }
            Op::DeletePrefix { prefix } => {
                let prefix = self.prefix_of(*prefix);
                let request = self.request(|n| format!("delete_prefix {:?}", n.key(&prefix)));
                let actual = self.registry.delete_prefix(&prefix).await;
                let expected = self.model.delete_prefix(&prefix);
                self.record(request, actual, expected, delete_outcome)?;
            }
            Op::Grant { ttl } => self.grant(*ttl).await?,
            Op::KeepAlive { lease } => {
                let id = self.lease(*lease).unwrap_or(UNKNOWN_LEASE);
                self.keep_alive(id).await?;
            }
            Op::KeepAliveMany { leases } => {
                let ids = leases
                    .iter()
                    .map(|sel| self.lease(*sel).unwrap_or(UNKNOWN_LEASE))
                    .collect::<Vec<_>>();
                self.keep_alive_many(&ids).await?;
            }
            Op::Revoke { lease } => {
                let id = self.lease(*lease).unwrap_or(UNKNOWN_LEASE);
                self.revoke(id).await?;
            }
            Op::TimeToLive { lease } => {
                let id = self.lease(*lease).unwrap_or(UNKNOWN_LEASE);
                self.time_to_live(id).await?;
            }
            Op::Watch {
                prefix,
                start,
                prev_kv,
            } => self.watch(*prefix, *start, *prev_kv).await?,
            Op::Compact { at } => self.compact(*at).await?,
            Op::Advance { millis } => self.advance(Duration::from_millis(*millis)).await?,
        }
        Ok(())
    }

    async fn watch(&mut self, prefix: u8, start: RevSel, prev_kv: bool) -> Check {
        let prefix = self.prefix_of(prefix);
        let start = self.watch_start(start);
        let request = self.request(|n| {
            format!(
                "watch {:?} from {}{}",
                n.key(&prefix),
                n.rev(start),
                if prev_kv { " with previous values" } else { "" }
            )
        });
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
                            "{}: W9 a watch from a compacted revision delivered revision {}",
                            request.1, b.revision
                        ))
                    }
                    (None, None) => {
                        return Err(format!(
                            "{}: W9 a watch from a compacted revision delivered no error",
                            request.1
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
            self.note("compact: nothing to compact, not sent".to_owned());
            return Ok(());
        }
        let at = Revision(floor.0 + 1 + i64::from(at.0) % span);
        if self.catching_up && self.caps.time == Time::Real {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        self.catching_up = false;
        let request = self.request(|n| format!("compact at {}", n.rev(at)));
        let actual = self.registry.compact(at).await;
        let expected = self.model.compact(at);
        self.record(request, actual, expected, |n, r| {
            Outcome::Compact(n.rev(*r))
        })?;
        Ok(())
    }
}
