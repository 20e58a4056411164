//! Deliberately broken service layers, each built as a wrapper over what the real service
//! layer reads and writes, so that the search can prove it catches them.

use super::harness::{ClientLayer, FleetOptions};
use registry_api::wrap::{Answer, Call, CallKind, Intercept, Intercepted, Next};
use registry_api::{async_trait, Error, EventKind, LeaseGrant, Registry, Result, WatchStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// A broken service layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mutant {
    /// An instance that never registers again once its first lease is lost: every grant after
    /// the first fails.
    NeverReRegisters,
    /// An instance that keeps using its first lease id after the lease died: every grant after
    /// the first answers with the first lease, which the server no longer knows.
    ReusesDeadLease,
    /// A discovery cache that drops removals: its watches lose every delete event.
    DropsRemovals,
}

impl Mutant {
    /// Every mutant.
    pub const ALL: [Mutant; 3] = [
        Mutant::NeverReRegisters,
        Mutant::ReusesDeadLease,
        Mutant::DropsRemovals,
    ];

    /// `options` with this mutant's wrapper in place.
    pub fn apply(self, mut options: FleetOptions) -> FleetOptions {
        let layer: ClientLayer = match self {
            Mutant::NeverReRegisters => Arc::new(|_: &str, inner: Arc<dyn Registry>| {
                Arc::new(Intercepted::new(inner, GrantsOnce::default())) as Arc<dyn Registry>
            }),
            Mutant::ReusesDeadLease => Arc::new(|_: &str, inner: Arc<dyn Registry>| {
                Arc::new(Intercepted::new(inner, FirstLeaseForever::default())) as Arc<dyn Registry>
            }),
            Mutant::DropsRemovals => Arc::new(|_: &str, inner: Arc<dyn Registry>| {
                Arc::new(Intercepted::new(inner, DropDeletes)) as Arc<dyn Registry>
            }),
        };
        match self {
            Mutant::DropsRemovals => options.gateway_layer = Some(layer),
            _ => options.instance_layer = Some(layer),
        }
        options
    }
}

#[derive(Debug, Default)]
struct GrantsOnce {
    granted: AtomicBool,
}

#[async_trait]
impl Intercept for GrantsOnce {
    async fn before(&self, kind: CallKind) -> Result<()> {
        if kind == CallKind::LeaseGrant && self.granted.load(Ordering::SeqCst) {
            return Err(Error::unavailable("this layer never grants twice"));
        }
        Ok(())
    }

    async fn after(&self, kind: CallKind, outcome: Result<(), &Error>) -> Result<()> {
        if kind == CallKind::LeaseGrant && outcome.is_ok() {
            self.granted.store(true, Ordering::SeqCst);
        }
        Ok(())
    }
}

#[derive(Debug)]
struct DropDeletes;

#[async_trait]
impl Intercept for DropDeletes {
    fn watch(&self, stream: WatchStream) -> WatchStream {
        use futures::StreamExt;
        stream.map_events(|events| {
            events
                .filter_map(|item| async move {
                    match item {
                        Ok(mut batch) if !batch.events.is_empty() => {
                            batch.events.retain(|e| e.kind != EventKind::Delete);
                            (!batch.events.is_empty()).then_some(Ok(batch))
                        }
                        other => Some(other),
                    }
                })
                .boxed()
        })
    }
}

/// Answers every grant after the first with the first lease.
#[derive(Debug, Default)]
struct FirstLeaseForever {
    first: Mutex<Option<LeaseGrant>>,
}

#[async_trait]
impl Intercept for FirstLeaseForever {
    async fn around(&self, call: Call<'_>, next: Next<'_>) -> Answer {
        if !matches!(call, Call::LeaseGrant { .. }) {
            return next.run(call).await;
        }
        let first = self
            .first
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(first) = first {
            return Answer::LeaseGrant(Ok(first));
        }
        let answer = next.run(call).await;
        if let Answer::LeaseGrant(Ok(grant)) = &answer {
            *self.first.lock().unwrap_or_else(PoisonError::into_inner) = Some(grant.clone());
        }
        answer
    }
}
