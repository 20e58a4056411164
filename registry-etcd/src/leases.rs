//! Leases: grant, revoke, time-to-live, listing, and keep-alives over one shared gRPC stream.
//!
//! etcd-client opens a new bidirectional stream for every `lease_keep_alive` call. A registry
//! that keeps thousands of leases alive would open thousands of streams, so instead every
//! keep-alive of one registry goes over one shared stream: requests carry the lease id, and a
//! reader task hands each reply to the callers waiting for that id. The stream is reopened on
//! the next call after it fails.

use crate::errors::{self, Context};
use crate::Inner;
use etcd_client::{
    Client, LeaseGrantOptions, LeaseKeepAliveStream, LeaseKeeper, LeaseTimeToLiveOptions,
};
use registry_api::limits::{self, MAX_LEASE_TTL};
use registry_api::{Error, LeaseGrant, LeaseId, LeaseTimeToLive, Result, Revision};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::Instrument;

impl Inner {
    pub(crate) async fn lease_grant(&self, ttl: i64, id: Option<LeaseId>) -> Result<LeaseGrant> {
        let span = tracing::debug_span!("etcd.lease_grant", ttl, lease = ?id.map(|l| l.0));
        async move {
            // A TTL of zero or below goes to etcd as it is: etcd grants its minimum.
            limits::check_ttl_max(ttl, MAX_LEASE_TTL)?;
            let mut options = LeaseGrantOptions::new();
            if let Some(id) = id {
                limits::check_lease_id(id)?;
                options = options.with_id(id.0);
            }
            let ctx = Context {
                lease: id,
                ttl: Some(ttl),
                ..Context::default()
            };
            let resp = self
                .client
                .clone()
                .lease_grant(ttl, Some(options))
                .await
                .map_err(|e| errors::from_etcd(e, ctx))?;
            if !resp.error().is_empty() {
                return Err(Error::backend(format!("lease grant: {}", resp.error())));
            }
            tracing::debug!(lease = resp.id(), granted = resp.ttl(), "granted");
            Ok(LeaseGrant {
                id: LeaseId(resp.id()),
                ttl: resp.ttl(),
            })
        }
        .instrument(span)
        .await
    }

    pub(crate) async fn lease_revoke(&self, id: LeaseId) -> Result<Revision> {
        let span = tracing::debug_span!("etcd.lease_revoke", lease = id.0);
        async move {
            limits::check_lease_id(id)?;
            let resp = self
                .client
                .clone()
                .lease_revoke(id.0)
                .await
                .map_err(|e| errors::from_etcd(e, Context::lease(id)))?;
            let revision = Revision(resp.header().map(|h| h.revision()).unwrap_or_default());
            tracing::debug!(%revision, "revoked");
            Ok(revision)
        }
        .instrument(span)
        .await
    }

    pub(crate) async fn lease_time_to_live(&self, id: LeaseId) -> Result<LeaseTimeToLive> {
        let span = tracing::debug_span!("etcd.lease_time_to_live", lease = id.0);
        async move {
            limits::check_lease_id(id)?;
            let resp = self
                .client
                .clone()
                .lease_time_to_live(id.0, Some(LeaseTimeToLiveOptions::new().with_keys()))
                .await
                .map_err(|e| errors::from_etcd(e, Context::lease(id)))?;
            // etcd answers an unknown lease with TTL -1 rather than an error.
            if resp.ttl() < 0 {
                return Err(Error::LeaseNotFound(id));
            }
            // Keys under other key prefixes can share the lease; they are not ours to show. etcd
            // lists keys in map order.
            let mut keys: Vec<Vec<u8>> = resp
                .keys()
                .iter()
                .filter_map(|key| self.key_prefix.strip(key))
                .collect();
            keys.sort();
            Ok(LeaseTimeToLive {
                id,
                ttl: resp.ttl(),
                granted_ttl: resp.granted_ttl(),
                keys,
            })
        }
        .instrument(span)
        .await
    }

    pub(crate) async fn leases(&self) -> Result<Vec<LeaseId>> {
        let span = tracing::debug_span!("etcd.leases");
        async move {
            let resp = self
                .client
                .clone()
                .leases()
                .await
                .map_err(|e| errors::from_etcd(e, Context::default()))?;
            let mut ids: Vec<LeaseId> = resp.leases().iter().map(|l| LeaseId(l.id())).collect();
            ids.sort();
            Ok(ids)
        }
        .instrument(span)
        .await
    }

    pub(crate) async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        let span = tracing::debug_span!("etcd.lease_keep_alive", lease = id.0);
        async move {
            limits::check_lease_id(id)?;
            let ttl = self.keep_alive.keep_alive(id).await?;
            tracing::trace!(ttl, "kept alive");
            Ok(ttl)
        }
        .instrument(span)
        .await
    }
}

/// The answer a waiting keep-alive gets.
type Reply = Result<i64>;

/// Callers waiting for a keep-alive reply, by lease id.
#[derive(Default)]
struct Waiters {
    by_lease: HashMap<i64, Vec<oneshot::Sender<Reply>>>,
    /// Set once the stream failed: no reply will come any more.
    closed: bool,
}

/// One open keep-alive stream and the task reading its replies.
struct SharedStream {
    /// Holds the stream's request sender; its `id` (the lease that opened the stream) is unused.
    keeper: LeaseKeeper,
    waiters: Arc<Mutex<Waiters>>,
    reader: JoinHandle<()>,
}

impl Drop for SharedStream {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl SharedStream {
    fn is_closed(&self) -> bool {
        lock(&self.waiters).closed || self.keeper.sender.is_closed()
    }

    /// Queues a keep-alive for `id` and returns where its reply will arrive, or `None` when the
    /// stream is closed.
    async fn request(&self, id: LeaseId) -> Option<oneshot::Receiver<Reply>> {
        let (tx, rx) = oneshot::channel();
        {
            let mut waiters = lock(&self.waiters);
            if waiters.closed {
                return None;
            }
            waiters.by_lease.entry(id.0).or_default().push(tx);
        }
        let mut request = default_like(&self.keeper.sender);
        request.id = id.0;
        if self.keeper.sender.send(request).await.is_err() {
            lock(&self.waiters).by_lease.remove(&id.0);
            return None;
        }
        Some(rx)
    }

    /// Forgets the callers of `id` whose reply did not come in time.
    fn forget(&self, id: LeaseId) {
        let mut waiters = lock(&self.waiters);
        if let Some(list) = waiters.by_lease.get_mut(&id.0) {
            list.retain(|tx| !tx.is_closed());
            if list.is_empty() {
                waiters.by_lease.remove(&id.0);
            }
        }
    }
}

/// Builds a request of the type a channel carries. etcd-client exposes the keep-alive request
/// sender but not the request type's name, so the type is taken from the sender.
fn default_like<T: Default>(_: &tokio::sync::mpsc::Sender<T>) -> T {
    T::default()
}

fn lock(waiters: &Mutex<Waiters>) -> std::sync::MutexGuard<'_, Waiters> {
    // A panic while holding the lock cannot leave the map half-updated in a harmful way.
    waiters.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads replies until the stream ends, then fails everyone still waiting.
async fn read_replies(mut replies: LeaseKeepAliveStream, waiters: Arc<Mutex<Waiters>>) {
    let why = loop {
        match replies.message().await {
            Ok(Some(reply)) => {
                let (id, ttl) = (reply.id(), reply.ttl());
                let list = lock(&waiters).by_lease.remove(&id).unwrap_or_default();
                for tx in list {
                    // A reply with no TTL left means the lease is gone.
                    let answer = if ttl <= 0 {
                        Err(Error::LeaseNotFound(LeaseId(id)))
                    } else {
                        Ok(ttl)
                    };
                    let _ = tx.send(answer);
                }
            }
            Ok(None) => break "etcd closed the keep-alive stream".to_owned(),
            Err(e) => break format!("keep-alive stream failed: {e}"),
        }
    };
    tracing::debug!(reason = %why, "keep-alive stream closed");
    let list = {
        let mut waiters = lock(&waiters);
        waiters.closed = true;
        std::mem::take(&mut waiters.by_lease)
    };
    for tx in list.into_values().flatten() {
        let _ = tx.send(Err(Error::unavailable(why.clone())));
    }
}

/// The keep-alives of one registry: one shared stream, opened on first use and after failures.
pub(crate) struct KeepAlives {
    client: Client,
    timeout: Duration,
    current: tokio::sync::Mutex<Option<Arc<SharedStream>>>,
    opened: AtomicU64,
}

impl fmt::Debug for KeepAlives {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeepAlives")
            .field("streams_opened", &self.streams_opened())
            .finish_non_exhaustive()
    }
}

/// What getting a stream to send on gave.
enum Acquired {
    /// A stream to send the keep-alive on.
    Stream(Arc<SharedStream>),
    /// Opening a stream sent the keep-alive already and etcd answered that the lease is gone.
    Gone,
}

impl KeepAlives {
    pub(crate) fn new(client: Client, timeout: Duration) -> Self {
        KeepAlives {
            client,
            timeout,
            current: tokio::sync::Mutex::new(None),
            opened: AtomicU64::new(0),
        }
    }

    /// How many keep-alive gRPC streams were opened so far (attempts included).
    pub(crate) fn streams_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    pub(crate) async fn keep_alive(&self, id: LeaseId) -> Result<i64> {
        // One retry: a stream found dead at send time is replaced once.
        let mut last_error = None;
        for _ in 0..2 {
            let stream = match self.acquire(id).await? {
                Acquired::Stream(stream) => stream,
                Acquired::Gone => return Err(Error::LeaseNotFound(id)),
            };
            let Some(reply) = stream.request(id).await else {
                self.discard(&stream).await;
                continue;
            };
            match tokio::time::timeout(self.timeout, reply).await {
                Ok(Ok(Err(Error::Unavailable { source }))) => {
                    // The stream failed while this request was in flight; retry on a new one.
                    self.discard(&stream).await;
                    last_error = Some(Error::Unavailable { source });
                }
                Ok(Ok(answer)) => return answer,
                Ok(Err(_)) => self.discard(&stream).await,
                Err(_) => {
                    stream.forget(id);
                    // A stream that stopped answering may be stuck on a dead connection that
                    // nobody told it about: the next call opens a fresh one.
                    self.discard(&stream).await;
                    return Err(Error::unavailable(format!(
                        "no keep-alive reply within {:?}",
                        self.timeout
                    )));
                }
            }
        }
        Err(last_error.unwrap_or_else(|| Error::unavailable("keep-alive stream keeps closing")))
    }

    /// The open stream, or a new one opened with `id`'s keep-alive.
    async fn acquire(&self, id: LeaseId) -> Result<Acquired> {
        let mut current = self.current.lock().await;
        if let Some(stream) = current.as_ref() {
            if !stream.is_closed() {
                return Ok(Acquired::Stream(Arc::clone(stream)));
            }
        }
        *current = None;
        self.opened.fetch_add(1, Ordering::Relaxed);
        let mut client = self.client.clone();
        let opened = tokio::time::timeout(self.timeout, client.lease_keep_alive(id.0))
            .await
            .map_err(|_| Error::unavailable("opening the keep-alive stream timed out"))?;
        let (keeper, replies) = match opened {
            Ok(pair) => pair,
            Err(e) => {
                return match errors::from_etcd(e, Context::lease(id)) {
                    Error::LeaseNotFound(_) => Ok(Acquired::Gone),
                    other => Err(other),
                }
            }
        };
        tracing::debug!(opened_with = id.0, "keep-alive stream opened");
        let waiters = Arc::new(Mutex::new(Waiters::default()));
        let reader = tokio::spawn(read_replies(replies, Arc::clone(&waiters)));
        let stream = Arc::new(SharedStream {
            keeper,
            waiters,
            reader,
        });
        *current = Some(Arc::clone(&stream));
        Ok(Acquired::Stream(stream))
    }

    /// Drops `stream` as the current one, if it still is.
    async fn discard(&self, stream: &Arc<SharedStream>) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, stream)) {
            *current = None;
        }
    }
}
