//! How a registration, and the registrar that keeps it, behave.

use crate::backoff::Backoff;
use crate::instance::DEFAULT_NAMESPACE;
use crate::watcher::WatcherConfig;
use crate::{Error, Result};
use registry_api::limits::MAX_LEASE_TTL;
use std::time::Duration;

/// How a [`Registration`](super::Registration) behaves: its lease and its retries. `Default`
/// gives a 10 s TTL under `services`. A registrar with a shared lease takes these options for
/// that lease too ([`RegistrarOptions::shared_lease`]).
#[derive(Clone, Debug, PartialEq)]
pub struct RegistrationOptions {
    /// The lease TTL asked for, rounded up to whole seconds. The server may grant more (etcd's
    /// minimum is 2 s); keep-alives follow the granted TTL. Ignored on a registrar with a
    /// shared lease, whose TTL is the shared lease's.
    pub ttl: Duration,
    /// The key namespace (see [`KeyLayout`](crate::KeyLayout)).
    pub namespace: String,
    /// Waits between re-registration attempts.
    pub backoff: Backoff,
    /// Seeds the jitter, mixed with the service name and instance id, so a fleet sharing one
    /// seed still spreads out; the same seed gives the same waits. `None` (the default): a
    /// seed of the process's own.
    pub seed: Option<u64>,
    /// How long one registry call may take before it counts as failed.
    pub request_timeout: Duration,
}

impl Default for RegistrationOptions {
    fn default() -> Self {
        RegistrationOptions {
            ttl: Duration::from_secs(10),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            backoff: Backoff::default(),
            seed: None,
            request_timeout: Duration::from_secs(5),
        }
    }
}

impl RegistrationOptions {
    /// Sets the TTL.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets the namespace.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Sets the backoff.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the jitter seed: the same seed gives the same waits.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Sets the per-call timeout.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The longest time a registration takes to come back after the registry is reachable
    /// again, with these options: `backoff.max + request_timeout` (see the module docs).
    pub fn worst_case_recovery(&self) -> Duration {
        self.backoff.max.saturating_add(self.request_timeout)
    }
}

/// How a [`Registrar`](super::Registrar) keeps its registrations. `Default`: a lease per
/// registration, and key watches with the [`watcher`](mod@crate::watcher)'s default configuration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RegistrarOptions {
    /// `Some`: every registration on one lease, kept alive by one keep-alive per TTL/3 for all
    /// (as etcd's `concurrency.Session` does), granted and retried with these options (their
    /// TTL, backoff, seed and request timeout; the namespace stays each registration's own).
    /// When it is lost, one new grant and every key put again. `None` (the default): each
    /// registration has its own lease, with its own options.
    pub shared_lease: Option<RegistrationOptions>,
    /// How the registrar watches each registered service's prefix to put back a key someone
    /// deleted or overwrote: a [`watcher`](mod@crate::watcher), with its stall detection and herd
    /// gate. Without a seed of its own, a service's watch takes the seed of the registration
    /// that opened it (so a seeded registration is a seeded run, its key watch included).
    pub key_watch: WatcherConfig,
}

impl RegistrarOptions {
    /// Puts every registration on one lease, granted and kept with `lease`'s TTL, backoff,
    /// seed and request timeout.
    pub fn shared_lease(mut self, lease: RegistrationOptions) -> Self {
        self.shared_lease = Some(lease);
        self
    }

    /// Sets how the registrar watches the registered services' keys.
    pub fn key_watch(mut self, config: WatcherConfig) -> Self {
        self.key_watch = config;
        self
    }
}

/// A TTL in whole seconds, checked.
pub(crate) fn ttl_secs(ttl: Duration) -> Result<i64> {
    let mut secs = ttl.as_secs();
    if ttl.subsec_nanos() > 0 {
        secs = secs.saturating_add(1);
    }
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
    // etcd raises a zero TTL to its minimum, but a registration that asks for no time at all
    // is a mistake in the options, not a request for the minimum.
    if secs == 0 {
        return Err(Error::InvalidOption(
            "the registration TTL must be at least one second".to_owned(),
        ));
    }
    if secs > MAX_LEASE_TTL {
        return Err(Error::InvalidOption(format!(
            "the registration TTL of {secs} s exceeds etcd's maximum of {MAX_LEASE_TTL} s"
        )));
    }
    Ok(secs)
}
