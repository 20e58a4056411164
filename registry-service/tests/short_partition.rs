//! A partition shorter than the TTL, healed well before the lease's deadline, loses nothing:
//! what the registration module promises ("an outage shorter than the TTL loses nothing").
//!
//! The fleet search's liveness mode found it broken (seed 11 of the default search: svc2-i1,
//! last renewed at 51.255 s, partitioned from 51.850 s to 54.386 s, lost its lease at 55.255 s
//! with nothing left in the way). After a keep-alive round fails, the registrar tries again only
//! at the next round, a whole TTL/3 later; with two rounds missed, the third falls exactly on
//! the lease's deadline, where the lease is already gone. A keep-alive that failed has to be
//! retried within a short interval (etcd's client resends every 500 ms once TTL/3 has passed
//! without an answer), so that a link healed before the deadline renews in time.
//!
//! Ignored until the registrar retries failed keep-alives before the next round: run it with
//! `cargo test -p registry-service --test short_partition -- --ignored`.

mod common;

use common::{hello, settle};
use registry_api::{LeaseId, Registry};
use registry_memory::MemoryRegistry;
use registry_service::{Backoff, Registration, RegistrationOptions, RegistrationStatus};
use std::sync::Arc;
use std::time::Duration;

const TTL: Duration = Duration::from_secs(4);

/// A registration granted at 0 s (alive until 4 s unless renewed), its client cut from 0.7 s
/// for `cut`: whether it kept its first lease, checked three TTLs later.
async fn cut_for(cut: Duration) -> (LeaseId, RegistrationStatus) {
    let server = MemoryRegistry::new();
    let client: Arc<dyn Registry> = Arc::new(server.client("app"));
    let options = RegistrationOptions::default()
        .ttl(TTL)
        .backoff(Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(2),
        ))
        .request_timeout(Duration::from_secs(1))
        .seed(11);
    let registration = Registration::start(client, hello("a"), options)
        .await
        .unwrap();
    let lease = registration.lease().expect("registered");
    settle(Duration::from_millis(700)).await;
    server.link("app").partition();
    settle(cut).await;
    server.link("app").heal();
    settle(TTL * 3).await;
    (lease, registration.status())
}

#[tokio::test(start_paused = true)]
#[ignore = "open registrar defect: a failed keep-alive is retried only a whole TTL/3 later, so \
            after two failed rounds the third lands on the lease's deadline and the lease is \
            lost; un-ignore once failed keep-alives are retried sooner"]
async fn a_partition_healed_before_the_deadline_loses_no_lease() {
    // Cut from 0.7 s to 3.2 s (2.5 s, shorter than the TTL): the rounds at 1.33 s and 2.67 s
    // fail, and 0.8 s are left to renew before the deadline.
    let (lease, status) = cut_for(Duration::from_millis(2_500)).await;
    assert_eq!(
        (status.lease, status.lease_losses, status.re_registrations),
        (Some(lease), 0, 0),
        "the lease was lost although the link came back 0.8 s before its deadline: {status:?}"
    );
}

/// Cut for less, so that only the round at 1.33 s fails: the next one renews.
#[tokio::test(start_paused = true)]
async fn a_partition_over_one_round_loses_no_lease() {
    let (lease, status) = cut_for(Duration::from_millis(1_200)).await;
    assert_eq!(
        (status.lease, status.lease_losses),
        (Some(lease), 0),
        "{status:?}"
    );
}
