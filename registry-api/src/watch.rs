use crate::{Error, KeyValue, Result, Revision};
use futures::future::BoxFuture;
use futures::stream::{BoxStream, Stream};
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Options of [`watch`](crate::Registry::watch).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchOptions {
    /// Replay from this revision (inclusive). `None` watches from the next write.
    pub start_revision: Option<Revision>,
    /// Carry each changed key's previous value in [`WatchEvent::prev_kv`].
    pub prev_kv: bool,
    /// Ask the server for progress notifications: batches with no events, which tell a quiet
    /// watch from a dead one.
    pub progress_notify: bool,
}

impl WatchOptions {
    /// Watch from `revision` (inclusive).
    pub fn from_revision(revision: Revision) -> Self {
        WatchOptions {
            start_revision: Some(revision),
            ..Self::default()
        }
    }

    /// Also deliver previous values.
    pub fn with_prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }

    /// Also ask for progress notifications.
    pub fn with_progress_notify(mut self) -> Self {
        self.progress_notify = true;
        self
    }
}

/// Whether an event wrote or deleted its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The key was created or updated.
    Put,
    /// The key was deleted, by a delete, a revoke or a lease's expiry.
    Delete,
}

/// One change to one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// Put or delete.
    pub kind: EventKind,
    /// The key-value after the change. For a delete, only `key` and `mod_revision` (the
    /// deletion's revision) are set, as in etcd.
    pub kv: KeyValue,
    /// The key's value just before this revision, when asked for and the key existed.
    pub prev_kv: Option<KeyValue>,
}

impl WatchEvent {
    /// True when this put created the key (it was absent just before).
    pub fn is_create(&self) -> bool {
        self.kind == EventKind::Put && self.kv.create_revision == self.kv.mod_revision
    }
}

/// The events of exactly one revision, in key order.
///
/// A batch with no events is a progress notification: every change up to `revision` has been
/// delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchBatch {
    /// The revision all these events share.
    pub revision: Revision,
    /// The events, never split across batches.
    pub events: Vec<WatchEvent>,
}

impl WatchBatch {
    /// True for a progress notification.
    pub fn is_progress(&self) -> bool {
        self.events.is_empty()
    }
}

/// Asks a backend for a progress notification on one open watch; see
/// [`WatchStream::request_progress`].
pub type ProgressRequester = Box<dyn Fn() -> BoxFuture<'static, Result<()>> + Send + Sync>;

/// The stream [`watch`](crate::Registry::watch) returns. It yields batches in revision order;
/// an `Err` item (compacted, unavailable, cancelled by the server) is the last item. Dropping the
/// stream cancels the watch.
///
/// A backend that can be asked for progress (etcd's `RequestProgress`) attaches a requester with
/// [`with_progress_requests`](Self::with_progress_requests); a caller that has heard nothing for
/// a while calls [`request_progress`](Self::request_progress) and waits for the empty batch that
/// answers it, which tells a quiet watch from a dead one (etcd #8980, #12142).
pub struct WatchStream {
    events: BoxStream<'static, Result<WatchBatch>>,
    progress: Option<ProgressRequester>,
}

impl WatchStream {
    /// A watch stream over `events`, with no progress requests.
    pub fn new(events: impl Stream<Item = Result<WatchBatch>> + Send + 'static) -> Self {
        WatchStream {
            events: Box::pin(events),
            progress: None,
        }
    }

    /// A stream whose only item is `error`: a watch refused at creation.
    pub fn failed(error: Error) -> Self {
        Self::new(futures::stream::once(async move { Err(error) }))
    }

    /// Attaches what [`request_progress`](Self::request_progress) calls.
    pub fn with_progress_requests(
        mut self,
        requester: impl Fn() -> BoxFuture<'static, Result<()>> + Send + Sync + 'static,
    ) -> Self {
        self.progress = Some(Box::new(requester));
        self
    }

    /// Replaces the event stream by `wrap(events)`, keeping the progress requester: for wrappers
    /// that delay, hold or cut deliveries.
    pub fn map_events(
        self,
        wrap: impl FnOnce(
            BoxStream<'static, Result<WatchBatch>>,
        ) -> BoxStream<'static, Result<WatchBatch>>,
    ) -> Self {
        WatchStream {
            events: wrap(self.events),
            progress: self.progress,
        }
    }

    /// True when the backend answers [`request_progress`](Self::request_progress).
    pub fn supports_progress_requests(&self) -> bool {
        self.progress.is_some()
    }

    /// Asks the server to confirm that this watch is alive: once the watch has delivered every
    /// change up to the store's current revision `R`, it yields a progress notification (an
    /// empty batch) at `R`. No answer within a reasonable time means the watch is dead even if
    /// its connection looks healthy. Fails with [`Error::NotSupported`] when the backend cannot be
    /// asked, and like any call when the request cannot be sent.
    pub fn request_progress(&self) -> BoxFuture<'static, Result<()>> {
        match &self.progress {
            Some(requester) => requester(),
            None => Box::pin(futures::future::ready(Err(Error::NotSupported {
                what: "progress requests on this watch".to_owned(),
            }))),
        }
    }
}

impl Stream for WatchStream {
    type Item = Result<WatchBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.as_mut().poll_next(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.events.size_hint()
    }
}

impl fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchStream")
            .field("progress_requests", &self.progress.is_some())
            .finish_non_exhaustive()
    }
}
