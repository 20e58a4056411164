//! The registrar's task: a thin driver that makes the calls the [`Machines`] ask for, feeds
//! every answer back, and sleeps until the next timer.
//!
//! It never looks at how fast an answer came: a call's future joins the calls in flight and
//! its answer is taken from there, whether the backend answered at once (the simulator) or a
//! round trip later (etcd). So the suites, which run mostly on the simulator, test the path etcd
//! takes.

use super::calls::{Answer, Call, GroupId};
use super::commands::{Command, Inbox};
use super::machines::Machines;
use crate::backoff::{deadline_after, deadline_after_from};
use crate::watcher::{watcher, WatcherEvent};
use futures::future::{AbortHandle, BoxFuture};
use futures::stream::{BoxStream, FuturesUnordered, SelectAll};
use futures::StreamExt;
use registry_api::{Error, PutOptions, Registry};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

type WatchItem = (GroupId, u64, WatcherEvent);

/// Runs the registrar until every handle is gone and every registration has stopped.
pub(super) async fn run(
    registry: Arc<dyn Registry>,
    machines: Machines,
    commands: mpsc::Receiver<Command>,
    inbox: Arc<Inbox>,
) {
    Driver {
        registry: &registry,
        machines,
        commands,
        inbox,
        in_flight: FuturesUnordered::new(),
        watches: SelectAll::new(),
        watching: HashMap::new(),
        serial: 0,
        calls: Vec::new(),
    }
    .run()
    .await;
}

struct Driver<'r> {
    /// Borrowed from the `Arc` that [`run`] owns, so that a call's future borrows it instead
    /// of holding a clone of the `Arc` in a box of its own.
    registry: &'r Arc<dyn Registry>,
    machines: Machines,
    commands: mpsc::Receiver<Command>,
    inbox: Arc<Inbox>,
    /// The calls under way. Bounded by the registrations: at most one grant or keep-alive per
    /// lease slot (the slot waits for its answer), the puts of a member's changes (each
    /// answered before a handle can ask again), one revoke or delete per leaving member.
    in_flight: FuturesUnordered<BoxFuture<'r, Answer>>,
    /// One watcher per registered service, tagged with its group and serial.
    watches: SelectAll<BoxStream<'static, WatchItem>>,
    watching: HashMap<GroupId, (u64, AbortHandle)>,
    serial: u64,
    /// The calls the last event asked for, made before the next event.
    calls: Vec<Call>,
}

impl<'r> Driver<'r> {
    async fn run(mut self) {
        let sleep = tokio::time::sleep_until(deadline_after(Duration::from_secs(86_400)));
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        let mut closing = false;
        let inbox = self.inbox.clone();
        loop {
            self.take_commands(&mut closing);
            if closing && self.machines.is_empty() && self.in_flight.is_empty() {
                break;
            }
            match self.machines.next_timer() {
                Some(at) if armed != Some(at) => {
                    sleep.as_mut().reset(at);
                    armed = Some(at);
                }
                None => armed = None,
                _ => {}
            }
            tokio::select! {
                biased;
                command = self.commands.recv(), if !closing => match command {
                    Some(command) => {
                        self.machines.on_command(command, Instant::now(), &mut self.calls)
                    }
                    None => closing = true,
                },
                () = inbox.notified() => {}
                Some(answer) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.machines.on_answer(answer, Instant::now(), &mut self.calls);
                }
                Some((group, serial, event)) = self.watches.next(), if !self.watches.is_empty() => {
                    if self.watching.get(&group).is_some_and(|(s, _)| *s == serial) {
                        let answer = Answer::Watched { group, event };
                        self.machines.on_answer(answer, Instant::now(), &mut self.calls);
                    }
                }
                () = &mut sleep, if armed.is_some() => {
                    armed = None;
                    self.machines.on_timers(Instant::now(), &mut self.calls);
                }
            }
            self.make_calls();
        }
        tracing::debug!("registrar stopped");
    }

    /// Commands first, then drops, so that a registration dropped right after it was started
    /// is known when its drop is handled.
    fn take_commands(&mut self, closing: &mut bool) {
        loop {
            match self.commands.try_recv() {
                Ok(command) => self
                    .machines
                    .on_command(command, Instant::now(), &mut self.calls),
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    *closing = true;
                    break;
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
            }
        }
        for (id, abandoned) in self.inbox.take() {
            self.machines.on_dropped(id, abandoned, &mut self.calls);
        }
        self.make_calls();
    }

    fn make_calls(&mut self) {
        let now = Instant::now();
        let mut calls = std::mem::take(&mut self.calls);
        for call in calls.drain(..) {
            self.make(call, now);
        }
        self.calls = calls;
    }

    fn make(&mut self, call: Call, now: Instant) {
        let registry: &'r dyn Registry = &**self.registry;
        match call {
            Call::Grant {
                slot,
                token,
                ttl,
                limit,
            } => self.send(now, limit, registry.lease_grant(ttl, None), move |result| {
                Answer::Granted {
                    slot,
                    token,
                    sent_at: now,
                    result,
                }
            }),
            Call::KeepAlive { renewals, limit } => {
                if let [one] = renewals[..] {
                    let call = registry.lease_keep_alive(one.lease);
                    self.send(now, limit, call, move |result| Answer::Renewed {
                        renewals,
                        sent_at: now,
                        result: result.map(|ttl| vec![Ok(ttl)]),
                    });
                } else {
                    let ids: Vec<_> = renewals.iter().map(|r| r.lease).collect();
                    let call = async move { registry.lease_keep_alive_many(&ids).await };
                    self.send(now, limit, call, move |result| Answer::Renewed {
                        renewals,
                        sent_at: now,
                        result,
                    });
                }
            }
            Call::Put {
                member,
                key,
                value,
                lease,
                purpose,
                limit,
            } => {
                let put_key = key.clone();
                let call = async move {
                    registry
                        .put(&put_key, &value, PutOptions::with_lease(lease))
                        .await
                };
                self.send(now, limit, call, move |result| Answer::Put {
                    member,
                    key,
                    lease,
                    purpose,
                    result,
                });
            }
            Call::Revoke { lease, limit, then } => {
                let call = registry.lease_revoke(lease);
                self.send(now, limit, call, move |result| match then {
                    Some(leaving) => Answer::Left {
                        leaving,
                        result: result.map(|_| ()),
                    },
                    None => Answer::Ignored,
                });
            }
            Call::Delete { key, limit, then } => {
                let call = async move { registry.delete(&key).await };
                self.send(now, limit, call, move |result| match then {
                    Some(leaving) => Answer::Left {
                        leaving,
                        result: result.map(|_| ()),
                    },
                    None => Answer::Ignored,
                });
            }
            Call::AwaitReady { member, ready } => self.in_flight.push(Box::pin(async move {
                ready.await;
                Answer::Ready { member }
            })),
            Call::Watch {
                group,
                prefix,
                config,
            } => {
                self.serial += 1;
                let serial = self.serial;
                let events = watcher(self.registry.clone(), prefix, config);
                let (events, abort) = futures::stream::abortable(events);
                if let Some((_, old)) = self.watching.insert(group, (serial, abort)) {
                    old.abort();
                }
                self.watches
                    .push(events.map(move |event| (group, serial, event)).boxed());
            }
            Call::Unwatch { group } => {
                if let Some((_, abort)) = self.watching.remove(&group) {
                    abort.abort();
                }
            }
        }
    }

    /// Adds `call` to the calls in flight, failed as unavailable when no answer comes within
    /// `limit`; `answer` turns its result into what the machines are fed.
    fn send<T: Send + 'r>(
        &mut self,
        now: Instant,
        limit: Duration,
        call: impl Future<Output = registry_api::Result<T>> + Send + 'r,
        answer: impl FnOnce(registry_api::Result<T>) -> Answer + Send + 'r,
    ) {
        let deadline = deadline_after_from(now, limit);
        self.in_flight.push(Box::pin(async move {
            let result = match tokio::time::timeout_at(deadline, call).await {
                Ok(result) => result,
                Err(_) => Err(Error::unavailable(format!("no answer within {limit:?}"))),
            };
            answer(result)
        }));
    }
}
