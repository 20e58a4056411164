//! Key watches: one [`watcher`](mod@crate::watcher) per registered service's prefix, shared by the
//! registrar's registrations of that service, with the watcher's stall detection and herd
//! gate. A key deleted or overwritten while its lease lives is put back as soon as a watch
//! shows it, and a watch gone silent is caught by the watcher, whose re-list then shows it.
//!
//! The machine keeps what the watch last showed under each member's key, and after each event
//! names the members whose key it says something about; whether that calls for a put is the
//! member's to decide (see [`Member::needs_restore`](super::members::Member::needs_restore)).

use super::calls::{Call, GroupId, MemberId};
use crate::watcher::{Change, WatcherConfig, WatcherEvent};
use bytes::Bytes;
use registry_api::{LeaseId, Revision};
use slab::Slab;
use std::collections::{BTreeMap, HashMap};

/// What a watch shows under a member's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Shown {
    pub(super) lease: Option<LeaseId>,
    pub(super) value: Bytes,
}

/// What a watch says about one member's key: what is there (`None`: nothing) as of `at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Observation {
    pub(super) member: MemberId,
    pub(super) shown: Option<Shown>,
    pub(super) at: Revision,
}

/// What one watch event says.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Seen {
    /// The members whose key the event speaks of, in key order (so that put-backs happen in
    /// the same order in every run).
    pub(super) observations: Vec<Observation>,
    /// The members of the watch, when one of them drains and the watch moved on: a drain
    /// ends once its draining value is shown.
    pub(super) drains_to_check: Vec<MemberId>,
    /// The members of the watch, when the store's revision went back (a restore): revisions
    /// they remember (their last put) no longer compare with the store's.
    pub(super) regressed: Vec<MemberId>,
}

struct Group {
    prefix: String,
    /// Ordered, so that a list's put-backs happen in the same order in every run.
    members: BTreeMap<Bytes, MemberId>,
    /// What the watch shows under the members' keys (other keys are not kept).
    shown: HashMap<Bytes, Shown>,
    /// The revision the watch has shown everything up to.
    seen: Revision,
    draining: usize,
}

/// Every key watch of a registrar.
#[derive(Default)]
pub(super) struct KeyWatches {
    groups: Slab<Group>,
    by_prefix: HashMap<String, GroupId>,
}

impl KeyWatches {
    /// Adds a member's key to its service's watch; the call that opens the watch when the
    /// service had none.
    pub(super) fn join(
        &mut self,
        prefix: &str,
        key: Bytes,
        member: MemberId,
        config: impl FnOnce() -> WatcherConfig,
    ) -> (GroupId, Option<Call>) {
        let (group, call) = match self.by_prefix.get(prefix) {
            Some(group) => (*group, None),
            None => {
                let group = self.groups.insert(Group {
                    prefix: prefix.to_owned(),
                    members: BTreeMap::new(),
                    shown: HashMap::new(),
                    seen: Revision::default(),
                    draining: 0,
                });
                self.by_prefix.insert(prefix.to_owned(), group);
                let call = Call::Watch {
                    group,
                    prefix: prefix.to_owned(),
                    config: config(),
                };
                (group, Some(call))
            }
        };
        if let Some(g) = self.groups.get_mut(group) {
            g.members.insert(key, member);
        }
        (group, call)
    }

    /// Takes a member's key out (`draining`: it was draining); the call that closes the watch
    /// when it was the service's last.
    pub(super) fn leave(&mut self, group: GroupId, key: &Bytes, draining: bool) -> Option<Call> {
        let g = self.groups.get_mut(group)?;
        g.members.remove(key);
        g.shown.remove(key);
        if draining {
            g.draining = g.draining.saturating_sub(1);
        }
        if !g.members.is_empty() {
            return None;
        }
        let g = self.groups.remove(group);
        self.by_prefix.remove(&g.prefix);
        Some(Call::Unwatch { group })
    }

    /// A member of the watch started draining.
    pub(super) fn drain_started(&mut self, group: GroupId) {
        if let Some(g) = self.groups.get_mut(group) {
            g.draining += 1;
        }
    }

    /// The revision the watch has shown everything up to.
    pub(super) fn seen(&self, group: GroupId) -> Revision {
        self.groups
            .get(group)
            .map_or(Revision::default(), |g| g.seen)
    }

    /// One event of the watch of `group`.
    pub(super) fn apply(&mut self, group: GroupId, event: WatcherEvent) -> Seen {
        let Some(g) = self.groups.get_mut(group) else {
            return Seen::default();
        };
        let mut seen = Seen::default();
        let before = g.seen;
        match event {
            WatcherEvent::Changed {
                revision, changes, ..
            } => {
                g.seen = g.seen.max(revision);
                for change in changes {
                    let Some(member) = g.members.get(change.key()).copied() else {
                        continue;
                    };
                    let (key, shown, at) = match change {
                        Change::Put { kv, .. } => {
                            let shown = Shown {
                                lease: kv.lease,
                                value: kv.value,
                            };
                            (kv.key, Some(shown), kv.mod_revision)
                        }
                        Change::Delete { prev } => (prev.key, None, revision),
                    };
                    match &shown {
                        Some(shown) => g.shown.insert(key, shown.clone()),
                        None => g.shown.remove(&key),
                    };
                    seen.observations.push(Observation { member, shown, at });
                }
            }
            WatcherEvent::Synced { revision } => {
                // Listed and watching: every member's key is as the watch holds it now,
                // including the ones it never showed (deleted before the list).
                g.seen = g.seen.max(revision);
                for (key, member) in &g.members {
                    seen.observations.push(Observation {
                        member: *member,
                        shown: g.shown.get(key).cloned(),
                        at: revision,
                    });
                }
            }
            WatcherEvent::Progress { revision } => g.seen = g.seen.max(revision),
            WatcherEvent::Regressed { held, listed } => {
                // The store was restored from an older backup: revisions start over from
                // `listed`. The differences and `Synced` follow, observed against that.
                tracing::warn!(prefix = %g.prefix, %held, %listed, "the registry's revision went back (restored from an older backup?); checking every key again");
                g.seen = listed;
                seen.regressed.extend(g.members.values().copied());
            }
            WatcherEvent::Failed { error, retry_in } => {
                tracing::warn!(prefix = %g.prefix, %error, ?retry_in, "key watch failed; the watcher lists again");
            }
        }
        if g.draining > 0 && g.seen > before {
            seen.drains_to_check.extend(g.members.values().copied());
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use registry_api::KeyValue;
    use std::sync::Arc;
    use std::time::Duration;

    fn kv(key: &str, value: &str, lease: i64, revision: i64) -> KeyValue {
        KeyValue {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            create_revision: Revision(revision),
            mod_revision: Revision(revision),
            version: 1,
            lease: Some(LeaseId(lease)),
        }
    }

    fn shown(value: &str, lease: i64) -> Option<Shown> {
        Some(Shown {
            lease: Some(LeaseId(lease)),
            value: Bytes::copy_from_slice(value.as_bytes()),
        })
    }

    #[test]
    fn one_watch_per_service_opened_by_the_first_member_and_closed_by_the_last() {
        let mut watches = KeyWatches::default();
        let config = WatcherConfig::default;
        let (g, call) = watches.join("s/a/", Bytes::from_static(b"s/a/1"), 1, config);
        assert!(matches!(call, Some(Call::Watch { group, .. }) if group == g));
        let (same, call) = watches.join("s/a/", Bytes::from_static(b"s/a/2"), 2, config);
        assert_eq!((same, call.is_none()), (g, true));
        let (other, call) = watches.join("s/b/", Bytes::from_static(b"s/b/1"), 3, config);
        assert!(other != g && call.is_some());
        assert!(watches
            .leave(g, &Bytes::from_static(b"s/a/1"), false)
            .is_none());
        assert!(matches!(
            watches.leave(g, &Bytes::from_static(b"s/a/2"), false),
            Some(Call::Unwatch { group }) if group == g
        ));
    }

    #[test]
    fn events_name_the_members_they_speak_of_with_what_is_there() {
        let mut watches = KeyWatches::default();
        let (g, _) = watches.join("s/", Bytes::from_static(b"s/a"), 1, WatcherConfig::default);
        watches.join("s/", Bytes::from_static(b"s/b"), 2, WatcherConfig::default);
        // The list shows `a` only; once synced, `b` (never shown) is observed missing.
        let listed = watches.apply(
            g,
            WatcherEvent::Changed {
                revision: Revision(5),
                changes: vec![
                    Change::Put {
                        kv: kv("s/a", "A", 7, 4),
                        prev: None,
                    },
                    Change::Put {
                        kv: kv("s/other", "x", 9, 5),
                        prev: None,
                    },
                ],
                resync: true,
            },
        );
        assert_eq!(
            listed.observations,
            vec![Observation {
                member: 1,
                shown: shown("A", 7),
                at: Revision(4)
            }]
        );
        let synced = watches.apply(
            g,
            WatcherEvent::Synced {
                revision: Revision(5),
            },
        );
        assert_eq!(
            synced.observations,
            vec![
                Observation {
                    member: 1,
                    shown: shown("A", 7),
                    at: Revision(5)
                },
                Observation {
                    member: 2,
                    shown: None,
                    at: Revision(5)
                }
            ]
        );
        // A re-list after a silent watch shows `a` gone.
        let failed = watches.apply(
            g,
            WatcherEvent::Failed {
                error: Arc::new(crate::Error::WatchStalled {
                    silent_for: Duration::from_secs(35),
                }),
                retry_in: Duration::from_millis(500),
            },
        );
        assert_eq!(failed, Seen::default());
        let relisted = watches.apply(
            g,
            WatcherEvent::Changed {
                revision: Revision(9),
                changes: vec![Change::Delete {
                    prev: kv("s/a", "A", 7, 4),
                }],
                resync: true,
            },
        );
        assert_eq!(
            relisted.observations,
            vec![Observation {
                member: 1,
                shown: None,
                at: Revision(9)
            }]
        );
        assert_eq!(watches.seen(g), Revision(9));
    }

    #[test]
    fn a_regression_names_every_member_and_starts_the_revision_over() {
        let mut watches = KeyWatches::default();
        let (g, _) = watches.join("s/", Bytes::from_static(b"s/a"), 1, WatcherConfig::default);
        watches.join("s/", Bytes::from_static(b"s/b"), 2, WatcherConfig::default);
        watches.apply(
            g,
            WatcherEvent::Synced {
                revision: Revision(38),
            },
        );
        let seen = watches.apply(
            g,
            WatcherEvent::Regressed {
                held: Revision(38),
                listed: Revision(6),
            },
        );
        assert_eq!(seen.regressed, vec![1, 2]);
        assert_eq!(watches.seen(g), Revision(6));
        let synced = watches.apply(
            g,
            WatcherEvent::Synced {
                revision: Revision(6),
            },
        );
        assert!(synced.observations.iter().all(|o| o.at == Revision(6)));
    }

    #[test]
    fn a_draining_member_asks_for_checks_as_the_watch_moves_on() {
        let mut watches = KeyWatches::default();
        let (g, _) = watches.join("s/", Bytes::from_static(b"s/a"), 1, WatcherConfig::default);
        let progress = |r| WatcherEvent::Progress {
            revision: Revision(r),
        };
        assert!(watches.apply(g, progress(3)).drains_to_check.is_empty());
        watches.drain_started(g);
        assert_eq!(watches.apply(g, progress(4)).drains_to_check, vec![1]);
        assert!(
            watches.apply(g, progress(4)).drains_to_check.is_empty(),
            "nothing new"
        );
    }
}
