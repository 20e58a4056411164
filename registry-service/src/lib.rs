//! Service registration, discovery and node picking, over any
//! [`Registry`](registry_api::Registry).
//!
//! This crate needs nothing but the `registry-api` contract, so the same code runs on etcd
//! (`registry-etcd`) and on the simulator (`registry-memory`). It works over
//! `Arc<dyn Registry>` only and runs its background tasks on the tokio runtime it is started
//! from.
//!
//! - [`instance`]: what an instance is, its JSON, and the key layout
//!   `<namespace>/<service>/<instance-id>` (default namespace `services`).
//! - [`registration`]: register with a lease, keep it alive, heal when the lease or key is
//!   lost, drain on shutdown, wait for readiness ([`Registration`]); every registration of a
//!   process goes through one task ([`Registrar`]), optionally on one shared lease.
//! - Discovery, in three layers:
//!   - [`watcher`](mod@watcher): a self-healing list + watch of any prefix, as a stream the caller owns
//!     ([`watcher()`]): errors and resyncs are items, silent watches are detected, re-lists are
//!     jittered and one at a time per prefix.
//!   - [`store`](mod@store): the latest state behind a cheap reader ([`Store`]), written by one
//!     [`Writer`](store::Writer), with bounded subscriptions that recover exactly from lag.
//!   - [`discovery`]: the two for a service's instances, decoded, filtered and subsetted
//!     ([`Discovery`], [`View`], shared through a [`DiscoveryHub`]).
//! - [`pick`]: choosing a node per request ([`Picker`]).
//! - `metrics` (feature `metrics`): the series all of the above emit through the `metrics`
//!   facade, for the recorder the app installs.
//!
//! All randomness (backoff jitter, random picks) comes from seeds in the options: the same seed
//! gives the same run.

pub mod backoff;
pub mod discovery;
mod error;
pub mod instance;
#[cfg(feature = "metrics")]
pub mod metrics;
mod owned;
pub mod pick;
pub mod registration;
mod seed;
pub mod store;
#[cfg(feature = "tower")]
pub mod tower_discover;
pub mod watcher;

pub use backoff::Backoff;
pub use discovery::{
    Discovery, DiscoveryEvent, DiscoveryEvents, DiscoveryHub, DiscoveryOptions, DiscoveryView,
    Filter, InstanceLayout, JsonLayout, SnapshotFile, SnapshotFileStatus, SnapshotLoad,
    SnapshotPath, SnapshotRefusal, Subset, View,
};
pub use error::{Error, Result};
pub use instance::{KeyLayout, Metadata, ServiceInstance, Status, DEFAULT_NAMESPACE};
pub use pick::{
    EjectionOptions, EwmaOptions, Health, InstanceSource, Pick, Picker, PickerOptions, Strategy,
};
pub use registration::{
    Registrar, RegistrarOptions, Registration, RegistrationOptions, RegistrationState,
    RegistrationStatus, RegistrationStatusReader,
};
pub use store::{store, Seeded, Snapshot, Store, StoreEvent, StoreStatus};
pub use watcher::{watcher, Change, Watcher, WatcherConfig, WatcherEvent};

/// The README's examples, compiled and run as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
