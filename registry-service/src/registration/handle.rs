//! The handle that keeps an instance registered.

use super::commands::{Command, Mailbox, Stop};
use super::status::{RegistrationState, RegistrationStatus, RegistrationStatusReader, Shared};
use crate::instance::{Metadata, Status};
use crate::{Error, Result};
use registry_api::LeaseId;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// A live registration: the handle that keeps an instance registered.
///
/// Start one with [`Registration::start`] (or [`Registrar::register`](super::Registrar::register)).
/// Dropping it deregisters (best effort, on the runtime its registrar runs on); call
/// [`deregister`](Registration::deregister) to wait for the revoke and see its outcome, or
/// [`shutdown`](Registration::shutdown) to drain first.
#[derive(Debug)]
#[must_use = "dropping a Registration deregisters the instance at once; keep the handle for as long as the instance should stay registered"]
pub struct Registration {
    id: u64,
    key: String,
    state: watch::Receiver<RegistrationState>,
    shared: Arc<Shared>,
    mailbox: Arc<Mailbox>,
    abandoned: bool,
}

impl Registration {
    pub(super) fn new(
        id: u64,
        key: String,
        shared: Arc<Shared>,
        mailbox: Arc<Mailbox>,
    ) -> Registration {
        Registration {
            id,
            key,
            state: shared.state.subscribe(),
            shared,
            mailbox,
            abandoned: false,
        }
    }

    /// The current state.
    pub fn state(&self) -> RegistrationState {
        self.state.borrow().clone()
    }

    /// The state with the lease's timing, the counters and the last error.
    pub fn status(&self) -> RegistrationStatus {
        self.shared.status(&self.state)
    }

    /// A cheap, cloneable reader of [`status`](Self::status) that does not keep the
    /// registration alive: for a metrics sampler or a health endpoint on another task.
    pub fn status_reader(&self) -> RegistrationStatusReader {
        RegistrationStatusReader {
            state: self.state.clone(),
            shared: self.shared.clone(),
        }
    }

    /// A receiver of the state: `borrow` reads it, `changed` waits for the next change (a
    /// `watch` channel keeps only the latest state, so quick successions may be seen as one).
    pub fn subscribe(&self) -> watch::Receiver<RegistrationState> {
        let mut receiver = self.state.clone();
        receiver.mark_unchanged();
        receiver
    }

    /// The live lease, when registered.
    pub fn lease(&self) -> Option<LeaseId> {
        match *self.state.borrow() {
            RegistrationState::Registered { lease, .. } => Some(lease),
            _ => None,
        }
    }

    /// Waits until the instance is in the registry (at once when it is) and returns its lease.
    /// Fails with [`Error::Timeout`] after `timeout` (on tokio's clock, so virtual time in
    /// tests), with [`Error::Stopped`] when the registration has been deregistered, and with
    /// what ended it when it [failed](RegistrationState::Failed) (a registry error that no
    /// retry can fix, or [`Error::TaskFailed`]).
    pub async fn wait_registered(&self, timeout: Duration) -> Result<LeaseId> {
        let mut state = self.state.clone();
        let wait = async move {
            let seen = state
                .wait_for(|s| {
                    matches!(
                        s,
                        RegistrationState::Registered { .. }
                            | RegistrationState::Deregistered
                            | RegistrationState::Failed
                    )
                })
                .await
                .map(|s| s.clone());
            match seen {
                Ok(RegistrationState::Registered { lease, .. }) => Ok(lease),
                Ok(RegistrationState::Failed) => Err(self.ended()),
                _ => Err(stopped()),
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Error::Timeout {
                what: format!("registration of {}", self.key),
                after: timeout,
            }),
        }
    }

    /// The instance's key in the registry.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Replaces the instance's metadata, in the registry and for every later re-registration.
    ///
    /// Oversized metadata fails with a `TooLarge` registry error and changes nothing. Otherwise
    /// the new metadata is kept: when registered it is written now, and a failed write is
    /// returned as the error but retried after the next keep-alive that succeeds; when
    /// re-registering it is written with the next registration and this returns `Ok`. A
    /// registry that refuses the write for good (permission denied) ends the registration.
    pub async fn update_metadata(&self, metadata: Metadata) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.mailbox
            .send(Command::Metadata {
                id: self.id,
                metadata,
                reply,
            })
            .await?;
        answer.await.map_err(|_| self.ended())?
    }

    /// Sets the status written in the instance's value ([`Status::Draining`]: pickers stop
    /// choosing it; [`Status::Serving`]: they pick it again), now and for every later
    /// re-registration. Failures are reported as with [`update_metadata`](Self::update_metadata).
    pub async fn set_status(&self, status: Status) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.mailbox
            .send(Command::Status {
                id: self.id,
                status,
                reply,
            })
            .await?;
        answer.await.map_err(|_| self.ended())?
    }

    /// Revokes the lease, so the instance disappears at once, and stops. Returns the revoke's
    /// error if the registry could not be reached (the entry then expires within a TTL).
    /// Calling it again, or after the registration was deregistered, returns `Ok`; after it
    /// failed, returns what ended it.
    pub async fn deregister(&self) -> Result<()> {
        self.stop(Stop::Now).await
    }

    /// A graceful shutdown: writes the instance as [`Status::Draining`] so that pickers stop
    /// choosing it, waits `grace` (keep serving meanwhile: caches need that long to see the
    /// change) and until the registrar's own watch has shown the draining value (at most one
    /// `request_timeout` longer), then revokes the lease as
    /// [`deregister`](Self::deregister) does. When the instance is not in the registry it stops
    /// at once.
    pub async fn shutdown(&self, grace: Duration) -> Result<()> {
        self.stop(Stop::Drain(grace)).await
    }

    async fn stop(&self, how: Stop) -> Result<()> {
        if let Some(failure) = self.shared.failure() {
            return Err(failure);
        }
        let (reply, answer) = oneshot::channel();
        let command = Command::Stop {
            id: self.id,
            how,
            reply,
        };
        if self.mailbox.send(command).await.is_err() {
            return self.shared.failure().map_or(Ok(()), Err);
        }
        match answer.await {
            Ok(outcome) => outcome,
            Err(_) => self.shared.failure().map_or(Ok(()), Err),
        }
    }

    /// Stops keeping the lease alive WITHOUT revoking it, as if the process had crashed: the
    /// entry stays until its lease expires, one TTL after the last keep-alive. Meant for tests
    /// and demos of failure handling; a real shutdown should [`shutdown`](Self::shutdown) or
    /// [`deregister`](Self::deregister). On a registrar with a shared lease, which other
    /// registrations keep alive, the entry stays until that lease ends.
    pub fn abandon(mut self) {
        self.abandoned = true;
    }

    /// What ended the registration: its failure, or the task gone.
    fn ended(&self) -> Error {
        self.shared.failure().unwrap_or_else(|| self.mailbox.gone())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // The registrar, still on its runtime, revokes the lease (or, when abandoned, only
        // forgets the registration). Nothing happens when it already stopped.
        tracing::debug!(key = %self.key, abandoned = self.abandoned, "registration handle dropped");
        self.mailbox.dropped(self.id, self.abandoned);
    }
}

fn stopped() -> Error {
    Error::Stopped("registration")
}
