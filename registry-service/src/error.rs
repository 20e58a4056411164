//! The service layer's errors: a registry call that failed, and what only this layer refuses.

use std::sync::Arc;
use std::time::Duration;

/// The result of every service-layer call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every way a service-layer call fails. Registry errors keep their own type
/// ([`registry_api::Error`]) inside [`Error::Registry`], so a caller can still match on them.
///
/// Cheap to clone: a registry error is shared (`Arc`), so the one error a background task met
/// reaches every handle that asks, with its source, rather than as a copied message.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A registry call failed.
    #[error(transparent)]
    Registry(#[from] Arc<registry_api::Error>),

    /// A service name is empty or contains '/' (the key separator of the layout).
    #[error("service name {0:?} is empty or contains '/'")]
    ServiceName(String),

    /// An instance id is empty or contains '/' (the key separator of the layout).
    #[error("instance id {0:?} is empty or contains '/'")]
    InstanceId(String),

    /// An option is out of range or malformed (a namespace, a TTL, ...); nothing was started.
    #[error("invalid option: {0}")]
    InvalidOption(String),

    /// The call needs a tokio runtime and was made outside one.
    #[error("{0} must be called within a tokio runtime")]
    NoRuntime(&'static str),

    /// The background task behind this handle has stopped (shut down, or its runtime is gone).
    #[error("the {0} has stopped")]
    Stopped(&'static str),

    /// A watch delivered nothing for its idle period, then did not answer a progress request
    /// in time: it is treated as dead (a member cut off from its cluster keeps such watches
    /// open), and the watcher lists again.
    #[error("the watch was silent for {silent_for:?} and did not answer a progress request")]
    WatchStalled {
        /// How long nothing was heard on it.
        silent_for: Duration,
    },

    /// A watch answers progress requests but stays behind the cluster: a read made an idle
    /// period earlier saw revision `cluster`, and the watch has still only reached `watched`
    /// (a member cut off from its peers answers from its own stale store). It is treated as
    /// dead, and the watcher lists again.
    #[error(
        "the watch is at revision {watched} while the cluster was at {cluster} an idle period ago"
    )]
    WatchBehind {
        /// The revision the watch has reached.
        watched: registry_api::Revision,
        /// The revision a read saw an idle period earlier.
        cluster: registry_api::Revision,
    },

    /// The background task behind this handle ended for a reason other than a shutdown: it
    /// panicked (`cause` is the panic's message), or the runtime it ran on shut down. Every
    /// handle of the task reports it; nothing the task did is kept up any more.
    #[error("the {task} task failed: {cause}")]
    TaskFailed {
        /// Which task (`"registrar"`, `"discovery"`, `"tower discover"`).
        task: &'static str,
        /// What ended it.
        cause: String,
    },

    /// A wait did not end in time.
    #[error("{what} did not happen within {after:?}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long.
        after: Duration,
    },
}

impl From<registry_api::Error> for Error {
    fn from(error: registry_api::Error) -> Self {
        Error::Registry(Arc::new(error))
    }
}

impl Error {
    /// True when the same call may succeed later without any change: the registry was
    /// unreachable, or a wait timed out.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Registry(e) => e.is_retryable(),
            Error::Timeout { .. } | Error::WatchStalled { .. } | Error::WatchBehind { .. } => true,
            _ => false,
        }
    }

    /// The registry's error, when this is one.
    pub fn as_registry(&self) -> Option<&registry_api::Error> {
        match self {
            Error::Registry(e) => Some(&**e),
            _ => None,
        }
    }
}
