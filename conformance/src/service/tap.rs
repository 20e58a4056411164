//! The suite's own view of each client it hands to the service layer: when each lease was last
//! renewed (so expiry can be timed from the last keep-alive), how many watches are open, and a
//! hook that runs on the server between a cache's list and its watch.

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::StreamExt;
pub(crate) use registry_api::wrap::Renewal;
use registry_api::wrap::{Answer, Call, Intercept, Intercepted, Next, Renewals};
use registry_api::{LeaseId, Registry, WatchStream};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A client of the backend behind the suite's [`Tap`].
pub(crate) type Tapped = Intercepted<Arc<dyn Registry>, Tap>;

/// What the suite watches of a client of the backend (`tapped.intercept()`).
pub(crate) struct Tap {
    renewals: Renewals,
    watches_open: Arc<AtomicUsize>,
    before_next_watch: Mutex<Option<BoxFuture<'static, ()>>>,
}

impl fmt::Debug for Tap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tap")
            .field("watches_open", &self.watches_open())
            .finish_non_exhaustive()
    }
}

impl Tap {
    pub(crate) fn new(inner: Arc<dyn Registry>) -> Arc<Tapped> {
        let tap = Tap {
            renewals: Renewals::default(),
            watches_open: Arc::new(AtomicUsize::new(0)),
            before_next_watch: Mutex::new(None),
        };
        Arc::new(Intercepted::new(inner, tap))
    }

    /// The last successful renewal of `lease` through this client.
    pub(crate) fn last_renewal(&self, lease: LeaseId) -> Option<Renewal> {
        self.renewals.last(lease)
    }

    /// Watches opened through this client and not yet dropped.
    pub(crate) fn watches_open(&self) -> usize {
        self.watches_open.load(Ordering::SeqCst)
    }

    /// Runs `action` just before the next watch call reaches the server.
    pub(crate) fn before_next_watch(&self, action: BoxFuture<'static, ()>) {
        *self
            .before_next_watch
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(action);
    }
}

/// Counts one open watch until dropped with its stream.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Intercept for Tap {
    async fn around(&self, call: Call<'_>, next: Next<'_>) -> Answer {
        if let Call::Watch { .. } = call {
            let action = self
                .before_next_watch
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(action) = action {
                action.await;
            }
        }
        self.renewals.around(call, next).await
    }

    fn watch(&self, stream: WatchStream) -> WatchStream {
        self.watches_open.fetch_add(1, Ordering::SeqCst);
        let open = Open(self.watches_open.clone());
        stream.map_events(move |events| {
            events
                .map(move |item| {
                    let _counted = &open;
                    item
                })
                .boxed()
        })
    }
}
