//! W9-W10: revision accounting, and reads outside the kept history.

use super::Ctx;
use crate::contract::sequence::UNKNOWN_LEASE;
use crate::failure::{ensure_eq, Check};
use registry_api::{Error, EventKind, InvalidArgument, ListOptions, Revision, WatchOptions};

/// W9: a read below the compact revision fails with it; at it, works; above the current
/// revision, fails as a future revision; at revision 0, is invalid.
pub(crate) async fn reads_outside_history_fail(cx: &mut Ctx<'_>) -> Check {
    let first = cx.revision().await?.next();
    for i in 0..5 {
        cx.put(&format!("k{i}"), "v", None).await?;
    }
    let at = Revision(first.0 + 2);
    cx.compact(at).await?;
    let current = cx.revision().await?;
    let prefix = cx.key("");
    let list = |r: Revision| cx.registry.list(&prefix, ListOptions::at(r));
    cx.expect_err(
        "W9: list below the compact revision",
        list(Revision(at.0 - 1)).await,
        |e| matches!(e, Error::Compacted { compact_revision } if *compact_revision == at),
        &format!("Compacted {{ compact_revision: {at} }}"),
    )?;
    let future = current.next();
    cx.expect_err(
        "W9: list above the current revision",
        list(future).await,
        |e| matches!(e, Error::FutureRevision { requested, .. } if *requested == future),
        &format!("FutureRevision {{ requested: {future} }}"),
    )?;
    cx.expect_err(
        "list at revision 0",
        list(Revision(0)).await,
        |e| matches!(e, Error::InvalidArgument(InvalidArgument::Revision(0))),
        "InvalidArgument(Revision(0))",
    )?;
    for r in [at, current] {
        let got = list(r)
            .await
            .map_err(|e| format!("list at {r} failed: {e}"))?;
        let want = cx.model.list(&prefix, Some(r)).map_err(|e| e.to_string())?;
        ensure_eq!(
            cx.norm.kvs(&got.kvs),
            cx.norm.kvs(&want.kvs),
            "W9: list at revision {r} (compacted at {at})"
        );
    }
    ensure_eq!(
        cx.revision().await?,
        current,
        "W10: failed reads used a revision"
    );
    Ok(())
}

/// W10: a write adds exactly one; a no-op delete, grants, keep-alives, time-to-live, revoking
/// an empty lease, compaction and failed calls add nothing.
pub(crate) async fn accounting(cx: &mut Ctx<'_>) -> Check {
    let mut rev = cx.revision().await?;
    macro_rules! adds {
        ($n:expr, $what:expr, $op:expr) => {{
            let _ = $op;
            let now = cx.revision().await?;
            ensure_eq!(now.0 - rev.0, $n, "W10: revisions added by {}", $what);
            rev = now;
        }};
    }
    adds!(1, "a put", cx.put("a", "1", None).await?);
    adds!(1, "a put of the same value", cx.put("a", "1", None).await?);
    adds!(0, "deleting a missing key", cx.delete("missing").await?);
    adds!(
        0,
        "a prefix delete matching nothing",
        cx.delete_prefix("none/").await?
    );
    let lease = cx.grant(cx.caps.min_ttl.max(60)).await?;
    adds!(0, "a grant", ());
    adds!(0, "a keep-alive", cx.keep_alive(lease.id).await?);
    adds!(0, "a time-to-live", cx.time_to_live(lease.id).await?);
    adds!(
        0,
        "revoking a lease with no keys",
        cx.revoke(lease.id).await?
    );
    adds!(
        0,
        "a put with a revoked lease",
        cx.try_put("b", b"x", Some(lease.id)).await?
    );
    adds!(
        0,
        "a put with an unknown lease",
        cx.try_put("b", b"x", Some(UNKNOWN_LEASE)).await?
    );
    let lease = cx.grant(cx.caps.min_ttl.max(60)).await?;
    for key in ["l/0", "l/1", "l/2"] {
        adds!(
            1,
            "a put with a lease",
            cx.put(key, "x", Some(lease.id)).await?
        );
    }
    adds!(
        1,
        "revoking a lease with three keys",
        cx.revoke(lease.id).await?
    );
    adds!(1, "a put", cx.put("p/0", "x", None).await?);
    adds!(1, "a put", cx.put("p/1", "x", None).await?);
    adds!(
        1,
        "a prefix delete of two keys",
        cx.delete_prefix("p/").await?
    );
    adds!(0, "a compaction", cx.compact(rev).await?);
    adds!(1, "a delete", cx.delete("a").await?);
    let _ = rev;
    Ok(())
}

/// L5 and W10: revoking a lease with N keys deletes all N in one revision, in key order, and
/// the revoke returns that revision.
pub(crate) async fn revoke_is_one_revision(cx: &mut Ctx<'_>) -> Check {
    let lease = cx.grant(cx.caps.min_ttl.max(60)).await?;
    let keep = cx.grant(cx.caps.min_ttl.max(60)).await?;
    let start = cx.revision().await?.next();
    let mut w = cx.watch("", WatchOptions::from_revision(start)).await?;
    for key in ["s/c", "s/a", "s/b", "s/d"] {
        cx.put(key, "x", Some(lease.id)).await?;
    }
    cx.put("other", "x", Some(keep.id)).await?;
    let revoked = cx.revoke(lease.id).await?.map_err(|e| e.to_string())?;
    let got = cx.expect_watch(&mut w, "", start, false, None).await?;
    let last = got.last().ok_or("no events")?;
    ensure_eq!(last.revision, revoked, "L5: the revoke's revision");
    let deleted: Vec<String> = last
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Delete)
        .map(|e| e.kv.key_str().into_owned())
        .collect();
    let want: Vec<String> = ["s/a", "s/b", "s/c", "s/d"]
        .iter()
        .map(|k| String::from_utf8_lossy(&cx.key(k)).into_owned())
        .collect();
    ensure_eq!(
        deleted,
        want,
        "L5: keys deleted by the revoke, in key order"
    );
    ensure_eq!(
        cx.exists("other").await?,
        true,
        "L5: a key of another lease survives"
    );
    Ok(())
}
