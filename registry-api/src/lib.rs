//! The contract every registry backend implements: the [`Registry`] trait, its types, its
//! errors, the input limits every backend applies, and wrappers that work over any backend.
//!
//! The service layer (registration, discovery, picking) is built on this contract in the
//! `registry-service` crate; a backend author depends on this crate alone.
//!
//! A [`Registry`] is an etcd-shaped store: one store-wide [`Revision`] that every write bumps,
//! leases that expire unless kept alive and take their keys with them, and watches that replay
//! every change under a prefix, in revision order, one [`WatchBatch`] per revision.
//! Backends (`registry-etcd`, `registry-memory`, or your own) implement the trait; applications
//! hold an `Arc<dyn Registry>` and never name a backend.
//!
//! # The whole life of a lease
//!
//! ```
//! use registry_api::{Error, PutOptions, Registry};
//! use registry_memory::MemoryRegistry;
//! use std::sync::Arc;
//!
//! # tokio_test::block_on(async {
//! let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::with_manual_clock());
//!
//! // Grant: the server may raise a short TTL to its minimum (etcd's is 2 s).
//! let lease = registry.lease_grant(1, None).await?;
//! assert!(lease.ttl >= 1);
//!
//! // Attach a key to the lease; every put bumps the store revision by one.
//! let put = registry
//!     .put(b"services/hello/a", b"127.0.0.1:8080", PutOptions::with_lease(lease.id))
//!     .await?;
//! let ttl = registry.lease_time_to_live(lease.id).await?;
//! assert_eq!(ttl.keys, vec![b"services/hello/a".to_vec()]);
//!
//! // Keep it alive: the reply carries the granted TTL again.
//! assert_eq!(registry.lease_keep_alive(lease.id).await?, lease.ttl);
//!
//! // Revoke: its keys are deleted in one revision, and the lease is gone.
//! let revoked_at = registry.lease_revoke(lease.id).await?;
//! assert_eq!(revoked_at, put.revision.next());
//! assert!(registry.get(b"services/hello/a").await?.kv.is_none());
//! assert!(matches!(
//!     registry.lease_keep_alive(lease.id).await,
//!     Err(Error::LeaseNotFound(id)) if id == lease.id
//! ));
//! # Ok::<(), Error>(())
//! # }).unwrap();
//! ```

mod error;
mod kv;
mod lease;
pub mod limits;
mod registry;
mod revision;
pub mod rng;
pub mod seeding;
mod watch;
pub mod wrap;

/// The attribute that implements the (async, object-safe) [`Registry`] trait, re-exported so
/// that a backend or wrapper needs no `async-trait` dependency of its own:
/// `#[registry_api::async_trait] impl Registry for MyBackend { ... }`.
pub use async_trait::async_trait;
/// The byte buffer of keys and values, re-exported so that a backend needs no `bytes` dependency.
pub use bytes::Bytes;
pub use error::{BoxError, Error, InvalidArgument, Result};
/// The boxed future and stream types of the trait's signatures, re-exported so that an
/// implementor needs no `futures` dependency of its own.
pub use futures::{future::BoxFuture, stream::BoxStream, Stream};
pub use kv::{
    DeleteResponse, GetResponse, KeyValue, ListOptions, ListResponse, PutOptions, PutResponse,
};
pub use lease::{LeaseGrant, LeaseId, LeaseTimeToLive};
pub use registry::Registry;
pub use revision::Revision;
pub use watch::{EventKind, ProgressRequester, WatchBatch, WatchEvent, WatchOptions, WatchStream};

/// The README's example, compiled and run as a doctest so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
