//! Background tasks owned by their handles, whose death is seen.
//!
//! Every task this crate spawns (a registrar, a discovery feed, a tower discover feed) keeps its
//! `JoinHandle` with its handles and reports how it ended, in the manner of linkerd2-proxy's
//! balancer worker: a panic is caught where it happens and handed, as [`Error::TaskFailed`],
//! to a closure that fails every handle at once; a task dropped unfinished (its runtime shut
//! down) is reported the same way. A task that returns normally (a shutdown) reports nothing.

use crate::Error;
use futures::future::poll_fn;
use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::task::Poll;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tracing::Instrument;

/// A spawned task and the handle that owns it.
#[derive(Debug)]
pub(crate) struct OwnedTask {
    handle: JoinHandle<()>,
}

impl OwnedTask {
    /// Spawns `future` on `runtime` in `span`; `on_failure` gets the cause if it ends any way
    /// other than by returning (a panic, or dropped unfinished when its runtime shuts down).
    /// `on_failure` runs before the future's own state is dropped, so that what its handles
    /// see first is the failure, not a bare stop.
    pub(crate) fn spawn<F, R>(
        runtime: &Handle,
        task: &'static str,
        span: tracing::Span,
        future: F,
        on_failure: R,
    ) -> OwnedTask
    where
        F: Future<Output = ()> + Send + 'static,
        R: FnOnce(Error) + Send + 'static,
    {
        let mut report = Report {
            task,
            on_failure: Some(on_failure),
        };
        let handle = runtime.spawn(
            async move {
                let mut future = std::pin::pin!(future);
                let outcome = poll_fn(|cx| {
                    match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
                        Ok(Poll::Ready(())) => Poll::Ready(Ok(())),
                        Ok(Poll::Pending) => Poll::Pending,
                        Err(panic) => Poll::Ready(Err(panic)),
                    }
                })
                .await;
                match outcome {
                    Ok(()) => report.finished(),
                    Err(panic) => {
                        let cause = format!("it panicked: {}", panic_message(&*panic));
                        tracing::error!(task, %cause, "a background task failed");
                        report.fail(cause);
                    }
                }
            }
            .instrument(span),
        );
        OwnedTask { handle }
    }

    /// True once the task has ended, however.
    pub(crate) fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }
}

/// Reports a task's failure once: when told, or when dropped unfinished.
struct Report<R: FnOnce(Error)> {
    task: &'static str,
    on_failure: Option<R>,
}

impl<R: FnOnce(Error)> Report<R> {
    /// Ended by returning: nothing to report.
    fn finished(&mut self) {
        self.on_failure = None;
    }

    fn fail(&mut self, cause: String) {
        if let Some(on_failure) = self.on_failure.take() {
            on_failure(Error::TaskFailed {
                task: self.task,
                cause,
            });
        }
    }
}

impl<R: FnOnce(Error)> Drop for Report<R> {
    fn drop(&mut self) {
        if self.on_failure.is_some() {
            // Every process ends this way for the tasks still running when its runtime stops:
            // worth telling the handles that may outlive it, not worth an alarm in the log.
            tracing::debug!(
                task = self.task,
                "the runtime shut down before the task finished"
            );
        }
        self.fail("its runtime shut down before it finished".to_owned());
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    if let Some(message) = panic.downcast_ref::<&str>() {
        message
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message
    } else {
        "a panic without a message"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn recorder() -> (
        Arc<Mutex<Option<Error>>>,
        impl FnOnce(Error) + Send + 'static,
    ) {
        let seen = Arc::new(Mutex::new(None));
        let into = seen.clone();
        (seen, move |e| *into.lock().unwrap() = Some(e))
    }

    #[tokio::test]
    async fn a_panic_is_reported_with_its_message_and_a_return_is_not() {
        let runtime = Handle::current();
        let (seen, report) = recorder();
        let task = OwnedTask::spawn(
            &runtime,
            "test",
            tracing::Span::none(),
            async { panic!("boom") },
            report,
        );
        while !task.is_finished() {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            seen.lock().unwrap().take(),
            Some(Error::TaskFailed { task: "test", cause }) if cause.contains("boom")
        ));

        let (seen, report) = recorder();
        let task = OwnedTask::spawn(&runtime, "test", tracing::Span::none(), async {}, report);
        while !task.is_finished() {
            tokio::task::yield_now().await;
        }
        assert!(seen.lock().unwrap().is_none());
    }

    #[test]
    fn a_task_dropped_with_its_runtime_is_reported() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (seen, report) = recorder();
        OwnedTask::spawn(
            runtime.handle(),
            "test",
            tracing::Span::none(),
            std::future::pending(),
            report,
        );
        drop(runtime);
        assert!(matches!(
            seen.lock().unwrap().take(),
            Some(Error::TaskFailed { cause, .. }) if cause.contains("runtime")
        ));
    }
}
