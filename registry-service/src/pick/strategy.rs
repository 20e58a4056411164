//! How a picker chooses among the candidates.

use crate::seed::SplitMix64;

/// How a [`Picker`](super::Picker) chooses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Each node in turn, in the source's order.
    #[default]
    RoundRobin,
    /// Uniformly at random.
    Random,
    /// At random, in proportion to each node's weight (all uniform if every weight is 0).
    Weighted,
    /// Two distinct random nodes; the one with the lower cost wins: its peak EWMA latency
    /// times its calls in flight plus one (tower's `PeakEwma`, go-zero's p2c). A node not picked
    /// yet gets the next pick, and until its first answer it is costed at its rival's latency
    /// (see [`EwmaOptions`](super::EwmaOptions)).
    PowerOfTwoChoices,
}

/// Random draws before falling back to listing the candidates: a few draws find a candidate
/// at once unless most nodes are ruled out, and then the list is short work anyway.
const DRAWS: usize = 4;

/// The candidates of one pick: `nodes` (indices into the snapshot) filtered by `ok`.
pub(crate) struct Candidates<'a, Ok, Cost, Weight, Stale> {
    pub(crate) nodes: &'a [usize],
    pub(crate) ok: Ok,
    /// The cost of the first node in a comparison with the second, its rival (a node with no
    /// latency sample yet takes its rival's estimate).
    pub(crate) cost: Cost,
    pub(crate) weight: Weight,
    /// True for a node not picked for long enough to be picked even when it loses.
    pub(crate) stale: Stale,
}

impl<Ok, Cost, Weight, Stale> Candidates<'_, Ok, Cost, Weight, Stale>
where
    Ok: Fn(usize) -> bool,
    Cost: Fn(usize, usize) -> f64,
    Weight: Fn(usize) -> u32,
    Stale: Fn(usize) -> bool,
{
    fn listed(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .copied()
            .filter(|&i| (self.ok)(i))
            .collect()
    }

    fn draw(&self, rng: &mut SplitMix64, not: Option<usize>) -> Option<usize> {
        for _ in 0..DRAWS {
            let i = self.nodes[rng.below(self.nodes.len() as u64) as usize];
            if Some(i) != not && (self.ok)(i) {
                return Some(i);
            }
        }
        None
    }

    /// The chosen snapshot index, or `None` when no node is ok.
    pub(crate) fn choose(
        &self,
        strategy: Strategy,
        rng: &mut SplitMix64,
        turn: &mut u64,
    ) -> Option<usize> {
        let len = self.nodes.len();
        if len == 0 {
            return None;
        }
        match strategy {
            Strategy::RoundRobin => {
                for _ in 0..len {
                    let i = self.nodes[(*turn % len as u64) as usize];
                    *turn = turn.wrapping_add(1);
                    if (self.ok)(i) {
                        return Some(i);
                    }
                }
                None
            }
            Strategy::Random => self.draw(rng, None).or_else(|| {
                let listed = self.listed();
                listed.get(rng.below(listed.len() as u64) as usize).copied()
            }),
            Strategy::Weighted => {
                let listed = self.listed();
                let total: u64 = listed.iter().map(|&i| u64::from((self.weight)(i))).sum();
                if total == 0 {
                    return listed.get(rng.below(listed.len() as u64) as usize).copied();
                }
                let mut ticket = rng.below(total);
                for &i in &listed {
                    let weight = u64::from((self.weight)(i));
                    if ticket < weight {
                        return Some(i);
                    }
                    ticket -= weight;
                }
                None
            }
            Strategy::PowerOfTwoChoices => {
                let (a, b) = match self.draw(rng, None) {
                    Some(a) => (a, self.draw(rng, Some(a))),
                    None => (usize::MAX, None),
                };
                let (a, b) = match (a, b) {
                    (a, Some(b)) => (a, b),
                    _ => {
                        // Most nodes are ruled out: draw from the short list instead.
                        let listed = self.listed();
                        match listed.len() {
                            0 => return None,
                            1 => return Some(listed[0]),
                            n => {
                                let x = rng.below(n as u64) as usize;
                                let mut y = rng.below(n as u64 - 1) as usize;
                                if y >= x {
                                    y += 1;
                                }
                                (listed[x], listed[y])
                            }
                        }
                    }
                };
                let (winner, loser) = if (self.cost)(b, a) < (self.cost)(a, b) {
                    (b, a)
                } else {
                    (a, b)
                };
                if (self.stale)(loser) {
                    Some(loser)
                } else {
                    Some(winner)
                }
            }
        }
    }
}
