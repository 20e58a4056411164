//! Discovered instances in tower's vocabulary (feature `tower`).
//!
//! [`discover`] is the balancer's feed: a tower `Discover` of [`Endpoint`]s for
//! `tower::balance::p2c::Balance`, backed by a task that keeps draining discovery while no
//! request flows and inserts again an endpoint the balancer evicted after a failed
//! `poll_ready`, while discovery still lists it (see [`discover`]'s docs). The rest of this page is about [`changes`], the plain stream
//! without a task.
//!
//! [`changes`] turns a [`Discovery`]'s events into a stream of [`tower::discover::Change`]s
//! keyed by instance id: first an `Insert` for every instance held at the time of the call,
//! then an `Insert` for each instance added or updated (balancers replace the service under an
//! existing key) and a `Remove` for each instance gone. `tower::balance::p2c::Balance` consumes
//! such a stream once [`map_instances`](InstanceChanges::map_instances) has turned each
//! instance into a service; tonic's `Channel::balance_channel` takes the same changes (as its
//! own copy of the enum) on a channel (a sketch; `examples/examples/tonic_balance.rs` compiles
//! and runs it):
//!
//! ```text
//! let (channel, sender) = tonic::transport::Channel::balance_channel(16);
//! // `discover` rather than `changes`: its task keeps reading discovery while this loop waits
//! // on a full channel (tonic's balancer takes changes only when polled for a request).
//! let mut endpoints = registry_service::tower_discover::discover(&discovery, |instance| {
//!     Endpoint::from_shared(format!("http://{}", instance.address))
//! })?;
//! tokio::spawn(async move {
//!     while let Some(Ok(change)) = endpoints.next().await {
//!         // tonic 0.14's channel takes its own copy of `Change`; addresses that are not
//!         // URIs are skipped rather than stopping the feed.
//!         let change = match change {
//!             Change::Insert(id, node) => match node.into_inner() {
//!                 Ok(endpoint) => channel::Change::Insert(id, endpoint),
//!                 Err(_) => continue,
//!             },
//!             Change::Remove(id) => channel::Change::Remove(id),
//!         };
//!         if sender.send(change).await.is_err() { break; }
//!     }
//! });
//! ```
//!
//! The stream never fails (its error type is [`Infallible`]) and ends when the discovery's
//! cache is gone. `examples/examples/tonic_balance.rs` runs the whole thing.

mod buffer;

pub use buffer::{
    discover, discover_with, Discover, DiscoverHandle, DiscoverOptions, DiscoverStats, Endpoint,
};

use crate::discovery::{Discovery, DiscoveryEvent, DiscoveryEvents};
use crate::instance::ServiceInstance;
use ::tower::discover::Change;
use futures::Stream;
use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The instances of `discovery` as tower changes keyed by instance id: the current instances
/// first, then every change, in order, none dropped (see the [module docs](self)).
pub fn changes(discovery: &Discovery) -> InstanceChanges {
    InstanceChanges {
        events: discovery.subscribe(),
    }
}

/// A stream of `Change<String, ServiceInstance>`; see [`changes`].
#[derive(Debug)]
pub struct InstanceChanges {
    events: DiscoveryEvents,
}

impl InstanceChanges {
    /// Maps each inserted instance to what the balancer holds (an endpoint, a client, a tower
    /// service); removals pass through by id.
    pub fn map_instances<F, T>(self, map: F) -> MapInstances<F>
    where
        F: FnMut(ServiceInstance) -> T,
    {
        MapInstances { inner: self, map }
    }
}

fn to_change(event: DiscoveryEvent) -> Change<String, ServiceInstance> {
    match event {
        DiscoveryEvent::Added(instance) | DiscoveryEvent::Updated { new: instance, .. } => {
            Change::Insert(instance.id.clone(), instance)
        }
        DiscoveryEvent::Removed(instance) => Change::Remove(instance.id),
    }
}

impl Stream for InstanceChanges {
    type Item = Result<Change<String, ServiceInstance>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.events)
            .poll_next(cx)
            .map(|event| event.map(|event| Ok(to_change(event))))
    }
}

/// [`InstanceChanges`] with each inserted instance mapped; see
/// [`InstanceChanges::map_instances`].
pub struct MapInstances<F> {
    inner: InstanceChanges,
    map: F,
}

impl<F> fmt::Debug for MapInstances<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapInstances")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

// Nothing is pinned structurally: the inner stream is `Unpin` and the closure is only called.
impl<F> Unpin for MapInstances<F> {}

impl<F, T> Stream for MapInstances<F>
where
    F: FnMut(ServiceInstance) -> T,
{
    type Item = Result<Change<String, T>, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        Pin::new(&mut this.inner).poll_next(cx).map(|item| {
            item.map(|change| {
                change.map(|change| match change {
                    Change::Insert(id, instance) => Change::Insert(id, (this.map)(instance)),
                    Change::Remove(id) => Change::Remove(id),
                })
            })
        })
    }
}

// The streams are tested end to end over a registry in `examples/tests/tower_changes.rs` (a
// backend cannot be a dev-dependency of this crate's unit tests without two copies of it).
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_map_to_changes_keyed_by_id() {
        let a = ServiceInstance::new("hello", "a", "10.0.0.1:80");
        let moved = ServiceInstance::new("hello", "a", "10.0.0.9:80");
        let insert = |change| match change {
            Change::Insert(id, instance) => Some((id, instance)),
            Change::Remove(_) => None,
        };
        assert_eq!(
            insert(to_change(DiscoveryEvent::Added(a.clone()))),
            Some(("a".to_owned(), a.clone()))
        );
        assert_eq!(
            insert(to_change(DiscoveryEvent::Updated {
                old: a.clone(),
                new: moved.clone(),
            })),
            Some(("a".to_owned(), moved))
        );
        assert!(matches!(
            to_change(DiscoveryEvent::Removed(a)),
            Change::Remove(id) if id == "a"
        ));
    }
}
