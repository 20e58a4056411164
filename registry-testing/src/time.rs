//! Which clock a backend's leases run on, and so which runtime a scenario gets.

/// How a backend's lease clock moves.
///
/// - [`Time::Virtual`]: the backend reads a clock that moves only when told to. A scenario on
///   such a backend runs on a current-thread tokio runtime whose clock is paused
///   ([`runtime`](crate::runtime)): it moves to the next timer whenever every task waits, so a
///   sleep of a minute costs nothing and every instant is exact. `MemoryRegistry::new` reads
///   that clock.
/// - [`Time::Real`]: time passes on its own (a real etcd). Scenarios run on a runtime whose
///   clock is the wall clock, one at a time in the process ([`take_turn`](crate::take_turn)).
///
/// The contract suite of `registry-conformance` uses the same two values for its own cases,
/// with a clock of its own for virtual time (see its `Capabilities::time`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Time {
    /// A clock that moves only when told to: tokio's paused clock for scenarios.
    Virtual,
    /// The wall clock.
    Real,
}
