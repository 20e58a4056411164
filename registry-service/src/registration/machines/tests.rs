//! The registrar's state driven event by event, on a fake clock, without a runtime.

use super::super::calls::Answer;
use super::super::status::RegistrationState;
use super::*;
use crate::instance::Status;
use crate::watcher::Change;
use registry_api::{KeyValue, LeaseGrant, PutResponse, Revision};
use tokio::sync::oneshot;

const KEY: &[u8] = b"services/hello/a";

/// A registrar's machines with one registration started at `t0`; its handle's state.
fn started(t0: Instant) -> (Machines, Arc<super::super::status::Shared>, Vec<Call>) {
    let mut machines = Machines::new(None, WatcherConfig::default());
    let clock = Arc::new(LeaseClock::new(t0));
    let shared = Arc::new(super::super::status::Shared::new(
        RegistrationState::Registering,
        Status::Serving,
        clock,
    ));
    let start = Start {
        id: 1,
        key: String::from_utf8(KEY.to_vec()).unwrap(),
        prefix: "services/hello/".to_owned(),
        instance: ServiceInstance::new("hello", "a", "127.0.0.1:80"),
        ttl: 6,
        options: RegistrationOptions::default().seed(1),
        shared: shared.clone(),
        first: None,
        ready: None,
    };
    let mut calls = Vec::new();
    machines.on_command(Command::Start(Box::new(start)), t0, &mut calls);
    (machines, shared, calls)
}

/// Answers the grant among `calls` with lease 7, and the put that follows at revision 2.
fn registered(machines: &mut Machines, calls: Vec<Call>, t0: Instant) {
    let (slot, token) = calls
        .iter()
        .find_map(|call| match call {
            Call::Grant { slot, token, .. } => Some((*slot, *token)),
            _ => None,
        })
        .expect("a grant");
    let mut puts = Vec::new();
    let grant = Answer::Granted {
        slot,
        token,
        sent_at: t0,
        result: Ok(LeaseGrant {
            id: LeaseId(7),
            ttl: 6,
        }),
    };
    machines.on_answer(grant, t0, &mut puts);
    answer_put(machines, puts, Ok(Revision(2)), t0);
}

/// Answers the one put among `calls` with `outcome`; the calls that follow.
fn answer_put(
    machines: &mut Machines,
    calls: Vec<Call>,
    outcome: Result<Revision, registry_api::Error>,
    now: Instant,
) -> Vec<Call> {
    let mut next = Vec::new();
    for call in calls {
        if let Call::Put {
            member,
            key,
            lease,
            purpose,
            ..
        } = call
        {
            let result = match &outcome {
                Ok(revision) => Ok(PutResponse {
                    revision: *revision,
                    prev_kv: None,
                }),
                Err(_) => Err(registry_api::Error::permission_denied("not yours")),
            };
            let answer = Answer::Put {
                member,
                key,
                lease,
                purpose,
                result,
            };
            machines.on_answer(answer, now, &mut next);
            return next;
        }
    }
    panic!("no put among the calls")
}

fn deleted(revision: i64) -> Answer {
    Answer::Watched {
        group: 0,
        event: WatcherEvent::Changed {
            revision: Revision(revision),
            changes: vec![Change::Delete {
                prev: KeyValue {
                    key: Bytes::from_static(KEY),
                    ..KeyValue::default()
                },
            }],
            resync: false,
        },
    }
}

#[test]
fn a_start_grants_puts_and_registers() {
    let t0 = Instant::now();
    let (mut machines, shared, calls) = started(t0);
    assert!(
        matches!(calls[0], Call::Watch { .. }),
        "the service's key watch"
    );
    assert!(matches!(calls[1], Call::Grant { ttl: 6, .. }));
    registered(&mut machines, calls, t0);
    assert_eq!(
        *shared.state.borrow(),
        RegistrationState::Registered {
            lease: LeaseId(7),
            revision: Revision(2)
        }
    );
    assert_eq!(machines.next_timer(), Some(t0 + Duration::from_secs(2)));
}

#[test]
fn a_key_the_watch_shows_deleted_is_put_back_on_its_lease() {
    let t0 = Instant::now();
    let (mut machines, _shared, calls) = started(t0);
    registered(&mut machines, calls, t0);
    let mut calls = Vec::new();
    machines.on_answer(deleted(1), t0, &mut calls);
    assert!(calls.is_empty(), "older than the registration's put");
    machines.on_answer(deleted(3), t0, &mut calls);
    assert!(matches!(
        &calls[..],
        [Call::Put {
            lease: LeaseId(7),
            purpose: Purpose::Restore,
            ..
        }]
    ));
}

#[test]
fn a_put_back_refused_for_good_ends_the_registration_and_revokes_its_lease() {
    let t0 = Instant::now();
    let (mut machines, shared, calls) = started(t0);
    registered(&mut machines, calls, t0);
    let mut calls = Vec::new();
    machines.on_answer(deleted(3), t0, &mut calls);
    let after = answer_put(
        &mut machines,
        calls,
        Err(registry_api::Error::backend("")),
        t0,
    );
    assert_eq!(*shared.state.borrow(), RegistrationState::Failed);
    assert!(matches!(
        shared.failure().as_ref().and_then(Error::as_registry),
        Some(registry_api::Error::PermissionDenied { .. })
    ));
    assert!(after.iter().any(|call| matches!(
        call,
        Call::Revoke {
            lease: LeaseId(7),
            ..
        }
    )));
    assert!(after
        .iter()
        .any(|call| matches!(call, Call::Unwatch { .. })));
    assert!(machines.is_empty());
}

#[test]
fn a_deregistration_revokes_and_answers_once_the_revoke_is_answered() {
    let t0 = Instant::now();
    let (mut machines, shared, calls) = started(t0);
    registered(&mut machines, calls, t0);
    let (reply, mut answer) = oneshot::channel();
    let mut calls = Vec::new();
    let stop = Command::Stop {
        id: 1,
        how: Stop::Now,
        reply,
    };
    machines.on_command(stop, t0, &mut calls);
    let leaving = calls.into_iter().find_map(|call| match call {
        Call::Revoke {
            lease: LeaseId(7),
            then: Some(leaving),
            ..
        } => Some(leaving),
        _ => None,
    });
    assert!(answer.try_recv().is_err(), "not before the revoke's answer");
    let left = Answer::Left {
        leaving: leaving.expect("a revoke"),
        result: Ok(()),
    };
    machines.on_answer(left, t0, &mut Vec::new());
    assert!(matches!(answer.try_recv(), Ok(Ok(()))));
    assert_eq!(*shared.state.borrow(), RegistrationState::Deregistered);
}
