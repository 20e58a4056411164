//! Bad input: documented errors, and nothing written.

use super::Ctx;
use crate::failure::{ensure, ensure_eq, Check};
use registry_api::{Error, InvalidArgument, LeaseId, ListOptions, PutOptions, Revision};

/// Empty keys, oversized values, zero/negative/huge TTLs, lease id 0, bad compactions: each
/// fails with its documented error and changes nothing (revision, keys, leases).
pub(crate) async fn bad_input_writes_nothing(cx: &mut Ctx<'_>) -> Check {
    cx.put("existing", "v", None).await?;
    let leases_before = cx.leases().await?;
    let before = cx.revision().await?;
    let empty = |e: &Error| matches!(e, Error::InvalidArgument(InvalidArgument::EmptyKey));

    let put = cx.registry.put(b"", b"v", PutOptions::default()).await;
    cx.expect_err(
        "put of an empty key",
        put,
        empty,
        "InvalidArgument(EmptyKey)",
    )?;
    let get = cx.registry.get(b"").await;
    cx.expect_err(
        "get of an empty key",
        get,
        empty,
        "InvalidArgument(EmptyKey)",
    )?;
    let delete = cx.registry.delete(b"").await;
    cx.expect_err(
        "delete of an empty key",
        delete,
        empty,
        "InvalidArgument(EmptyKey)",
    )?;

    let key = cx.key("big");
    let limit = cx.caps.max_value_bytes;
    let over = vec![b'x'; limit.saturating_sub(key.len()) + 1];
    let put = cx.registry.put(&key, &over, PutOptions::default()).await;
    cx.expect_err(
        "put one byte over the size limit",
        put,
        |e| matches!(e, Error::TooLarge { size, limit: l } if *size == Some(limit + 1) && *l == Some(limit)),
        &format!("TooLarge {{ size: {}, limit: {limit} }}", limit + 1),
    )?;
    let huge = vec![b'x'; 2 * limit];
    let put = cx.registry.put(&key, &huge, PutOptions::default()).await;
    // Whatever refuses it, a figure it gives is true: never a made-up zero.
    cx.expect_err(
        "put of twice the size limit",
        put,
        |e| matches!(e, Error::TooLarge { size, limit } if *size != Some(0) && *limit != Some(0)),
        "TooLarge with no zero figure",
    )?;

    for ttl in [cx.caps.max_ttl + 1, i64::MAX] {
        let got = cx.registry.lease_grant(ttl, None).await;
        cx.expect_err(
            &format!("grant of TTL {ttl}"),
            got,
            |e| matches!(e, Error::InvalidArgument(InvalidArgument::TtlTooLarge { ttl: t, .. }) if *t == ttl),
            &format!("InvalidArgument(TtlTooLarge {{ ttl: {ttl} }})"),
        )?;
    }

    let put = cx
        .registry
        .put(&cx.key("zero"), b"v", PutOptions::with_lease(LeaseId(0)))
        .await;
    cx.expect_err(
        "put with lease id 0",
        put,
        |e| matches!(e, Error::InvalidArgument(InvalidArgument::LeaseId(0))),
        "InvalidArgument(LeaseId(0))",
    )?;

    let current = cx.revision().await?;
    // etcd's answers: above the current revision is a future revision; at or below the last
    // compaction is compacted; revision 0 never reaches the server.
    let got = cx.registry.compact(current.next()).await;
    cx.expect_err(
        "compaction above the current revision",
        got,
        |e| matches!(e, Error::FutureRevision { requested, .. } if *requested == current.next()),
        "FutureRevision",
    )?;
    let got = cx.registry.compact(Revision(0)).await;
    cx.expect_err(
        "compaction at revision 0",
        got,
        |e| matches!(e, Error::InvalidArgument(InvalidArgument::Revision(0))),
        "InvalidArgument(Revision(0))",
    )?;
    cx.compact(current).await?;
    let got = cx.registry.compact(current).await;
    cx.expect_err(
        "compaction at the compact revision again",
        got,
        |e| matches!(e, Error::Compacted { compact_revision } if *compact_revision == current),
        "Compacted at the last compact revision",
    )?;

    ensure_eq!(cx.revision().await?, before, "bad input used a revision");
    let list = cx
        .registry
        .list(&cx.key(""), ListOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let keys: Vec<String> = list.kvs.iter().map(|kv| cx.norm.key(&kv.key)).collect();
    ensure_eq!(keys, vec!["existing".to_string()], "keys after bad input");
    ensure_eq!(
        list.kvs[0].version,
        1,
        "the existing key's version after bad input"
    );
    let leases_after = cx.leases().await?;
    ensure!(
        leases_after.is_subset(&leases_before),
        "bad grants made leases: {:?}",
        leases_after.difference(&leases_before).collect::<Vec<_>>()
    );

    // The largest accepted put is accepted.
    let fits = vec![b'x'; limit.saturating_sub(key.len())];
    let r = cx.try_put("big", &fits, None).await?;
    ensure!(r.is_ok(), "a put of exactly the size limit failed: {r:?}");
    Ok(())
}
