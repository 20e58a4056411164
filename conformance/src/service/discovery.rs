//! Discovery scenarios: resync by diff after a partition with compaction, a watch that starts
//! compacted, an outage longer than the TTL, malformed values, one watch shared by many handles,
//! a cache that is synced only once its watch is up, and waits that return a synced view.

use super::ctx::{drain, ServiceCtx, SERVICE};
use crate::failure::{ensure, ensure_eq, Check};
use futures::FutureExt;
use registry_api::{ListOptions, PutOptions, Registry, Revision};
use registry_service::{
    Discovery, DiscoveryEvent, DiscoveryHub, Metadata, Registration, RegistrationState,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

async fn current_revision(registry: &Arc<dyn Registry>) -> Check<Revision> {
    let list = registry
        .list(b"", ListOptions::default())
        .await
        .map_err(|e| format!("reading the current revision failed: {e}"))?;
    Ok(list.revision)
}

/// A cache cut off while instances leave, change, arrive and come and go, and while the history
/// it would need is compacted, emits exactly the differences once it is back: nothing twice,
/// nothing of what came and went.
pub(crate) async fn cache_resyncs_by_diff_after_a_partition_and_a_compaction(
    cx: &mut ServiceCtx<'_>,
) -> Check {
    if !cx.supports(cx.caps.partition, "cutting one client's link") {
        return Ok(());
    }
    let app = cx.client("app").await;
    let cache = cx.client("cache").await;
    let operator = cx.operator().await;
    let a = cx.register(&app, ServiceCtx::instance("a")).await?;
    let b = cx.register(&app, ServiceCtx::instance("b")).await?;
    let _c = cx.register(&app, ServiceCtx::instance("c")).await?;
    let discovery = cx.discover(&cache).await?;
    let mut events = discovery.subscribe();
    ensure_eq!(
        drain(&mut events),
        ["a", "b", "c"].map(|id| DiscoveryEvent::Added(ServiceCtx::instance(id))),
        "the first events"
    );

    cx.partition("cache", true).await;
    cx.eventually(
        cx.allowance(),
        "the cut cache knows it is stale",
        || async {
            ensure!(!discovery.is_synced(), "still synced");
            Ok(())
        },
    )
    .await?;
    let held = discovery.revision();

    a.deregister().await.map_err(|e| e.to_string())?;
    let b_new = ServiceCtx::instance("b").with_metadata(Metadata::default().with_zone("z2"));
    b.update_metadata(b_new.metadata.clone())
        .await
        .map_err(|e| e.to_string())?;
    let _d = cx.register(&app, ServiceCtx::instance("d")).await?;
    let e = cx.register(&app, ServiceCtx::instance("e")).await?;
    e.deregister().await.map_err(|e| e.to_string())?;
    let now = current_revision(&operator).await?;
    operator
        .compact(now)
        .await
        .map_err(|e| format!("compacting failed: {e}"))?;
    ensure!(held < now, "the writes did not move the revision");
    cx.sleep(cx.backoff().max * 2).await;
    ensure_eq!(drain(&mut events), vec![], "events while cut off");
    ensure_eq!(discovery.len(), 3, "a stale cache keeps what it last knew");

    cx.partition("cache", false).await;
    let bound = cx.backoff().max + cx.allowance() * 2;
    cx.eventually(bound, "resynced after the partition", || async {
        ensure!(discovery.is_synced(), "not synced");
        ensure!(discovery.revision() >= now, "at {:?}", discovery.revision());
        Ok(())
    })
    .await?;
    ensure_eq!(
        drain(&mut events),
        vec![
            DiscoveryEvent::Removed(ServiceCtx::instance("a")),
            DiscoveryEvent::Updated {
                old: ServiceCtx::instance("b"),
                new: b_new,
            },
            DiscoveryEvent::Added(ServiceCtx::instance("d")),
        ],
        "the events after the partition"
    );
    ensure_eq!(
        discovery.snapshot().to_vec(),
        cx.truth().await?,
        "cache vs truth"
    );
    Ok(())
}

/// Between a cache's list and its watch an instance leaves, another arrives, and the history is
/// compacted: the watch fails as compacted, the cache lists again, and tells each change once.
pub(crate) async fn watch_that_starts_compacted_re_lists_without_duplicates(
    cx: &mut ServiceCtx<'_>,
) -> Check {
    let app = cx.client("app").await;
    let operator = cx.operator().await;
    let a = cx.register(&app, ServiceCtx::instance("a")).await?;
    let _b = cx.register(&app, ServiceCtx::instance("b")).await?;

    let c_slot: Arc<Mutex<Option<Result<Registration, String>>>> = Arc::default();
    let compacted_at: Arc<Mutex<Option<Revision>>> = Arc::default();
    {
        let (app, operator, options) = (app.clone(), operator.clone(), cx.registration_options());
        let (c_slot, compacted_at) = (c_slot.clone(), compacted_at.clone());
        cx.tap("cache").await.intercept().before_next_watch(
            async move {
                let _ = a.deregister().await;
                let c = Registration::start(app, ServiceCtx::instance("c"), options)
                    .await
                    .map_err(|e| e.to_string());
                *c_slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(c);
                if let Ok(list) = operator.list(b"", ListOptions::default()).await {
                    if operator.compact(list.revision).await.is_ok() {
                        *compacted_at.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(list.revision);
                    }
                }
            }
            .boxed(),
        );
    }
    let cache = cx.client("cache").await;
    let discovery =
        Discovery::start(cache, SERVICE, cx.discovery_options()).map_err(|e| e.to_string())?;
    let mut events = discovery.subscribe();
    cx.synced(&discovery, cx.backoff().max * 2 + cx.allowance() * 2)
        .await?;
    let c = c_slot
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .ok_or("the cache never opened its watch")?;
    let _c = c.map_err(|e| format!("registering c failed: {e}"))?;
    let compacted = compacted_at
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .ok_or("the compaction failed")?;
    cx.caught_up(&discovery, compacted).await?;
    ensure_eq!(
        drain(&mut events),
        vec![
            DiscoveryEvent::Added(ServiceCtx::instance("a")),
            DiscoveryEvent::Added(ServiceCtx::instance("b")),
            DiscoveryEvent::Removed(ServiceCtx::instance("a")),
            DiscoveryEvent::Added(ServiceCtx::instance("c")),
        ],
        "the events"
    );
    ensure_eq!(
        discovery.snapshot().to_vec(),
        cx.truth().await?,
        "cache vs truth"
    );
    Ok(())
}

/// The server goes away for longer than the TTL: caches know they are stale, registrations know
/// their leases are lost, a registration started meanwhile waits; once the server is back every
/// instance is registered again on a new lease, the old leases are gone, and every cache equals
/// the truth, all within the backoff ceiling plus the client's reconnect time.
pub(crate) async fn outage_longer_than_the_ttl_heals_by_itself(cx: &mut ServiceCtx<'_>) -> Check {
    if !cx.supports(cx.caps.outage, "taking the server away") {
        return Ok(());
    }
    let app = cx.client("app").await;
    let cache = cx.client("cache").await;
    let discovery = cx.discover(&cache).await?;
    let mut registrations = Vec::new();
    for id in ["a", "b", "c"] {
        registrations.push(cx.register(&app, ServiceCtx::instance(id)).await?);
    }
    cx.eventually(cx.allowance(), "all three seen", || async {
        ensure_eq!(discovery.len(), 3, "cached");
        Ok(())
    })
    .await?;
    let old: Vec<_> = registrations
        .iter()
        .filter_map(Registration::lease)
        .collect();
    ensure_eq!(old.len(), 3, "leases before the outage");

    cx.outage(true).await;
    cx.sleep(cx.ttl() + cx.ttl() / 2 + cx.allowance()).await;
    ensure!(
        !discovery.is_synced(),
        "the cache does not know it is stale"
    );
    for registration in &registrations {
        ensure!(
            matches!(
                registration.state(),
                RegistrationState::LeaseLost | RegistrationState::ReRegistering { .. }
            ),
            "{}: state {:?} during an outage longer than its TTL",
            registration.key(),
            registration.state()
        );
    }
    let starting = tokio::spawn(Registration::start(
        app.clone(),
        ServiceCtx::instance("d"),
        cx.registration_options(),
    ));
    cx.sleep(cx.backoff().max).await;
    ensure!(
        !starting.is_finished(),
        "a start finished while the server was away"
    );

    cx.outage(false).await;
    let bound = cx.backoff().max + cx.reconnect() + cx.allowance();
    let started = tokio::time::timeout(bound, starting)
        .await
        .map_err(|_| format!("the start during the outage did not finish within {bound:?}"))?
        .map_err(|e| format!("the start during the outage panicked: {e}"))?
        .map_err(|e| format!("the start during the outage failed: {e}"))?;
    registrations.push(started);
    // A restarted real server gives the old leases a whole TTL again before they expire.
    let bound = bound + cx.ttl() + cx.caps.expiry_lateness;
    cx.eventually(bound, "healed after the outage", || async {
        ensure!(discovery.is_synced(), "the cache is not synced");
        for (registration, old) in registrations.iter().zip(&old) {
            let lease = registration.lease().ok_or("not registered")?;
            ensure!(
                lease != *old,
                "{} is still on its old lease",
                registration.key()
            );
        }
        for old in &old {
            ensure!(
                !cx.lease_alive(*old).await?,
                "old lease {old:?} still alive"
            );
        }
        let ids: Vec<String> = discovery.snapshot().iter().map(|i| i.id.clone()).collect();
        ensure_eq!(ids, ["a", "b", "c", "d"], "cached ids");
        ensure_eq!(
            discovery.snapshot().to_vec(),
            cx.truth().await?,
            "cache vs truth"
        );
        Ok(())
    })
    .await?;
    for registration in &registrations {
        let lease = registration.lease().ok_or("not registered")?;
        ensure!(!old.contains(&lease), "a dead lease id was reused");
    }
    Ok(())
}

/// Values that are not instances of the service are skipped and counted, never fatal; garbage
/// over a live instance removes it, a good value brings it back.
pub(crate) async fn malformed_values_are_skipped_counted_and_never_fatal(
    cx: &mut ServiceCtx<'_>,
) -> Check {
    let operator = cx.operator().await;
    let cache = cx.client("cache").await;
    let put = |id: &'static str, value: Vec<u8>| {
        let operator = operator.clone();
        async move {
            operator
                .put(&ServiceCtx::key(id), &value, PutOptions::default())
                .await
                .map_err(|e| format!("put {id} failed: {e}"))
        }
    };
    put("junk", b"{not json".to_vec()).await?;
    let discovery = cx.discover(&cache).await?;
    ensure!(discovery.is_empty(), "garbage became an instance");
    ensure_eq!(discovery.malformed(), 1, "malformed values after the list");
    let mut events = discovery.subscribe();

    let a = ServiceCtx::instance("a");
    // An instance whose JSON names another id, garbage, a key too deep to be an instance.
    put("x", ServiceCtx::instance("y").to_json()).await?;
    put("z", b"[]".to_vec()).await?;
    put("a/b", a.to_json()).await?;
    let last = put("a", a.to_json()).await?;
    cx.caught_up(&discovery, last.revision).await?;
    ensure_eq!(
        drain(&mut events),
        vec![DiscoveryEvent::Added(a.clone())],
        "events"
    );
    ensure_eq!(discovery.malformed(), 3, "malformed values counted");

    put("a", b"oops".to_vec()).await?;
    let last = put("a", a.to_json()).await?;
    cx.caught_up(&discovery, last.revision).await?;
    ensure_eq!(
        drain(&mut events),
        vec![DiscoveryEvent::Removed(a.clone()), DiscoveryEvent::Added(a)],
        "events after garbage over a live instance"
    );
    ensure!(discovery.is_synced(), "garbage unsynced the cache");
    Ok(())
}

/// Many handles of one service from one hub share one cache and one watch; the last handle
/// dropped stops that watch.
pub(crate) async fn handles_of_one_service_share_one_watch(cx: &mut ServiceCtx<'_>) -> Check {
    const HANDLES: usize = 200;
    let app = cx.client("app").await;
    let cache = cx.tap("cache").await;
    let hub = DiscoveryHub::new(cache.clone(), cx.discovery_options());
    let mut handles = Vec::new();
    for _ in 0..HANDLES {
        handles.push(hub.discovery(SERVICE).map_err(|e| e.to_string())?);
    }
    let other = hub.discovery("other").map_err(|e| e.to_string())?;
    cx.synced(&handles[0], Duration::from_secs(5)).await?;
    cx.synced(&other, Duration::from_secs(5)).await?;
    ensure_eq!(
        cache.intercept().watches_open(),
        2,
        "watches for two services"
    );

    let mut streams: Vec<_> = handles.iter().map(Discovery::subscribe).collect();
    let a = ServiceCtx::instance("a");
    let _a = cx.register(&app, a.clone()).await?;
    for (i, (handle, stream)) in handles.iter().zip(&mut streams).enumerate() {
        let (event, _) = cx
            .next_event(stream, cx.allowance(), &format!("handle {i}"))
            .await?;
        ensure_eq!(
            event,
            DiscoveryEvent::Added(a.clone()),
            "handle {i}'s event"
        );
        ensure_eq!(
            handle.snapshot().to_vec(),
            vec![a.clone()],
            "handle {i}'s snapshot"
        );
    }
    ensure!(other.is_empty(), "another service's cache saw the instance");

    drop(streams);
    drop(handles);
    cx.eventually(
        cx.allowance(),
        "the last handle stops the watch",
        || async {
            ensure_eq!(cache.intercept().watches_open(), 1, "open watches");
            Ok(())
        },
    )
    .await?;
    let again = hub.discovery(SERVICE).map_err(|e| e.to_string())?;
    cx.synced(&again, Duration::from_secs(5)).await?;
    ensure_eq!(
        again.snapshot().to_vec(),
        vec![a],
        "a new handle's snapshot"
    );
    Ok(())
}

/// A cache that has listed but whose watch is not up yet is not synced: what it holds could
/// already be stale with nothing to tell it.
pub(crate) async fn cache_is_synced_only_once_its_watch_is_up(cx: &mut ServiceCtx<'_>) -> Check {
    let app = cx.client("app").await;
    let _a = cx.register(&app, ServiceCtx::instance("a")).await?;
    let (open, opened) = tokio::sync::oneshot::channel::<()>();
    cx.tap("cache").await.intercept().before_next_watch(
        async move {
            let _ = opened.await;
        }
        .boxed(),
    );
    let cache = cx.client("cache").await;
    let discovery =
        Discovery::start(cache, SERVICE, cx.discovery_options()).map_err(|e| e.to_string())?;
    cx.eventually(Duration::from_secs(2), "listed", || async {
        ensure!(discovery.get("a").is_some(), "a is not cached");
        Ok(())
    })
    .await?;
    let held = Instant::now();
    let waited = discovery.wait_synced(Duration::from_secs(1)).await;
    ensure!(
        waited.is_err() && !discovery.is_synced(),
        "synced {:?} after listing, before its watch was up",
        held.elapsed()
    );
    let _ = open.send(());
    cx.synced(&discovery, Duration::from_secs(1) + cx.allowance())
        .await?;
    Ok(())
}

/// `wait_for_instance` returns once the view is synced, list done and watch established, not
/// as soon as the list shows the instance: cut off the moment after, the view knows it is
/// stale. And a view whose first watch fails is stale, not merely starting.
pub(crate) async fn waits_return_a_synced_view_and_a_cut_view_knows_it_is_stale(
    cx: &mut ServiceCtx<'_>,
) -> Check {
    if !cx.supports(cx.caps.partition, "cutting one client's link") {
        return Ok(());
    }
    let app = cx.client("app").await;
    let _a = cx.register(&app, ServiceCtx::instance("a")).await?;
    let bound = Duration::from_secs(5);

    let cache = cx.client("cache").await;
    let discovery =
        Discovery::start(cache, SERVICE, cx.discovery_options()).map_err(|e| e.to_string())?;
    discovery
        .wait_for_instance("a", bound)
        .await
        .map_err(|e| format!("waiting for a: {e}"))?;
    ensure!(
        discovery.is_synced(),
        "wait_for_instance returned a view that is not synced: {:?}",
        discovery.status()
    );
    cx.partition("cache", true).await;
    let stale = || async {
        ensure!(discovery.is_stale(), "not stale: {:?}", discovery.status());
        Ok(())
    };
    cx.eventually(cx.allowance(), "the cut view knowing it is stale", stale)
        .await?;
    cx.partition("cache", false).await;

    // Listed, then cut just before its first watch reaches the server.
    let (open, opened) = tokio::sync::oneshot::channel::<()>();
    cx.tap("late").await.intercept().before_next_watch(
        async move {
            let _ = opened.await;
        }
        .boxed(),
    );
    let late = Discovery::start(cx.client("late").await, SERVICE, cx.discovery_options())
        .map_err(|e| e.to_string())?;
    cx.eventually(Duration::from_secs(2), "listed", || async {
        ensure!(late.get("a").is_some(), "a is not cached");
        Ok(())
    })
    .await?;
    cx.partition("late", true).await;
    let _ = open.send(());
    cx.eventually(
        cx.allowance(),
        "a view whose first watch failed knowing it is stale",
        || async {
            ensure!(late.last_error().is_some(), "no failure yet");
            ensure!(late.is_stale(), "not stale: {:?}", late.status());
            Ok(())
        },
    )
    .await?;
    cx.partition("late", false).await;
    cx.synced(&late, cx.backoff().max * 2 + cx.allowance() * 2)
        .await?;
    ensure!(!late.is_stale(), "stale after syncing: {:?}", late.status());
    Ok(())
}
