//! The truth the fleet is checked against: the server's own journal of what it committed, read
//! without a client, stamped with the server's virtual time.
//!
//! A checker that follows the truth through a client of its own is subject to the faults it
//! judges: during an outage its watch ends, and until its next successful list it still believes
//! a key it saw deleted is gone, while a gateway that listed first has already seen the key put
//! back (seed 4967 of the default search failed that way). The journal has no such lag: what it
//! says is what the store did, and when.

use registry_api::{EventKind, KeyValue, Revision};
use registry_testing::ServerJournal;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The keys under the fleet's prefix as the journal tells them: what is alive now, and when
/// each gone key went.
pub(super) struct Truth {
    journal: Arc<dyn ServerJournal>,
    prefix: &'static str,
    revision: Revision,
    alive: BTreeMap<String, KeyValue>,
    ended: BTreeMap<String, Duration>,
    /// The journal lost commits before they were read: nothing it says can be trusted since.
    broken: Option<String>,
}

impl fmt::Debug for Truth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Truth")
            .field("revision", &self.revision)
            .field("alive", &self.alive.keys().collect::<Vec<_>>())
            .field("ended", &self.ended)
            .field("broken", &self.broken)
            .finish()
    }
}

/// How a key came or went, for the event log.
pub(super) struct Applied {
    pub(super) at: Duration,
    pub(super) revision: Revision,
    pub(super) line: String,
}

impl Truth {
    pub(super) fn new(journal: Arc<dyn ServerJournal>, prefix: &'static str) -> Self {
        Truth {
            journal,
            prefix,
            revision: Revision(0),
            alive: BTreeMap::new(),
            ended: BTreeMap::new(),
            broken: None,
        }
    }

    /// Applies every commit since the last call and returns what changed under the prefix, or
    /// why the truth is lost (the same answer on every later call).
    pub(super) fn catch_up(&mut self) -> Result<Vec<Applied>, String> {
        if let Some(why) = &self.broken {
            return Err(why.clone());
        }
        let Some(commits) = self.journal.after(self.revision) else {
            let why = format!(
                "the server's journal no longer holds the revisions after {}: the truth is lost",
                self.revision
            );
            self.broken = Some(why.clone());
            return Err(why);
        };
        let mut applied = Vec::new();
        for commit in commits {
            self.revision = commit.batch.revision;
            for event in commit.batch.events {
                let key = event.kv.key_str().into_owned();
                if !key.starts_with(self.prefix) {
                    continue;
                }
                let line = match event.kind {
                    EventKind::Put => {
                        let line = match event.kv.lease {
                            Some(lease) => format!("put {key} (lease {lease})"),
                            None => format!("put {key} (no lease)"),
                        };
                        self.ended.remove(&key);
                        self.alive.insert(key, event.kv);
                        line
                    }
                    EventKind::Delete => {
                        self.alive.remove(&key);
                        self.ended.insert(key.clone(), commit.at);
                        format!("delete {key}")
                    }
                };
                applied.push(Applied {
                    at: commit.at,
                    revision: commit.batch.revision,
                    line,
                });
            }
        }
        Ok(applied)
    }

    /// The server's time now.
    pub(super) fn now(&self) -> Duration {
        self.journal.now()
    }

    /// The live keys and their values, in key order.
    pub(super) fn alive(&self) -> &BTreeMap<String, KeyValue> {
        &self.alive
    }

    /// When `key` stopped being alive, if it is gone.
    pub(super) fn ended(&self, key: &str) -> Option<Duration> {
        self.ended.get(key).copied()
    }

    /// True when the server ever held `key` (alive or gone).
    pub(super) fn ever_held(&self, key: &str) -> bool {
        self.alive.contains_key(key) || self.ended.contains_key(key)
    }
}
