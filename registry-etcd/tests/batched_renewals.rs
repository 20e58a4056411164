//! The registrar's keep-alive batches on a real etcd, on real time: registrations started one
//! after another fall into step and are renewed in a few calls per round, and a lease revoked
//! behind the registrar's back costs only its own registration.

mod common;

use registry_api::wrap::{CallKind, Counting};
use registry_api::Registry;
use registry_service::{Registration, RegistrationOptions, ServiceInstance};
use std::sync::Arc;
use std::time::Duration;

const REGISTRATIONS: usize = 100;
const TTL: Duration = Duration::from_secs(6);

#[tokio::test]
async fn registrations_started_one_after_another_are_renewed_in_batches() {
    let etcd = common::registry("batched-renewals").await;
    let counts = Counting::new();
    let registry: Arc<dyn Registry> = Arc::new(counts.wrap(etcd.clone()));
    let options = RegistrationOptions::default().ttl(TTL);
    let mut registrations = Vec::new();
    for n in 0..REGISTRATIONS {
        let instance = ServiceInstance::new("batched", format!("i{n}"), "127.0.0.1:9");
        registrations.push(
            Registration::start(registry.clone(), instance, options.clone())
                .await
                .expect("registered"),
        );
    }
    // The first round (TTL/3 after each start) puts them in step; count the two after it.
    tokio::time::sleep(TTL / 3 + TTL / 12).await;
    counts.reset();
    tokio::time::sleep(TTL * 2 / 3).await;
    let counted = counts.snapshot();
    let (calls, leases) = (
        counted.calls(CallKind::LeaseKeepAlive),
        counted.get(CallKind::LeaseKeepAlive),
    );
    println!("two rounds after the first: {calls} keep-alive calls renewed {leases} leases");
    assert!(
        leases >= (REGISTRATIONS * 3 / 2) as u64,
        "{leases} renewals in two rounds of {REGISTRATIONS} leases"
    );
    assert!(
        calls * 5 <= leases,
        "{calls} keep-alive calls for {leases} renewals: not batched"
    );

    let gone = registrations[42].lease().expect("a lease");
    etcd.lease_revoke(gone).await.expect("revoked");
    // The registrar learns of it from its watch (the key went with the lease) or from the next
    // round's answer, and registers again on a new lease.
    let replaced = tokio::time::timeout(TTL, async {
        while registrations[42].lease().is_none_or(|lease| lease == gone) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        replaced.is_ok(),
        "registration 42 still on its revoked lease"
    );
    for (n, registration) in registrations.iter().enumerate() {
        if n != 42 {
            assert_eq!(registration.status().lease_losses, 0, "registration {n}");
        }
    }
}
