//! Layer 1: a self-healing list + watch of any prefix, as a stream the caller owns.
//!
//! [`watcher`] lists the prefix at revision R, watches from R + 1, and yields what changes.
//! On any failure (unreachable, compacted, cancelled, stream ended, silent) it yields a
//! [`WatcherEvent::Failed`], waits a jittered, capped backoff, lists again and yields exactly
//! the differences from what it held (no duplicate put, no missed delete), then watches on.
//! Nothing is spawned: the stream does its work while it is polled, and dropping it stops
//! everything (the open watch is cancelled).
//!
//! # Recovery
//!
//! - **Failures are items.** Every failure comes out as [`WatcherEvent::Failed`] with the
//!   error and the wait before the next list; the stream itself never ends.
//! - **Silent watches.** A watch that delivers nothing for
//!   [`idle_timeout`](WatcherConfig::idle_timeout) is checked: the watcher reads the store's
//!   revision afresh and asks the watch for progress
//!   ([`WatchStream::request_progress`](registry_api::WatchStream::request_progress)). No answer
//!   within [`progress_timeout`](WatcherConfig::progress_timeout) fails it with
//!   [`Error::WatchStalled`](crate::Error::WatchStalled); an answer that leaves the watch below
//!   the revision read at the previous check fails it with
//!   [`Error::WatchBehind`](crate::Error::WatchBehind) (a member cut off from its cluster keeps
//!   watches open and answers from its stale store, etcd #8980). Either way the prefix is listed
//!   again. On a backend that cannot be asked (`Error::NotSupported`), the watcher instead opens
//!   a fresh watch from the last revision + 1 after each idle period: it costs no list, and a
//!   connection that is really dead fails to open one.
//! - **Herds.** One list of a prefix at a time per registry and process; the others wait their
//!   turn. Backoff jitter comes from [`WatcherConfig::seed`], or by default from a seed of the
//!   process's own mixed with the prefix, so a fleet recovering from one outage spreads out.
//! - **Stale is not empty.** A failure changes nothing the watcher holds; only a successful
//!   list or watch can remove a key.
//!
//! ```
//! use futures::StreamExt;
//! use registry_api::{PutOptions, Registry};
//! use registry_memory::MemoryRegistry;
//! use registry_service::watcher::{watcher, Change, WatcherConfig, WatcherEvent};
//! use std::sync::Arc;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> registry_api::Result<()> {
//! let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
//! registry.put(b"config/a", b"1", PutOptions::default()).await?;
//! let mut stream = watcher(registry.clone(), "config/", WatcherConfig::default().seed(1));
//!
//! // The list: one change per key, then synced once the watch is up.
//! let Some(WatcherEvent::Changed { changes, resync: true, .. }) = stream.next().await else {
//!     panic!("the list comes first")
//! };
//! assert!(matches!(&changes[..], [Change::Put { kv, prev: None }] if &kv.value[..] == b"1"));
//! assert!(matches!(stream.next().await, Some(WatcherEvent::Synced { .. })));
//!
//! registry.put(b"config/a", b"2", PutOptions::default()).await?;
//! let Some(WatcherEvent::Changed { changes, resync: false, .. }) = stream.next().await else {
//!     panic!("then the watch")
//! };
//! assert!(matches!(&changes[..], [Change::Put { prev: Some(prev), .. }] if &prev.value[..] == b"1"));
//! # Ok(())
//! # }
//! ```

mod config;
mod event;
mod gate;
mod machine;
mod older_list;
mod stall;

pub use config::WatcherConfig;
pub use event::{Change, WatcherEvent};

use crate::seed::seed_for;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::Stream;
use machine::Machine;
use registry_api::Registry;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// A self-healing list + watch of every key under `prefix`; see the [module docs](self).
///
/// Lazy: nothing is read until the stream is first polled. The prefix is taken as bytes, as
/// is: give services a trailing `/` (`services/hello/`), or `hello` would also match
/// `hello-admin` (etcd #15022).
pub fn watcher(
    registry: Arc<dyn Registry>,
    prefix: impl Into<Bytes>,
    config: WatcherConfig,
) -> Watcher {
    let prefix = prefix.into();
    let seed = seed_for(config.seed, &String::from_utf8_lossy(&prefix));
    let machine = Machine::new(registry, prefix.clone(), config, seed);
    let events = futures::stream::unfold(machine, |mut machine| async move {
        let event = machine.next().await;
        Some((event, machine))
    });
    Watcher {
        prefix,
        events: Box::pin(events),
    }
}

/// The stream [`watcher`] returns. Endless: it stops when dropped.
pub struct Watcher {
    prefix: Bytes,
    events: BoxStream<'static, WatcherEvent>,
}

impl Watcher {
    /// The prefix watched.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }
}

impl Stream for Watcher {
    type Item = WatcherEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WatcherEvent>> {
        self.events.as_mut().poll_next(cx)
    }
}

impl fmt::Debug for Watcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watcher")
            .field("prefix", &String::from_utf8_lossy(&self.prefix))
            .finish_non_exhaustive()
    }
}
