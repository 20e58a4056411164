//! A filtered (and optionally subsetted) view of a discovery: its snapshot and its changes.

use super::{Discovery, DiscoveryEvent, DiscoveryEvents, Filter, Subset};
use crate::instance::ServiceInstance;
use crate::pick::InstanceSource;
use crate::store::Snapshot;
use crate::Result;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a view keeps: the instances passing a [`Filter`], then, if set, a [`Subset`] of them.
/// `View::default()` keeps everything.
#[derive(Clone, Debug, Default)]
pub struct View {
    filter: Filter,
    subset: Option<Subset>,
}

impl View {
    /// Every instance.
    pub fn all() -> Self {
        View::default()
    }

    /// Instances that take new work: what pickers read ([`Discovery::serving`]).
    pub fn serving() -> Self {
        View::all().filter(Filter::serving())
    }

    /// Also requires `filter`.
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = std::mem::take(&mut self.filter).and(filter);
        self
    }

    /// Keeps only a stable subset of `size` of the filtered instances, chosen for `client_id`.
    pub fn subset(mut self, size: usize, client_id: impl Into<String>) -> Self {
        self.subset = Some(Subset::new(size, client_id));
        self
    }

    /// The instances of `snapshot` this view keeps, in id order.
    pub fn select(&self, snapshot: &Snapshot<ServiceInstance>) -> Vec<ServiceInstance> {
        let passing = snapshot
            .iter()
            .map(|(_, instance)| instance)
            .filter(|instance| self.filter.matches(instance));
        match &self.subset {
            None => passing.cloned().collect(),
            Some(subset) => subset.choose(passing).into_iter().cloned().collect(),
        }
    }

    pub(super) fn has_subset(&self) -> bool {
        self.subset.is_some()
    }

    pub(super) fn keeps_all(&self) -> bool {
        self.subset.is_none() && self.filter.is_all()
    }

    /// An event of the whole set as seen through the filter (no subset): what a holder of the
    /// filtered set must do.
    pub(super) fn map_event(&self, event: DiscoveryEvent) -> Option<DiscoveryEvent> {
        let keeps = |instance: &ServiceInstance| self.filter.matches(instance);
        match event {
            DiscoveryEvent::Added(new) => keeps(&new).then_some(DiscoveryEvent::Added(new)),
            DiscoveryEvent::Removed(old) => keeps(&old).then_some(DiscoveryEvent::Removed(old)),
            DiscoveryEvent::Updated { old, new } => match (keeps(&old), keeps(&new)) {
                (true, true) => Some(DiscoveryEvent::Updated { old, new }),
                (true, false) => Some(DiscoveryEvent::Removed(old)),
                (false, true) => Some(DiscoveryEvent::Added(new)),
                (false, false) => None,
            },
        }
    }
}

/// A view's selection and the snapshot version it was made from.
type Selection = (u64, Arc<[ServiceInstance]>);

/// A [`Discovery`] seen through a [`View`]: the snapshot and the change stream both show only
/// what the view keeps, and follow changes (an instance that stops matching is `Removed`, one
/// that starts is `Added`; a subset refills when a chosen instance leaves). Cheap to clone.
#[derive(Clone, Debug)]
pub struct DiscoveryView {
    discovery: Discovery,
    view: Arc<View>,
    /// The selection of the last snapshot version asked for: pickers read it per request,
    /// and it changes only when the instances do.
    cached: Arc<Mutex<Option<Selection>>>,
}

impl DiscoveryView {
    pub(super) fn new(discovery: Discovery, view: View) -> Self {
        DiscoveryView {
            discovery,
            view: Arc::new(view),
            cached: Arc::new(Mutex::new(None)),
        }
    }

    /// The discovery underneath.
    pub fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    /// The view.
    pub fn view(&self) -> &View {
        &self.view
    }

    /// The instances the view keeps now, in id order. Never waits on the feeding task.
    pub fn snapshot(&self) -> Arc<[ServiceInstance]> {
        let snapshot = self.discovery.store_snapshot();
        if self.view.keeps_all() {
            return snapshot.values();
        }
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((version, selected)) = &*cached {
            if *version == snapshot.version() {
                return selected.clone();
            }
        }
        let selected: Arc<[ServiceInstance]> = self.view.select(&snapshot).into();
        *cached = Some((snapshot.version(), selected.clone()));
        selected
    }

    /// How many instances the view keeps now.
    pub fn len(&self) -> usize {
        self.snapshot().len()
    }

    /// True when the view keeps none now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The changes of the view: an `Added` for each instance it keeps now, then every change
    /// of what it keeps. Bounded like [`Discovery::subscribe`].
    pub fn subscribe(&self) -> DiscoveryEvents {
        DiscoveryEvents::new(self.discovery.store().subscribe(), Some(self.view.clone()))
    }

    /// Waits until the discovery is synced and `condition` holds on what the view keeps, up
    /// to `timeout`; returns that. Synced, as
    /// [`Discovery::wait_until`](super::Discovery::wait_until) explains.
    pub async fn wait_until(
        &self,
        condition: impl Fn(&[ServiceInstance]) -> bool,
        timeout: Duration,
    ) -> Result<Arc<[ServiceInstance]>> {
        let view = self.view.clone();
        let snapshot = self
            .discovery
            .store()
            .wait_until(|snapshot| condition(&view.select(snapshot)), timeout)
            .await?;
        Ok(view.select(&snapshot).into())
    }
}

/// A picker reading a view picks among what it keeps: `Picker::new(discovery.serving(), ..)`
/// never sends work to a draining instance.
impl InstanceSource for DiscoveryView {
    fn instances(&self) -> Arc<[ServiceInstance]> {
        self.snapshot()
    }
}
