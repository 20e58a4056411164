//! The pure reference model: what a real etcd answers, computed without any backend, async or
//! clock. It follows `shared/design/etcd-semantics.md` rule by rule and keeps the full history,
//! so that any watch can be replayed and checked.
//!
//! Every method answers exactly what the [`Registry`](registry_api::Registry) call of the same
//! name must answer, errors included, and changes the model the same way the backend must.

mod leases;

use registry_api::{
    limits, Bytes, DeleteResponse, Error, EventKind, GetResponse, KeyValue, LeaseId, ListResponse,
    PutResponse, Result, Revision, WatchBatch, WatchEvent,
};
use std::collections::BTreeMap;
use std::time::Duration;

pub use leases::ModelLease;

/// Limits the model enforces, as the backend declares them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelLimits {
    /// The smallest TTL granted.
    pub min_ttl: i64,
    /// The largest TTL accepted.
    pub max_ttl: i64,
    /// The largest key plus value accepted.
    pub max_value_bytes: usize,
}

/// One revision of history: every event it made, in key order, with each key's previous value.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Change {
    revision: Revision,
    events: Vec<WatchEvent>,
}

/// The reference model of one etcd keyspace.
#[derive(Clone, Debug)]
pub struct Model {
    limits: ModelLimits,
    base: Revision,
    revision: Revision,
    compacted: Option<Revision>,
    keys: BTreeMap<Bytes, KeyValue>,
    leases: BTreeMap<LeaseId, ModelLease>,
    history: Vec<Change>,
    now: Duration,
}

impl Model {
    /// A model whose store is at `base` with nothing under the keys it will be asked about.
    pub fn new(base: Revision, limits: ModelLimits) -> Self {
        Model {
            limits,
            base,
            revision: base,
            compacted: None,
            keys: BTreeMap::new(),
            leases: BTreeMap::new(),
            history: Vec::new(),
            now: Duration::ZERO,
        }
    }

    /// The revision the model started at.
    pub fn base(&self) -> Revision {
        self.base
    }

    /// The current revision.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// The last compaction this model made, if any.
    pub fn compacted(&self) -> Option<Revision> {
        self.compacted
    }

    /// A hash of everything an answer can depend on (revision, compaction, keys, leases, the
    /// history's events): equal models hash equal. For checkers that remember states seen.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (self.revision, self.compacted, self.now).hash(&mut h);
        for kv in self.keys.values() {
            (
                &kv.key,
                &kv.value,
                kv.create_revision,
                kv.mod_revision,
                kv.version,
                kv.lease,
            )
                .hash(&mut h);
        }
        for (id, lease) in &self.leases {
            (
                id,
                lease.granted,
                lease.deadline,
                &lease.keys,
                lease.expired,
            )
                .hash(&mut h);
        }
        for change in &self.history {
            change.revision.hash(&mut h);
            for e in &change.events {
                (&e.kv.key, &e.kv.value, e.kind == EventKind::Put).hash(&mut h);
            }
        }
        h.finish()
    }

    /// The model's clock: time since it was made.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// `put`.
    pub fn put(
        &mut self,
        key: &[u8],
        value: &[u8],
        lease: Option<LeaseId>,
        prev_kv: bool,
    ) -> Result<PutResponse> {
        limits::check_put(key, value, self.limits.max_value_bytes)?;
        if let Some(id) = lease {
            limits::check_lease_id(id)?;
            if !self.leases.contains_key(&id) {
                return Err(Error::LeaseNotFound(id));
            }
        }
        let revision = self.revision.next();
        let prev = self.keys.get(key).cloned();
        let kv = KeyValue {
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
            create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
            mod_revision: revision,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            lease,
        };
        self.detach(key);
        if let Some(id) = lease {
            if let Some(l) = self.leases.get_mut(&id) {
                l.keys.insert(kv.key.clone());
            }
        }
        self.keys.insert(kv.key.clone(), kv.clone());
        self.commit(
            revision,
            vec![WatchEvent {
                kind: EventKind::Put,
                kv,
                prev_kv: prev.clone(),
            }],
        );
        Ok(PutResponse {
            revision,
            prev_kv: if prev_kv { prev } else { None },
        })
    }

    /// `get`.
    pub fn get(&self, key: &[u8]) -> Result<GetResponse> {
        limits::check_key(key)?;
        Ok(GetResponse {
            kv: self.keys.get(key).cloned(),
            revision: self.revision,
        })
    }

    /// `list`, at the current revision or at `at`; the response's revision is the current one
    /// either way, as etcd's header is.
    pub fn list(&self, prefix: &[u8], at: Option<Revision>) -> Result<ListResponse> {
        let Some(at) = at else {
            return Ok(ListResponse {
                kvs: self.range(prefix).cloned().collect(),
                revision: self.revision,
            });
        };
        self.check_readable(at)?;
        let mut state: BTreeMap<Bytes, KeyValue> = BTreeMap::new();
        for change in self.history.iter().take_while(|c| c.revision <= at) {
            for event in &change.events {
                match event.kind {
                    EventKind::Put => state.insert(event.kv.key.clone(), event.kv.clone()),
                    EventKind::Delete => state.remove(&event.kv.key),
                };
            }
        }
        Ok(ListResponse {
            kvs: state
                .into_values()
                .filter(|kv| kv.key.starts_with(prefix))
                .collect(),
            // etcd's header carries the current revision, even for a read in the past.
            revision: self.revision,
        })
    }

    /// `delete`.
    pub fn delete(&mut self, key: &[u8]) -> Result<DeleteResponse> {
        limits::check_key(key)?;
        let keys: Vec<Bytes> = self
            .keys
            .get(key)
            .map(|kv| kv.key.clone())
            .into_iter()
            .collect();
        Ok(self.delete_keys(keys))
    }

    /// `delete_prefix`.
    pub fn delete_prefix(&mut self, prefix: &[u8]) -> Result<DeleteResponse> {
        let keys = self.range(prefix).map(|kv| kv.key.clone()).collect();
        Ok(self.delete_keys(keys))
    }

    /// `compact`.
    pub fn compact(&mut self, at: Revision) -> Result<Revision> {
        limits::check_revision(at)?;
        if let Some(compacted) = self.compacted {
            if at <= compacted {
                return Err(Error::Compacted {
                    compact_revision: compacted,
                });
            }
        }
        if at > self.revision {
            return Err(Error::FutureRevision {
                requested: at,
                current: self.revision,
            });
        }
        self.compacted = Some(at);
        Ok(self.revision)
    }

    /// What a watch on `prefix` from `start` must deliver, as of now: every change under the
    /// prefix at or after `start`, one batch per revision. Previous values are given when asked,
    /// except where etcd cannot look them up: at revisions whose predecessor is compacted.
    pub fn watch(&self, prefix: &[u8], start: Revision, prev_kv: bool) -> Result<Vec<WatchBatch>> {
        limits::check_revision(start)?;
        if let Some(compacted) = self.compacted {
            if start < compacted {
                return Err(Error::Compacted {
                    compact_revision: compacted,
                });
            }
        }
        Ok(self.changes_since(prefix, start, prev_kv, self.compacted))
    }

    /// The batches under `prefix` from `start` on, with previous values unless the revision
    /// before the event was compacted when the watch opened (`compacted_at_open`).
    pub fn changes_since(
        &self,
        prefix: &[u8],
        start: Revision,
        prev_kv: bool,
        compacted_at_open: Option<Revision>,
    ) -> Vec<WatchBatch> {
        self.history
            .iter()
            .filter(|c| c.revision >= start)
            .filter_map(|c| {
                // The previous value is read at revision - 1, which must not be compacted.
                let prev_visible = compacted_at_open.map_or(true, |cr| c.revision > cr);
                let events: Vec<WatchEvent> = c
                    .events
                    .iter()
                    .filter(|e| e.kv.key.starts_with(prefix))
                    .map(|e| WatchEvent {
                        prev_kv: if prev_kv && prev_visible {
                            e.prev_kv.clone()
                        } else {
                            None
                        },
                        ..e.clone()
                    })
                    .collect();
                (!events.is_empty()).then_some(WatchBatch {
                    revision: c.revision,
                    events,
                })
            })
            .collect()
    }

    /// Rejects a read below the compaction point or above the current revision.
    fn check_readable(&self, at: Revision) -> Result<()> {
        limits::check_revision(at)?;
        if let Some(compacted) = self.compacted {
            if at < compacted {
                return Err(Error::Compacted {
                    compact_revision: compacted,
                });
            }
        }
        if at > self.revision {
            return Err(Error::FutureRevision {
                requested: at,
                current: self.revision,
            });
        }
        Ok(())
    }

    fn range<'a>(&'a self, prefix: &'a [u8]) -> impl Iterator<Item = &'a KeyValue> + 'a {
        self.keys
            .range(Bytes::copy_from_slice(prefix)..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(_, kv)| kv)
    }

    /// Deletes `keys` (in key order) in one revision; nothing at all uses no revision.
    fn delete_keys(&mut self, keys: Vec<Bytes>) -> DeleteResponse {
        if keys.is_empty() {
            return DeleteResponse {
                deleted: 0,
                revision: self.revision,
                prev_kvs: Vec::new(),
            };
        }
        let revision = self.revision.next();
        let mut prev_kvs = Vec::with_capacity(keys.len());
        let mut events = Vec::with_capacity(keys.len());
        for key in keys {
            self.detach(&key);
            let Some(prev) = self.keys.remove(&key) else {
                continue;
            };
            events.push(WatchEvent {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: key.clone(),
                    mod_revision: revision,
                    ..KeyValue::default()
                },
                prev_kv: Some(prev.clone()),
            });
            prev_kvs.push(prev);
        }
        self.commit(revision, events);
        DeleteResponse {
            deleted: prev_kvs.len() as i64,
            revision,
            prev_kvs,
        }
    }

    /// Removes `key` from the lease it is attached to, if any.
    fn detach(&mut self, key: &[u8]) {
        let Some(id) = self.keys.get(key).and_then(|kv| kv.lease) else {
            return;
        };
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.keys.remove(key);
        }
    }

    fn commit(&mut self, revision: Revision, mut events: Vec<WatchEvent>) {
        events.sort_by(|a, b| a.kv.key.cmp(&b.kv.key));
        self.revision = revision;
        self.history.push(Change { revision, events });
    }
}

#[cfg(test)]
mod tests;
