//! The background expiry task of a registry on tokio's clock: it sleeps until the next lease
//! deadline and revokes what is due, so watchers see an expiry without anyone calling in.
//! Calls also expire lazily, so nothing ever sees a lease past its deadline whichever runs first.

use crate::store::{Shared, State};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Starts the task on the current runtime if it is not running yet and there is one, or wakes it
/// when `deadline` comes before the one it sleeps until.
pub(crate) fn schedule(shared: &Arc<Shared>, state: &mut State, deadline: Duration) {
    if shared.clock.is_manual() {
        return;
    }
    if !state.expiry_task_started {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime: expiry stays lazy until a grant happens inside one.
            return;
        };
        state.expiry_task_started = true;
        runtime.spawn(run(Arc::downgrade(shared), shared.expiry_wakeup.clone()));
        return;
    }
    if state
        .expiry_task_deadline
        .map_or(true, |sleeping_until| deadline < sleeping_until)
    {
        shared.expiry_wakeup.notify_one();
    }
}

async fn run(shared: Weak<Shared>, wakeup: Arc<tokio::sync::Notify>) {
    loop {
        // Hold the store only between sleeps, so dropping every registry ends the task.
        let next = {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            shared.with_state(|state, _now| {
                let next = state.leases.next_deadline();
                state.expiry_task_deadline = next;
                next.and_then(|deadline| shared.clock.instant_at(deadline))
            })
        };
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = wakeup.notified() => {}
                }
            }
            None => wakeup.notified().await,
        }
    }
}
