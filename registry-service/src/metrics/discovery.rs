//! A discovery cache's series: its instances, revision, sync and the feed's counters.

use super::{unix_now, Description, Series, Table};
use crate::instance::{ServiceInstance, Status};
use crate::store::{Snapshot, StoreStatus};
use metrics::{Counter, Gauge, Label, Unit};
use std::sync::Arc;

/// What a cache's series are read from after each step of its feed: the store's status and the
/// feed's counters.
pub(crate) struct DiscoveryReading {
    pub(crate) status: StoreStatus,
    pub(crate) resyncs: u64,
    pub(crate) watch_restarts: u64,
}

/// Every series read from a [`DiscoveryReading`], one line each.
const SERIES: &[Series<DiscoveryReading>] = &[
    Series {
        name: "registry_discovery_revision",
        // Revisions stay far below 2^53, where f64 is exact.
        read: |r| Some(r.status.revision.0 as f64),
    },
    Series {
        name: "registry_discovery_synced",
        read: |r| Some(if r.status.synced { 1.0 } else { 0.0 }),
    },
    Series {
        name: "registry_discovery_resyncs_total",
        read: |r| Some(r.resyncs as f64),
    },
    Series {
        name: "registry_discovery_watch_restarts_total",
        read: |r| Some(r.watch_restarts as f64),
    },
    Series {
        name: "registry_discovery_regressions_total",
        read: |r| Some(r.status.regressions as f64),
    },
];

const INSTANCES: &str = "registry_discovery_instances";
const EVENTS: &str = "registry_discovery_events_total";
const STALE_SINCE: &str = "registry_discovery_stale_since_timestamp_seconds";

pub(super) const DESCRIPTIONS: &[Description] = &[
    (INSTANCES, "Instances in the discovery cache, by status", None),
    (
        "registry_discovery_revision",
        "The store revision the discovery cache reflects",
        None,
    ),
    (
        "registry_discovery_synced",
        "1 while the discovery cache is listed and watching, else 0",
        None,
    ),
    (
        STALE_SINCE,
        "When the discovery cache was last seen synced, while it is not, as a Unix time; 0 while synced",
        Some(Unit::Seconds),
    ),
    (
        "registry_discovery_resyncs_total",
        "Times the discovery cache became synced again after losing its watch",
        None,
    ),
    (
        "registry_discovery_watch_restarts_total",
        "Times the discovery cache's watch failed (unavailable, compacted, stalled, ...) and restarted",
        None,
    ),
    (
        "registry_discovery_regressions_total",
        "Times the registry's revision went back under the discovery cache (a store restored from an older backup)",
        None,
    ),
    (
        EVENTS,
        "Changes the discovery cache applied, by kind (added, updated, removed)",
        None,
    ),
];

/// The statuses an instance is counted under, in [`Status`]'s order.
const STATUSES: [&str; 3] = ["serving", "draining", "unknown"];

fn status_index(status: Status) -> usize {
    match status {
        Status::Serving => 0,
        Status::Draining => 1,
        Status::Unknown => 2,
    }
}

/// The series of one discovery cache, labelled with its service.
pub(crate) struct DiscoverySeries {
    table: Table<DiscoveryReading>,
    instances: [Gauge; 3],
    /// Instances counted by status, as the store holds them.
    counts: [i64; 3],
    events: [Counter; 3],
    stale_since: Gauge,
    /// The cache was synced at the last step.
    synced: bool,
}

impl std::fmt::Debug for DiscoverySeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscoverySeries")
            .field("counts", &self.counts)
            .field("synced", &self.synced)
            .finish_non_exhaustive()
    }
}

impl DiscoverySeries {
    /// The series of a new cache of `service`: empty, not synced yet (stale since now).
    pub(crate) fn new(service: &str) -> Self {
        super::describe();
        let labels = vec![Label::new("service", service.to_owned())];
        let labelled = |key: &'static str, value: &'static str| {
            let mut labels = labels.clone();
            labels.push(Label::new(key, value));
            labels
        };
        let instances = STATUSES.map(|s| metrics::gauge!(INSTANCES, labelled("status", s).iter()));
        let events = ["added", "updated", "removed"]
            .map(|e| metrics::counter!(EVENTS, labelled("event", e).iter()));
        for gauge in &instances {
            gauge.set(0.0);
        }
        for counter in &events {
            counter.absolute(0);
        }
        let stale_since = metrics::gauge!(STALE_SINCE, labels.iter());
        stale_since.set(unix_now());
        let series = DiscoverySeries {
            table: Table::new(SERIES, &labels),
            instances,
            counts: [0; 3],
            events,
            stale_since,
            synced: false,
        };
        series.table.set(&DiscoveryReading {
            status: StoreStatus::default(),
            resyncs: 0,
            watch_restarts: 0,
        });
        series
    }

    /// Before the feed applies `updates` to a store now holding `before`: counts the events the
    /// store will publish (a put of an equal value and a removal of an absent key publish
    /// none) and moves the instances between statuses.
    pub(crate) fn changing(
        &mut self,
        before: &Snapshot<ServiceInstance>,
        updates: &[(Arc<str>, Option<ServiceInstance>)],
    ) {
        let mut pending: std::collections::HashMap<&str, Option<&ServiceInstance>> =
            std::collections::HashMap::new();
        for (id, new) in updates {
            let old = match pending.get(&**id) {
                Some(old) => *old,
                None => before.get(id),
            };
            let event = match (old, new) {
                (Some(old), Some(new)) if old == new => None,
                (Some(_), Some(_)) => Some(1),
                (None, Some(_)) => Some(0),
                (Some(_), None) => Some(2),
                (None, None) => None,
            };
            if let Some(event) = event {
                self.events[event].increment(1);
                if let Some(old) = old {
                    self.counts[status_index(old.status)] -= 1;
                }
                if let Some(new) = new {
                    self.counts[status_index(new.status)] += 1;
                }
            }
            pending.insert(id, new.as_ref());
        }
        for (gauge, count) in self.instances.iter().zip(self.counts) {
            gauge.set(count as f64);
        }
    }

    /// After each step of the feed.
    pub(crate) fn observe(&mut self, reading: &DiscoveryReading) {
        match (self.synced, reading.status.synced) {
            (false, true) => self.stale_since.set(0.0),
            (true, false) => self.stale_since.set(unix_now()),
            _ => {}
        }
        self.synced = reading.status.synced;
        self.table.set(reading);
    }
}
