//! The task that feeds a discovery's store from its watcher, decoding as it goes.

use super::snapshot_file::FileShared;
use super::InstanceLayout;
use crate::instance::ServiceInstance;
use crate::store::Writer;
use crate::watcher::{Change, Watcher, WatcherEvent};
use futures::StreamExt;
use registry_api::{KeyValue, Revision};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

pub(super) struct Feed {
    pub(super) watcher: Watcher,
    pub(super) writer: Writer<ServiceInstance>,
    pub(super) layout: Arc<dyn InstanceLayout>,
    pub(super) malformed: Arc<AtomicU64>,
    pub(super) counters: Arc<Counters>,
    /// The first list is done.
    pub(super) listed: bool,
    /// The snapshot file to seed the view from before the first list, if any.
    pub(super) file: Option<Arc<FileShared>>,
    /// The view holds the snapshot file's instances, which the first list has not replaced
    /// yet.
    pub(super) seed_pending: bool,
    /// The cache's series.
    #[cfg(feature = "metrics")]
    pub(super) series: crate::metrics::DiscoverySeries,
}

/// What the feed counts for the handles (and metrics) to read.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) watch_restarts: AtomicU64,
    pub(super) resyncs: AtomicU64,
}

impl Feed {
    /// Runs until `stop` says so or its sender is dropped (the last handle went away). The
    /// writer is dropped on the way out, which marks the store closed: that is what
    /// [`Discovery::shutdown`](super::Discovery::shutdown) waits for.
    pub(super) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        if let Some(file) = self.file.take() {
            tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => return,
                seed = file.seed() => if let Some(seed) = seed {
                    self.apply(Revision(0), seed.changes);
                    self.writer.seeded(seed.seeded);
                    self.seed_pending = true;
                },
            }
        }
        // One wait for the whole run: made afresh per event, it would register with the stop
        // channel and leave it again on every event.
        let stopped = stop.wait_for(|stop| *stop);
        tokio::pin!(stopped);
        loop {
            let event = tokio::select! {
                biased;
                _ = &mut stopped => return,
                event = self.watcher.next() => event,
            };
            match event {
                Some(event) => self.handle(event),
                None => return,
            }
        }
    }

    fn handle(&mut self, event: WatcherEvent) {
        match event {
            WatcherEvent::Changed {
                revision,
                changes,
                resync,
            } => {
                let mut updates: Vec<_> = changes
                    .iter()
                    .filter_map(|change| self.decode(change))
                    .collect();
                if resync && self.seed_pending {
                    // The first list after seeding: the watcher held nothing, so its changes
                    // are the whole list. What the file held and the list does not is gone,
                    // in the same publish, so subscribers see exactly the differences.
                    self.seed_pending = false;
                    let listed: std::collections::HashSet<&Arc<str>> =
                        updates.iter().map(|(id, _)| id).collect();
                    let gone: Vec<Arc<str>> = self
                        .writer
                        .keys()
                        .filter(|id| !listed.contains(id))
                        .cloned()
                        .collect();
                    updates.extend(gone.into_iter().map(|id| (id, None)));
                }
                self.apply(revision, updates);
            }
            WatcherEvent::Synced { revision } => {
                if self.seed_pending {
                    // Listed empty (an empty list yields no changes): nothing the file held is
                    // left.
                    self.seed_pending = false;
                    let gone: Vec<_> = self.writer.keys().map(|id| (id.clone(), None)).collect();
                    self.apply(revision, gone);
                }
                // Every list the watcher makes ends with `Synced`; the first is no resync.
                if self.listed {
                    self.counters.resyncs.fetch_add(1, Ordering::Relaxed);
                }
                self.listed = true;
                self.writer.synced(revision);
            }
            WatcherEvent::Progress { revision } => self.writer.progress(revision),
            WatcherEvent::Regressed { held, listed } => {
                tracing::warn!(%held, %listed, "the registry's revision went back (restored from an older backup?); the view follows its list");
                self.writer.regressed(listed);
            }
            WatcherEvent::Failed { error, retry_in } => {
                self.counters.watch_restarts.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%error, ?retry_in, "discovery is stale until the next list");
                self.writer.failed(error);
            }
        }
        #[cfg(feature = "metrics")]
        self.series.observe(&crate::metrics::DiscoveryReading {
            status: self.writer.reader().status(),
            resyncs: self.counters.resyncs.load(Ordering::Relaxed),
            watch_restarts: self.counters.watch_restarts.load(Ordering::Relaxed),
        });
    }

    /// Applies `updates` to the store, counting them in the series first.
    fn apply(&mut self, revision: Revision, updates: Vec<(Arc<str>, Option<ServiceInstance>)>) {
        #[cfg(feature = "metrics")]
        self.series
            .changing(&self.writer.reader().snapshot(), &updates);
        self.writer.apply(revision, updates);
    }

    /// What a change means for the instances: `None` for keys that are not instances.
    fn decode(&self, change: &Change) -> Option<(Arc<str>, Option<ServiceInstance>)> {
        match change {
            Change::Put { kv, .. } => {
                let id = self.layout.instance_id(&kv.key)?;
                match self.layout.decode(&id, kv) {
                    Ok(instance) => Some((id.into(), Some(instance))),
                    Err(why) => {
                        self.count_malformed(kv, &why);
                        // A value that is no longer an instance: whatever was there is gone.
                        Some((id.into(), None))
                    }
                }
            }
            Change::Delete { prev } => {
                let id = self.layout.instance_id(&prev.key)?;
                Some((id.into(), None))
            }
        }
    }

    fn count_malformed(&self, kv: &KeyValue, why: &str) {
        self.malformed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            key = %kv.key_str(),
            revision = %kv.mod_revision,
            why,
            "skipping a malformed instance value"
        );
    }
}
