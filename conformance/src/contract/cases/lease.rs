//! L1-L5: grants, expiry on the backend's clock, keep-alives, dead and unknown leases.

use super::Ctx;
use crate::contract::backend::Time;
use crate::contract::sequence::UNKNOWN_LEASE;
use crate::failure::{ensure, ensure_eq, Check};
use registry_api::limits::MAX_KEEP_ALIVE_BATCH;
use registry_api::{Error, InvalidArgument, LeaseId, Revision, WatchOptions};
use std::time::{Duration, Instant};

const POLL_SLACK: Duration = Duration::from_millis(150);

/// L1: the granted TTL is at least the one asked, raised to the declared minimum.
pub(crate) async fn grant_respects_minimum(cx: &mut Ctx<'_>) -> Check {
    let min = cx.caps.min_ttl;
    for ask in [i64::MIN, -60, -1, 0, 1, min, min + 1, 10 * min, 3600] {
        let got = cx.grant(ask).await?;
        ensure!(
            got.ttl >= ask && got.ttl >= min,
            "L1: asked {ask}, granted {}",
            got.ttl
        );
        // As etcd 3.5: zero and below are no error, they get the minimum.
        ensure!(
            ask > 0 || got.ttl == min,
            "L1: asked {ask}, granted {} instead of the minimum {min}",
            got.ttl
        );
        let ttl = cx.time_to_live(got.id).await?.map_err(|e| e.to_string())?;
        ensure!(
            ttl.ttl <= ttl.granted_ttl && ttl.ttl >= 0,
            "time_to_live reports {} s left of {}",
            ttl.ttl,
            ttl.granted_ttl
        );
        cx.revoke(got.id).await?.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// On real time: waits for `rel` (on lease `id`, whose clock started at `since`) to go, within
/// the TTL plus the declared lateness, then applies the expiry to the model.
async fn expires_on_time(
    cx: &mut Ctx<'_>,
    rel: &str,
    id: LeaseId,
    ttl: i64,
    since: Instant,
) -> Check {
    let bound = Duration::from_secs(ttl as u64) + cx.caps.expiry_lateness + POLL_SLACK;
    cx.wait_gone(rel, since + bound).await?;
    // An expiry is a revoke done by the server: the model applies it now.
    cx.model.lease_revoke(id).map_err(|e| e.to_string())?;
    Ok(())
}

/// L3: a key is never gone before its lease's TTL, and is gone within the declared lateness
/// after it; all the lease's keys go in one revision.
pub(crate) async fn expiry_is_bounded(cx: &mut Ctx<'_>) -> Check {
    let start = cx.revision().await?.next();
    let mut w = cx.watch("", WatchOptions::from_revision(start)).await?;
    let asked = Instant::now();
    let lease = cx.grant(cx.caps.min_ttl).await?;
    let granted_at = Instant::now();
    for key in ["e/1", "e/0"] {
        cx.put(key, "x", Some(lease.id)).await?;
    }
    let ttl = Duration::from_secs(lease.ttl as u64);
    match cx.caps.time {
        Time::Virtual => {
            cx.pass(ttl - Duration::from_millis(1)).await;
            ensure!(
                cx.exists("e/0").await?,
                "L3: a key went before its lease's TTL"
            );
            cx.pass(Duration::from_millis(1) + cx.caps.expiry_lateness)
                .await;
            ensure!(
                !cx.exists("e/0").await? && !cx.exists("e/1").await?,
                "L3: keys outlived their TTL plus the declared lateness of {:?}",
                cx.caps.expiry_lateness
            );
        }
        Time::Real => {
            let early = (asked + ttl).saturating_duration_since(Instant::now());
            tokio::time::sleep(early.saturating_sub(Duration::from_millis(300))).await;
            let what = "L3: a key went before its lease's TTL";
            cx.alive_until("e/0", asked + ttl, what).await?;
            expires_on_time(cx, "e/0", lease.id, lease.ttl, granted_at).await?;
            ensure!(
                !cx.exists("e/1").await?,
                "L3: one key of an expired lease survived"
            );
        }
    }
    let got = cx.expect_watch(&mut w, "", start, false, None).await?;
    let last = got.last().ok_or("no events")?;
    ensure_eq!(
        last.events.len(),
        2,
        "L3: deletes in the expiry's one revision"
    );
    cx.expect_err(
        "L4: keep-alive of an expired lease",
        cx.registry.lease_keep_alive(lease.id).await,
        |e| matches!(e, Error::LeaseNotFound(id) if *id == lease.id),
        "LeaseNotFound",
    )
}

/// L3: a keep-alive renews the lease for its whole TTL from the keep-alive.
pub(crate) async fn keep_alive_extends_life(cx: &mut Ctx<'_>) -> Check {
    let lease = cx.grant(cx.caps.min_ttl.max(3)).await?;
    let granted_at = Instant::now();
    cx.put("k", "x", Some(lease.id)).await?;
    let ttl = Duration::from_secs(lease.ttl as u64);
    match cx.caps.time {
        Time::Virtual => {
            cx.pass(ttl - Duration::from_secs(1)).await;
            ensure_eq!(
                cx.keep_alive(lease.id).await?.ok(),
                Some(lease.ttl),
                "L3: keep-alive's TTL"
            );
            // Past the original deadline: alive thanks to the keep-alive.
            cx.pass(ttl - Duration::from_millis(1)).await;
            ensure!(
                cx.exists("k").await?,
                "L3: a kept-alive key went at its first deadline"
            );
            let left = cx
                .time_to_live(lease.id)
                .await?
                .map_err(|e| e.to_string())?;
            ensure!(
                left.ttl <= 1,
                "L3: {} s left just before the renewed deadline",
                left.ttl
            );
            cx.pass(Duration::from_millis(1) + cx.caps.expiry_lateness)
                .await;
            ensure!(!cx.exists("k").await?, "L3: a key outlived its renewed TTL");
        }
        Time::Real => {
            let lateness = cx.caps.expiry_lateness;
            tokio::time::sleep(lateness + Duration::from_millis(500)).await;
            let before = cx
                .time_to_live(lease.id)
                .await?
                .map_err(|e| e.to_string())?;
            let kept_at = Instant::now();
            let renewed = cx.keep_alive(lease.id).await?.map_err(|e| e.to_string())?;
            let renewed_at = Instant::now();
            ensure_eq!(renewed, lease.ttl, "L3: keep-alive's TTL");
            let after = cx
                .time_to_live(lease.id)
                .await?
                .map_err(|e| e.to_string())?;
            // Whole seconds that may have passed since the keep-alive, on a slow machine.
            let since = kept_at.elapsed().as_secs() as i64;
            ensure!(
                after.ttl >= lease.ttl - 1 - since && after.ttl <= lease.ttl,
                "L3: time-to-live reports {} s left (it had {} before) just after a keep-alive of a {} s lease",
                after.ttl,
                before.ttl,
                lease.ttl
            );
            // Past the first deadline and its lateness, before the renewed one.
            let check_at = granted_at + ttl + lateness + Duration::from_millis(100);
            tokio::time::sleep(check_at.saturating_duration_since(Instant::now())).await;
            let what = "L3: a kept-alive key went at its first deadline";
            cx.alive_until("k", kept_at + ttl, what).await?;
            expires_on_time(cx, "k", lease.id, lease.ttl, renewed_at).await?;
        }
    }
    Ok(())
}

/// L3 for batches: `lease_keep_alive_many` answers every id in the order sent, each as
/// `lease_keep_alive` would (a revoked, unknown or invalid id fails alone), renews every live
/// lease in it for its whole TTL and uses no revision; a batch over the limit fails as a whole
/// and renews nothing.
pub(crate) async fn keep_alive_many_renews_each_live_lease_and_answers_in_order(
    cx: &mut Ctx<'_>,
) -> Check {
    // Different TTLs, so that an answer given for another lease of the batch shows; on real
    // time long enough to outlast the case's waits on a slow machine.
    let base = match cx.caps.time {
        Time::Virtual => cx.caps.min_ttl.max(3),
        Time::Real => cx.caps.min_ttl.max(10),
    };
    let a = cx.grant(base).await?;
    let b = cx.grant(base + 2).await?;
    let c = cx.grant(base + 4).await?;
    // Sent only in the refused batch: it must keep its first deadline.
    let d = cx.grant(base + 2).await?;
    for (rel, lease) in [("a", &a), ("b", &b), ("c", &c), ("d", &d)] {
        cx.put(rel, "x", Some(lease.id)).await?;
    }
    cx.revoke(b.id).await?.map_err(|e| e.to_string())?;
    // Time passes first, so that a renewal shows as time given back.
    let waited = match cx.caps.time {
        Time::Virtual => Duration::from_secs(1),
        Time::Real => cx.caps.expiry_lateness + Duration::from_millis(500),
    };
    cx.pass(waited).await;

    let before = cx.revision().await?;
    let batch = [a.id, b.id, c.id, UNKNOWN_LEASE, LeaseId(0), a.id];
    let kept_at = Instant::now();
    cx.keep_alive_many(&batch)
        .await?
        .map_err(|e| format!("a batch of {} leases failed as a whole: {e}", batch.len()))?;
    for lease in [&a, &c] {
        let left = cx
            .time_to_live(lease.id)
            .await?
            .map_err(|e| e.to_string())?;
        let allowed = match cx.caps.time {
            Time::Virtual => cx.caps.ttl_reporting.allowed(secs(lease.ttl)),
            // Whole seconds that may have passed since the batch, on a slow machine.
            Time::Real => lease.ttl - 1 - kept_at.elapsed().as_secs() as i64..=lease.ttl,
        };
        ensure!(
            allowed.contains(&left.ttl),
            "L3: {} s left of a {} s lease just after a batch renewed it, expected {allowed:?} ({:?})",
            left.ttl,
            lease.ttl,
            cx.caps.ttl_reporting
        );
    }
    cx.keep_alive_many(&[])
        .await?
        .map_err(|e| format!("an empty batch failed: {e}"))?;
    let full = vec![UNKNOWN_LEASE; MAX_KEEP_ALIVE_BATCH];
    cx.keep_alive_many(&full)
        .await?
        .map_err(|e| format!("a batch of exactly {MAX_KEEP_ALIVE_BATCH} leases failed: {e}"))?;
    ensure_eq!(
        cx.revision().await?,
        before,
        "W10: keep-alive batches used a revision"
    );

    let mut oversized = vec![d.id, a.id, c.id];
    oversized.resize(MAX_KEEP_ALIVE_BATCH + 1, UNKNOWN_LEASE);
    let refused = cx.keep_alive_many(&oversized).await?;
    cx.expect_err(
        &format!("a batch of {} leases", oversized.len()),
        refused,
        |e| {
            matches!(e, Error::InvalidArgument(InvalidArgument::BatchTooLarge { len, max })
                if *len == oversized.len() && *max == MAX_KEEP_ALIVE_BATCH)
        },
        "BatchTooLarge",
    )?;
    match cx.caps.time {
        Time::Virtual => {
            let left = cx.time_to_live(d.id).await?.map_err(|e| e.to_string())?;
            let allowed = cx.caps.ttl_reporting.allowed(secs(d.ttl) - waited);
            ensure!(
                allowed.contains(&left.ttl),
                "L3: {} s left of a lease sent only in a refused batch, expected {allowed:?}",
                left.ttl
            );
            // Each key goes on its lease's deadline: a and c from the batch, d from its grant.
            let mut due = [
                ("a", waited + secs(a.ttl), "renewed by a batch"),
                ("c", waited + secs(c.ttl), "renewed by a batch"),
                ("d", secs(d.ttl), "sent only in a refused batch"),
            ];
            due.sort_by_key(|(_, deadline, _)| *deadline);
            let mut now = waited;
            for (rel, deadline, why) in due {
                if now < deadline {
                    let early = deadline - Duration::from_millis(1);
                    cx.pass(early.saturating_sub(now)).await;
                    now = now.max(early);
                    ensure!(
                        cx.exists(rel).await?,
                        "L3: the key of a lease {why} went before its deadline at {deadline:?}"
                    );
                }
                let late = deadline + cx.caps.expiry_lateness;
                cx.pass(late.saturating_sub(now)).await;
                now = now.max(late);
                ensure!(
                    !cx.exists(rel).await?,
                    "L3: the key of a lease {why} outlived its deadline at {deadline:?} plus the \
                     declared lateness of {:?}",
                    cx.caps.expiry_lateness
                );
            }
        }
        Time::Real => {
            // Nothing has had time to expire; the refused batch must not have ended anything.
            ensure!(
                cx.exists("d").await?,
                "a lease sent in a refused batch lost its key"
            );
            ensure!(
                cx.leases().await?.contains(&d.id),
                "a lease sent in a refused batch is no longer listed"
            );
        }
    }
    Ok(())
}

/// L4: keep-alive, time-to-live, revoke and put of an expired lease fail with lease-not-found
/// and write nothing.
pub(crate) async fn expired_lease_ops_fail(cx: &mut Ctx<'_>) -> Check {
    let lease = cx.grant(cx.caps.min_ttl).await?;
    let granted_at = Instant::now();
    cx.put("k", "x", Some(lease.id)).await?;
    match cx.caps.time {
        Time::Virtual => {
            cx.pass(Duration::from_secs(lease.ttl as u64) + cx.caps.expiry_lateness)
                .await
        }
        Time::Real => expires_on_time(cx, "k", lease.id, lease.ttl, granted_at).await?,
    }
    dead_lease_ops_fail(cx, lease.id, "an expired lease").await
}

/// The four lease operations on a lease that is gone: each fails with lease-not-found naming
/// it, and the revision and keys stay as they were.
async fn dead_lease_ops_fail(cx: &mut Ctx<'_>, id: LeaseId, what: &str) -> Check {
    let before = cx.revision().await?;
    let not_found = |e: &Error| matches!(e, Error::LeaseNotFound(x) if *x == id);
    let wanted = format!("LeaseNotFound({id})");
    cx.expect_err(
        &format!("L4: keep-alive of {what}"),
        cx.registry.lease_keep_alive(id).await,
        not_found,
        &wanted,
    )?;
    cx.expect_err(
        &format!("L4: time-to-live of {what}"),
        cx.registry.lease_time_to_live(id).await,
        not_found,
        &wanted,
    )?;
    cx.expect_err(
        &format!("L5: revoke of {what}"),
        cx.registry.lease_revoke(id).await,
        not_found,
        &wanted,
    )?;
    let put = cx.try_put("written", b"x", Some(id)).await?;
    cx.expect_err(&format!("L2: put with {what}"), put, not_found, &wanted)?;
    ensure!(
        !cx.exists("written").await?,
        "L2: a put with {what} wrote its key"
    );
    ensure_eq!(
        cx.revision().await?,
        before,
        "L2: calls with {what} used a revision"
    );
    let listed = cx.leases().await?;
    ensure!(
        !listed.contains(&id),
        "L4: {what} is still listed by leases()"
    );
    Ok(())
}

/// L2/L4/L5: the same for a lease never granted, and for a revoked one.
pub(crate) async fn unknown_lease_ops_fail(cx: &mut Ctx<'_>) -> Check {
    dead_lease_ops_fail(cx, UNKNOWN_LEASE, "an unknown lease").await?;
    let lease = cx.grant(cx.caps.min_ttl.max(60)).await?;
    cx.put("k", "x", Some(lease.id)).await?;
    cx.revoke(lease.id).await?.map_err(|e| e.to_string())?;
    ensure!(!cx.exists("k").await?, "L5: a revoked lease's key survived");
    dead_lease_ops_fail(cx, lease.id, "a revoked lease").await
}

/// L2: a put with another lease moves the key; a put with no lease detaches it, so it survives
/// its old lease's revoke.
pub(crate) async fn put_moves_and_detaches_keys(cx: &mut Ctx<'_>) -> Check {
    let ttl = cx.caps.min_ttl.max(60);
    let a = cx.grant(ttl).await?.id;
    let b = cx.grant(ttl).await?.id;
    cx.put("moved", "1", Some(a)).await?;
    cx.put("moved", "2", Some(b)).await?;
    cx.put("detached", "1", Some(a)).await?;
    cx.put("detached", "2", None).await?;
    cx.put("stays", "1", Some(a)).await?;
    // time_to_live compares the keys of each lease with the model's.
    cx.time_to_live(a).await?.map_err(|e| e.to_string())?;
    cx.time_to_live(b).await?.map_err(|e| e.to_string())?;
    let before = cx.revision().await?;
    let revoked: Revision = cx.revoke(a).await?.map_err(|e| e.to_string())?;
    ensure_eq!(
        revoked,
        before.next(),
        "L5: revoking a lease with one key left"
    );
    ensure!(
        !cx.exists("stays").await?,
        "L5: the revoked lease's key survived"
    );
    ensure!(
        cx.exists("detached").await?,
        "L2: a detached key went with its old lease"
    );
    ensure!(
        cx.exists("moved").await?,
        "L2: a moved key went with its old lease"
    );
    cx.revoke(b).await?.map_err(|e| e.to_string())?;
    ensure!(
        !cx.exists("moved").await?,
        "L2: a moved key survived its new lease"
    );
    Ok(())
}

fn secs(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}
