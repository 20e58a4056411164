//! Retrying a call on another endpoint when the one it went to is down.
//!
//! etcd-client spreads calls over every endpoint and keeps sending some to a member that is
//! down, where they fail with `Unavailable` ("tcp connect error"); it never retries. With three
//! endpoints and one member dead, about a third of calls would fail. A call is sent again, at
//! most once per endpoint, when that cannot change its outcome: a read or a renewal after any
//! `Unavailable`, and any call whose request never reached a server (the connection was
//! refused). A write that may have reached the server is not resent: a second put would write
//! a second revision, a second grant leak a lease.

use registry_api::{Error, Result};
use std::future::Future;

/// Whether sending a call twice is harmless.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Idempotence {
    /// Reads and renewals: resent after any `Unavailable`.
    Safe,
    /// Writes: resent only when the first attempt never reached a server.
    Unsafe,
}

/// Runs `call` up to `attempts` times while it fails in a way that allows another try.
pub(crate) async fn retry<T, F, Fut>(attempts: usize, kind: Idempotence, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Err(e) if attempt < attempts && may_retry(&e, kind) => {
                tracing::debug!(attempt, error = %e, "endpoint unavailable; trying another");
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

fn may_retry(err: &Error, kind: Idempotence) -> bool {
    match err {
        Error::Unavailable { source } => kind == Idempotence::Safe || never_sent(source.as_ref()),
        _ => false,
    }
}

/// True when the transport failed to connect, so no server saw the request.
fn never_sent(source: &(dyn std::error::Error + 'static)) -> bool {
    let text = match (
        source.downcast_ref::<tonic::Status>(),
        source.downcast_ref::<etcd_client::Error>(),
    ) {
        (Some(status), _) => status.message().to_owned(),
        (None, Some(etcd_client::Error::GRpcStatus(status))) => status.message().to_owned(),
        _ => return false,
    };
    text.contains("tcp connect error") || text.contains("Connection refused")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn refused() -> Error {
        Error::unavailable(tonic::Status::unavailable("tcp connect error"))
    }

    fn timed_out() -> Error {
        Error::unavailable(tonic::Status::unavailable("etcdserver: request timed out"))
    }

    async fn calls_until_done(kind: Idempotence, errors: Vec<Error>) -> (usize, Result<u8>) {
        let calls = AtomicUsize::new(0);
        let errors = std::sync::Mutex::new(errors.into_iter());
        let outcome = retry(3, kind, || {
            calls.fetch_add(1, Ordering::SeqCst);
            let next = errors.lock().unwrap().next();
            async move { next.map_or(Ok(7), Err) }
        })
        .await;
        (calls.load(Ordering::SeqCst), outcome)
    }

    #[tokio::test]
    async fn reads_are_resent_after_any_unavailable_at_most_once_per_endpoint() {
        let (calls, outcome) =
            calls_until_done(Idempotence::Safe, vec![timed_out(), refused()]).await;
        assert_eq!((calls, outcome.unwrap()), (3, 7));
        let (calls, outcome) =
            calls_until_done(Idempotence::Safe, vec![refused(), refused(), refused()]).await;
        assert_eq!(calls, 3);
        assert!(outcome.unwrap_err().is_retryable());
    }

    #[tokio::test]
    async fn writes_are_resent_only_when_no_server_saw_them() {
        let (calls, outcome) = calls_until_done(Idempotence::Unsafe, vec![refused()]).await;
        assert_eq!((calls, outcome.unwrap()), (2, 7));
        let (calls, outcome) = calls_until_done(Idempotence::Unsafe, vec![timed_out()]).await;
        assert_eq!(calls, 1);
        assert!(outcome.is_err());
    }

    #[tokio::test]
    async fn other_errors_are_final() {
        let (calls, outcome) = calls_until_done(
            Idempotence::Safe,
            vec![Error::LeaseNotFound(registry_api::LeaseId(1))],
        )
        .await;
        assert_eq!(calls, 1);
        assert!(matches!(outcome, Err(Error::LeaseNotFound(_))));
    }
}
