//! The server's own account of what it committed, read straight from it: the truth a checker
//! such as the fleet search compares the clients' views with, which no fault on the way to a
//! client can delay.

use registry_api::{Revision, WatchBatch};
use std::time::Duration;

/// One revision the server committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerCommit {
    /// When, in the server's virtual time ([`ServerJournal::now`]'s clock).
    pub at: Duration,
    /// The revision and its changes, with `prev_kv`.
    pub batch: WatchBatch,
}

/// The server's own account of what it committed, read straight from it (no client, no link):
/// where the fleet search of `registry-conformance` takes its truth from. A backend offers one through
/// [`ServiceBackend::journal`](crate::ServiceBackend::journal); the simulator's is
/// `MemoryRegistry::journal_after`.
pub trait ServerJournal: Send + Sync {
    /// The server's virtual time now, on the clock the commits are stamped with.
    fn now(&self) -> Duration;

    /// Every revision committed after `after`, oldest first; `None` when the journal no longer
    /// holds all of them.
    fn after(&self, after: Revision) -> Option<Vec<ServerCommit>>;
}
