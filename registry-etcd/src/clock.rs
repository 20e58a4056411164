//! tokio's paused clock, which the etcd backend cannot run under.
//!
//! Every deadline of the backend (tonic's connect and request timeouts, hyper's HTTP/2 pings,
//! the backend's own waits) sleeps on tokio's clock. Under `#[tokio::test(start_paused = true)]`
//! or `tokio::time::pause()` that clock jumps to the next deadline whenever the runtime is idle,
//! and a runtime waiting on the network is idle: every timeout fires at once, and calls fail with
//! a misleading "Timeout expired". The backend says so instead: `connect` refuses a paused clock
//! up front, and a call that failed because the clock ran ahead of real time reports the paused
//! clock rather than the timeout.

use registry_api::Error;
use std::time::Duration;

/// What [`paused`] says.
const PAUSED: &str = "tokio's paused clock: the etcd backend needs real time, and tokio's clock \
    is paused (start_paused or time::pause), so every connect, request and ping timeout fires at \
    once; run it on a runtime whose clock is not paused, or use registry-memory for virtual time";

/// The error for a paused clock: [`Error::NotSupported`], naming it.
pub(crate) fn paused() -> Error {
    Error::NotSupported {
        what: PAUSED.to_owned(),
    }
}

/// True when tokio's clock stands still while real time passes. Blocks the thread for 1 ms,
/// once per connect.
pub(crate) fn is_paused() -> bool {
    let watch = Stopwatch::start();
    std::thread::sleep(Duration::from_millis(1));
    let (tokio, real) = watch.elapsed();
    tokio < real / 2
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
