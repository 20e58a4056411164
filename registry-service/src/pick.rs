//! Choosing a node per request from a live instance list.
//!
//! A [`Picker`] reads the current snapshot of its [`InstanceSource`] (a
//! [`Discovery`](crate::Discovery), or a
//! fixed list) on every pick, so it follows the service as instances come and go; what it
//! records per node (latency, calls in flight, failures) is keyed by instance id and forgotten
//! when the node leaves the source, so its memory is bounded by the number of instances.
//! Instances that are not serving ([`Status::Draining`](crate::Status::Draining) or unknown)
//! are not picked unless [`PickerOptions::include_draining`] says so.
//!
//! # The guard
//!
//! [`pick`](Picker::pick) returns a [`Pick`]: the chosen instance (it derefs to
//! [`ServiceInstance`]) and the call's place in that node's in-flight count. Mark it with
//! [`success`](Pick::success) or [`failure`](Pick::failure) when the call ends; dropping it in
//! any other way (a cancelled future, a panic, an early return) still ends the in-flight count,
//! so no count can leak. The call's latency is measured from the pick on tokio's clock.
//!
//! # Strategies
//!
//! Round-robin in source order, uniform random, random weighted by [`Metadata::weight`], and
//! power-of-two-choices on peak EWMA latency × (calls in flight + 1) ([`ewma`](EwmaOptions)).
//!
//! Under power-of-two-choices a new node gets traffic at once: a node the picker has not picked
//! yet gets the next pick (after a probe that is due; of several new at once, the k-th within k
//! picks), and until its first answer it is costed at its rival's latency, so a first call
//! dropped without an outcome does not leave it starving behind a default estimate.
//!
//! # Ejection
//!
//! Failing nodes are ejected by bounded rules after Envoy's outlier detection: growing
//! ejection times, a cap on the share of nodes out, one trial call before a returning node
//! takes full traffic, and a panic threshold under which every node is a candidate
//! ([`EjectionOptions`]).
//!
//! # Retrying on another node
//!
//! [`pick_excluding`](Picker::pick_excluding) leaves out the nodes already tried, so a retry
//! never lands on the node that just failed, whatever the failure threshold:
//!
//! ```
//! use registry_service::{Picker, PickerOptions, ServiceInstance, Strategy};
//! use std::sync::Arc;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let nodes: Arc<[ServiceInstance]> = ["a", "b", "c"]
//!     .iter()
//!     .map(|id| ServiceInstance::new("hello", *id, format!("{id}.local:80")))
//!     .collect();
//! let picker = Picker::new(nodes, PickerOptions::new(Strategy::Random).seed(7));
//! # let call = |node: &ServiceInstance| -> Result<(), ()> { if node.id == "a" { Err(()) } else { Ok(()) } };
//! let first = picker.pick().expect("a node");
//! let tried = first.id.clone();
//! match call(&first) {
//!     Ok(()) => first.success(),
//!     Err(_) => {
//!         first.failure();
//!         // One retry, on any node but the one that failed.
//!         if let Some(second) = picker.pick_excluding(&[tried.as_str()]) {
//!             assert_ne!(second.id, tried);
//!             match call(&second) {
//!                 Ok(()) => second.success(),
//!                 Err(_) => second.failure(),
//!             }
//!         }
//!     }
//! }
//! # }
//! ```
//!
//! [`Metadata::weight`]: crate::Metadata::weight

mod ejection;
mod ewma;
mod node;
mod picked;
mod strategy;

pub use ejection::{EjectionOptions, Health};
pub use ewma::EwmaOptions;
pub use picked::Pick;
pub use strategy::Strategy;

use crate::instance::ServiceInstance;
use crate::seed::{process_seed, SplitMix64};
use ejection::Verdict;
use node::Node;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::time::Instant;

/// Where a picker reads the current instances from.
pub trait InstanceSource: Debug + Send + Sync {
    /// The instances now, in a stable order (id order for a [`Discovery`](crate::Discovery)).
    /// Returning the same `Arc` while nothing changed lets the picker skip re-indexing.
    fn instances(&self) -> Arc<[ServiceInstance]>;
}

/// A fixed list.
impl InstanceSource for Arc<[ServiceInstance]> {
    fn instances(&self) -> Arc<[ServiceInstance]> {
        self.clone()
    }
}

/// How a [`Picker`] behaves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PickerOptions {
    /// The strategy.
    pub strategy: Strategy,
    /// Seeds the random strategies: the same seed and the same calls give the same picks.
    /// `None` (the default): a seed of the process's own, so that a fleet of clients does not
    /// draw the same picks in step (see [`seed`](Self::seed)).
    pub seed: Option<u64>,
    /// When failing nodes are left out, and for how long.
    pub ejection: EjectionOptions,
    /// The latency estimate behind [`Strategy::PowerOfTwoChoices`].
    pub ewma: EwmaOptions,
    /// Also pick instances that are not serving (draining, or a status this version does not
    /// know). Off by default: a draining instance finishes its work and takes no more.
    pub include_draining: bool,
}

impl PickerOptions {
    /// Default options with `strategy`.
    pub fn new(strategy: Strategy) -> Self {
        PickerOptions {
            strategy,
            ..Self::default()
        }
    }

    /// Sets the seed: the same seed gives the same picks.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Sets the ejection rules.
    pub fn ejection(mut self, ejection: EjectionOptions) -> Self {
        self.ejection = ejection;
        self
    }

    /// Sets the latency estimate's options.
    pub fn ewma(mut self, ewma: EwmaOptions) -> Self {
        self.ewma = ewma;
        self
    }

    /// Whether instances that are not serving may be picked.
    pub fn include_draining(mut self, include: bool) -> Self {
        self.include_draining = include;
        self
    }
}

#[derive(Debug)]
struct PickState {
    /// The snapshot the fields below index.
    snapshot: Arc<[ServiceInstance]>,
    /// One per instance of the snapshot, in its order.
    nodes: Vec<Arc<Node>>,
    by_id: HashMap<String, usize>,
    /// Indices of the instances that may be picked (serving, unless draining ones are
    /// included).
    eligible: Vec<usize>,
    is_eligible: Vec<bool>,
    /// Nodes not at full traffic (ejected, awaiting a probe, probing), with their index. At
    /// most the ejection cap's share of the nodes, plus nodes whose probe failed.
    out: Vec<(Arc<Node>, usize)>,
    /// Indices of eligible nodes never picked yet, in snapshot order: under power-of-two-choices
    /// each gets the next pick. Emptied as they are picked; empty between changes of the source.
    fresh: Vec<usize>,
    rng: SplitMix64,
    turn: u64,
}

impl PickState {
    /// Re-indexes for a new snapshot; nodes gone from it are forgotten.
    fn rebuild(&mut self, snapshot: Arc<[ServiceInstance]>, include_draining: bool) {
        let mut nodes = Vec::with_capacity(snapshot.len());
        let mut by_id = HashMap::with_capacity(snapshot.len());
        let mut eligible = Vec::with_capacity(snapshot.len());
        let mut is_eligible = Vec::with_capacity(snapshot.len());
        let mut fresh = Vec::new();
        for (i, instance) in snapshot.iter().enumerate() {
            let node = match self.by_id.get(&instance.id) {
                Some(&j) => self.nodes[j].clone(),
                None => Arc::new(Node::new(instance)),
            };
            let ok = include_draining || instance.status.is_serving();
            if ok {
                eligible.push(i);
                if node.last_pick.load(Ordering::Relaxed) == 0 {
                    fresh.push(i);
                }
            }
            is_eligible.push(ok);
            nodes.push(node);
            by_id.insert(instance.id.clone(), i);
        }
        let mut out = std::mem::take(&mut self.out);
        out.retain_mut(|(node, index)| match by_id.get(&node.id) {
            Some(&i) if Arc::ptr_eq(&nodes[i], node) => {
                *index = i;
                true
            }
            _ => false,
        });
        *self = PickState {
            snapshot,
            nodes,
            by_id,
            eligible,
            is_eligible,
            out,
            fresh,
            rng: self.rng.clone(),
            turn: self.turn,
        };
    }

    /// The first node never picked, not ejected and not `excluded`, forgetting those picked
    /// since; `None` when there is none (at once between changes of the source).
    fn first_fresh(&mut self, excluded: impl Fn(&str) -> bool) -> Option<usize> {
        let nodes = &self.nodes;
        self.fresh
            .retain(|&i| nodes[i].last_pick.load(Ordering::Relaxed) == 0);
        self.fresh
            .iter()
            .copied()
            .find(|&i| !excluded(&self.snapshot[i].id) && !nodes[i].out.load(Ordering::Relaxed))
    }
}

/// The picker's state, shared with the guards it hands out.
#[derive(Debug)]
struct Shared {
    source: Box<dyn InstanceSource>,
    /// The origin of `Node::last_pick`.
    epoch: Instant,
    options: PickerOptions,
    state: Mutex<PickState>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, PickState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state indexed for the source's current snapshot.
    fn current(&self) -> MutexGuard<'_, PickState> {
        let snapshot = self.source.instances();
        let mut state = self.lock();
        if !Arc::ptr_eq(&state.snapshot, &snapshot) {
            state.rebuild(snapshot, self.options.include_draining);
        }
        state
    }
}

/// Picks a node per request; a cheap handle (clones share the same records), safe to share
/// between tasks.
#[derive(Clone, Debug)]
pub struct Picker {
    shared: Arc<Shared>,
}

impl Picker {
    /// A picker over `source` (typically a [`Discovery`](crate::Discovery)).
    pub fn new(source: impl InstanceSource + 'static, options: PickerOptions) -> Self {
        let empty: Arc<[ServiceInstance]> = Arc::new([]);
        Picker {
            shared: Arc::new(Shared {
                source: Box::new(source),
                epoch: Instant::now(),
                state: Mutex::new(PickState {
                    snapshot: empty,
                    nodes: Vec::new(),
                    by_id: HashMap::new(),
                    eligible: Vec::new(),
                    is_eligible: Vec::new(),
                    out: Vec::new(),
                    fresh: Vec::new(),
                    rng: SplitMix64::new(options.seed.unwrap_or_else(process_seed)),
                    turn: 0,
                }),
                options,
            }),
        }
    }

    /// The options in use.
    pub fn options(&self) -> &PickerOptions {
        &self.shared.options
    }

    /// The strategy in use.
    pub fn strategy(&self) -> Strategy {
        self.shared.options.strategy
    }

    /// A node for the next call, or `None` when no instance may be picked. The call counts as
    /// in flight on that node until the returned guard is marked or dropped.
    pub fn pick(&self) -> Option<Pick> {
        self.pick_where(|_| false)
    }

    /// Like [`pick`](Self::pick), but never one of the instances whose ids are in `exclude`:
    /// for a retry on another node. `None` when every other node is excluded too.
    pub fn pick_excluding<S: AsRef<str>>(&self, exclude: &[S]) -> Option<Pick> {
        self.pick_where(|id| exclude.iter().any(|x| x.as_ref() == id))
    }

    fn pick_where(&self, excluded: impl Fn(&str) -> bool) -> Option<Pick> {
        let options = &self.shared.options;
        let now = Instant::now();
        let mut state = self.shared.current();
        if state.eligible.is_empty() {
            return None;
        }
        // A node whose ejection is over gets the next call as its trial, before anything else.
        let mut out_eligible = 0;
        let mut probe = None;
        for (node, index) in &state.out {
            if !state.is_eligible[*index] {
                continue;
            }
            out_eligible += 1;
            let mut record = node.record();
            if probe.is_none()
                && record.outlier.health_at(now) == Health::AwaitingProbe
                && !excluded(&node.id)
            {
                record.outlier.health = Health::Probing;
                probe = Some(*index);
            }
        }
        if let Some(index) = probe {
            tracing::debug!(id = %state.snapshot[index].id, "probing a node back from ejection");
            return Some(self.guard(&state, index, now, true));
        }
        if options.strategy == Strategy::PowerOfTwoChoices {
            // A node not picked yet goes first: it has no latency to compete with, and a random
            // draw would leave when it is first tried to chance (the fewer of the nodes a
            // draw takes, the longer).
            if let Some(index) = state.first_fresh(&excluded) {
                tracing::debug!(id = %state.snapshot[index].id, "first pick of a new node");
                return Some(self.guard(&state, index, now, false));
            }
        }
        let total = state.eligible.len();
        let panic = options.ejection.panics(total - out_eligible, total);
        let PickState {
            snapshot,
            nodes,
            eligible,
            rng,
            turn,
            ..
        } = &mut *state;
        // Set when every node left is out: better to try one than to refuse the call.
        let take_out = std::cell::Cell::new(panic);
        let now_nanos = self.nanos(now);
        let candidates = strategy::Candidates {
            nodes: eligible,
            ok: |i: usize| {
                !excluded(&snapshot[i].id)
                    && (take_out.get() || !nodes[i].out.load(Ordering::Relaxed))
            },
            cost: |i: usize, rival: usize| nodes[i].cost(&nodes[rival], now, &options.ewma),
            weight: |i: usize| snapshot[i].metadata.weight,
            stale: |i: usize| {
                let force = options.ewma.force_pick_after;
                let last = nodes[i].last_pick.load(Ordering::Relaxed);
                !force.is_zero()
                    && (last == 0 || now_nanos.saturating_sub(last - 1) >= force.as_nanos() as u64)
            },
        };
        let chosen = candidates.choose(options.strategy, rng, turn).or_else(|| {
            if take_out.replace(true) {
                return None;
            }
            candidates.choose(options.strategy, rng, turn)
        })?;
        Some(self.guard(&state, chosen, now, false))
    }

    fn nanos(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.shared.epoch).as_nanos();
        u64::try_from(since).unwrap_or(u64::MAX - 1)
    }

    fn guard(&self, state: &PickState, index: usize, now: Instant, probe: bool) -> Pick {
        let node = state.nodes[index].clone();
        node.in_flight.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        node.series.picked();
        node.last_pick
            .store(self.nanos(now).saturating_add(1), Ordering::Relaxed);
        Pick::new(
            self.shared.clone(),
            node,
            state.snapshot.clone(),
            index,
            now,
            probe,
        )
    }

    /// Where `id` stands with the ejection rules; `None` when the source does not list it.
    pub fn health(&self, id: &str) -> Option<Health> {
        let state = self.shared.current();
        let node = &state.nodes[*state.by_id.get(id)?];
        let health = node.record().outlier.health_at(Instant::now());
        Some(health)
    }

    /// True when `id` is not at full traffic: ejected, awaiting its probe or probing.
    pub fn is_ejected(&self, id: &str) -> bool {
        !matches!(self.health(id), Some(Health::Healthy) | None)
    }

    /// How many times `id` has been ejected (minus what time spent healthy took off).
    pub fn times_ejected(&self, id: &str) -> u32 {
        let state = self.shared.current();
        state
            .by_id
            .get(id)
            .map_or(0, |&i| state.nodes[i].record().outlier.times_ejected)
    }

    /// `id`'s peak EWMA latency estimate now (the default for a node not measured yet).
    pub fn latency(&self, id: &str) -> Option<std::time::Duration> {
        let state = self.shared.current();
        let node = &state.nodes[*state.by_id.get(id)?];
        let nanos = node
            .record()
            .ewma
            .estimate(Instant::now(), &self.shared.options.ewma);
        Some(std::time::Duration::from_nanos(nanos as u64))
    }

    /// Calls picked on `id` whose guards are still alive.
    pub fn in_flight(&self, id: &str) -> u64 {
        let state = self.shared.current();
        state
            .by_id
            .get(id)
            .map_or(0, |&i| state.nodes[i].in_flight.load(Ordering::Relaxed))
    }

    /// How many nodes the picker keeps records for: the source's instances, no more.
    pub fn tracked(&self) -> usize {
        self.shared.current().nodes.len()
    }
}

impl Shared {
    /// Records the end of a call; see [`Pick`]'s `Drop`. The latency goes into the node's
    /// estimate; the ejection rules ([`Outlier::call_ended`]) decide the rest.
    fn finish(&self, node: &Arc<Node>, probe: bool, outcome: Option<bool>, started: Instant) {
        let now = Instant::now();
        let rtt = now.saturating_duration_since(started);
        let options = &self.options;
        match outcome {
            Some(true) => node.record().ewma.observe(rtt, now, &options.ewma),
            Some(false) => {
                let penalized = rtt.max(options.ewma.failure_penalty);
                node.record().ewma.observe(penalized, now, &options.ewma);
            }
            None => {}
        }
        #[cfg(feature = "metrics")]
        node.ended(outcome, now, &options.ewma);
        if outcome == Some(true) && !probe {
            // The common path touches only this node's record.
            node.record().outlier.consecutive_failures = 0;
            return;
        }
        let mut state = self.lock();
        let mut record = node.record();
        // Only a node the picker still indexes can be ejected (a stale guard of a node that
        // left and came back must not eject its successor), and only within the cap.
        let indexed = state
            .by_id
            .get(&node.id)
            .copied()
            .filter(|&index| Arc::ptr_eq(&state.nodes[index], node));
        let room = || {
            let out_now = state
                .out
                .iter()
                .filter(|(_, i)| state.is_eligible[*i])
                .count();
            indexed.is_some() && out_now < options.ejection.max_out(state.eligible.len())
        };
        match record
            .outlier
            .call_ended(outcome, probe, now, &options.ejection, room)
        {
            Verdict::Unchanged => {}
            Verdict::Restored => {
                #[cfg(feature = "metrics")]
                node.series.ejected(false);
                node.out.store(false, Ordering::Relaxed);
                state.out.retain(|(n, _)| !Arc::ptr_eq(n, node));
                tracing::info!(id = %node.id, "probe succeeded; node back to full traffic");
            }
            Verdict::EjectedAgain { until } => {
                #[cfg(feature = "metrics")]
                node.series.ejected(true);
                tracing::warn!(id = %node.id, ejected_for = ?until - now,
                    "probe failed; node ejected again");
            }
            Verdict::CapReached => {
                tracing::debug!(id = %node.id, "ejection cap reached; node stays in");
            }
            Verdict::Ejected { until } => {
                #[cfg(feature = "metrics")]
                node.series.ejected(true);
                if let Some(index) = indexed {
                    node.out.store(true, Ordering::Relaxed);
                    state.out.push((node.clone(), index));
                }
                tracing::warn!(id = %node.id, ejected_for = ?until - now,
                    times = record.outlier.times_ejected, "node ejected");
            }
        }
    }
}
