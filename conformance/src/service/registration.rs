//! Registration scenarios: visibility while alive, expiry timed from the last keep-alive, graceful
//! removal, a lost lease replaced, a deleted or overwritten key put back, bad input refused, and
//! a lease declared lost one TTL after the last good keep-alive.

use super::ctx::{drain, ServiceCtx, SERVICE};
use crate::failure::{ensure, ensure_eq, Check};
use registry_api::PutOptions;
use registry_service::{DiscoveryEvent, Metadata, Registration, RegistrationState};
use std::time::Duration;
use tokio::time::Instant;

/// A registered instance is seen at once, and stays, on the same lease, for as long as its
/// process lives: well past its TTL (a keep-alive that does not renew is caught here).
pub(crate) async fn live_registration_is_seen_and_stays(cx: &mut ServiceCtx<'_>) -> Check {
    let (discovery, mut events, registration) = cx.registered_and_seen("cache", "app", "a").await?;
    let a = ServiceCtx::instance("a");
    let lease = registration
        .lease()
        .ok_or("a started registration has no lease")?;
    ensure!(
        matches!(registration.state(), RegistrationState::Registered { lease: l, .. } if l == lease),
        "state after start: {:?}",
        registration.state()
    );
    ensure_eq!(
        cx.truth().await?,
        vec![a.clone()],
        "the truth after registering"
    );

    // Past one TTL and the server's lateness, the instance must still be there.
    cx.sleep(cx.ttl() + cx.caps.expiry_lateness + cx.ttl() / 2)
        .await;
    ensure_eq!(drain(&mut events), vec![], "events while the process lives");
    ensure_eq!(
        registration.lease(),
        Some(lease),
        "the registration's lease while alive"
    );
    let kv = cx
        .stored("a")
        .await?
        .ok_or("the key of a live instance is gone")?;
    ensure_eq!(kv.lease, Some(lease), "the lease of the stored key");
    ensure_eq!(discovery.get("a"), Some(a), "the cached instance");
    Ok(())
}

/// A process that dies without deregistering leaves its instance until its lease expires: one
/// TTL after its last keep-alive was sent, exactly on virtual time, within the server's
/// lateness on real time. Every cache then removes it.
pub(crate) async fn crashed_instance_expires_one_ttl_after_its_last_keep_alive(
    cx: &mut ServiceCtx<'_>,
) -> Check {
    let (discovery, mut events, registration) = cx.registered_and_seen("cache", "app", "a").await?;

    // Die between two keep-alives (they go every TTL/3).
    cx.sleep(cx.ttl() * 5 / 6).await;
    let lease = registration.lease().ok_or("no lease before the crash")?;
    registration.abandon();
    let renewal = cx.last_renewal("app", lease).await?;
    let earliest = renewal.sent + cx.ttl() - cx.early();
    let latest = renewal.answered + cx.ttl() + cx.caps.expiry_lateness + cx.allowance();

    let bound = latest.saturating_duration_since(Instant::now());
    let (removed, _) = cx
        .next_event(&mut events, bound, "the crashed instance's removal")
        .await?;
    let at = Instant::now();
    ensure_eq!(
        removed,
        DiscoveryEvent::Removed(ServiceCtx::instance("a")),
        "the event after the crash"
    );
    ensure!(
        at >= earliest,
        "removed {:?} before its lease was due (one TTL after the last keep-alive)",
        earliest - at
    );
    ensure!(
        at <= latest,
        "removed {:?} after the deadline plus the declared lateness",
        at - latest
    );
    ensure_eq!(cx.truth().await?, vec![], "the truth after expiry");
    ensure!(
        !cx.lease_alive(lease).await?,
        "the expired lease is still listed"
    );
    ensure!(
        discovery.get("a").is_none(),
        "the cache still holds the crashed instance"
    );
    Ok(())
}

/// Deregistering (or dropping the handle) revokes the lease: the key is gone when the call
/// returns, and caches remove the instance at once.
pub(crate) async fn deregistration_removes_the_instance_at_once(cx: &mut ServiceCtx<'_>) -> Check {
    let cache = cx.client("cache").await;
    let app = cx.client("app").await;
    let discovery = cx.discover(&cache).await?;
    let a = ServiceCtx::instance("a");
    let b = ServiceCtx::instance("b");
    let registration = cx.register(&app, a.clone()).await?;
    let dropped = cx.register(&app, b.clone()).await?;
    cx.eventually(cx.allowance(), "both seen", || async {
        ensure_eq!(discovery.len(), 2, "cached instances");
        Ok(())
    })
    .await?;
    cx.sleep(cx.ttl() / 2).await;
    let mut events = discovery.subscribe();
    ensure_eq!(
        drain(&mut events),
        vec![
            DiscoveryEvent::Added(a.clone()),
            DiscoveryEvent::Added(b.clone())
        ],
        "a new subscriber's first events"
    );
    let lease = registration.lease().ok_or("no lease")?;

    registration
        .deregister()
        .await
        .map_err(|e| format!("deregister failed: {e}"))?;
    ensure_eq!(
        registration.state(),
        RegistrationState::Deregistered,
        "state"
    );
    ensure!(
        cx.stored("a").await?.is_none(),
        "the key outlived deregister()"
    );
    ensure!(
        !cx.lease_alive(lease).await?,
        "the lease outlived deregister()"
    );
    let (removed, took) = cx
        .next_event(&mut events, cx.allowance(), "the removal")
        .await?;
    ensure_eq!(
        removed,
        DiscoveryEvent::Removed(a),
        "the event after deregister()"
    );
    ensure!(
        took <= cx.allowance(),
        "removal seen {took:?} after deregister()"
    );
    registration
        .deregister()
        .await
        .map_err(|e| format!("a second deregister failed: {e}"))?;

    // Dropping the handle deregisters too.
    let b_lease = dropped.lease().ok_or("no lease")?;
    let mut state = dropped.subscribe();
    drop(dropped);
    cx.state(
        &mut state,
        cx.allowance(),
        "deregistered by the drop",
        |s| *s == RegistrationState::Deregistered,
    )
    .await?;
    ensure!(
        cx.stored("b").await?.is_none(),
        "the key outlived the dropped handle"
    );
    ensure!(
        !cx.lease_alive(b_lease).await?,
        "the lease outlived the dropped handle"
    );
    let (removed, _) = cx
        .next_event(
            &mut events,
            cx.allowance(),
            "the dropped instance's removal",
        )
        .await?;
    ensure_eq!(
        removed,
        DiscoveryEvent::Removed(b),
        "the event after the drop"
    );
    ensure_eq!(cx.truth().await?, vec![], "the truth at the end");
    Ok(())
}

/// Someone revokes the lease while the process lives: the registration notices at its next
/// keep-alive and registers again on a new lease within one backoff wait, with the metadata it
/// was last given, not the metadata it started with.
pub(crate) async fn revoked_lease_is_replaced_with_the_latest_metadata(
    cx: &mut ServiceCtx<'_>,
) -> Check {
    revoked_lease_is_replaced(cx, true).await
}

/// The scenario above, with or without its wait for the registration's answer: without it, a
/// timed simulator shows at some seed that the cache can see the re-registration first (the
/// race etcd showed; see `races.rs`).
pub(crate) async fn revoked_lease_is_replaced(
    cx: &mut ServiceCtx<'_>,
    wait_registered: bool,
) -> Check {
    let (discovery, mut events, registration) = cx.registered_and_seen("cache", "app", "a").await?;
    let a = ServiceCtx::instance("a");

    let metadata = Metadata::default().with_version("2.0").with_weight(5);
    registration
        .update_metadata(metadata.clone())
        .await
        .map_err(|e| format!("update_metadata failed: {e}"))?;
    let updated = a.clone().with_metadata(metadata);
    let (event, _) = cx
        .next_event(&mut events, cx.allowance(), "the update")
        .await?;
    ensure_eq!(
        event,
        DiscoveryEvent::Updated {
            old: a,
            new: updated.clone()
        },
        "the event after update_metadata"
    );

    let old = registration.lease().ok_or("no lease")?;
    cx.operator()
        .await
        .lease_revoke(old)
        .await
        .map_err(|e| format!("the operator's revoke failed: {e}"))?;
    let (removed, _) = cx
        .next_event(&mut events, cx.allowance(), "the removal")
        .await?;
    ensure_eq!(
        removed,
        DiscoveryEvent::Removed(updated.clone()),
        "after the revoke"
    );
    let bound = cx.ttl() / 3 + cx.backoff().max + cx.allowance() * 2;
    let (added, _) = cx
        .next_event(&mut events, bound, "the re-registration")
        .await?;
    ensure_eq!(
        added,
        DiscoveryEvent::Added(updated.clone()),
        "after re-registering"
    );
    // The cache can show the put before the registration has its answer: wait for that.
    let lease = if wait_registered {
        registration
            .wait_registered(cx.allowance())
            .await
            .map_err(|e| format!("no lease after re-registering: {e}"))?
    } else {
        registration
            .lease()
            .ok_or("no lease after re-registering")?
    };
    ensure!(lease != old, "re-registered on the revoked lease {old:?}");
    let kv = cx.stored("a").await?.ok_or("the key is not back")?;
    ensure_eq!(kv.lease, Some(lease), "the lease of the key put back");
    ensure_eq!(discovery.get("a"), Some(updated), "the cached instance");
    Ok(())
}

/// The server expires the lease of a live process: the registration sees the loss at its next
/// keep-alive and is registered again, on a new lease, within one backoff wait.
pub(crate) async fn lease_expired_by_the_server_is_replaced_within_the_backoff_bound(
    cx: &mut ServiceCtx<'_>,
) -> Check {
    if !cx.supports(cx.caps.expire_lease, "expiring a lease on demand") {
        return Ok(());
    }
    let app = cx.client("app").await;
    let registration = cx.register(&app, ServiceCtx::instance("a")).await?;
    let old = registration.lease().ok_or("no lease")?;
    let mut states = registration.subscribe();
    cx.sleep(Duration::from_millis(500)).await;

    let expired_at = Instant::now();
    cx.expire_lease(old).await;
    ensure!(
        cx.stored("a").await?.is_none(),
        "the key outlived its expired lease"
    );
    let bound = cx.ttl() / 3 + cx.backoff().max + cx.allowance();
    let registered = cx
        .state(
            &mut states,
            bound,
            "registered again after the expiry",
            |s| matches!(s, RegistrationState::Registered { lease, .. } if *lease != old),
        )
        .await?;
    let RegistrationState::Registered { lease, revision } = registered else {
        return Err(format!("unexpected state {registered:?}"));
    };
    let took = expired_at.elapsed();
    ensure!(took <= bound, "registered again {took:?} after the expiry");
    let kv = cx.stored("a").await?.ok_or("the key is not back")?;
    ensure_eq!(kv.lease, Some(lease), "the lease of the key put back");
    ensure_eq!(kv.mod_revision, revision, "the revision the state reports");
    Ok(())
}

/// An operator deletes the key, or overwrites it without a lease: the next keep-alive round puts
/// it back, as it was, on the same lease.
pub(crate) async fn deleted_or_overwritten_key_is_put_back_on_the_same_lease(
    cx: &mut ServiceCtx<'_>,
) -> Check {
    let app = cx.client("app").await;
    let operator = cx.operator().await;
    let a = ServiceCtx::instance("a");
    let registration = cx.register(&app, a.clone()).await?;
    let lease = registration.lease().ok_or("no lease")?;
    cx.sleep(Duration::from_millis(300)).await;
    let bound = cx.ttl() / 3 + cx.allowance();
    let put_back = || async {
        let kv = cx.stored("a").await?.ok_or("the key is missing")?;
        ensure_eq!(kv.lease, Some(lease), "the key's lease");
        ensure!(kv.value == a.to_json(), "the key holds another value");
        Ok(())
    };

    operator
        .delete(&ServiceCtx::key("a"))
        .await
        .map_err(|e| format!("the operator's delete failed: {e}"))?;
    cx.eventually(bound, "the deleted key put back", put_back)
        .await?;
    ensure_eq!(
        registration.lease(),
        Some(lease),
        "the registration's lease"
    );

    operator
        .put(&ServiceCtx::key("a"), b"hijacked", PutOptions::default())
        .await
        .map_err(|e| format!("the operator's put failed: {e}"))?;
    cx.eventually(bound, "the overwritten key restored", put_back)
        .await?;
    ensure_eq!(
        registration.lease(),
        Some(lease),
        "the registration's lease"
    );
    Ok(())
}

/// Bad options, names and oversized metadata fail with typed errors and write nothing.
pub(crate) async fn bad_input_fails_typed_and_writes_nothing(cx: &mut ServiceCtx<'_>) -> Check {
    use registry_service::Error;
    let app = cx.client("app").await;
    let leases_before = cx
        .operator()
        .await
        .leases()
        .await
        .map_err(|e| e.to_string())?;
    let start = |instance, options| Registration::start(app.clone(), instance, options);
    let a = ServiceCtx::instance("a");
    let options = cx.registration_options();

    let zero_ttl = start(a.clone(), options.clone().ttl(Duration::ZERO)).await;
    ensure!(
        matches!(zero_ttl, Err(Error::InvalidOption(_))),
        "a zero TTL: {:?}",
        zero_ttl.map(|_| ())
    );
    let mut bad_service = a.clone();
    bad_service.service = format!("{SERVICE}/x");
    let bad = start(bad_service, options.clone()).await;
    ensure!(
        matches!(&bad, Err(Error::ServiceName(_))),
        "a service name with '/': {:?}",
        bad.map(|_| ())
    );
    let bad = start(ServiceCtx::instance(""), options.clone()).await;
    ensure!(
        matches!(&bad, Err(Error::InstanceId(s)) if s.is_empty()),
        "an empty instance id: {:?}",
        bad.map(|_| ())
    );
    let bad = start(a.clone(), options.clone().namespace("")).await;
    ensure!(
        matches!(&bad, Err(Error::InvalidOption(_))),
        "an empty namespace: {:?}",
        bad.map(|_| ())
    );
    let huge = Metadata::default().with_label("blob", "x".repeat(2 * 1024 * 1024));
    let bad = start(a.clone().with_metadata(huge.clone()), options.clone()).await;
    ensure!(
        matches!(
            bad.as_ref().map_err(Error::as_registry),
            Err(Some(registry_api::Error::TooLarge { .. }))
        ),
        "2 MiB of metadata: {:?}",
        bad.map(|_| ())
    );
    ensure_eq!(cx.truth().await?, vec![], "the truth after refused starts");
    let leases_after = cx
        .operator()
        .await
        .leases()
        .await
        .map_err(|e| e.to_string())?;
    let new: Vec<_> = leases_after
        .iter()
        .filter(|l| !leases_before.contains(l))
        .collect();
    ensure_eq!(
        new,
        Vec::<&registry_api::LeaseId>::new(),
        "leases granted by refused starts"
    );

    // Oversized metadata on a live registration changes nothing.
    let registration = start(a.clone(), options).await.map_err(|e| e.to_string())?;
    let bad = registration.update_metadata(huge).await;
    ensure!(
        matches!(
            bad.as_ref().map_err(Error::as_registry),
            Err(Some(registry_api::Error::TooLarge { .. }))
        ),
        "updating to 2 MiB of metadata: {bad:?}"
    );
    ensure_eq!(
        cx.truth().await?,
        vec![a],
        "the truth after a refused update"
    );
    Ok(())
}

/// With its link cut, a registration declares its lease lost one TTL after the last keep-alive
/// that succeeded was sent: not earlier (the lease may still live) and not a round later.
pub(crate) async fn lease_is_declared_lost_one_ttl_after_the_last_good_keep_alive(
    cx: &mut ServiceCtx<'_>,
) -> Check {
    if !cx.supports(cx.caps.partition, "cutting one client's link") {
        return Ok(());
    }
    let app = cx.client("app").await;
    let registration = cx.register(&app, ServiceCtx::instance("a")).await?;
    let lease = registration.lease().ok_or("no lease")?;
    let mut states = registration.subscribe();
    cx.sleep(cx.ttl() * 5 / 6).await;
    cx.partition("app", true).await;
    let renewal = cx.last_renewal("app", lease).await?;
    let earliest = renewal.sent + cx.ttl() - cx.early();
    let latest = renewal.answered + cx.ttl() + cx.allowance();
    let bound = latest.saturating_duration_since(Instant::now());
    let what = "the lease declared lost within one TTL of the last good keep-alive";
    cx.state(&mut states, bound, what, |s| {
        *s == RegistrationState::LeaseLost
    })
    .await?;
    let at = Instant::now();
    ensure!(
        at >= earliest,
        "declared lost {:?} before one TTL had passed since the last good keep-alive",
        earliest - at
    );
    ensure!(at <= latest, "declared lost {:?} late", at - latest);
    cx.partition("app", false).await;
    Ok(())
}
