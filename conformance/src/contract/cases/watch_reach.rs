//! Watches far from the head of the history: one that falls thousands of revisions behind
//! before it reads anything, one that starts far beyond the current revision, and watches
//! across a compaction.

use super::Ctx;
use crate::contract::watch_read::read_until;
use crate::failure::{ensure, Check};
use registry_api::{Error, EventKind, Revision, WatchOptions};

/// How many revisions a slow watcher falls behind before its first read.
const SLOW_WATCHER_REVISIONS: usize = 2_500;

/// How often a watch that falls behind may be cancelled (and opened again from where it
/// stopped) before the case calls it a failure.
const MAX_CANCELS: usize = 3;

fn from(r: Revision) -> WatchOptions {
    WatchOptions::from_revision(r)
}

/// W4 under a slow reader (etcd #17529): a watch that falls thousands of revisions behind
/// before its first read delivers every event, in order, with none skipped. It may instead be
/// cancelled with an error (then it is opened again from the revision after the last one it
/// delivered, and what it delivered must still be the history with no gap); it never skips.
pub(crate) async fn slow_watcher_never_skips_an_event(cx: &mut Ctx<'_>) -> Check {
    let start = cx.revision().await?.next();
    let mut w = cx.watch("", from(start).with_prev_kv()).await?;
    for i in 0..SLOW_WATCHER_REVISIONS {
        if i % 250 == 249 {
            // Several keys in one revision, and deletes among the puts.
            cx.delete_prefix("s/1").await?;
        } else {
            cx.put(&format!("s/{}", i % 32), &format!("v{i}"), None)
                .await?;
        }
    }
    let prefix = cx.key("");
    let want = cx.model.changes_since(&prefix, start, true, None);
    let last = want.last().map(|b| b.revision).ok_or("no history")?;
    let want = cx.batches(&want);
    let mut delivered = Vec::new();
    let mut cancels = 0;
    loop {
        let got = read_until(&mut w, Some(last), cx.caps.watch_timeout()).await;
        delivered.extend(cx.batches(&got.event_batches()));
        let upto = delivered.last().map_or(0, |b| b.revision);
        let expected: Vec<_> = want
            .iter()
            .filter(|b| b.revision <= upto)
            .cloned()
            .collect();
        ensure!(
            delivered == expected,
            "W4 reliable: a watch {} revisions behind its first read skipped or changed events (etcd #17529 dropped them from a full buffer instead of cancelling the watch):\n    {}",
            SLOW_WATCHER_REVISIONS,
            cx.norm.event_diff(&expected, &delivered).join("\n    ")
        );
        if delivered.len() == want.len() {
            return Ok(());
        }
        match got.error {
            // Cancelled: open it again from the revision after the last one delivered.
            Some(_) if cancels < MAX_CANCELS => {
                cancels += 1;
                let resume = Revision(cx.norm.base().0 + upto + 1).max(start);
                w = cx.watch("", from(resume).with_prev_kv()).await?;
            }
            Some(e) => {
                return Err(format!(
                    "W4: a slow watcher was cancelled {} times; the last error: {e}",
                    cancels + 1
                ))
            }
            None => {
                return Err(format!(
                    "W4 reliable: a watch {SLOW_WATCHER_REVISIONS} revisions behind delivered {} of {} revisions, then {} without an error",
                    delivered.len(),
                    want.len(),
                    if got.ended { "ended" } else { "nothing more" }
                ))
            }
        }
    }
}

/// W5 for a start beyond the current revision (etcd #20221): nothing below the start is
/// delivered, the history from the start on is, and a watch far beyond everything written
/// delivers nothing. On etcd 3.5.16 such a watch is created at once, answers a progress
/// request at the current revision (below its start: later etcd releases hold it back until
/// the store reaches the start), and delivers events from its start on; the case checks the
/// events only.
pub(crate) async fn watch_from_a_future_revision_starts_there(cx: &mut Ctx<'_>) -> Check {
    let now = cx.revision().await?;
    let near = Revision(now.0 + 40);
    let far = Revision(now.0 + 1_000_000);
    let mut w_near = cx.watch("", from(near).with_prev_kv()).await?;
    let mut w_far = cx.watch("", from(far)).await?;
    let mut w_next = cx.watch("a/", from(now.next())).await?;
    for i in 0..60 {
        match i % 5 {
            4 => {
                // A delete of a key already deleted is a no-op: the model says which.
                let _ = cx.delete(&format!("a/{}", i % 3)).await?;
            }
            _ => {
                cx.put(&format!("a/{}", i % 3), &format!("v{i}"), None)
                    .await?;
            }
        }
    }
    cx.put("b/0", "last", None).await?;
    let got = cx.expect_watch(&mut w_near, "", near, true, None).await?;
    ensure!(
        got.first().map(|b| b.revision) == Some(near),
        "W5: a watch from the future revision {near} began at {:?}",
        got.first().map(|b| b.revision)
    );
    cx.expect_watch(&mut w_far, "", far, false, None).await?;
    cx.expect_watch(&mut w_next, "a/", now.next(), false, None)
        .await?;
    Ok(())
}

/// W4 and W9 across a compaction (etcd #18089, #19179): a watch opened before a compaction
/// still delivers every event it had not read, deletes included; a watch from exactly the
/// compact revision delivers that revision's deletes (without previous values).
pub(crate) async fn watch_across_compaction_keeps_deletes(cx: &mut Ctx<'_>) -> Check {
    let start = cx.revision().await?.next();
    let mut before = cx.watch("", from(start).with_prev_kv()).await?;
    for key in ["a/0", "a/1", "a/2", "b/0"] {
        cx.put(key, "v", None).await?;
    }
    cx.delete("a/1").await?.map_err(|e| e.to_string())?;
    let deleted = cx.delete_prefix("a/").await?.revision;
    cx.put("c", "after", None).await?;
    cx.compact(deleted).await?;
    cx.put("a/9", "later", None).await?;
    let got = cx.expect_watch(&mut before, "", start, true, None).await?;
    let deletes = got
        .iter()
        .flat_map(|b| &b.events)
        .filter(|e| e.kind == EventKind::Delete)
        .count();
    ensure!(
        deletes == 3,
        "W4: a watch opened before a compaction delivered {deletes} of its 3 deletes"
    );
    let mut at = cx.watch("", from(deleted).with_prev_kv()).await?;
    let got = cx
        .expect_watch(&mut at, "", deleted, true, Some(deleted))
        .await?;
    ensure!(
        got.first().map(|b| (b.revision, b.events.len())) == Some((deleted, 2)),
        "W9: a watch from exactly the compact revision {deleted} (a prefix delete of two keys) began with {:?}",
        got.first().map(|b| (b.revision, b.events.len()))
    );
    let below = cx
        .registry
        .watch(&cx.key(""), from(Revision(deleted.0 - 1)))
        .await;
    let item = match below {
        Err(e) => Err(e),
        Ok(mut stream) => {
            let got = read_until(&mut stream, None, cx.caps.watch_timeout()).await;
            match (got.error, got.batches.first()) {
                (Some(e), _) => Err(e),
                (None, Some(b)) => Ok(b.revision),
                (None, None) => Ok(Revision(0)),
            }
        }
    };
    cx.expect_err(
        "W9: a watch from below the compact revision",
        item,
        |e| matches!(e, Error::Compacted { compact_revision } if *compact_revision == deleted),
        &format!("Compacted {{ compact_revision: {deleted} }}"),
    )
}
