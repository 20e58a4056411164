//! tokio's paused clock, which the etcd backend cannot run under.
//!
//! The backend's own deadlines (the keep-alive reply's, the probe's, a watch's first answer's)
//! sleep on the caller's tokio clock. Under `#[tokio::test(start_paused = true)]` or
//! `tokio::time::pause()` that clock jumps to the next deadline whenever the runtime is idle,
//! and a runtime waiting on the network is idle: every timeout fires at once. The connection
//! itself is out of reach of that clock: it runs on a runtime of the registry's own
//! ([`crate::connection`]), so HTTP/2 pings keep their real interval.
//!
//! The backend says so instead of failing in misleading ways: `connect` refuses a paused clock
//! up front, every call of a connected registry checks the clock first and refuses it with the
//! same error, and a call in flight when the clock stopped reports the paused clock rather than
//! the timeout.

use registry_api::Error;
use std::time::Duration;

/// What [`paused`] says.
const PAUSED: &str = "tokio's paused clock: the etcd backend needs real time, and tokio's clock \
    is paused (start_paused or time::pause), so every timeout of a call would fire at once; run \
    it on a runtime whose clock is not paused, or use registry-memory for virtual time";

/// The error for a paused clock: [`Error::NotSupported`], naming it.
pub(crate) fn paused() -> Error {
    Error::NotSupported {
        what: PAUSED.to_owned(),
    }
}

/// How long real time must pass with tokio's clock standing still before it is called paused:
/// far above the clock's resolution, and spent only when the clock is paused (a running clock
/// moves on the first read).
const STILL_FOR: Duration = Duration::from_micros(50);

/// True when tokio's clock stands still while real time passes. A running clock has moved by
/// the second read (some tens of nanoseconds); a paused one never moves while no task awaits,
/// so it is seen after [`STILL_FOR`] of spinning. Cheap enough for every call.
pub(crate) fn is_paused() -> bool {
    let tokio = tokio::time::Instant::now();
    let real = std::time::Instant::now();
    loop {
        if tokio.elapsed() > Duration::ZERO {
            return false;
        }
        if real.elapsed() >= STILL_FOR {
            return true;
        }
        std::hint::spin_loop();
    }
}

/// `Ok` on a running clock, the paused-clock error on a paused one: the first thing every call
/// does.
pub(crate) fn check() -> registry_api::Result<()> {
    if is_paused() {
        return Err(paused());
    }
    Ok(())
}

/// The time on both clocks when a call started, to tell afterwards whether tokio's clock ran
/// ahead of real time. Unpaused, tokio's clock is the real one, so they never differ.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stopwatch {
    tokio: tokio::time::Instant,
    real: std::time::Instant,
}

/// How far tokio's clock must run ahead before a failure is blamed on it: well above any
/// rounding, well below every timeout of the backend.
const AHEAD: Duration = Duration::from_millis(100);

impl Stopwatch {
    pub(crate) fn start() -> Self {
        Stopwatch {
            tokio: tokio::time::Instant::now(),
            real: std::time::Instant::now(),
        }
    }

    /// Time passed on tokio's clock and in reality.
    fn elapsed(&self) -> (Duration, Duration) {
        (self.tokio.elapsed(), self.real.elapsed())
    }

    /// `err`, or the paused-clock error when `err` is a timeout-like `Unavailable` and tokio's
    /// clock ran far ahead of real time since the start: a deadline fired on virtual time.
    pub(crate) fn explain(&self, err: Error) -> Error {
        let (tokio, real) = self.elapsed();
        if matches!(err, Error::Unavailable { .. }) && tokio >= AHEAD && real < tokio / 2 {
            tracing::debug!(?tokio, ?real, error = %err, "a deadline fired on a paused clock");
            return paused();
        }
        err
    }

    /// [`explain`](Self::explain) on a result.
    pub(crate) fn check<T>(&self, result: registry_api::Result<T>) -> registry_api::Result<T> {
        result.map_err(|err| self.explain(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_running_clock_is_not_paused_and_explains_nothing() {
        assert!(!is_paused());
        let watch = Stopwatch::start();
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(matches!(
            watch.explain(Error::unavailable("Timeout expired")),
            Error::Unavailable { .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_clock_is_seen_and_its_timeouts_are_explained() {
        assert!(is_paused());
        let watch = Stopwatch::start();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let err = watch.explain(Error::unavailable("Timeout expired"));
        assert!(
            matches!(&err, Error::NotSupported { what } if what.contains("paused")),
            "{err}"
        );
        // Only timeouts: another error stays what it is.
        assert!(matches!(
            watch.explain(Error::LeaseNotFound(registry_api::LeaseId(1))),
            Error::LeaseNotFound(_)
        ));
    }
}
