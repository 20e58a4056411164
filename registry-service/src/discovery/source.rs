//! The task that feeds a cache: list at R, watch from R+1, and on any watch failure re-list
//! with backoff and diff.

use super::cache::Cache;
use super::DiscoveryOptions;
use crate::rng::SplitMix64;
use futures::StreamExt;
use registry_api::{Error, ListOptions, Registry, Result, WatchOptions};
use std::future::Future;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::time::Instant;

pub(super) struct Source {
    pub(super) registry: Arc<dyn Registry>,
    pub(super) cache: Arc<Cache>,
    pub(super) options: DiscoveryOptions,
    pub(super) rng: SplitMix64,
    /// Lists refused in a row for being older than the cache.
    pub(super) older_lists: u32,
}

/// How many lists older than the cache are refused in a row before one is believed.
const MAX_OLDER_LISTS: u32 = 3;

impl Source {
    /// Runs until `stop` fires or its sender is dropped (the last handle went away).
    pub(super) async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let mut attempt: u32 = 0;
        loop {
            tokio::select! {
                _ = &mut stop => return,
                healthy = self.sync_and_watch() => {
                    self.cache.mark_stale();
                    attempt = if healthy { 1 } else { attempt.saturating_add(1) };
                }
            }
            let wait = self.options.backoff.delay(attempt, &mut self.rng);
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One list-then-watch cycle; returns when the watch fails. `true` when the watch was
    /// healthy (delivered something or lasted a while), so the backoff can start over.
    async fn sync_and_watch(&mut self) -> bool {
        let prefix = self.cache.layout.service_prefix(&self.cache.service);
        let held = self.cache.status().revision;
        let list = match self
            .call(
                self.registry
                    .list(prefix.as_bytes(), ListOptions::default()),
            )
            .await
        {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "listing failed; the cache is stale");
                return false;
            }
        };
        if list.revision < held && self.older_lists < MAX_OLDER_LISTS {
            // A member behind the one we watched: its list would bring back removed instances.
            // It catches up within moments; a store that stays behind was reset, and then its
            // list is the truth after all.
            self.older_lists += 1;
            tracing::warn!(%held, listed = %list.revision, "list is older than the cache; retrying");
            return false;
        }
        self.older_lists = 0;
        self.cache.resync(&list.kvs, list.revision);
        tracing::debug!(revision = %list.revision, count = list.kvs.len(), "listed");

        let from = list.revision.next();
        let mut stream = match self
            .call(
                self.registry
                    .watch(prefix.as_bytes(), WatchOptions::from_revision(from)),
            )
            .await
        {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "watch failed to start; the cache is stale");
                return false;
            }
        };
        self.cache.mark_synced();
        let started = Instant::now();
        let mut delivered = false;
        loop {
            match stream.next().await {
                Some(Ok(batch)) => {
                    delivered = true;
                    self.cache.apply(&batch);
                }
                Some(Err(e)) => {
                    match &e {
                        Error::Compacted { compact_revision } => {
                            tracing::info!(%compact_revision, "watch compacted; re-listing")
                        }
                        e => tracing::warn!(error = %e, "watch failed; re-listing"),
                    }
                    break;
                }
                None => {
                    tracing::warn!("watch ended; re-listing");
                    break;
                }
            }
        }
        delivered || started.elapsed() >= self.options.backoff.max
    }

    async fn call<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        match tokio::time::timeout(self.options.request_timeout, call).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Error::unavailable(format!(
                "no answer within {:?}",
                self.options.request_timeout
            ))),
        }
    }
}
