//! The simulator's timing: how long each leg of a call takes, drawn from a seed, so that a test
//! sees the orders a real etcd produces (a reply after the watch event of the same write, a
//! watch established after later calls, late keep-alive answers) instead of everything at the
//! instant of the call.
//!
//! Every call takes two legs: the request, before the server applies it, and the reply, after.
//! The server applies a call at one instant, between the two, so the orders it allows are
//! exactly etcd's: a call's effect is visible to every call made after it returned; calls
//! awaited one after another on one client stay in order; calls in flight together may be
//! applied and answered in any order. A watch's `created` answer is the reply leg of its call;
//! each event reaches the client a delivery delay after the server committed it, and never
//! before an event of a lower revision (see [`crate::delivery`]).
//!
//! Delays sleep on tokio's clock, so under a paused runtime they cost no wall time. Tokio's
//! timer fires on whole milliseconds, so each delay is drawn to the microsecond and then
//! rounded down or up to a whole millisecond at random, in proportion (the mean stays the
//! drawn one). A simulator on the manual clock is instant by default (nothing can wait on that
//! clock).

use crate::MemoryRegistry;
use registry_api::rng::SplitMix64;
use registry_api::seeding::RunSeed;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// How long one leg takes: a distribution, drawn from the client's seeded generator at
/// microsecond grain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delay {
    /// No delay.
    None,
    /// Always this long.
    Fixed(Duration),
    /// Uniform in `[min, max]`.
    Uniform {
        /// The shortest delay.
        min: Duration,
        /// The longest delay.
        max: Duration,
    },
    /// A measured spread: half the draws between `min` and `p50`, 49 % between `p50` and `p99`,
    /// the last 1 % between `p99` and `max` (linear within each part).
    Spread {
        /// The shortest delay.
        min: Duration,
        /// The median.
        p50: Duration,
        /// The 99th percentile.
        p99: Duration,
        /// The longest delay.
        max: Duration,
    },
}

impl Delay {
    /// The longest this delay can be.
    pub fn max(self) -> Duration {
        match self {
            Delay::None => Duration::ZERO,
            Delay::Fixed(d) => d,
            Delay::Uniform { min, max } => min.max(max),
            Delay::Spread {
                min, p50, p99, max, ..
            } => min.max(p50).max(p99).max(max),
        }
    }

    /// True when the delay is always zero.
    pub fn is_zero(self) -> bool {
        self.max().is_zero()
    }

    fn draw(self, rng: &mut SplitMix64) -> Duration {
        match self {
            Delay::None => Duration::ZERO,
            Delay::Fixed(d) => d,
            Delay::Uniform { min, max } => between(min, max, rng.next_f64()),
            Delay::Spread { min, p50, p99, max } => {
                let u = rng.next_f64();
                if u < 0.5 {
                    between(min, p50, u / 0.5)
                } else if u < 0.99 {
                    between(p50, p99, (u - 0.5) / 0.49)
                } else {
                    between(p99, max, (u - 0.99) / 0.01)
                }
            }
        }
    }
}

/// `delay` on tokio's timer, which fires on whole milliseconds: rounded down or up to one, at
/// random in proportion to the remainder (0.28 ms is 1 ms 28 % of the time, else 0). The mean
/// stays the drawn one, and calls that land within one millisecond of each other still
/// complete in varied orders from seed to seed, instead of all tying on the next tick.
fn on_the_timer(delay: Duration, rng: &mut SplitMix64) -> Duration {
    let whole = Duration::from_millis(delay.as_millis() as u64);
    let rest = (delay - whole).as_nanos() as f64 / 1e6;
    if rng.chance(rest) {
        whole + Duration::from_millis(1)
    } else {
        whole
    }
}

/// `from + (to - from) * at`, in whole microseconds (`from` when `to <= from`).
fn between(from: Duration, to: Duration, at: f64) -> Duration {
    let span = to.saturating_sub(from).as_micros() as f64;
    from + Duration::from_micros((span * at.clamp(0.0, 1.0)).round() as u64)
}

const fn micros(n: u64) -> Duration {
    Duration::from_micros(n)
}

/// The delays of every leg: a timing profile.
///
/// ```
/// use registry_memory::{Delay, Latencies};
/// use std::time::Duration;
///
/// // etcd on loopback, from the project's own benchmarks; or fixed delays; or none.
/// assert!(!Latencies::etcd().is_instant());
/// let slow = Latencies::fixed(Duration::from_millis(5));
/// assert_eq!(slow.bound(), Duration::from_millis(10));
/// assert!(Latencies::instant().is_instant());
/// // Any leg can be set alone.
/// let late_watches = Latencies {
///     watch_created: Delay::Fixed(Duration::from_millis(50)),
///     ..Latencies::etcd()
/// };
/// assert!(late_watches.bound() >= Duration::from_millis(50));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Latencies {
    /// A request on its way to the server, before the server applies it.
    pub request: Delay,
    /// A reply on its way back, after the server applied the call.
    pub reply: Delay,
    /// The `created` answer of a watch: the reply leg of opening one. The server starts the
    /// watch when the request arrives; events come only after this answer.
    pub watch_created: Delay,
    /// A watch event on its way to the client, from the server's commit.
    pub delivery: Delay,
    /// Each leg of a keep-alive (one lease or a batch): etcd answers them on a stream already
    /// open, faster than a unary call.
    pub keep_alive: Delay,
}

impl Latencies {
    /// No delay anywhere: every call answered, every event delivered, at the instant of the
    /// call or the commit (the simulator before it had timing; benchmarks use it).
    pub const fn instant() -> Self {
        Latencies {
            request: Delay::None,
            reply: Delay::None,
            watch_created: Delay::None,
            delivery: Delay::None,
            keep_alive: Delay::None,
        }
    }

    /// Every leg takes exactly `each`.
    pub const fn fixed(each: Duration) -> Self {
        Latencies {
            request: Delay::Fixed(each),
            reply: Delay::Fixed(each),
            watch_created: Delay::Fixed(each),
            delivery: Delay::Fixed(each),
            keep_alive: Delay::Fixed(each),
        }
    }

    /// A local etcd 3.5.16 as the project's benchmarks measured it (BENCHMARKS.md, "Results",
    /// the run of 1 Dec 2026 on 2 cores; part (a) for the round trips, part (d) for watch
    /// propagation): a put's round trip p50 0.60 ms and p99 1.20 ms, a get's 0.40 / 0.73 ms, a
    /// keep-alive's 0.23 / 0.43 ms, put to a cache holding it 0.69 / 1.43 ms. Each round trip
    /// is split into two equal legs; the delivery is the propagation less the request leg; a
    /// watch's `created` answer is given the spread of a read's round trip. The tails (`max`)
    /// are a little over twice the p99, where the measured p99.9 lay.
    pub const fn etcd() -> Self {
        Latencies {
            request: Delay::Spread {
                min: micros(100),
                p50: micros(280),
                p99: micros(600),
                max: micros(1_500),
            },
            reply: Delay::Spread {
                min: micros(100),
                p50: micros(280),
                p99: micros(600),
                max: micros(1_500),
            },
            watch_created: Delay::Spread {
                min: micros(150),
                p50: micros(400),
                p99: micros(750),
                max: micros(2_000),
            },
            delivery: Delay::Spread {
                min: micros(120),
                p50: micros(400),
                p99: micros(850),
                max: micros(2_000),
            },
            keep_alive: Delay::Spread {
                min: micros(40),
                p50: micros(115),
                p99: micros(220),
                max: micros(600),
            },
        }
    }

    /// True when no leg is ever delayed.
    pub fn is_instant(&self) -> bool {
        [
            self.request,
            self.reply,
            self.watch_created,
            self.delivery,
            self.keep_alive,
        ]
        .iter()
        .all(|delay| delay.is_zero())
    }

    /// The longest a round trip (a call, a watch's opening, a keep-alive) or a delivery (from
    /// the commit) can take, each leg rounded up to tokio's whole milliseconds: the slack a
    /// test's bounds need on top of the server's own times.
    pub fn bound(&self) -> Duration {
        let leg = |delay: Delay| {
            let max = delay.max();
            let whole = Duration::from_millis(max.as_millis() as u64);
            if whole < max {
                whole + Duration::from_millis(1)
            } else {
                whole
            }
        };
        let call = leg(self.request) + leg(self.reply).max(leg(self.watch_created));
        call.max(leg(self.keep_alive) * 2).max(leg(self.delivery))
    }

    /// The two legs of a call of `leg`'s kind.
    fn legs(&self, leg: Leg) -> (Delay, Delay) {
        match leg {
            Leg::Call => (self.request, self.reply),
            Leg::Watch => (self.request, self.watch_created),
            Leg::KeepAlive => (self.keep_alive, self.keep_alive),
        }
    }
}

/// What kind of round trip a call is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Leg {
    /// A unary call.
    Call,
    /// Opening a watch (its reply is the `created` answer).
    Watch,
    /// A keep-alive, of one lease or a batch.
    KeepAlive,
}

/// The simulator's own timing: the profile every client follows unless given its own, and the
/// seed every client's draws come from.
#[derive(Debug)]
pub(crate) struct Timing {
    /// False while the profile is instant: the fast path reads only this.
    on: AtomicBool,
    latencies: Mutex<Latencies>,
    pub(crate) seed: RunSeed,
    /// Some delay was drawn: a failing run's seed matters, and is printed.
    pub(crate) used: AtomicBool,
}

impl Timing {
    pub(crate) fn new(latencies: Latencies, seed: RunSeed) -> Self {
        Timing {
            on: AtomicBool::new(!latencies.is_instant()),
            latencies: Mutex::new(latencies),
            seed,
            used: AtomicBool::new(false),
        }
    }

    pub(crate) fn latencies(&self) -> Latencies {
        *self
            .latencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set(&self, latencies: Latencies) {
        *self
            .latencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = latencies;
        self.on.store(!latencies.is_instant(), Ordering::Relaxed);
    }

    /// A new client's generator: the same seed and name give the same delays.
    pub(crate) fn client(&self, name: &str) -> ClientTimer {
        ClientTimer {
            rng: Mutex::new(SplitMix64::new(SplitMix64::derive(self.seed.seed, name))),
            mode: AtomicU8::new(FOLLOW),
            own: Mutex::new(Latencies::instant()),
        }
    }
}

/// The client follows the simulator's profile.
const FOLLOW: u8 = 0;
/// The client has a profile of its own, instant.
const OWN_INSTANT: u8 = 1;
/// The client has a profile of its own, with delays.
const OWN: u8 = 2;

/// One named client's timing: its seeded generator and, if set, a profile of its own.
#[derive(Debug)]
pub(crate) struct ClientTimer {
    rng: Mutex<SplitMix64>,
    mode: AtomicU8,
    own: Mutex<Latencies>,
}

impl ClientTimer {
    /// Gives the client a profile of its own (`None`: the simulator's).
    pub(crate) fn set(&self, latencies: Option<Latencies>) {
        let mode = match latencies {
            None => FOLLOW,
            Some(latencies) => {
                *self.own.lock().unwrap_or_else(PoisonError::into_inner) = latencies;
                if latencies.is_instant() {
                    OWN_INSTANT
                } else {
                    OWN
                }
            }
        };
        self.mode.store(mode, Ordering::Relaxed);
    }

    /// True when the client is instant now: what every call asks first, two atomic loads and
    /// no copy of a profile (the instant mode is what benchmarks measure).
    #[inline]
    fn is_instant(&self, timing: &Timing) -> bool {
        match self.mode.load(Ordering::Relaxed) {
            FOLLOW => !timing.on.load(Ordering::Relaxed),
            OWN => false,
            _ => true,
        }
    }

    /// The profile in force for this client now; `None` when it is instant (the fast path:
    /// atomics only).
    fn latencies(&self, timing: &Timing) -> Option<Latencies> {
        match self.mode.load(Ordering::Relaxed) {
            FOLLOW if timing.on.load(Ordering::Relaxed) => Some(timing.latencies()),
            OWN => Some(*self.own.lock().unwrap_or_else(PoisonError::into_inner)),
            _ => None,
        }
    }

    /// The two delays of a call, drawn now (so that the draws follow the order of the calls);
    /// `None` when the client is instant.
    pub(crate) fn legs(&self, timing: &Timing, leg: Leg) -> Option<(Duration, Duration)> {
        let (before, after) = self.latencies(timing)?.legs(leg);
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        let mut draw = |delay: Delay| {
            let drawn = delay.draw(&mut rng);
            on_the_timer(drawn, &mut rng)
        };
        let legs = (draw(before), draw(after));
        drop(rng);
        if !legs.0.is_zero() || !legs.1.is_zero() {
            timing.used.store(true, Ordering::Relaxed);
        }
        Some(legs)
    }

    /// One watch delivery's delay; zero when the client is instant now.
    pub(crate) fn delivery(&self, timing: &Timing) -> Duration {
        let Some(latencies) = self.latencies(timing) else {
            return Duration::ZERO;
        };
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        let drawn = latencies.delivery.draw(&mut rng);
        on_the_timer(drawn, &mut rng)
    }

    /// True when the client's watches are delivered without delay now.
    pub(crate) fn delivers_at_once(&self, timing: &Timing) -> bool {
        self.latencies(timing)
            .map_or(true, |latencies| latencies.delivery.is_zero())
    }
}

impl MemoryRegistry {
    /// The simulator's timing profile now: what every client without one of its own follows.
    pub fn timing(&self) -> Latencies {
        self.shared.timing.latencies()
    }

    /// Sets the simulator's timing profile (the switch for the whole simulator, as
    /// [`MemoryRegistryBuilder::timing`](crate::MemoryRegistryBuilder::timing)): calls made and
    /// deliveries taken from now on follow it, on every client without a profile of its own.
    pub fn set_timing(&self, latencies: Latencies) {
        self.shared.timing.set(latencies);
    }

    /// Gives client `name` a profile of its own (`None`: it follows the simulator's again);
    /// every handle of that client follows it, from its next call or delivery on. The handle
    /// [`build`](crate::MemoryRegistryBuilder::build) returns (and its clones) is the client
    /// named `""`.
    ///
    /// ```
    /// use registry_api::{PutOptions, Registry};
    /// use registry_memory::{Latencies, MemoryRegistry};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> registry_api::Result<()> {
    /// let server = MemoryRegistry::builder().timing(Latencies::instant()).build();
    /// server.set_client_timing("far", Some(Latencies::fixed(Duration::from_millis(40))));
    /// let far = server.client("far");
    /// let started = tokio::time::Instant::now();
    /// far.put(b"k", b"v", PutOptions::default()).await?;
    /// assert_eq!(started.elapsed(), Duration::from_millis(80)); // the request, then the reply
    /// server.get(b"k").await?; // the unnamed client follows the simulator: instant
    /// assert_eq!(started.elapsed(), Duration::from_millis(80));
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_client_timing(&self, name: &str, latencies: Option<Latencies>) {
        self.links.timer(&self.shared, name).set(latencies);
    }

    /// This handle without any delay, whatever the simulator's profile: for a test's own
    /// reads and writes that must not move its clock, and for benchmarks. Clones of the handle
    /// returned are instant too; [`client`](Self::client) on it gives timed clients as before.
    pub fn instant(&self) -> MemoryRegistry {
        MemoryRegistry {
            shared: self.shared.clone(),
            links: self.links.clone(),
            timer: None,
        }
    }

    /// The seed every client's delays are drawn from.
    pub fn seed(&self) -> u64 {
        self.shared.timing.seed.seed
    }

    /// The seed and where it came from ([`MemoryRegistryBuilder::seed`](crate::MemoryRegistryBuilder::seed),
    /// or [`registry_api::seeding::current`] when the builder had none).
    pub fn run_seed(&self) -> RunSeed {
        self.shared.timing.seed
    }

    /// The two delays of a call on this handle, drawn now; `None` when it is instant.
    #[inline]
    pub(crate) fn legs(&self, leg: Leg) -> Option<(Duration, Duration)> {
        let timer = self.timer.as_ref()?;
        if timer.is_instant(&self.shared.timing) {
            return None;
        }
        timer.legs(&self.shared.timing, leg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_stay_within_their_bounds_and_spread_as_declared() {
        let mut rng = SplitMix64::new(3);
        let etcd = Latencies::etcd();
        let mut draws: Vec<Duration> = (0..10_000).map(|_| etcd.request.draw(&mut rng)).collect();
        draws.sort();
        assert!(draws[0] >= micros(100) && draws[9_999] <= micros(1_500));
        let p50 = draws[5_000];
        let p99 = draws[9_900];
        assert!(p50.abs_diff(micros(280)) < micros(15), "{p50:?}");
        assert!(p99.abs_diff(micros(600)) < micros(40), "{p99:?}");
        let uniform = Delay::Uniform {
            min: micros(5),
            max: micros(9),
        };
        assert!((0..1_000)
            .map(|_| uniform.draw(&mut rng))
            .all(|d| (micros(5)..=micros(9)).contains(&d)));
        assert_eq!(Delay::Fixed(micros(7)).draw(&mut rng), micros(7));
    }

    #[test]
    fn delays_land_on_whole_milliseconds_keeping_their_mean() {
        let mut rng = SplitMix64::new(9);
        let ms = Duration::from_millis;
        let draws: Vec<Duration> = (0..10_000)
            .map(|_| on_the_timer(micros(1_280), &mut rng))
            .collect();
        assert!(draws.iter().all(|d| *d == ms(1) || *d == ms(2)));
        let twos = draws.iter().filter(|d| **d == ms(2)).count();
        assert!((2_500..3_100).contains(&twos), "{twos}");
        assert_eq!(on_the_timer(ms(3), &mut rng), ms(3));
    }

    #[test]
    fn a_client_follows_the_simulator_unless_given_its_own() {
        let timing = Timing::new(
            Latencies::instant(),
            RunSeed {
                seed: 1,
                source: registry_api::seeding::SeedSource::Scoped,
            },
        );
        let client = timing.client("a");
        assert_eq!(client.legs(&timing, Leg::Call), None);
        timing.set(Latencies::fixed(Duration::from_millis(3)));
        let three = Duration::from_millis(3);
        assert_eq!(client.legs(&timing, Leg::Call), Some((three, three)));
        client.set(Some(Latencies::instant()));
        assert_eq!(client.legs(&timing, Leg::Call), None);
        client.set(None);
        assert!(client.legs(&timing, Leg::KeepAlive).is_some());
        assert!(timing.used.load(Ordering::Relaxed));
    }

    #[test]
    fn the_same_seed_and_name_draw_the_same_delays() {
        let seed = |n| RunSeed {
            seed: n,
            source: registry_api::seeding::SeedSource::Scoped,
        };
        let draws = |n, name| {
            let timing = Timing::new(Latencies::etcd(), seed(n));
            let client = timing.client(name);
            (0..20)
                .map(|_| client.legs(&timing, Leg::Call))
                .collect::<Vec<_>>()
        };
        assert_eq!(draws(5, "a"), draws(5, "a"));
        assert_ne!(draws(5, "a"), draws(6, "a"));
        assert_ne!(draws(5, "a"), draws(5, "b"));
    }
}
