//! Settings of a [`MemoryRegistry`](crate::MemoryRegistry) and the builder that sets them.

use crate::clock::Clock;
use crate::timing::{Latencies, Timing};
use crate::MemoryRegistry;
use registry_api::limits;
use registry_api::seeding::{self, RunSeed, SeedSource};

/// The simulated server's settings, fixed when the registry is built.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) min_ttl: i64,
    pub(crate) max_ttl: i64,
    pub(crate) max_value_bytes: usize,
    pub(crate) history_limit: Option<i64>,
    pub(crate) journal: usize,
}

/// Builds a [`MemoryRegistry`] with settings other than etcd's defaults.
///
/// ```
/// use registry_memory::MemoryRegistry;
///
/// let registry = MemoryRegistry::builder()
///     .min_ttl(5)
///     .max_value_bytes(1024)
///     .history_limit(10_000)
///     .manual_clock()
///     .build();
/// assert_eq!(registry.current_revision().get(), 1);
/// ```
#[derive(Clone, Debug)]
pub struct MemoryRegistryBuilder {
    config: Config,
    manual_clock: bool,
    /// `None`: etcd's on tokio's clock, instant on the manual clock.
    latencies: Option<Latencies>,
    seed: Option<u64>,
}

impl Default for MemoryRegistryBuilder {
    fn default() -> Self {
        MemoryRegistryBuilder {
            config: Config {
                min_ttl: limits::DEFAULT_MIN_LEASE_TTL,
                max_ttl: limits::MAX_LEASE_TTL,
                max_value_bytes: limits::DEFAULT_MAX_VALUE_BYTES,
                history_limit: None,
                journal: 0,
            },
            manual_clock: false,
            latencies: None,
            seed: None,
        }
    }
}

impl MemoryRegistryBuilder {
    /// The smallest TTL granted, in seconds (default 2, etcd's): a grant below it is raised to
    /// it. Values below 1 count as 1.
    pub fn min_ttl(mut self, seconds: i64) -> Self {
        self.config.min_ttl = seconds.max(1);
        self
    }

    /// The largest TTL accepted, in seconds (default etcd's 9,000,000,000); a grant above it
    /// fails with `InvalidArgument`. Never below the minimum TTL.
    pub fn max_ttl(mut self, seconds: i64) -> Self {
        self.config.max_ttl = seconds.max(1);
        self
    }

    /// The largest key plus value a put accepts, in bytes (default
    /// [`limits::DEFAULT_MAX_VALUE_BYTES`]); a bigger put fails with `TooLarge`.
    pub fn max_value_bytes(mut self, bytes: usize) -> Self {
        self.config.max_value_bytes = bytes;
        self
    }

    /// Keeps only the last `revisions` revisions readable, compacting automatically as writes
    /// come in. Off by default: history then grows until
    /// [`compact`](registry_api::Registry::compact) is called. Values below 1 count as 1.
    pub fn history_limit(mut self, revisions: u64) -> Self {
        self.config.history_limit = Some(i64::try_from(revisions).unwrap_or(i64::MAX).max(1));
        self
    }

    /// Keeps a journal of the last `commits` committed revisions, each stamped with the server's
    /// virtual time ([`MemoryRegistry::journal_after`]): the truth a test's checker reads from
    /// the server itself, which no fault on a client can delay or hide. Off (0) by default. The
    /// journal shares each revision's record with the history, so it costs a pointer and a
    /// timestamp per revision kept.
    pub fn journal(mut self, commits: usize) -> Self {
        self.config.journal = commits;
        self
    }

    /// Time moves only by [`MemoryRegistry::advance`]; no runtime is needed.
    pub fn manual_clock(mut self) -> Self {
        self.manual_clock = true;
        self
    }

    /// Time is tokio's (`tokio::time::Instant`), paused or not (the default).
    pub fn tokio_clock(mut self) -> Self {
        self.manual_clock = false;
        self
    }

    /// How long each leg of every call and delivery takes (see [`Latencies`]): the switch for
    /// the whole simulator. The default is [`Latencies::etcd`] on tokio's clock and
    /// [`Latencies::instant`] on the manual clock, where nothing can wait. Delays sleep on
    /// tokio's clock (so a runtime with its timer is needed, paused in tests: they then cost
    /// no wall time), also when leases follow the manual clock. One client's own profile:
    /// [`MemoryRegistry::set_client_timing`].
    ///
    /// ```
    /// use registry_memory::{Latencies, MemoryRegistry};
    /// use std::time::Duration;
    ///
    /// let slow = MemoryRegistry::builder()
    ///     .timing(Latencies::fixed(Duration::from_millis(20)))
    ///     .seed(7)
    ///     .build();
    /// assert_eq!(slow.timing(), Latencies::fixed(Duration::from_millis(20)));
    /// assert_eq!(slow.seed(), 7);
    /// ```
    pub fn timing(mut self, latencies: Latencies) -> Self {
        self.latencies = Some(latencies);
        self
    }

    /// No delay anywhere ([`Latencies::instant`]): every call answered, every event delivered,
    /// at the instant of the call or commit. For benchmarks, and for tests of exact instants.
    pub fn instant(self) -> Self {
        self.timing(Latencies::instant())
    }

    /// The seed every client's delays are drawn from (each client mixes in its name). Without
    /// one, the seed of [`registry_api::seeding::current`]: a search's seed in scope, else
    /// `REGISTRY_SEED`, else one derived from the running test's name.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The registry: a fresh store at revision 1. With tokio's clock, build it inside the runtime
    /// that will use it, so that its time zero is that runtime's (paused) clock.
    pub fn build(self) -> MemoryRegistry {
        let mut config = self.config;
        config.max_ttl = config.max_ttl.max(config.min_ttl);
        let clock = if self.manual_clock {
            Clock::Manual
        } else {
            Clock::tokio()
        };
        let latencies = self.latencies.unwrap_or(if self.manual_clock {
            Latencies::instant()
        } else {
            Latencies::etcd()
        });
        let seed = match self.seed {
            Some(seed) => RunSeed {
                seed,
                source: SeedSource::Explicit,
            },
            None => seeding::current(),
        };
        MemoryRegistry::from_parts(config, clock, Timing::new(latencies, seed))
    }
}
