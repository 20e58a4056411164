//! A picker's series for one node: its calls and their outcomes, ejections and latency.

use super::Description;
use metrics::{Counter, Gauge, Label, Unit};

const PICKS: &str = "registry_balancer_picks_total";
const IN_FLIGHT: &str = "registry_balancer_in_flight";
const EJECTED: &str = "registry_balancer_ejected";
const EJECTIONS: &str = "registry_balancer_ejections_total";
const LATENCY: &str = "registry_balancer_latency_seconds";

pub(super) const DESCRIPTIONS: &[Description] = &[
    (
        PICKS,
        "Calls picked on a node that ended, by outcome (success, failure, dropped unmarked)",
        None,
    ),
    (
        IN_FLIGHT,
        "Calls picked on a node and not finished yet",
        None,
    ),
    (
        EJECTED,
        "1 while the balancer leaves a node out after consecutive failures, else 0",
        None,
    ),
    (EJECTIONS, "Times the balancer ejected a node", None),
    (
        LATENCY,
        "The balancer's peak-EWMA latency estimate of a node, as of its last answer",
        Some(Unit::Seconds),
    ),
];

/// How a picked call ended.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Outcome {
    Success,
    Failure,
    /// The guard was dropped unmarked.
    Dropped,
}

/// One node's series in a picker, labelled with its service and instance id.
pub(crate) struct NodeSeries {
    /// By [`Outcome`], in its order.
    picks: [Counter; 3],
    in_flight: Gauge,
    ejected: Gauge,
    ejections: Counter,
    latency: Gauge,
}

impl std::fmt::Debug for NodeSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSeries").finish_non_exhaustive()
    }
}

impl NodeSeries {
    pub(crate) fn new(service: &str, instance: &str) -> Self {
        super::describe();
        let labels = vec![
            Label::new("service", service.to_owned()),
            Label::new("instance", instance.to_owned()),
        ];
        let picks = ["success", "failure", "dropped"].map(|outcome| {
            let mut labels = labels.clone();
            labels.push(Label::new("outcome", outcome));
            let counter = metrics::counter!(PICKS, labels.iter());
            counter.increment(0);
            counter
        });
        let ejections = metrics::counter!(EJECTIONS, labels.iter());
        ejections.increment(0);
        let ejected = metrics::gauge!(EJECTED, labels.iter());
        ejected.set(0.0);
        // Not set here: pickers of one service in one process share it, and it counts theirs.
        let in_flight = metrics::gauge!(IN_FLIGHT, labels.iter());
        in_flight.increment(0.0);
        NodeSeries {
            picks,
            in_flight,
            ejected,
            ejections,
            latency: metrics::gauge!(LATENCY, labels.iter()),
        }
    }

    /// A call was picked on the node.
    pub(crate) fn picked(&self) {
        self.in_flight.increment(1.0);
    }

    /// A call picked on the node ended; `latency` is the node's estimate after it, in
    /// nanoseconds, when it answered.
    pub(crate) fn ended(&self, outcome: Outcome, latency: Option<f64>) {
        self.in_flight.decrement(1.0);
        self.picks[outcome as usize].increment(1);
        if let Some(nanos) = latency {
            self.latency.set(nanos / 1e9);
        }
    }

    /// The node was ejected (`true`, counted) or is back at full traffic.
    pub(crate) fn ejected(&self, ejected: bool) {
        if ejected {
            self.ejections.increment(1);
            self.ejected.set(1.0);
        } else {
            self.ejected.set(0.0);
        }
    }
}
