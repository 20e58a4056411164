//! Counting requests by kind, for the load figures of benchmarks and tests.

use super::{CallKind, Intercept, Intercepted};
use crate::{Registry, Result};
use async_trait::async_trait;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Counts the requests that pass through it, by [`CallKind`]: every call made, whatever its
/// outcome, a batch of keep-alives counting as the leases it renews; and, beside them, the
/// calls themselves, a batch counting once ([`CallCounts::calls`]). A cheap handle: clones
/// share the counts, so keep one and wrap with another.
///
/// ```
/// use registry_api::wrap::{CallKind, Counting};
/// use registry_api::{PutOptions, Registry};
/// use registry_memory::MemoryRegistry;
///
/// # tokio_test::block_on(async {
/// let counting = Counting::new();
/// let registry = counting.wrap(MemoryRegistry::with_manual_clock());
/// registry.put(b"a", b"1", PutOptions::default()).await?;
/// registry.get(b"a").await?;
/// registry.get(b"b").await?;
/// let counts = counting.snapshot();
/// assert_eq!((counts.get(CallKind::Get), counts.get(CallKind::Put), counts.total()), (2, 1, 3));
/// # Ok::<(), registry_api::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone, Default)]
pub struct Counting {
    counts: Arc<[AtomicU64; CallKind::ALL.len()]>,
    calls: Arc<[AtomicU64; CallKind::ALL.len()]>,
}

impl Counting {
    /// Counts from zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// `inner`, counted by this handle.
    pub fn wrap<R: Registry>(&self, inner: R) -> Intercepted<R, Counting> {
        Intercepted::new(inner, self.clone())
    }

    /// The counts now.
    pub fn snapshot(&self) -> CallCounts {
        CallCounts {
            counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
            calls: std::array::from_fn(|i| self.calls[i].load(Ordering::Relaxed)),
        }
    }

    /// Sets every count back to zero.
    pub fn reset(&self) {
        for count in self.counts.iter().chain(self.calls.iter()) {
            count.store(0, Ordering::Relaxed);
        }
    }
}

impl fmt::Debug for Counting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Counting").field(&self.snapshot()).finish()
    }
}

#[async_trait]
impl Intercept for Counting {
    async fn before(&self, kind: CallKind) -> Result<()> {
        self.counts[kind.index()].fetch_add(1, Ordering::Relaxed);
        self.calls[kind.index()].fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// A batch counts as the requests it carries: the server handles each (etcd answers every
    /// keep-alive of a batch on its own), so load figures do not change with batching.
    async fn before_many(&self, kind: CallKind, n: usize) -> Result<()> {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        self.counts[kind.index()].fetch_add(n, Ordering::Relaxed);
        self.calls[kind.index()].fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The counts of a [`Counting`] at one moment.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct CallCounts {
    counts: [u64; CallKind::ALL.len()],
    calls: [u64; CallKind::ALL.len()],
}

impl CallCounts {
    /// Requests of `kind` (a batch counts as what it carries).
    pub fn get(&self, kind: CallKind) -> u64 {
        self.counts[kind.index()]
    }

    /// Calls of `kind`, a batch counting once: the round trips the requests took.
    pub fn calls(&self, kind: CallKind) -> u64 {
        self.calls[kind.index()]
    }

    /// Requests of every kind.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Requests that change the store ([`CallKind::is_write`]).
    pub fn writes(&self) -> u64 {
        self.iter()
            .filter(|(kind, _)| kind.is_write())
            .map(|(_, n)| n)
            .sum()
    }

    /// Every kind with its count, in [`CallKind::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (CallKind, u64)> + '_ {
        CallKind::ALL.iter().map(|kind| (*kind, self.get(*kind)))
    }

    /// The counts since `earlier` (saturating at zero).
    pub fn since(&self, earlier: &CallCounts) -> CallCounts {
        CallCounts {
            counts: std::array::from_fn(|i| self.counts[i].saturating_sub(earlier.counts[i])),
            calls: std::array::from_fn(|i| self.calls[i].saturating_sub(earlier.calls[i])),
        }
    }
}

impl fmt::Debug for CallCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(k, n)| (k.name(), n)),
            )
            .finish()
    }
}
