//! Wrappers over any [`Registry`](crate::Registry): behaviour added by wrapping a backend, so
//! every backend (the simulator, a real etcd, your own) gets it and the conformance suite runs
//! on the wrapped registry too (the pattern of object_store's `PrefixStore` and
//! `ThrottledStore`).
//!
//! - [`Intercepted`] forwards every call of the trait through an [`Intercept`]: the public way
//!   to forward, so a wrapper writes only what it changes. Its hooks see each call's kind and
//!   outcome, or, through [`Intercept::around`], the whole [`Call`] (lease ids, keys, options)
//!   and its whole [`Answer`], which they may change.
//! - [`Counting`]: requests by [`CallKind`], for load figures.
//! - [`Link`]: a network link between one client and its server, under the test's control:
//!   partitions, latency, hold and release, lost replies, stalled watches, injected errors.
//! - [`KeyPrefix`]: every key under a fixed prefix, stripped from what comes back.
//! - [`Renewals`]: when each lease was last renewed through the client (to time its expiry).
//!
//! A wrapper of ten lines that fails every write while a flag is set:
//!
//! ```
//! use registry_api::wrap::{CallKind, Intercept, Intercepted};
//! use registry_api::{async_trait, Error, PutOptions, Registry, Result};
//! use registry_memory::MemoryRegistry;
//! use std::sync::atomic::{AtomicBool, Ordering};
//!
//! #[derive(Debug, Default)]
//! struct ReadOnly(AtomicBool);
//!
//! #[async_trait]
//! impl Intercept for ReadOnly {
//!     async fn before(&self, kind: CallKind) -> Result<()> {
//!         if kind.is_write() && self.0.load(Ordering::Relaxed) {
//!             return Err(Error::unavailable("read-only"));
//!         }
//!         Ok(())
//!     }
//! }
//!
//! # tokio_test::block_on(async {
//! let registry = Intercepted::new(MemoryRegistry::with_manual_clock(), ReadOnly::default());
//! registry.put(b"a", b"1", PutOptions::default()).await?;
//! registry.intercept().0.store(true, Ordering::Relaxed);
//! assert!(registry.put(b"a", b"2", PutOptions::default()).await.is_err());
//! assert_eq!(&registry.get(b"a").await?.kv.unwrap().value[..], b"1");
//! # Ok::<(), Error>(())
//! # }).unwrap();
//! ```

mod answer;
mod call;
mod counting;
mod intercept;
mod key_prefix;
mod link;
mod renewals;

/// The workspace's seeded random source, also at [`crate::rng::SplitMix64`].
pub use crate::rng::SplitMix64;
pub use answer::{Answer, Next};
pub use call::{Call, CallKind};
pub use counting::{CallCounts, Counting};
pub use intercept::{Intercept, Intercepted};
pub use key_prefix::KeyPrefix;
pub use link::{Latency, Link};
pub use renewals::{Renewal, Renewals};
