//! The guard a pick returns: the call's place in its node's in-flight count.

use super::{Node, Shared};
use crate::instance::ServiceInstance;
use std::fmt;
use std::ops::Deref;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// One picked call: the chosen instance (`Deref` to [`ServiceInstance`]) and the call's place
/// in that node's in-flight count, like tower's `PendingRequests` handle.
///
/// End it with [`success`](Self::success) or [`failure`](Self::failure). Dropped without
/// either (the future holding it was cancelled, a task panicked, the caller returned early),
/// it still ends the in-flight count and records nothing else; if it was a trial call
/// ([`is_probe`](Self::is_probe)), the node's next pick is a trial again.
#[must_use = "dropping the pick at once ends the call's in-flight count"]
pub struct Pick {
    shared: Arc<Shared>,
    node: Arc<Node>,
    snapshot: Arc<[ServiceInstance]>,
    index: usize,
    started: Instant,
    probe: bool,
    /// `Some(true)` success, `Some(false)` failure, `None` not marked.
    outcome: Option<bool>,
}

impl Pick {
    pub(super) fn new(
        shared: Arc<Shared>,
        node: Arc<Node>,
        snapshot: Arc<[ServiceInstance]>,
        index: usize,
        started: Instant,
        probe: bool,
    ) -> Self {
        Pick {
            shared,
            node,
            snapshot,
            index,
            started,
            probe,
            outcome: None,
        }
    }

    /// The chosen instance.
    pub fn instance(&self) -> &ServiceInstance {
        &self.snapshot[self.index]
    }

    /// True when this is the trial call of a node coming back from ejection.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// Time since the pick, on tokio's clock.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The call succeeded (or failed for a reason that is not the node's): its latency feeds
    /// the node's estimate and its failure count starts over.
    pub fn success(mut self) {
        self.outcome = Some(true);
    }

    /// The call failed because of the node (unreachable, timed out): it counts toward the
    /// node's ejection.
    pub fn failure(mut self) {
        self.outcome = Some(false);
    }
}

impl Deref for Pick {
    type Target = ServiceInstance;

    fn deref(&self) -> &ServiceInstance {
        self.instance()
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        self.node.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.shared
            .finish(&self.node, self.probe, self.outcome, self.started);
    }
}

impl fmt::Debug for Pick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pick")
            .field("id", &self.instance().id)
            .field("address", &self.instance().address)
            .field("probe", &self.probe)
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}
