//! When each lease was last renewed, as a client saw it.

use super::{Answer, Call, Intercept, Intercepted, Next};
use crate::{Error, LeaseId};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use tokio::time::Instant;

/// When a renewal (a grant or a keep-alive) of a lease was sent and when its answer came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Renewal {
    /// When the call left: the server renewed the lease no earlier, so an expiry timed from
    /// here is never flattered.
    pub sent: Instant,
    /// When its answer came.
    pub answered: Instant,
}

/// An [`Intercept`] that remembers, per lease, its last successful renewal through this client:
/// a grant, a keep-alive, or its lease's answer in a batch of keep-alives. A lease revoked or
/// found gone through the client is forgotten, so the map holds the leases the client keeps.
///
/// ```
/// use registry_api::wrap::{Intercepted, Renewals};
/// use registry_api::Registry;
/// use registry_memory::MemoryRegistry;
///
/// # tokio_test::block_on(async {
/// let registry = Intercepted::new(MemoryRegistry::with_manual_clock(), Renewals::default());
/// let lease = registry.lease_grant(10, None).await?;
/// registry.lease_keep_alive_many(&[lease.id]).await?;
/// assert!(registry.intercept().last(lease.id).is_some());
/// registry.lease_revoke(lease.id).await?;
/// assert!(registry.intercept().last(lease.id).is_none());
/// # Ok::<(), registry_api::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Default)]
pub struct Renewals {
    last: Mutex<HashMap<LeaseId, Renewal>>,
}

impl Renewals {
    /// `inner`, with its renewals remembered.
    pub fn wrap<R>(self, inner: R) -> Intercepted<R, Renewals>
    where
        R: crate::Registry,
    {
        Intercepted::new(inner, self)
    }

    /// The last successful renewal of `lease` through this client.
    pub fn last(&self, lease: LeaseId) -> Option<Renewal> {
        self.lock().get(&lease).copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LeaseId, Renewal>> {
        self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl Intercept for Renewals {
    async fn around(&self, call: Call<'_>, next: Next<'_>) -> Answer {
        let sent = Instant::now();
        let asked = call.leases().to_vec();
        let answer = next.run(call).await;
        let answered = Instant::now();
        let mut last = self.lock();
        for lease in answer.renewed(&asked) {
            last.insert(lease, Renewal { sent, answered });
        }
        match &answer {
            Answer::LeaseRevoke(Ok(_)) | Answer::LeaseKeepAlive(Err(Error::LeaseNotFound(_))) => {
                for lease in &asked {
                    last.remove(lease);
                }
            }
            Answer::LeaseKeepAliveMany(Ok(answers)) => {
                for (lease, answer) in asked.iter().zip(answers) {
                    if matches!(answer, Err(Error::LeaseNotFound(_))) {
                        last.remove(lease);
                    }
                }
            }
            _ => {}
        }
        drop(last);
        answer
    }
}
