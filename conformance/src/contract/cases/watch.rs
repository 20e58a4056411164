//! W1-W9: what a watch delivers.

use super::Ctx;
use crate::contract::watch_read::{check_properties, read_until, Received};
use crate::failure::{ensure, ensure_eq, Check};
use registry_api::{Error, EventKind, Revision, WatchOptions};

/// A mixed history: creates, updates, a delete, a prefix delete, keys inside and outside `a/`.
async fn mixed_writes(cx: &mut Ctx<'_>) -> Check {
    for (key, value) in [
        ("a/0", "1"),
        ("a/1", "1"),
        ("b/0", "1"),
        ("a/0", "2"),
        ("a/2", "1"),
        ("b/1", "1"),
    ] {
        cx.put(key, value, None).await?;
    }
    cx.delete("a/1").await?.map_err(|e| e.to_string())?;
    cx.delete_prefix("b/").await?;
    cx.put("a/1", "again", None).await?;
    cx.put("c", "1", None).await?;
    Ok(())
}

fn from(r: Revision) -> WatchOptions {
    WatchOptions::from_revision(r)
}

/// W1: revisions never go down, whether replayed from history or delivered live.
pub(crate) async fn ordered(cx: &mut Ctx<'_>) -> Check {
    let start = cx.revision().await?.next();
    let mut live = cx.watch("", from(start)).await?;
    mixed_writes(cx).await?;
    let mut replay = cx.watch("", from(start)).await?;
    for stream in [&mut live, &mut replay] {
        let got = cx.expect_watch(stream, "", start, false, None).await?;
        let revs: Vec<Revision> = got.iter().map(|b| b.revision).collect();
        ensure!(
            revs.windows(2).all(|w| w[0] < w[1]),
            "W1 ordered: batch revisions {revs:?}"
        );
    }
    Ok(())
}

/// W2: nothing is delivered twice, also when the watch is read in several goes.
pub(crate) async fn unique(cx: &mut Ctx<'_>) -> Check {
    let start = cx.revision().await?.next();
    let mut w = cx.watch("a/", from(start)).await?;
    for i in 0..4 {
        cx.put("a/0", &format!("v{i}"), None).await?;
    }
    let first = cx.expect_watch(&mut w, "a/", start, false, None).await?;
    let resume = cx.revision().await?.next();
    for i in 0..3 {
        cx.put("a/0", &format!("w{i}"), None).await?;
    }
    // The second read must hold only what came after the first.
    let second = cx.expect_watch(&mut w, "a/", resume, false, None).await?;
    let last_first = first.last().map(|b| b.revision);
    ensure!(
        second.iter().all(|b| Some(b.revision) > last_first),
        "W2 unique: revisions delivered again on the second read"
    );
    ensure_eq!(second.len(), 3, "W2: the second read's batches");
    Ok(())
}

/// W3: every revision's events come in one batch: a revoke of three keys, a prefix delete.
pub(crate) async fn atomic(cx: &mut Ctx<'_>) -> Check {
    let start = cx.revision().await?.next();
    let mut w = cx.watch("", from(start)).await?;
    let lease = cx.grant(cx.caps.min_ttl.max(60)).await?;
    for key in ["a/2", "a/0", "a/1"] {
        cx.put(key, "leased", Some(lease.id)).await?;
    }
    for key in ["b/0", "b/1", "b/2"] {
        cx.put(key, "x", None).await?;
    }
    let revoked = cx.revoke(lease.id).await?.map_err(|e| e.to_string())?;
    let deleted = cx.delete_prefix("b/").await?;
    let got = cx.expect_watch(&mut w, "", start, false, None).await?;
    for (rev, what) in [(revoked, "revoke"), (deleted.revision, "prefix delete")] {
        let batches: Vec<_> = got.iter().filter(|b| b.revision == rev).collect();
        ensure_eq!(
            batches.len(),
            1,
            "W3 atomic: batches carrying the {what} at revision {rev}"
        );
        ensure_eq!(
            batches[0].events.len(),
            3,
            "W3 atomic: events of the {what} in its batch"
        );
    }
    Ok(())
}

/// W4: the events equal the history, with no gap, over a longer mixed run.
pub(crate) async fn reliable(cx: &mut Ctx<'_>) -> Check {
    let start = cx.revision().await?.next();
    let mut w = cx.watch("", from(start).with_prev_kv()).await?;
    let lease = cx.grant(cx.caps.min_ttl.max(60)).await?;
    for round in 0..4 {
        mixed_writes(cx).await?;
        cx.put(&format!("l/{round}"), "leased", Some(lease.id))
            .await?;
    }
    cx.revoke(lease.id).await?.map_err(|e| e.to_string())?;
    let got = cx.expect_watch(&mut w, "", start, true, None).await?;
    ensure!(got.len() >= 40, "W4: only {} batches delivered", got.len());
    Ok(())
}

/// W5: a watch from revision r starts at the first matching change at or after r, for every
/// r, including revisions of changes outside the prefix.
pub(crate) async fn resumable(cx: &mut Ctx<'_>) -> Check {
    let first = cx.revision().await?.next();
    mixed_writes(cx).await?;
    let last = cx.revision().await?;
    for r in first.0..=last.0 + 1 {
        let start = Revision(r);
        let mut w = cx.watch("a/", from(start)).await?;
        let got = cx.expect_watch(&mut w, "a/", start, false, None).await?;
        if let Some(b) = got.first() {
            ensure!(
                b.revision >= start,
                "W5: from {start} the first event is at {}",
                b.revision
            );
        }
    }
    Ok(())
}

/// W6: after a progress notification at R, no event has a revision at or below R.
pub(crate) async fn bookmark(cx: &mut Ctx<'_>) -> Check {
    let start = cx.revision().await?.next();
    let mut w = cx.watch("", from(start).with_progress_notify()).await?;
    mixed_writes(cx).await?;
    // expect_watch checks W6 over every batch it reads, progress notifications included.
    cx.expect_watch(&mut w, "", start, false, None).await?;
    Ok(())
}

/// W6, asked for: a progress request is answered, once the watch has delivered every change up to the
/// store's current revision `R`, by an empty batch at `R`; so writes outside the prefix are
/// covered, and nothing at or below `R` comes after it.
pub(crate) async fn progress_request_answers(cx: &mut Ctx<'_>) -> Check {
    let start = cx.revision().await?.next();
    let mut w = cx.watch("a/", from(start)).await?;
    mixed_writes(cx).await?;
    // The last write is outside the prefix: the answer must still cover it.
    let before = cx.revision().await?;
    w.request_progress()
        .await
        .map_err(|e| format!("W6 progress request: the progress request failed: {e}"))?;
    let got = read_until_progress(&mut w, cx.caps.watch_timeout()).await;
    if let Some(e) = &got.error {
        return Err(format!(
            "W6 progress request: the watch failed before answering: {e}"
        ));
    }
    let Some(answer) = got.batches.last().filter(|b| b.is_progress()).cloned() else {
        return Err(format!(
            "W6 progress request: no progress answer{} after {} batches",
            if got.timed_out { " in time" } else { "" },
            got.batches.len()
        ));
    };
    let after = cx.revision().await?;
    ensure!(
        before <= answer.revision && answer.revision <= after,
        "W6 progress request: progress answer at {} while the store was at {before} before the request and {after} after it",
        answer.revision
    );
    // Every change up to the answer came before it, exactly as the history has them.
    let prefix = cx.key("a/");
    let want = cx.model.changes_since(&prefix, start, false, None);
    let events = got.event_batches();
    let (g, m) = (
        events.iter().map(|b| cx.norm.batch(b)).collect::<Vec<_>>(),
        want.iter().map(|b| cx.norm.batch(b)).collect::<Vec<_>>(),
    );
    ensure!(
        g == m,
        "W6 progress request: the progress answer came before every change up to it\n  expected: {m:?}\n    actual: {g:?}"
    );
    // A later write inside the prefix comes above the answer.
    let later = cx.put("a/9", "after", None).await?;
    let got_later = read_until(&mut w, Some(later), cx.caps.watch_timeout()).await;
    let mut all = got.batches.clone();
    all.extend(got_later.batches.iter().cloned());
    check_properties(&all, &prefix, start)?;
    ensure!(
        got_later.event_batches().last().map(|b| b.revision) == Some(later),
        "W6 progress request: the write at {later} after the progress answer was not delivered"
    );
    Ok(())
}

/// Reads until a progress notification (kept as the last batch), an error, the end, or
/// `timeout` without an item.
async fn read_until_progress(
    stream: &mut registry_api::WatchStream,
    timeout: std::time::Duration,
) -> Received {
    let mut got = Received::default();
    loop {
        let item = read_until(stream, None, timeout).await;
        let done = item.error.is_some() || item.ended || item.timed_out;
        let progress = item.batches.iter().any(|b| b.is_progress());
        got.batches.extend(item.batches);
        got.error = item.error;
        got.ended = item.ended;
        got.timed_out = item.timed_out;
        if done || progress {
            return got;
        }
    }
}

/// W7: nothing outside the prefix, including keys that share its bytes but not its range.
pub(crate) async fn filtered(cx: &mut Ctx<'_>) -> Check {
    let start = cx.revision().await?.next();
    let mut slash = cx.watch("a/", from(start)).await?;
    let mut one = cx.watch("a/1", from(start)).await?;
    for key in ["a", "a0", "a/", "a/1", "a/10", "a/2", "a.", "b/1", "a/1/x"] {
        cx.put(key, "v", None).await?;
    }
    let got = cx
        .expect_watch(&mut slash, "a/", start, false, None)
        .await?;
    ensure_eq!(got.len(), 5, "W7: events under \"a/\"");
    let got = cx.expect_watch(&mut one, "a/1", start, false, None).await?;
    ensure_eq!(got.len(), 3, "W7: events under \"a/1\"");
    Ok(())
}

/// W8: prev_kv is the state at rev - 1 (and only when asked); "created" exactly when the key
/// was absent; a delete's kv has the deletion revision.
pub(crate) async fn prev_kv_and_create_flag(cx: &mut Ctx<'_>) -> Check {
    let start = cx.revision().await?.next();
    let mut with = cx.watch("k", from(start).with_prev_kv()).await?;
    let mut without = cx.watch("k", from(start)).await?;
    let created = cx.put("k", "one", None).await?;
    cx.put("k", "two", None).await?;
    let deleted = cx.delete("k").await?.map_err(|e| e.to_string())?.revision;
    cx.put("k", "three", None).await?;
    let got = cx.expect_watch(&mut with, "k", start, true, None).await?;
    let flags: Vec<(EventKind, bool, Option<String>)> = got
        .iter()
        .flat_map(|b| &b.events)
        .map(|e| {
            (
                e.kind,
                e.is_create(),
                e.prev_kv.as_ref().map(|p| p.value_str().into_owned()),
            )
        })
        .collect();
    ensure_eq!(
        flags,
        vec![
            (EventKind::Put, true, None),
            (EventKind::Put, false, Some("one".to_string())),
            (EventKind::Delete, false, Some("two".to_string())),
            (EventKind::Put, true, None),
        ],
        "W8: (kind, created, prev value) of each event"
    );
    let delete = got.iter().find(|b| b.revision == deleted);
    ensure!(
        delete.is_some_and(|b| b.events[0].kv.mod_revision == deleted),
        "W8: a delete event's kv carries the deletion revision {deleted}"
    );
    let first = got.first().map(|b| b.events[0].kv.create_revision);
    ensure_eq!(first, Some(created), "W8: create_revision of the first put");
    let got = cx
        .expect_watch(&mut without, "k", start, false, None)
        .await?;
    ensure!(
        got.iter()
            .flat_map(|b| &b.events)
            .all(|e| e.prev_kv.is_none()),
        "W8: previous values delivered to a watch that did not ask for them"
    );
    Ok(())
}

/// Several watchers, opened before and after the writes, see identical sequences.
pub(crate) async fn concurrent_watchers_agree(cx: &mut Ctx<'_>) -> Check {
    let start = cx.revision().await?.next();
    let mut early = Vec::new();
    for _ in 0..3 {
        early.push(cx.watch("", from(start).with_prev_kv()).await?);
    }
    mixed_writes(cx).await?;
    let lease = cx.grant(cx.caps.min_ttl.max(60)).await?;
    cx.put("l/0", "x", Some(lease.id)).await?;
    cx.put("l/1", "x", Some(lease.id)).await?;
    cx.revoke(lease.id).await?.map_err(|e| e.to_string())?;
    let mut late = Vec::new();
    for _ in 0..2 {
        late.push(cx.watch("", from(start).with_prev_kv()).await?);
    }
    let mut seen = Vec::new();
    for w in early.iter_mut().chain(late.iter_mut()) {
        seen.push(cx.expect_watch(w, "", start, true, None).await?);
    }
    for (i, s) in seen.iter().enumerate().skip(1) {
        ensure!(
            *s == seen[0],
            "watcher {i} saw another sequence than watcher 0"
        );
    }
    Ok(())
}

/// W9: a watch from below the compaction point fails with the compact revision, and nothing
/// resumes silently; from exactly the compact revision it works (without previous values at
/// that revision).
pub(crate) async fn compacted_start_fails(cx: &mut Ctx<'_>) -> Check {
    let first = cx.revision().await?.next();
    mixed_writes(cx).await?;
    let at = Revision(first.0 + 4);
    cx.compact(at).await?;
    for start in [first, Revision(at.0 - 1)] {
        let got = match cx.registry.watch(&cx.key(""), from(start)).await {
            Err(e) => Err(e),
            Ok(mut stream) => {
                let got = crate::contract::watch_read::read_until(
                    &mut stream,
                    None,
                    cx.caps.watch_timeout(),
                )
                .await;
                match (got.error, got.batches.first()) {
                    (Some(e), _) => Err(e),
                    (None, Some(b)) => Ok(b.revision),
                    (None, None) => Ok(Revision(0)),
                }
            }
        };
        cx.expect_err(
            &format!("W9: watch from {start} after compacting at {at}"),
            got,
            |e| matches!(e, Error::Compacted { compact_revision } if *compact_revision == at),
            &format!("Compacted {{ compact_revision: {at} }}"),
        )?;
    }
    for start in [at, at.next()] {
        let mut w = cx.watch("", from(start).with_prev_kv()).await?;
        cx.expect_watch(&mut w, "", start, true, Some(at)).await?;
    }
    Ok(())
}
