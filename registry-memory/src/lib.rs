//! An in-memory simulated etcd for the [`registry_api::Registry`] contract: revisions, leases on
//! virtual time, watches with history, compaction and fault injection, fully deterministic.
//!
//! [`MemoryRegistry`] behaves as etcd 3.5.16 does (checked against recorded traces of a real
//! server, see `tests/traces.rs`): one store-wide revision starting at 1, a put always bumps it,
//! deleting nothing does not; a lease's keys go in one revision when it is revoked or expires;
//! reads at past revisions; watches that replay history, one batch per revision; compaction with
//! etcd's errors.
//!
//! # Time
//!
//! Leases run on virtual time, from one of two clocks:
//! - [`MemoryRegistry::new`] reads tokio's clock. Under `#[tokio::test(start_paused = true)]`
//!   a whole application runs on virtual time: a background task (spawned on the current runtime
//!   at the first grant) sleeps until the next deadline and revokes, so a lease expires at
//!   exactly its deadline.
//! - [`MemoryRegistry::with_manual_clock`]: time moves only by [`MemoryRegistry::advance`], which
//!   expires what is due at once, in deadline order; no runtime is needed.
//!
//! Either way every call first expires what is due, so no call ever sees a lease past its
//! deadline, and a lease is alive until exactly its deadline (not a tick later, unlike etcd's
//! 500 ms checks).
//!
//! # Determinism
//!
//! No wall clock, no randomness: lease ids come from a counter (1, 2, ...; never 0), tables that
//! show in results are ordered maps, and leases due at the same instant expire in id order. The
//! same calls give the same responses and events, byte for byte.
//!
//! # Memory
//!
//! History (one record per revision, sharing values with the live keys) is kept until
//! [`compact`](registry_api::Registry::compact) discards it, or automatically with
//! [`MemoryRegistryBuilder::history_limit`]. Watchers have no queues of their own: they read
//! the shared history from their own cursor, so a slow watcher never blocks writers or loses an
//! event, but the records it has not read yet stay in memory (even past a compaction) until it
//! reads them or is dropped. A watcher that never reads therefore holds all later history.
//!
//! # Faults
//!
//! [`set_unavailable`](MemoryRegistry::set_unavailable) makes the server unreachable (every call
//! fails with `Unavailable`, every open watch ends with it; lease deadlines keep running, as a
//! server does while its clients cannot reach it), [`expire_lease`](MemoryRegistry::expire_lease)
//! expires a lease now, [`leader_change`](MemoryRegistry::leader_change) extends every lease as
//! an etcd failover does, and [`restore`](MemoryRegistry::restore) puts back a
//! [`backup`](MemoryRegistry::backup) taken earlier, as `etcdutl snapshot restore` does (plain,
//! or with the revision bumped and compacted; see [`RestoreOptions`]).
//!
//! # The server's journal
//!
//! [`MemoryRegistryBuilder::journal`] keeps the last N committed revisions, each stamped with the
//! server's virtual time; [`MemoryRegistry::journal_after`] reads them. A checker takes its
//! truth from there rather than from a client of its own, which any fault on the way would delay.
//!
//! # Clients and links
//!
//! [`MemoryRegistry::client`] gives a named client of the server on its own
//! [`Link`](registry_api::wrap::Link): partition it, slow its calls and watch deliveries, hold
//! and release them, lose its replies, while the server and every other client go on.
//!
//! # Testing an app
//!
//! With the `testing` feature, `testing::backend()` is a ready-made
//! `registry_testing::ServiceBackend`: an app's own scenarios run on it with one line of
//! `registry_testing::scenarios!`.
//!
//! # Progress notifications
//!
//! A watch opened with `progress_notify` gets an empty batch at revision `R` whenever it has
//! caught up with the store and `R` is above everything it was sent so far: once when it is
//! opened (and has replayed its history), then after each write that concerns none of its keys.
//! After a notification at `R` it never gets an event at or below `R`.
//!
//! Any watch answers [`WatchStream::request_progress`](registry_api::WatchStream::request_progress)
//! as etcd answers `RequestProgress`: once it has delivered every change up to the store's
//! current revision `R`, it yields an empty batch at `R`, even when it already reported `R`. A
//! request during an outage, or on a watch an outage cut, fails with `Unavailable`.

mod builder;
mod client;
mod clock;
mod deadlines;
mod delivery;
mod expiry;
mod faults;
mod journal;
mod keys;
mod leases;
mod mvcc;
mod registry;
mod reset;
mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod timing;
mod watches;

pub use builder::MemoryRegistryBuilder;
pub use client::MemoryClient;
pub use journal::Commit;
pub use reset::{Backup, Reset, RestoreOptions};
pub use timing::{Delay, Latencies};

use builder::Config;
use clock::Clock;
use registry_api::Revision;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use store::Shared;
use timing::{ClientTimer, Timing};

/// An in-memory etcd: the [`Registry`](registry_api::Registry) contract on virtual time.
///
/// Clones share one store, like clients of one server.
///
/// Expiry on the manual clock, with no runtime and no waiting:
///
/// ```
/// use registry_api::{PutOptions, Registry, WatchOptions};
/// use registry_memory::MemoryRegistry;
/// use futures::StreamExt;
/// use std::time::Duration;
///
/// # tokio_test::block_on(async {
/// let registry = MemoryRegistry::with_manual_clock();
/// let lease = registry.lease_grant(5, None).await?;
/// registry.put(b"svc/a", b"10.0.0.1:80", PutOptions::with_lease(lease.id)).await?;
/// let mut watch = registry.watch(b"svc/", WatchOptions::default()).await?;
///
/// registry.advance(Duration::from_millis(4_999));
/// assert!(registry.get(b"svc/a").await?.kv.is_some());
///
/// // At exactly the deadline the lease expires and takes its key, in a revision of its own.
/// registry.advance(Duration::from_millis(1));
/// assert!(registry.get(b"svc/a").await?.kv.is_none());
/// let batch = watch.next().await.unwrap()?;
/// assert_eq!(batch.revision, registry.current_revision());
/// assert_eq!(&batch.events[0].kv.key[..], b"svc/a");
/// # Ok::<(), registry_api::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct MemoryRegistry {
    shared: Arc<Shared>,
    links: Arc<client::Links>,
    /// This handle's timing: the named client's (the unnamed one for the handle `build`
    /// returns), or `None` for a handle made [`instant`](Self::instant).
    timer: Option<Arc<ClientTimer>>,
}

impl fmt::Debug for MemoryRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("MemoryRegistry")
            .field("clock", &self.shared.clock)
            .field("revision", &state.mvcc.revision())
            .field("compact_revision", &state.mvcc.compact_revision())
            .field("leases", &state.leases.len())
            .field("watchers", &state.watchers.len())
            .field("unavailable", &state.unavailable)
            .finish()
    }
}

impl Default for MemoryRegistry {
    /// The same as [`MemoryRegistry::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryRegistry {
    /// A fresh store on tokio's clock, with etcd's default limits. Build it inside the runtime
    /// that uses it (under `start_paused`, leases then expire at exactly their deadline).
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A fresh store whose time moves only by [`advance`](Self::advance).
    pub fn with_manual_clock() -> Self {
        Self::builder().manual_clock().build()
    }

    /// A builder for other limits, a manual clock or a history limit.
    pub fn builder() -> MemoryRegistryBuilder {
        MemoryRegistryBuilder::default()
    }

    fn from_parts(config: Config, clock: Clock, timing: Timing) -> Self {
        let shared = Arc::new(Shared::new(config, clock, timing));
        let links = Arc::new(client::Links::default());
        let timer = Some(links.timer(&shared, ""));
        MemoryRegistry {
            shared,
            links,
            timer,
        }
    }

    /// Moves the manual clock forward by `by` and expires, in deadline order, every lease whose
    /// deadline is reached. On tokio's clock this does nothing (move tokio's clock instead,
    /// e.g. with `tokio::time::advance` or a `sleep` under `start_paused`).
    pub fn advance(&self, by: Duration) {
        if !self.shared.clock.is_manual() {
            tracing::warn!("MemoryRegistry::advance ignored: the registry runs on tokio's clock");
            return;
        }
        let mut state = self.shared.lock();
        state.manual_now = state.manual_now.saturating_add(by);
        drop(state);
        // Expiry happens on the way into the state.
        self.shared.with_state(|_, _| ());
    }

    /// Virtual time elapsed since the registry was built.
    pub fn now(&self) -> Duration {
        let state = self.shared.lock();
        self.shared.now(&state)
    }

    /// The store's current revision (1 for a fresh store).
    pub fn current_revision(&self) -> Revision {
        self.shared.with_state(|state, _| state.revision())
    }

    /// The compaction point: reads and watches from here on work. 0 if never compacted.
    pub fn compact_revision(&self) -> Revision {
        self.shared
            .with_state(|state, _| Revision(state.mvcc.compact_revision()))
    }

    /// How many watch streams are open (a dropped stream no longer counts).
    pub fn watcher_count(&self) -> usize {
        self.shared.with_state(|state, _| state.watchers.len())
    }
}
