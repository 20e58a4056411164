//! The window between a lease's deadline and its declared expiry lateness: the lease is gone
//! for every call from its deadline on, even while its keys linger.

use super::Ctx;
use crate::contract::backend::Time;
use crate::failure::{ensure, Check};
use registry_api::{Error, LeaseId, Registry};
use std::time::{Duration, Instant};

/// L4 from the deadline on: no keep-alive (single or in a batch) succeeds once a lease's TTL
/// has run out, even before the backend has deleted its keys (etcd's keep-alive waits for the
/// revoke and answers "not found"; it never revives the lease); time-to-live reports it gone or
/// with nothing left; its keys may linger until the deadline plus the declared lateness, and
/// then all go in one revision. On virtual time the case looks at the deadline itself, halfway
/// through the lateness and just before its end; on real time just after the deadline.
pub(crate) async fn lease_past_its_deadline_is_gone_though_its_keys_may_linger(
    cx: &mut Ctx<'_>,
) -> Check {
    let lease = cx.grant(cx.caps.min_ttl).await?;
    let granted_at = Instant::now();
    for key in ["w/1", "w/0"] {
        cx.put(key, "x", Some(lease.id)).await?;
    }
    let ttl = Duration::from_secs(u64::try_from(lease.ttl).unwrap_or(0));
    let lateness = cx.caps.expiry_lateness;
    match cx.caps.time {
        Time::Virtual => {
            cx.pass(ttl).await;
            let mut looked = Duration::ZERO;
            let mut offsets = vec![Duration::ZERO];
            if lateness > Duration::from_millis(1) {
                offsets.push(lateness / 2);
                offsets.push(lateness - Duration::from_millis(1));
            }
            for at in offsets {
                cx.pass(at - looked).await;
                looked = at;
                gone_for_calls(cx, lease.id, &format!("{at:?} past its deadline")).await?;
            }
            cx.pass(lateness - looked).await;
        }
        Time::Real => {
            // The server's deadline is at most one TTL after the grant's answer came.
            let after = (granted_at + ttl + Duration::from_millis(100))
                .saturating_duration_since(Instant::now());
            tokio::time::sleep(after).await;
            gone_for_calls(cx, lease.id, "just past its deadline").await?;
            let bound = granted_at + ttl + lateness + Duration::from_millis(150);
            cx.wait_gone("w/0", bound).await?;
            // The model applies the expiry as the revoke the server did.
            cx.model.lease_revoke(lease.id).map_err(|e| e.to_string())?;
        }
    }
    ensure!(
        !cx.exists("w/0").await? && !cx.exists("w/1").await?,
        "L3: keys outlived their lease's deadline plus the declared lateness of {lateness:?}"
    );
    let listed = cx.leases().await?;
    ensure!(
        !listed.contains(&lease.id),
        "L4: an expired lease is still listed after its deadline plus the declared lateness"
    );
    cx.expect_err(
        "L4: time-to-live of an expired lease after its keys went",
        cx.registry.lease_time_to_live(lease.id).await,
        |e| matches!(e, Error::LeaseNotFound(id) if *id == lease.id),
        "LeaseNotFound",
    )
}

/// Every lease call sees `id` gone, `when` (a description of the moment); its keys are there
/// both or neither.
async fn gone_for_calls(cx: &mut Ctx<'_>, id: LeaseId, when: &str) -> Check {
    let not_found = |e: &Error| matches!(e, Error::LeaseNotFound(x) if *x == id);
    cx.expect_err(
        &format!("L4: a keep-alive of a lease {when}: no keep-alive revives an expired lease"),
        cx.registry.lease_keep_alive(id).await,
        not_found,
        "LeaseNotFound",
    )?;
    let batch = cx
        .registry
        .lease_keep_alive_many(&[id])
        .await
        .map_err(|e| format!("a batch of one expired lease failed as a whole: {e}"))?;
    match batch.as_slice() {
        [Err(e)] if not_found(e) => {}
        other => {
            return Err(format!(
                "L4: a keep-alive batch with a lease {when} answered {other:?}, expected [Err(LeaseNotFound)]"
            ))
        }
    }
    match cx.registry.lease_time_to_live(id).await {
        Err(e) if not_found(&e) => {}
        Ok(t) if t.ttl <= 0 => {}
        other => {
            return Err(format!(
                "L4: time-to-live of a lease {when} answered {other:?}, expected LeaseNotFound or nothing left"
            ))
        }
    }
    let (a, b) = (cx.exists("w/0").await?, cx.exists("w/1").await?);
    ensure!(
        a == b,
        "L5: one key of a lease {when} is gone and the other is not: an expiry deletes them in one revision"
    );
    Ok(())
}
