//! The change stream of a discovery or of one of its views.

use super::{DiscoveryEvent, View};
use crate::instance::ServiceInstance;
use crate::store::{Subscription, Update};
use futures::{FutureExt, Stream, StreamExt};
use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The stream of a [`Discovery`](super::Discovery)'s events (or a
/// [`DiscoveryView`](super::DiscoveryView)'s); see [`Discovery::subscribe`](super::Discovery::subscribe).
///
/// Bounded: a subscriber that stops reading holds its place in a shared ring of
/// [`DiscoveryOptions::capacity`](super::DiscoveryOptions::capacity) batches and nothing more.
/// One that falls further behind is resynced: its next events are exactly the differences
/// between what it had been told and the current instances, and [`lagged`](Self::lagged)
/// counts how often that happened. Applying the events in order always gives the current set.
#[derive(Debug)]
pub struct DiscoveryEvents {
    subscription: Subscription<ServiceInstance>,
    view: Option<Arc<View>>,
    /// What a subset view has handed out: a subset depends on every instance, so its changes
    /// are the differences between successive selections. At most the subset's size.
    held: BTreeMap<String, ServiceInstance>,
    pending: VecDeque<DiscoveryEvent>,
}

impl DiscoveryEvents {
    pub(super) fn new(
        subscription: Subscription<ServiceInstance>,
        view: Option<Arc<View>>,
    ) -> Self {
        DiscoveryEvents {
            subscription,
            view: view.filter(|view| !view.keeps_all()),
            held: BTreeMap::new(),
            pending: VecDeque::new(),
        }
    }

    /// The next event; `None` once the discovery has stopped and every event was read.
    pub async fn recv(&mut self) -> Option<DiscoveryEvent> {
        self.next().await
    }

    /// The next event if one is ready now.
    pub fn try_recv(&mut self) -> Option<DiscoveryEvent> {
        // Unconstrained: tokio's cooperative budget would otherwise report an empty queue after
        // a hundred or so reads in one task turn, while events are waiting.
        tokio::task::unconstrained(self.next())
            .now_or_never()
            .flatten()
    }

    /// How many times this subscriber fell behind and was resynced from the snapshot.
    pub fn lagged(&self) -> u64 {
        self.subscription.lagged()
    }

    fn push(&mut self, update: Update<ServiceInstance>) {
        let Some(view) = &self.view else {
            self.pending.extend(update.events);
            return;
        };
        if !view.has_subset() {
            let view = view.clone();
            self.pending
                .extend(update.events.into_iter().filter_map(|e| view.map_event(e)));
            return;
        }
        let selected: BTreeMap<String, ServiceInstance> = view
            .select(&update.snapshot)
            .into_iter()
            .map(|instance| (instance.id.clone(), instance))
            .collect();
        let old = std::mem::replace(&mut self.held, selected);
        for (id, before) in &old {
            match self.held.get(id) {
                None => self
                    .pending
                    .push_back(DiscoveryEvent::Removed(before.clone())),
                Some(now) if now != before => self.pending.push_back(DiscoveryEvent::Updated {
                    old: before.clone(),
                    new: now.clone(),
                }),
                Some(_) => {}
            }
        }
        for (id, now) in &self.held {
            if !old.contains_key(id) {
                self.pending.push_back(DiscoveryEvent::Added(now.clone()));
            }
        }
    }
}

impl Stream for DiscoveryEvents {
    type Item = DiscoveryEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<DiscoveryEvent>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Poll::Ready(Some(event));
            }
            match self.subscription.poll_update(cx) {
                Poll::Ready(Some(update)) => self.push(update),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
