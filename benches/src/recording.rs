//! A [`Registry`] hook that counts watches opened and remembers, per lease, when the last
//! successful grant or keep-alive was *sent* ([`Renewals`]): the server renewed the lease no
//! earlier, so a lease's expiry measured from that instant is never flattered.

use async_trait::async_trait;
use registry_api::wrap::{Answer, Call, CallKind, Intercept, Intercepted, Next, Renewals};
use registry_api::{LeaseId, Registry};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::time::Instant;

/// A registry behind the [`Recording`] hook.
pub(crate) type Recorded = Intercepted<Arc<dyn Registry>, Recording>;

/// See the module docs; read it through `recorded.intercept()`.
#[derive(Debug, Default)]
pub(crate) struct Recording {
    watches: AtomicU64,
    renewals: Renewals,
}

impl Recording {
    pub(crate) fn new(inner: Arc<dyn Registry>) -> Recorded {
        Intercepted::new(inner, Recording::default())
    }

    /// How many watches were opened through this registry.
    pub(crate) fn watches_opened(&self) -> u64 {
        self.watches.load(Ordering::Relaxed)
    }

    /// When the last successful grant or keep-alive of `lease` was sent.
    pub(crate) fn last_renewal_sent(&self, lease: LeaseId) -> Option<Instant> {
        self.renewals.last(lease).map(|renewal| renewal.sent)
    }
}

#[async_trait]
impl Intercept for Recording {
    async fn around(&self, call: Call<'_>, next: Next<'_>) -> Answer {
        if call.kind() == CallKind::Watch {
            self.watches.fetch_add(1, Ordering::Relaxed);
        }
        self.renewals.around(call, next).await
    }
}
