//! The task behind a [`Registration`](super::Registration): register, keep alive, heal.

use super::{RegistrationOptions, RegistrationState};
use crate::backoff::deadline_after;
use crate::instance::{Metadata, ServiceInstance};
use crate::rng::SplitMix64;
use registry_api::limits::{check_put, DEFAULT_MAX_VALUE_BYTES};
use registry_api::{Error, LeaseId, PutOptions, Registry, Result, Revision};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// What the handle asks of the task.
#[derive(Debug)]
pub(super) enum Command {
    Update {
        metadata: Metadata,
        reply: oneshot::Sender<Result<()>>,
    },
    Deregister {
        reply: oneshot::Sender<Result<()>>,
    },
}

/// Why the keep-alive loop ended.
enum Exit {
    LeaseLost,
    Stopped,
}

/// A lease the task holds, with the TTL the server granted.
#[derive(Clone, Copy)]
struct Held {
    lease: LeaseId,
    ttl: Duration,
    /// When the grant was sent: the server's clock for the lease started no earlier.
    granted_at: Instant,
}

pub(super) struct Worker {
    registry: Arc<dyn Registry>,
    key: String,
    instance: ServiceInstance,
    /// The JSON of `instance`, as it must be in the registry.
    value: Vec<u8>,
    ttl: i64,
    options: RegistrationOptions,
    rng: SplitMix64,
    state: watch::Sender<RegistrationState>,
    commands: mpsc::UnboundedReceiver<Command>,
    abandoned: Arc<AtomicBool>,
}

impl Worker {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        registry: Arc<dyn Registry>,
        key: String,
        instance: ServiceInstance,
        ttl: i64,
        options: RegistrationOptions,
        rng: SplitMix64,
        state: watch::Sender<RegistrationState>,
        commands: mpsc::UnboundedReceiver<Command>,
        abandoned: Arc<AtomicBool>,
    ) -> Self {
        let value = instance.to_json();
        Worker {
            registry,
            key,
            instance,
            value,
            ttl,
            options,
            rng,
            state,
            commands,
            abandoned,
        }
    }

    pub(super) async fn run(mut self, first: oneshot::Sender<Result<()>>) {
        let mut first = Some(first);
        let mut attempt: u32 = 0;
        loop {
            match self.register().await {
                Ok((held, revision)) => {
                    attempt = 0;
                    self.publish(RegistrationState::Registered {
                        lease: held.lease,
                        revision,
                    });
                    tracing::info!(lease = %held.lease, %revision, "registered");
                    if let Some(first) = first.take() {
                        if first.send(Ok(())).is_err() {
                            // Nobody is waiting for the handle any more: undo and stop.
                            self.revoke(held.lease).await.ok();
                            self.publish(RegistrationState::Deregistered);
                            return;
                        }
                    }
                    match self.keep_alive(held).await {
                        Exit::Stopped => return,
                        Exit::LeaseLost => {
                            tracing::warn!(lease = %held.lease, "lease lost; re-registering");
                            self.publish(RegistrationState::LeaseLost);
                        }
                    }
                }
                Err(e) if first.is_some() && is_bad_input(&e) => {
                    if let Some(first) = first.take() {
                        first.send(Err(e)).ok();
                    }
                    self.publish(RegistrationState::Deregistered);
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "registration attempt failed");
                }
            }
            attempt = attempt.saturating_add(1);
            let wait = self.options.backoff.delay(attempt, &mut self.rng);
            if self.idle(wait).await.is_err() {
                return;
            }
            if first.is_none() {
                self.publish(RegistrationState::ReRegistering { attempt });
            }
        }
    }

    /// Grants a fresh lease and puts the instance with it.
    async fn register(&mut self) -> Result<(Held, Revision)> {
        let granted_at = Instant::now();
        let grant = self.call(self.registry.lease_grant(self.ttl, None)).await?;
        let held = Held {
            lease: grant.id,
            ttl: Duration::from_secs(u64::try_from(grant.ttl.max(1)).unwrap_or(1)),
            granted_at,
        };
        match self.put(held.lease).await {
            Ok(revision) => Ok((held, revision)),
            Err(e) => {
                // The lease is of no use without the key; let it go rather than leak it.
                self.revoke(held.lease).await.ok();
                Err(e)
            }
        }
    }

    /// Keeps `held` alive every TTL/3 until it is lost or the handle says stop.
    async fn keep_alive(&mut self, held: Held) -> Exit {
        let interval = held.ttl / 3;
        // Deadlines count from when a grant or keep-alive was *sent*: the server renewed no
        // earlier, so the lease lives at least until then, and "lost" is never declared late.
        let mut deadline = held
            .granted_at
            .checked_add(held.ttl)
            .unwrap_or_else(|| deadline_after(held.ttl));
        let mut next = deadline_after(interval).min(deadline);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                command = self.commands.recv() => {
                    match command {
                        None => {
                            self.stop(Some(held.lease)).await.ok();
                            return Exit::Stopped;
                        }
                        Some(Command::Deregister { reply }) => {
                            reply.send(self.stop(Some(held.lease)).await).ok();
                            return Exit::Stopped;
                        }
                        Some(Command::Update { metadata, reply }) => {
                            let (outcome, lost) = self.update(metadata, Some(held.lease)).await;
                            reply.send(outcome).ok();
                            if lost {
                                return Exit::LeaseLost;
                            }
                        }
                    }
                    continue;
                }
            }
            if self.abandoned.load(Ordering::SeqCst) {
                return Exit::Stopped;
            }
            let renewed_until = deadline_after(held.ttl);
            // A keep-alive answered after the deadline is worthless: wait no longer than that.
            let limit = deadline
                .saturating_duration_since(Instant::now())
                .min(self.options.request_timeout);
            match self
                .call_within(limit, self.registry.lease_keep_alive(held.lease))
                .await
            {
                Ok(_) => {
                    deadline = renewed_until;
                    if let Err(Error::LeaseNotFound(_)) = self.ensure_key(held.lease).await {
                        return Exit::LeaseLost;
                    }
                }
                Err(Error::LeaseNotFound(_)) => return Exit::LeaseLost,
                Err(e) => {
                    tracing::warn!(lease = %held.lease, error = %e, "keep-alive failed");
                    if Instant::now() >= deadline {
                        return Exit::LeaseLost;
                    }
                }
            }
            next = deadline_after(interval).min(deadline);
        }
    }

    /// Puts the instance back if its key is missing or not what this registration wrote.
    async fn ensure_key(&mut self, lease: LeaseId) -> Result<()> {
        let current = self.call(self.registry.get(self.key.as_bytes())).await?;
        let intact = current
            .kv
            .as_ref()
            .is_some_and(|kv| kv.lease == Some(lease) && kv.value == self.value);
        if intact {
            return Ok(());
        }
        tracing::warn!(key = %self.key, "instance key missing or changed; putting it back");
        self.put(lease).await.map(|_| ())
    }

    /// Writes the instance with `lease` and records the revision.
    async fn put(&mut self, lease: LeaseId) -> Result<Revision> {
        let put = self
            .call(self.registry.put(
                self.key.as_bytes(),
                &self.value,
                PutOptions::with_lease(lease),
            ))
            .await?;
        self.state.send_modify(|state| {
            if let RegistrationState::Registered { revision, .. } = state {
                *revision = put.revision;
            }
        });
        Ok(put.revision)
    }

    /// Applies new metadata; returns the outcome for the caller and whether the lease is gone.
    async fn update(&mut self, metadata: Metadata, lease: Option<LeaseId>) -> (Result<()>, bool) {
        let mut instance = self.instance.clone();
        instance.metadata = metadata;
        let value = instance.to_json();
        if let Err(e) = check_put(self.key.as_bytes(), &value, DEFAULT_MAX_VALUE_BYTES) {
            return (Err(e), false);
        }
        let previous = std::mem::replace(&mut self.value, value);
        let previous_instance = std::mem::replace(&mut self.instance, instance);
        let Some(lease) = lease else {
            return (Ok(()), false);
        };
        match self.put(lease).await {
            Ok(_) => (Ok(()), false),
            Err(Error::LeaseNotFound(id)) => (Ok(()), id == lease),
            Err(e) if is_bad_input(&e) => {
                // The backend refused the value itself: keep what was registered.
                self.value = previous;
                self.instance = previous_instance;
                (Err(e), false)
            }
            Err(e) => (Err(e), false),
        }
    }

    /// Waits `wait` while answering the handle. `Err` means stop.
    async fn idle(&mut self, wait: Duration) -> std::result::Result<(), ()> {
        let until = deadline_after(wait);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return Ok(()),
                command = self.commands.recv() => match command {
                    None => {
                        self.stop(None).await.ok();
                        return Err(());
                    }
                    Some(Command::Deregister { reply }) => {
                        reply.send(self.stop(None).await).ok();
                        return Err(());
                    }
                    Some(Command::Update { metadata, reply }) => {
                        reply.send(self.update(metadata, None).await.0).ok();
                    }
                },
            }
        }
    }

    /// Revokes `lease` unless abandoned, and marks the registration stopped.
    async fn stop(&mut self, lease: Option<LeaseId>) -> Result<()> {
        let outcome = match lease {
            Some(lease) if !self.abandoned.load(Ordering::SeqCst) => self.revoke(lease).await,
            _ => Ok(()),
        };
        self.publish(RegistrationState::Deregistered);
        tracing::info!(key = %self.key, ok = outcome.is_ok(), "deregistered");
        outcome
    }

    async fn revoke(&self, lease: LeaseId) -> Result<()> {
        match self.call(self.registry.lease_revoke(lease)).await {
            Ok(_) | Err(Error::LeaseNotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One registry call, bounded by the request timeout.
    async fn call<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        self.call_within(self.options.request_timeout, call).await
    }

    async fn call_within<T>(
        &self,
        limit: Duration,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(limit, call).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Error::unavailable(format!("no answer within {limit:?}"))),
        }
    }

    fn publish(&self, state: RegistrationState) {
        self.state.send_replace(state);
    }
}

/// Errors that no retry can fix: the input itself is refused.
fn is_bad_input(error: &Error) -> bool {
    matches!(error, Error::InvalidArgument(_) | Error::TooLarge { .. })
}
