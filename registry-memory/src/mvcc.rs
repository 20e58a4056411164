//! The multi-version key space: the live keys, the store revision, and the history log that
//! serves reads at past revisions and watch replays.
//!
//! The log holds one [`Record`] per revision, contiguous, each change carrying the key's
//! previous version. A read at a past revision `R` takes the live keys and undoes, newest first,
//! every change above `R`; so no per-key version list is kept, and a put costs one log entry.
//! History grows until compaction (or the builder's `history_limit`) lets it go.

use crate::keys::{Change, Changes, KeyRange, Kv, Record};
use bytes::Bytes;
use registry_api::{Error, LeaseId, Revision};
use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

#[derive(Debug)]
pub(crate) struct Mvcc {
    revision: i64,
    compact_revision: i64,
    keys: BTreeMap<Bytes, Arc<Kv>>,
    /// Records of consecutive revisions. Everything from the compaction point up is kept; below
    /// it only what a live watcher has not read yet.
    log: VecDeque<Arc<Record>>,
}

impl Default for Mvcc {
    fn default() -> Self {
        Mvcc {
            revision: Revision::INITIAL.0,
            compact_revision: 0,
            keys: BTreeMap::new(),
            log: VecDeque::new(),
        }
    }
}

impl Mvcc {
    pub(crate) fn revision(&self) -> i64 {
        self.revision
    }

    pub(crate) fn compact_revision(&self) -> i64 {
        self.compact_revision
    }

    /// The live version of `key`.
    pub(crate) fn get(&self, key: &[u8]) -> Option<&Arc<Kv>> {
        self.keys.get(key)
    }

    fn scan<'s>(&'s self, range: KeyRange<'s>) -> impl Iterator<Item = &'s Arc<Kv>> + 's {
        self.keys
            .range::<[u8], _>((Bound::Included(range.start()), Bound::Unbounded))
            .take_while(move |(k, _)| range.contains(k))
            .map(|(_, kv)| kv)
    }

    /// The keys in `range` at `at` (the current revision when `None`), in key order.
    pub(crate) fn read(&self, range: KeyRange<'_>, at: Option<i64>) -> Result<Vec<Arc<Kv>>, Error> {
        let at = match at {
            None => return Ok(self.scan(range).cloned().collect()),
            Some(at) => at,
        };
        self.check_readable(at)?;
        let mut view: BTreeMap<Bytes, Arc<Kv>> = self
            .scan(range)
            .map(|kv| (kv.key.clone(), kv.clone()))
            .collect();
        // Undo newest first, so each key ends at its state just before the oldest change above
        // `at`: its state at `at`.
        for record in self.log.iter().rev().take_while(|r| r.revision > at) {
            for change in record.changes.iter().filter(|c| range.contains(&c.key)) {
                match &change.prev {
                    Some(prev) => view.insert(change.key.clone(), prev.clone()),
                    None => view.remove(&change.key),
                };
            }
        }
        Ok(view.into_values().collect())
    }

    /// Fails as etcd does for a revision below the compaction point or above the current one.
    pub(crate) fn check_readable(&self, at: i64) -> Result<(), Error> {
        if at < self.compact_revision {
            return Err(Error::Compacted {
                compact_revision: Revision(self.compact_revision),
            });
        }
        if at > self.revision {
            return Err(Error::FutureRevision {
                requested: Revision(at),
                current: Revision(self.revision),
            });
        }
        Ok(())
    }

    /// Writes `value` under `key` in a new revision and returns its record.
    pub(crate) fn put(&mut self, key: &[u8], value: &[u8], lease: Option<LeaseId>) -> Arc<Record> {
        self.revision += 1;
        let revision = self.revision;
        let change = match self.keys.get_mut(key) {
            Some(current) => {
                let prev = current.clone();
                let kv = Arc::new(Kv {
                    key: prev.key.clone(),
                    value: Bytes::copy_from_slice(value),
                    create_revision: prev.create_revision,
                    mod_revision: revision,
                    version: prev.version + 1,
                    lease,
                });
                *current = kv.clone();
                Change {
                    key: kv.key.clone(),
                    kv: Some(kv),
                    prev: Some(prev),
                }
            }
            None => {
                let key = Bytes::copy_from_slice(key);
                let kv = Arc::new(Kv {
                    key: key.clone(),
                    value: Bytes::copy_from_slice(value),
                    create_revision: revision,
                    mod_revision: revision,
                    version: 1,
                    lease,
                });
                self.keys.insert(key.clone(), kv.clone());
                Change {
                    key,
                    kv: Some(kv),
                    prev: None,
                }
            }
        };
        self.append(Record {
            revision,
            changes: Changes::from_buf([change]),
        })
    }

    /// Deletes every key in `range` in one revision; `None` (and no revision) when none matched.
    pub(crate) fn delete_range(&mut self, range: KeyRange<'_>) -> Option<Arc<Record>> {
        let doomed: Vec<Bytes> = self.scan(range).map(|kv| kv.key.clone()).collect();
        self.delete_keys(doomed.iter())
    }

    /// Deletes the given keys (in key order) in one revision; missing keys are skipped.
    pub(crate) fn delete_keys<'k>(
        &mut self,
        keys: impl Iterator<Item = &'k Bytes>,
    ) -> Option<Arc<Record>> {
        let revision = self.revision + 1;
        let changes: Changes = keys
            .filter_map(|key| {
                self.keys.remove(key).map(|prev| Change {
                    key: key.clone(),
                    kv: None,
                    prev: Some(prev),
                })
            })
            .collect();
        if changes.is_empty() {
            return None;
        }
        self.revision = revision;
        Some(self.append(Record { revision, changes }))
    }

    fn append(&mut self, record: Record) -> Arc<Record> {
        let record = Arc::new(record);
        self.log.push_back(record.clone());
        record
    }

    /// Moves the compaction point to `at`, with etcd's answers for a point that does not move
    /// forward or lies in the future.
    pub(crate) fn compact(&mut self, at: i64) -> Result<(), Error> {
        if at <= self.compact_revision {
            return Err(Error::Compacted {
                compact_revision: Revision(self.compact_revision),
            });
        }
        if at > self.revision {
            return Err(Error::FutureRevision {
                requested: Revision(at),
                current: Revision(self.revision),
            });
        }
        self.compact_revision = at;
        Ok(())
    }

    /// Keeps at most `limit` readable revisions (the current one included). Cheap: it moves the
    /// compaction point only; [`Mvcc::prune`] frees memory.
    pub(crate) fn compact_to_limit(&mut self, limit: i64) {
        let floor = self.revision - limit + 1;
        if floor > self.compact_revision {
            self.compact_revision = floor;
        }
    }

    /// A copy for a backup: the live keys, the revisions and the readable history (from the
    /// compaction point up), sharing every version and record with this one.
    pub(crate) fn backup(&self) -> Mvcc {
        Mvcc {
            revision: self.revision,
            compact_revision: self.compact_revision,
            keys: self.keys.clone(),
            log: self
                .log
                .iter()
                .filter(|record| record.revision >= self.compact_revision)
                .cloned()
                .collect(),
        }
    }

    /// Raises the revision by `by` with no record for the revisions skipped, and compacts
    /// everything up to it (etcdutl's `--bump-revision N --mark-compacted`): the keys keep
    /// their revisions, no history is readable below the new revision.
    pub(crate) fn bump_and_compact(&mut self, by: i64) {
        self.revision = self.revision.saturating_add(by);
        self.compact_revision = self.revision;
        self.log.clear();
    }

    /// How many records the log holds.
    pub(crate) fn log_len(&self) -> usize {
        self.log.len()
    }

    /// Frees the records below `keep_from`, never any at or above the compaction point.
    pub(crate) fn prune(&mut self, keep_from: i64) {
        let keep_from = keep_from.min(self.compact_revision);
        while self.log.front().is_some_and(|r| r.revision < keep_from) {
            self.log.pop_front();
        }
    }

    /// The first revision the log can serve.
    fn log_start(&self) -> i64 {
        self.log
            .front()
            .map_or(self.revision + 1, |record| record.revision)
    }

    /// Appends to `out` up to `max` records from revision `cursor` on, and returns the cursor
    /// after them.
    pub(crate) fn read_log(&self, cursor: i64, max: usize, out: &mut VecDeque<Arc<Record>>) -> i64 {
        // Revisions below the log's start have no record left that a reader still needs (the
        // empty store's revision 1, or history no live watcher holds).
        let cursor = cursor.max(self.log_start());
        let Ok(first) = usize::try_from(cursor - self.log_start()) else {
            return cursor;
        };
        if first >= self.log.len() {
            return cursor;
        }
        let before = out.len();
        out.extend(self.log.range(first..).take(max).cloned());
        cursor + (out.len() - before) as i64
    }
}
