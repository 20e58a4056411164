//! Layer 2: a store of the latest state, written by one writer and read by anyone.
//!
//! [`store`] splits a [`Writer`] from a cheap, cloneable [`Store`] reader, in the manner of
//! kube-runtime's reflector store. The writer applies changes (from a
//! [`watcher`](mod@crate::watcher)) and publishes each new state as an immutable [`Snapshot`];
//! readers get the latest one without locks or waiting, and can see whether it is synced,
//! stale and why ([`StoreStatus`]). [`Store::subscribe`] gives a bounded [`Subscription`] to
//! the changes: a slow subscriber never makes memory grow, and when it falls behind it gets
//! exactly the differences it missed.
//!
//! ```
//! use registry_api::Revision;
//! use registry_service::store::{store, StoreEvent};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> registry_service::Result<()> {
//! let (mut writer, reader) = store::<String>(16);
//! let mut changes = reader.subscribe();
//!
//! writer.apply(Revision(5), [("a".into(), Some("one".to_owned()))]);
//! writer.synced(Revision(5));
//! reader.wait_until_ready(Duration::from_secs(1)).await?;
//! assert_eq!(reader.get("a").as_deref(), Some("one"));
//! assert_eq!(changes.recv().await, Some(StoreEvent::Added("one".to_owned())));
//!
//! writer.apply(Revision(6), [("a".into(), None)]);
//! assert_eq!(changes.recv().await, Some(StoreEvent::Removed("one".to_owned())));
//! assert!(reader.snapshot().is_empty());
//! assert_eq!(reader.revision(), Revision(6));
//! # Ok(())
//! # }
//! ```

mod reader;
mod snapshot;
mod subscription;
mod writer;

pub use reader::Store;
pub use snapshot::Snapshot;
pub use subscription::{Subscription, Update};
pub use writer::Writer;

use crate::Error;
use arc_swap::ArcSwap;
use imbl::OrdMap;
use registry_api::Revision;
use std::sync::Arc;
use tokio::sync::{broadcast, watch};

/// The default capacity of a store's subscriptions, in published batches.
pub const DEFAULT_CAPACITY: usize = 256;

/// A new, empty store whose subscriptions hold up to `capacity` batches (at least 1) before a
/// subscriber that does not read is told it lagged.
pub fn store<T: Clone + PartialEq + Send + Sync + 'static>(
    capacity: usize,
) -> (Writer<T>, Store<T>) {
    let (sender, _) = broadcast::channel(capacity.max(1));
    let (status, _) = watch::channel(StoreStatus::default());
    let shared = Arc::new(Shared {
        snapshot: ArcSwap::from_pointee(Snapshot::new(OrdMap::new(), Revision(0), 0)),
        status,
        sender: sender.downgrade(),
    });
    let writer = Writer {
        shared,
        sender,
        entries: OrdMap::new(),
        version: 0,
    };
    let reader = writer.reader();
    (writer, reader)
}

/// A change to one entry of a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreEvent<T> {
    /// A new entry.
    Added(T),
    /// An entry's value changed.
    Updated {
        /// What it was.
        old: T,
        /// What it is now.
        new: T,
    },
    /// An entry left.
    Removed(T),
}

impl<T> StoreEvent<T> {
    /// The value after the event (for `Removed`, as it was).
    pub fn value(&self) -> &T {
        match self {
            StoreEvent::Added(value) | StoreEvent::Removed(value) => value,
            StoreEvent::Updated { new, .. } => new,
        }
    }
}

/// How fresh a store is.
#[derive(Clone, Debug, Default)]
pub struct StoreStatus {
    /// The store revision the entries reflect.
    pub revision: Revision,
    /// Grows with every change of entries.
    pub version: u64,
    /// Listed, and the watch that continues the list established, now.
    pub synced: bool,
    /// Synced at least once: the entries are a real read, not the empty start.
    pub ready: bool,
    /// The last failure of the source (kept after recovery, for the record).
    pub last_error: Option<Arc<Error>>,
    /// The writer is gone: nothing will change any more.
    pub closed: bool,
    /// The task that fed the store died (a panic, or its runtime shut down) instead of being
    /// shut down: `last_error` says why, the store is closed, and waits on it return that
    /// error.
    pub failed: bool,
    /// The entries are a saved copy (a discovery's snapshot file), not a read: set until the
    /// first sync replaces them. Such a store is stale and not synced.
    pub seeded: Option<Seeded>,
    /// How many times the source's revision went back (a store restored from an older
    /// backup): each time, the revision follows it down.
    pub regressions: u64,
}

/// Where the entries of a [seeded](StoreStatus::seeded) store came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seeded {
    /// The store revision the saved copy reflected.
    pub revision: Revision,
    /// When the copy was saved (wall clock).
    pub saved_at: std::time::SystemTime,
}

impl Seeded {
    /// How old the saved copy is now (zero if it claims to come from the future).
    pub fn age(&self) -> std::time::Duration {
        self.saved_at.elapsed().unwrap_or_default()
    }
}

impl StoreStatus {
    /// Not synced now, and either ready (synced before, or seeded from a saved copy: the
    /// entries are as last read or saved and may be out of date) or failed (a first list or
    /// watch that failed: what the store holds was never confirmed live). A store still on its
    /// first list, with nothing failed and nothing seeded, is not stale: it is starting.
    pub fn is_stale(&self) -> bool {
        !self.synced && (self.ready || self.seeded.is_some() || self.last_error.is_some())
    }
}

/// What the writer and every reader share.
#[derive(Debug)]
struct Shared<T> {
    snapshot: ArcSwap<Snapshot<T>>,
    status: watch::Sender<StoreStatus>,
    /// Weak, so that dropping the writer closes every subscription.
    sender: broadcast::WeakSender<Arc<Published<T>>>,
}

impl<T> Shared<T> {
    fn current(&self) -> Arc<Snapshot<T>> {
        self.snapshot.load_full()
    }
}

/// One publish: the events and the state they lead to.
#[derive(Debug)]
struct Published<T> {
    events: Vec<StoreEvent<T>>,
    snapshot: Arc<Snapshot<T>>,
}
