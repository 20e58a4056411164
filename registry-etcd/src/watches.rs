//! Watches: one etcd watch per call, its responses cut into one batch per revision.

use crate::errors::{self, Context};
use crate::key_prefix::KeyPrefix;
use crate::keys::{key_value, show};
use crate::Inner;
use etcd_client::{EventType, WatchOptions as EtcdWatchOptions, WatchResponse};
use registry_api::{
    limits, Error, EventKind, KeyValue, Result, Revision, WatchBatch, WatchEvent, WatchOptions,
    WatchStream,
};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// How long a compaction-point lookup waits for etcd's cancel (it comes ~100 ms after created).
const COMPACT_PROBE_WAIT: Duration = Duration::from_secs(2);

impl Inner {
    pub(crate) async fn watch(&self, prefix: &[u8], opts: WatchOptions) -> Result<WatchStream> {
        let span = tracing::debug_span!(
            "etcd.watch",
            prefix = %show(prefix),
            start_revision = ?opts.start_revision.map(|r| r.0)
        );
        async move {
            let (start, end) = self.key_prefix.range(prefix);
            let mut options = EtcdWatchOptions::new().with_range(end);
            if let Some(revision) = opts.start_revision {
                limits::check_revision(revision)?;
                options = options.with_start_revision(revision.0);
            }
            if opts.prev_kv {
                options = options.with_prev_key();
            }
            if opts.progress_notify {
                options = options.with_progress_notify();
            }
            let (watch_id, stream) = match self.open_watch(start, options).await? {
                Opened::Live(watch_id, stream) => (watch_id, stream),
                // Refused at creation (e.g. permission denied): the cancel is the only item,
                // as it would be had it come a moment later.
                Opened::Cancelled(err) => {
                    tracing::debug!(error = %err, "watch refused");
                    return Ok(WatchStream::failed(err));
                }
            };
            tracing::debug!(watch_id, "watch created");
            let (sender, responses) = (*stream).split();
            let sender = Arc::new(tokio::sync::Mutex::new(sender));
            let requester = ProgressRequester {
                sender: sender.clone(),
                timeout: self.request_timeout,
                span: tracing::Span::current(),
            };
            let state = WatchState {
                key_prefix: self.key_prefix.clone(),
                stream: responses,
                _guard: CancelGuard {
                    watch_id,
                    sender: Some(sender),
                },
                pending: VecDeque::new(),
                delivered: Revision(0),
                done: false,
                span: tracing::Span::current(),
            };
            Ok(
                WatchStream::new(futures::stream::unfold(state, WatchState::next))
                    .with_progress_requests(move || Box::pin(requester.clone().request())),
            )
        }
        .instrument(span)
        .await
    }

    /// Opens a watch and consumes its "created" reply.
    async fn open_watch(&self, key: Vec<u8>, options: EtcdWatchOptions) -> Result<Opened> {
        let mut stream = self
            .watch
            .clone()
            .watch(key, Some(options))
            .await
            .map_err(|e| errors::from_etcd(e, Context::default()))?;
        let first = tokio::time::timeout(self.request_timeout, stream.message())
            .await
            .map_err(|_| Error::unavailable("etcd did not confirm the watch in time"))?
            .map_err(|e| errors::from_etcd(e, Context::default()))?;
        match first {
            Some(resp) if resp.canceled() => Ok(Opened::Cancelled(cancel_error(&resp))),
            Some(resp) if resp.created() => Ok(Opened::Live(resp.watch_id(), Box::new(stream))),
            Some(_) => Err(Error::backend(
                "etcd sent events before confirming the watch",
            )),
            None => Err(Error::unavailable(
                "etcd closed the watch before confirming it",
            )),
        }
    }

    /// The store's compaction point, learnt the only way etcd tells it: a watch from revision 1
    /// is cancelled with the compact revision. `None` when the store was never compacted (or
    /// etcd did not answer in time).
    pub(crate) async fn compact_revision(&self) -> Result<Option<Revision>> {
        let options = EtcdWatchOptions::new().with_start_revision(1);
        let mut stream = match self.open_watch(self.key_prefix.key(&[0]), options).await? {
            Opened::Live(_, stream) => stream,
            Opened::Cancelled(Error::Compacted { compact_revision }) => {
                return Ok(Some(compact_revision))
            }
            Opened::Cancelled(err) => return Err(err),
        };
        let wait = async {
            while let Some(resp) = stream.message().await.ok().flatten() {
                if resp.canceled() {
                    return (resp.compact_revision() > 0)
                        .then_some(Revision(resp.compact_revision()));
                }
            }
            None
        };
        Ok(tokio::time::timeout(COMPACT_PROBE_WAIT, wait)
            .await
            .ok()
            .flatten())
    }
}

/// A watch etcd confirmed, or refused in its very first reply.
enum Opened {
    /// Created: the watch id and the stream of what follows.
    Live(i64, Box<etcd_client::WatchStream>),
    /// Created and cancelled at once; the error says why.
    Cancelled(Error),
}

/// What a cancelled watch response means to the caller.
fn cancel_error(resp: &WatchResponse) -> Error {
    errors::from_watch_cancel(resp.cancel_reason(), resp.compact_revision())
}

/// The request half of a watch's gRPC stream, shared by the cancel on drop and the progress
/// requests.
type SharedSender = Arc<tokio::sync::Mutex<etcd_client::WatchRequestSender>>;

/// Sends etcd's `RequestProgress` on the watch's own gRPC stream. etcd answers once every
/// watcher on that stream has caught up, with a response that carries no events and the
/// current revision in its header (watch id -1 in etcd 3.5): [`WatchState::absorb`] turns it
/// into an empty batch.
#[derive(Clone)]
struct ProgressRequester {
    sender: SharedSender,
    timeout: Duration,
    span: tracing::Span,
}

impl ProgressRequester {
    async fn request(self) -> Result<()> {
        let span = tracing::debug_span!(parent: &self.span, "etcd.watch.request_progress");
        crate::clock::check()?;
        let watch = crate::clock::Stopwatch::start();
        let sent = async move {
            // The request channel is bounded (etcd-client's, 100 requests): a full one waits,
            // at most the request timeout.
            let send = async { self.sender.lock().await.request_progress().await };
            match tokio::time::timeout(self.timeout, send).await {
                Ok(Ok(())) => Ok(()),
                // The only way a send fails: the gRPC stream is gone.
                Ok(Err(e)) => Err(Error::unavailable(format!(
                    "the watch stream is closed: {e}"
                ))),
                Err(_) => Err(Error::unavailable(format!(
                    "the progress request could not be sent within {:?}",
                    self.timeout
                ))),
            }
        }
        .instrument(span)
        .await;
        watch.check(sent)
    }
}

/// Cancels the etcd watch when the caller drops the stream. Dropping the gRPC stream alone
/// also ends it, but only once the transport notices; the cancel request is explicit.
struct CancelGuard {
    watch_id: i64,
    sender: Option<SharedSender>,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        let (Some(sender), Ok(runtime)) =
            (self.sender.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let watch_id = self.watch_id;
        runtime.spawn(async move {
            // The watch may be gone already (server down, stream ended): nothing to undo.
            let _ = sender.lock().await.cancel(watch_id).await;
        });
    }
}

struct WatchState {
    key_prefix: KeyPrefix,
    stream: etcd_client::WatchResponseStream,
    /// Held for its `Drop`: cancels the etcd watch with the stream.
    _guard: CancelGuard,
    pending: VecDeque<WatchBatch>,
    /// The last revision handed out, so progress notifications never go backwards.
    delivered: Revision,
    done: bool,
    span: tracing::Span,
}

impl WatchState {
    async fn next(mut self) -> Option<(Result<WatchBatch>, Self)> {
        loop {
            if let Some(batch) = self.pending.pop_front() {
                self.delivered = batch.revision;
                return Some((Ok(batch), self));
            }
            if self.done {
                return None;
            }
            let watch = crate::clock::Stopwatch::start();
            let message = self.stream.message().await;
            let _entered = self.span.clone().entered();
            match message {
                Ok(Some(resp)) => {
                    if let Some(err) = self.absorb(resp) {
                        self.done = true;
                        return Some((Err(err), self));
                    }
                }
                Ok(None) => {
                    self.done = true;
                    tracing::debug!("watch stream ended");
                    let err = Error::unavailable("etcd closed the watch stream");
                    return Some((Err(watch.explain(err)), self));
                }
                Err(e) => {
                    self.done = true;
                    let err = match errors::from_etcd(e, Context::default()) {
                        // Whatever broke a live watch stream, the server is gone for it.
                        Error::Backend { source } => Error::Unavailable { source },
                        other => other,
                    };
                    // A ping that timed out on a paused clock.
                    let err = watch.explain(err);
                    tracing::debug!(error = %err, "watch failed");
                    return Some((Err(err), self));
                }
            }
        }
    }

    /// Queues a response's batches; returns the error that ends the watch, if it does.
    fn absorb(&mut self, resp: WatchResponse) -> Option<Error> {
        if resp.canceled() {
            return Some(cancel_error(&resp));
        }
        if resp.created() {
            return None;
        }
        let events = resp.events();
        if events.is_empty() {
            self.pending.extend(progress(&resp, self.delivered));
            return None;
        }
        self.pending.extend(batches(&self.key_prefix, events));
        None
    }
}

/// A response with no events, neither created nor cancelled, is a progress notification, asked
/// for with `progress_notify` or answering a progress request (then with watch id -1 in etcd
/// 3.5, as it is addressed to no one watch): everything up to the header revision was
/// delivered. `None` when it says nothing new (no header, or below what was delivered).
fn progress(resp: &WatchResponse, delivered: Revision) -> Option<WatchBatch> {
    let revision = Revision(resp.header().map(|h| h.revision()).unwrap_or_default());
    (revision.0 > 0 && revision >= delivered).then(|| WatchBatch {
        revision,
        events: Vec::new(),
    })
}

/// Cuts one response's events into one batch per revision, in order. etcd puts all events of a
/// revision in the same response, but one response can carry several revisions (it fills
/// responses while a watch catches up).
fn batches(key_prefix: &KeyPrefix, events: &[etcd_client::Event]) -> Vec<WatchBatch> {
    let mut batches: Vec<WatchBatch> = Vec::new();
    for event in events.iter().filter_map(|e| event(key_prefix, e)) {
        let revision = event.kv.mod_revision;
        match batches.last_mut() {
            Some(batch) if batch.revision == revision => batch.events.push(event),
            _ => batches.push(WatchBatch {
                revision,
                events: vec![event],
            }),
        }
    }
    batches
}

fn event(key_prefix: &KeyPrefix, event: &etcd_client::Event) -> Option<WatchEvent> {
    // etcd-client lends watch events only, so these two are copied.
    let kv = key_value(key_prefix, event.kv()?.clone())?;
    // Read the raw type: `Event::event_type` panics on a value it does not know.
    let kind = match event.0.r#type {
        t if t == EventType::Put as i32 => EventKind::Put,
        t if t == EventType::Delete as i32 => EventKind::Delete,
        other => {
            tracing::warn!(event_type = other, "skipping an event of unknown type");
            return None;
        }
    };
    let kv = match kind {
        EventKind::Put => kv,
        // etcd sends only the key and the deletion revision; make sure nothing else leaks.
        EventKind::Delete => KeyValue {
            key: kv.key,
            mod_revision: kv.mod_revision,
            ..KeyValue::default()
        },
    };
    Some(WatchEvent {
        kind,
        kv,
        prev_kv: event
            .prev_kv()
            .and_then(|kv| key_value(key_prefix, kv.clone())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_client::proto::{PbEvent, PbKeyValue};

    fn event(kind: EventType, key: &str, revision: i64) -> etcd_client::Event {
        etcd_client::Event(PbEvent {
            r#type: kind as i32,
            kv: Some(PbKeyValue {
                key: key.as_bytes().to_vec(),
                mod_revision: revision,
                create_revision: if kind == EventType::Put { revision } else { 0 },
                version: i64::from(kind == EventType::Put),
                value: b"v".to_vec(),
                lease: 0,
            }),
            prev_kv: None,
        })
    }

    #[test]
    fn one_response_of_several_revisions_becomes_one_batch_each() {
        let ns = KeyPrefix::new("ns/");
        let events = [
            event(EventType::Put, "ns/a", 5),
            event(EventType::Put, "ns/b", 6),
            event(EventType::Delete, "ns/a", 7),
            event(EventType::Delete, "ns/b", 7),
            event(EventType::Delete, "ns/c", 7),
            event(EventType::Put, "ns/d", 9),
        ];
        let out = batches(&ns, &events);
        let shape: Vec<(i64, Vec<&[u8]>)> = out
            .iter()
            .map(|b| {
                (
                    b.revision.0,
                    b.events.iter().map(|e| &e.kv.key[..]).collect(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                (5, vec![&b"a"[..]]),
                (6, vec![&b"b"[..]]),
                (7, vec![&b"a"[..], b"b", b"c"]),
                (9, vec![&b"d"[..]]),
            ]
        );
        // A delete carries only its key and revision.
        let delete = &out[2].events[0];
        assert_eq!(delete.kind, EventKind::Delete);
        assert!(delete.kv.value.is_empty());
        assert_eq!(delete.kv.mod_revision, Revision(7));
    }

    #[test]
    fn a_progress_answer_of_watch_id_minus_one_is_an_empty_batch_at_its_header_revision() {
        let answer = |revision: i64| {
            WatchResponse(etcd_client::proto::PbWatchResponse {
                header: Some(etcd_client::proto::PbResponseHeader {
                    revision,
                    ..Default::default()
                }),
                watch_id: -1,
                ..Default::default()
            })
        };
        assert_eq!(
            progress(&answer(42), Revision(40)),
            Some(WatchBatch {
                revision: Revision(42),
                events: Vec::new()
            })
        );
        // Already reported: answered again, a request waits for an answer, not for news.
        assert!(progress(&answer(42), Revision(42)).is_some());
        // Never backwards, never at revision 0.
        assert_eq!(progress(&answer(41), Revision(42)), None);
        assert_eq!(progress(&answer(0), Revision(0)), None);
    }

    #[test]
    fn events_of_unknown_type_are_skipped_not_panicked_on() {
        let mut odd = event(EventType::Put, "k", 3);
        odd.0.r#type = 42;
        let out = batches(&KeyPrefix::default(), &[odd, event(EventType::Put, "k", 4)]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].revision, Revision(4));
    }
}
