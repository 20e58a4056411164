//! What the handles ask of the registrar's task: commands, and the drops that cannot wait.

use super::lease_clock::LeaseClock;
use super::options::RegistrationOptions;
use super::roster::Roster;
use super::status::Shared;
use crate::instance::{Metadata, ServiceInstance, Status};
use crate::owned::OwnedTask;
use futures::future::BoxFuture;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

pub(super) type Reply = oneshot::Sender<crate::Result<()>>;

/// What a handle asks of the task.
#[derive(Debug)]
pub(super) enum Command {
    Start(Box<Start>),
    Metadata {
        id: u64,
        metadata: Metadata,
        reply: Reply,
    },
    Status {
        id: u64,
        status: Status,
        reply: Reply,
    },
    Stop {
        id: u64,
        how: Stop,
        reply: Reply,
    },
}

/// How to stop.
#[derive(Clone, Copy, Debug)]
pub(super) enum Stop {
    /// Revoke now.
    Now,
    /// Mark draining, wait the grace period and for the watch, then revoke.
    Drain(Duration),
}

/// A new registration, validated by the handle.
pub(super) struct Start {
    pub(super) id: u64,
    pub(super) key: String,
    pub(super) prefix: String,
    pub(super) instance: ServiceInstance,
    pub(super) ttl: i64,
    pub(super) options: RegistrationOptions,
    pub(super) shared: Arc<Shared>,
    pub(super) first: Option<Reply>,
    pub(super) ready: Option<BoxFuture<'static, ()>>,
}

impl std::fmt::Debug for Start {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Start")
            .field("id", &self.id)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Handles that were dropped or abandoned, for the task to act on. Drop cannot wait for room
/// in the command channel; this list holds at most one entry per registration ever started and
/// not yet seen by the task, so it cannot grow without bound.
#[derive(Debug, Default)]
pub(super) struct Inbox {
    dropped: Mutex<Vec<(u64, bool)>>,
    notify: Notify,
}

impl Inbox {
    pub(super) fn push(&self, id: u64, abandoned: bool) {
        self.dropped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((id, abandoned));
        self.notify.notify_one();
    }

    pub(super) fn take(&self) -> Vec<(u64, bool)> {
        std::mem::take(
            &mut *self
                .dropped
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

impl Inbox {
    /// Resolves once something was pushed since the last wake.
    pub(super) async fn notified(&self) {
        self.notify.notified().await;
    }
}

/// The registrar's task as its handles reach it: the command channel, the inbox for drops, the
/// roster that reports the task's death, and the task itself. Shared (`Arc`) by the
/// [`Registrar`](super::Registrar) and every [`Registration`](super::Registration) on it, so
/// the task lives as long as any of them.
#[derive(Debug)]
pub(super) struct Mailbox {
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) inbox: Arc<Inbox>,
    pub(super) roster: Arc<Roster>,
    pub(super) next_id: AtomicU64,
    /// The shared lease's clock, on a registrar with a shared lease.
    pub(super) shared_clock: Option<Arc<LeaseClock>>,
    /// Every lease clock of the registrar counts from here.
    pub(super) epoch: Instant,
    pub(super) task: OwnedTask,
}

impl Mailbox {
    /// Sends `command`; fails when the task is gone, with what ended it.
    pub(super) async fn send(&self, command: Command) -> crate::Result<()> {
        self.commands.send(command).await.map_err(|_| self.gone())
    }

    /// Why the task no longer answers: what it died of, or that it stopped.
    pub(super) fn gone(&self) -> crate::Error {
        match self.roster.failure() {
            Some(failure) => crate::Error::clone(&failure),
            None => crate::Error::Stopped("registrar"),
        }
    }

    /// A handle was dropped (`abandoned`: without revoking).
    pub(super) fn dropped(&self, id: u64, abandoned: bool) {
        self.roster.leave(id);
        self.inbox.push(id, abandoned);
    }
}
