//! The cheap, cloneable reader of a store.

use super::subscription::Subscription;
use super::{Shared, Snapshot, StoreStatus};
use crate::{Error, Result};
use registry_api::Revision;
use std::sync::Arc;
use std::time::Duration;

/// Reads a store: the latest [`Snapshot`] without waiting on the writer, readiness, the
/// revision, staleness and the last error, and bounded subscriptions to its changes.
/// Clones share one store.
#[derive(Debug)]
pub struct Store<T> {
    pub(super) shared: Arc<Shared<T>>,
}

impl<T> Clone for Store<T> {
    fn clone(&self) -> Self {
        Store {
            shared: self.shared.clone(),
        }
    }
}

impl<T: Clone + PartialEq + Send + Sync + 'static> Store<T> {
    /// The latest state. Lock-free: a reader never waits for the writer, nor the writer for
    /// readers.
    pub fn snapshot(&self) -> Arc<Snapshot<T>> {
        self.shared.current()
    }

    /// The entry under `key` now.
    pub fn get(&self, key: &str) -> Option<T> {
        self.snapshot().get(key).cloned()
    }

    /// How many entries now.
    pub fn len(&self) -> usize {
        self.snapshot().len()
    }

    /// True when there are none now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Freshness, readiness and the last error.
    pub fn status(&self) -> StoreStatus {
        self.shared.status.borrow().clone()
    }

    /// Every change of the status from now on (entries, revision, sync), for a task that
    /// follows the store without subscribing to its events.
    pub(crate) fn status_changes(&self) -> tokio::sync::watch::Receiver<StoreStatus> {
        self.shared.status.subscribe()
    }

    /// The store revision the entries reflect (zero before the first list).
    pub fn revision(&self) -> Revision {
        self.shared.status.borrow().revision
    }

    /// True while the source is listed and its watch established.
    pub fn is_synced(&self) -> bool {
        self.shared.status.borrow().synced
    }

    /// True when the entries may be out of date with nothing coming to fix them yet: the
    /// source is not synced now and either was synced before (the entries are as last read)
    /// or has failed (a first list or watch that failed: the store never saw the source's
    /// state). [`last_error`](Self::last_error) says why. False while the first list is still
    /// under way and nothing has failed.
    pub fn is_stale(&self) -> bool {
        self.shared.status.borrow().is_stale()
    }

    /// The last failure of the source, if any (kept after it recovers, for the record).
    pub fn last_error(&self) -> Option<Arc<Error>> {
        self.shared.status.borrow().last_error.clone()
    }

    /// Waits until the store has been synced once (its entries are a real read, not the empty
    /// start), up to `timeout` (virtual time under a paused tokio clock). Fails with
    /// [`Error::Timeout`] after it, with [`Error::Stopped`] when the writer is dropped first,
    /// and with the cause when the task feeding the store died.
    pub async fn wait_until_ready(&self, timeout: Duration) -> Result<()> {
        self.wait_status(|status| status.ready, "the store's first sync", timeout)
            .await
    }

    /// Waits until the store is synced now (at once if it is): listed, and the watch that
    /// continues the list established, so a change made after this returns reaches the store
    /// even if the connection breaks the moment after (it shows as stale meanwhile). Up to
    /// `timeout`; fails as [`wait_until_ready`](Self::wait_until_ready) does.
    pub async fn wait_synced(&self, timeout: Duration) -> Result<()> {
        self.wait_status(|status| status.synced, "the store's sync", timeout)
            .await
    }

    /// Waits until the store has entries to serve: synced, or seeded from a saved copy (then
    /// stale). Up to `timeout`; fails as [`wait_until_ready`](Self::wait_until_ready) does.
    pub(crate) async fn wait_seeded_or_synced(&self, timeout: Duration) -> Result<()> {
        self.wait_status(
            |status| status.synced || status.seeded.is_some(),
            "the store's seed or sync",
            timeout,
        )
        .await
    }

    /// The task that fed the store died of `error`: the status says so from now on (its
    /// writer, dropped with the task, closes the store).
    pub(crate) fn fail(&self, error: Error) {
        let error = Arc::new(error);
        self.shared.status.send_modify(|status| {
            status.synced = false;
            status.failed = true;
            status.last_error = Some(error);
        });
    }

    /// The error the feeding task died of, when it did.
    fn failure(status: &StoreStatus) -> Option<Error> {
        match (&status.last_error, status.failed) {
            (Some(error), true) => Some(Error::clone(error)),
            _ => None,
        }
    }

    /// Waits until the writer is gone (the task that fed the store has stopped), up to
    /// `timeout`; fails with [`Error::Timeout`] after it.
    pub async fn wait_closed(&self, timeout: Duration) -> Result<()> {
        bounded(timeout, "the store's close", self.closed()).await
    }

    /// Waits, for as long as it takes, until the writer is gone: for a shutdown, which stops
    /// the writer itself.
    pub(crate) async fn closed(&self) -> Result<()> {
        let mut status = self.shared.status.subscribe();
        // The sender lives in `shared`, which `self` holds: this cannot fail early.
        status.wait_for(|status| status.closed).await.ok();
        Ok(())
    }

    async fn wait_status(
        &self,
        done: impl Fn(&StoreStatus) -> bool,
        what: &str,
        timeout: Duration,
    ) -> Result<()> {
        let mut status = self.shared.status.subscribe();
        let wait = async {
            let outcome = status
                .wait_for(|status| done(status) || status.closed || status.failed)
                .await
                .map(|status| (done(&status), Self::failure(&status)));
            match outcome {
                Ok((true, _)) => Ok(()),
                Ok((false, Some(failure))) => Err(failure),
                _ => Err(Error::Stopped("store's writer")),
            }
        };
        bounded(timeout, what, wait).await
    }

    /// Waits until the store is synced and `condition` holds on the snapshot (checked now and
    /// after every change), up to `timeout` (virtual time under a paused tokio clock). Returns
    /// the snapshot it held on. Synced, because a snapshot read before the watch is up may
    /// already be out of date with nothing to tell it, and a watch that then fails would leave
    /// the caller with a view it believed live. Fails with [`Error::Timeout`] after `timeout`,
    /// and at once with the cause when the task feeding the store has died.
    pub async fn wait_until(
        &self,
        condition: impl Fn(&Snapshot<T>) -> bool,
        timeout: Duration,
    ) -> Result<Arc<Snapshot<T>>> {
        let mut status = self.shared.status.subscribe();
        let wait = async {
            loop {
                // Marked seen before the read, so a change between the two wakes the wait.
                let (synced, failure) = {
                    let status = status.borrow_and_update();
                    (status.synced, Self::failure(&status))
                };
                let snapshot = self.snapshot();
                if synced && condition(&snapshot) {
                    return Ok(snapshot);
                }
                if let Some(failure) = failure {
                    // Nothing will change any more: the condition will never hold.
                    return Err(failure);
                }
                if status.changed().await.is_err() {
                    return Err(Error::Stopped("store's writer"));
                }
            }
        };
        bounded(timeout, "the store's condition", wait).await
    }

    /// Every change from now on, preceded by an `Added` for each entry held now. Bounded: a
    /// subscriber more than the store's capacity behind is told it lagged and then given
    /// exactly the differences between what it had and the current state (see
    /// [`Subscription`]).
    pub fn subscribe(&self) -> Subscription<T> {
        // The receiver first, then the snapshot: a change published in between is both in the
        // snapshot and in the channel, and the subscription skips the channel's copy by version.
        let receiver = match self.shared.sender.upgrade() {
            Some(sender) => sender.subscribe(),
            None => tokio::sync::broadcast::channel(1).1,
        };
        Subscription::new(receiver, self.clone(), self.snapshot())
    }
}

/// `wait`, failed with [`Error::Timeout`] naming `what` after `timeout`.
async fn bounded<T>(
    timeout: Duration,
    what: &str,
    wait: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, wait).await {
        Ok(outcome) => outcome,
        Err(_) => Err(Error::Timeout {
            what: what.to_owned(),
            after: timeout,
        }),
    }
}
