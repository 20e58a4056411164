//! Seeded fault plans: a time-ordered list of abstract faults drawn from a seed and a profile.

use registry_api::wrap::{Latency, SplitMix64};
use std::fmt;
use std::time::Duration;

/// The most a leader change extends the leases by.
pub(super) const MAX_LEADER_EXTRA: Duration = Duration::from_secs(1);

/// One fault, or the end of one, on a named client's link or on the whole server.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Cut the client's link.
    Partition(String),
    /// Restore the client's link.
    Heal(String),
    /// Set the latency of the client's calls.
    CallLatency(String, Latency),
    /// Set the latency of the client's watch deliveries.
    DeliveryLatency(String, Latency),
    /// Hold the client's calls and deliveries.
    Hold(String),
    /// Release them, in order.
    Release(String),
    /// Lose the replies of the client's next `n` calls (they take effect on the server).
    LoseReplies(String, u64),
    /// Stall the client's open watches (no delivery, no progress answer, no end).
    StallWatches(String),
    /// Let them deliver again.
    ResumeWatches(String),
    /// Take the whole server away.
    OutageStart,
    /// Bring it back.
    OutageEnd,
    /// Expire, on the server, the lease the client's instance holds now.
    ExpireLease(String),
    /// Compact the history at the current revision.
    Compact,
    /// A leader change that extends every lease by this much.
    LeaderChange(Duration),
}

impl Fault {
    /// The client the fault is on, if it is on one.
    pub fn client(&self) -> Option<&str> {
        match self {
            Fault::Partition(c)
            | Fault::Heal(c)
            | Fault::CallLatency(c, _)
            | Fault::DeliveryLatency(c, _)
            | Fault::Hold(c)
            | Fault::Release(c)
            | Fault::LoseReplies(c, _)
            | Fault::StallWatches(c)
            | Fault::ResumeWatches(c)
            | Fault::ExpireLease(c) => Some(c),
            Fault::OutageStart | Fault::OutageEnd | Fault::Compact | Fault::LeaderChange(_) => None,
        }
    }
}

/// A fault at a virtual time, counted from the start of the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// When.
    pub at: Duration,
    /// What.
    pub fault: Fault,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>7.3}s {:?}", self.at.as_secs_f64(), self.fault)
    }
}

/// How often each kind of fault starts, relative to the others (0 never).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Weights {
    /// Partition of one client, healed after up to [`Profile::max_partition`].
    pub partition: u32,
    /// Call and delivery latency on one client, for up to [`Profile::max_slow`].
    pub latency: u32,
    /// Hold then release one client, after up to [`Profile::max_hold`].
    pub hold: u32,
    /// Lost replies on one client (1 to 3).
    pub lost_replies: u32,
    /// Stalled watches on one client, for up to [`Profile::max_hold`].
    pub stall: u32,
    /// A server outage of up to [`Profile::max_outage`].
    pub outage: u32,
    /// A lease expired by the server.
    pub expire_lease: u32,
    /// A compaction at the current revision.
    pub compaction: u32,
    /// A leader change.
    pub leader_change: u32,
}

impl Default for Weights {
    /// Every kind but stalled watches, which only a service layer that asks for progress can
    /// detect (enable them to test one).
    fn default() -> Self {
        Weights {
            partition: 4,
            latency: 3,
            hold: 2,
            lost_replies: 3,
            stall: 0,
            outage: 1,
            expire_lease: 2,
            compaction: 1,
            leader_change: 1,
        }
    }
}

/// What a plan is made of: how often faults start, how long they last, and which clients they
/// hit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// Faults start within `[0, duration)`; every fault started is also ended by the plan.
    pub duration: Duration,
    /// The mean time between two fault starts (drawn uniformly in `[0, 2 * mean_gap]`).
    pub mean_gap: Duration,
    /// The kinds of fault and their weights.
    pub weights: Weights,
    /// The longest partition of a client.
    pub max_partition: Duration,
    /// The longest hold or stall.
    pub max_hold: Duration,
    /// The longest stretch of latency on one client.
    pub max_slow: Duration,
    /// The highest latency of one call or delivery.
    pub max_latency: Duration,
    /// The longest server outage.
    pub max_outage: Duration,
    /// The clients faults hit (the fleet fills this in from its own names when empty).
    pub clients: Vec<String>,
}

impl Default for Profile {
    /// Two virtual minutes, a fault every 4 s on average, partitions up to 12 s (longer than
    /// the fleet's default TTL), holds up to 1.5 s, latency up to 300 ms, outages up to 8 s.
    fn default() -> Self {
        Profile {
            duration: Duration::from_secs(120),
            mean_gap: Duration::from_secs(4),
            weights: Weights::default(),
            max_partition: Duration::from_secs(12),
            max_hold: Duration::from_millis(1_500),
            max_slow: Duration::from_secs(10),
            max_latency: Duration::from_millis(300),
            max_outage: Duration::from_secs(8),
            clients: Vec::new(),
        }
    }
}

/// A time-ordered list of faults, generated from a seed: the same seed and profile give the
/// same plan.
///
/// ```
/// use registry_conformance::fleet::{FaultPlan, Profile};
///
/// let profile = Profile { clients: vec!["a".into(), "b".into()], ..Profile::default() };
/// let plan = FaultPlan::generate(7, &profile);
/// assert_eq!(plan, FaultPlan::generate(7, &profile));
/// assert!(plan.steps.windows(2).all(|w| w[0].at <= w[1].at));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultPlan {
    /// The seed it was drawn from.
    pub seed: u64,
    /// The faults, in time order.
    pub steps: Vec<Step>,
}

impl FaultPlan {
    /// Draws a plan from `seed` under `profile`. Faults on clients need `profile.clients`; with
    /// none, only server-wide faults are drawn.
    pub fn generate(seed: u64, profile: &Profile) -> FaultPlan {
        let mut rng = SplitMix64::new(SplitMix64::derive(seed, "fault-plan"));
        let w = &profile.weights;
        let has_clients = !profile.clients.is_empty();
        let per_client = |weight: u32| if has_clients { weight } else { 0 };
        let table = [
            per_client(w.partition),
            per_client(w.latency),
            per_client(w.hold),
            per_client(w.lost_replies),
            per_client(w.stall),
            w.outage,
            per_client(w.expire_lease),
            w.compaction,
            w.leader_change,
        ];
        let total: u64 = table.iter().map(|w| u64::from(*w)).sum();
        let mut steps = Vec::new();
        let mut at = Duration::ZERO;
        loop {
            at += rng.duration(Duration::ZERO, profile.mean_gap * 2);
            if at >= profile.duration || total == 0 {
                break;
            }
            let mut pick = rng.below(total);
            let kind = table
                .iter()
                .position(|weight| {
                    let weight = u64::from(*weight);
                    if pick < weight {
                        true
                    } else {
                        pick -= weight;
                        false
                    }
                })
                .unwrap_or(0);
            let client = if has_clients {
                let index = rng.below(profile.clients.len() as u64) as usize;
                profile.clients[index].clone()
            } else {
                String::new()
            };
            let mut add = |offset: Duration, fault: Fault| {
                steps.push(Step {
                    at: at + offset,
                    fault,
                })
            };
            match kind {
                0 => {
                    let lasts = rng.duration(Duration::from_millis(100), profile.max_partition);
                    add(Duration::ZERO, Fault::Partition(client.clone()));
                    add(lasts, Fault::Heal(client));
                }
                1 => {
                    let max = profile.max_latency;
                    let latency = if rng.chance(0.5) {
                        Latency::Fixed(rng.duration(Duration::ZERO, max))
                    } else {
                        Latency::Uniform {
                            min: Duration::ZERO,
                            max,
                        }
                    };
                    let lasts = rng.duration(Duration::from_millis(100), profile.max_slow);
                    add(Duration::ZERO, Fault::CallLatency(client.clone(), latency));
                    add(
                        Duration::ZERO,
                        Fault::DeliveryLatency(client.clone(), latency),
                    );
                    add(lasts, Fault::CallLatency(client.clone(), Latency::None));
                    add(lasts, Fault::DeliveryLatency(client, Latency::None));
                }
                2 => {
                    let lasts = rng.duration(Duration::from_millis(10), profile.max_hold);
                    add(Duration::ZERO, Fault::Hold(client.clone()));
                    add(lasts, Fault::Release(client));
                }
                3 => add(Duration::ZERO, Fault::LoseReplies(client, 1 + rng.below(3))),
                4 => {
                    let lasts = rng.duration(Duration::from_millis(10), profile.max_hold);
                    add(Duration::ZERO, Fault::StallWatches(client.clone()));
                    add(lasts, Fault::ResumeWatches(client));
                }
                5 => {
                    let lasts = rng.duration(Duration::from_millis(100), profile.max_outage);
                    add(Duration::ZERO, Fault::OutageStart);
                    add(lasts, Fault::OutageEnd);
                }
                6 => add(Duration::ZERO, Fault::ExpireLease(client)),
                7 => add(Duration::ZERO, Fault::Compact),
                _ => add(
                    Duration::ZERO,
                    Fault::LeaderChange(rng.duration(Duration::ZERO, MAX_LEADER_EXTRA)),
                ),
            }
        }
        // Stable: faults drawn at the same instant keep their drawing order.
        steps.sort_by_key(|step| step.at);
        FaultPlan { seed, steps }
    }
}

impl fmt::Display for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "fault plan of seed {} ({} steps):",
            self.seed,
            self.steps.len()
        )?;
        for step in &self.steps {
            writeln!(f, "  {step}")?;
        }
        Ok(())
    }
}
