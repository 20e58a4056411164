//! (e) Fan-out: 1,000 discovery handles of one service in one process, from one
//! [`DiscoveryHub`], each with its own event subscription. Counts the watches they open (ours
//! through a counting decorator, and etcd's own count of watchers), and times a change reaching
//! all 1,000 against a single raw etcd-client watch. For contrast, 1,000 caches started without
//! the hub open a watch each.

use crate::etcd_metrics;
use crate::recording::{Recorded, Recording};
use crate::report::{Report, Verdict};
use crate::stats::{fmt_duration, Samples};
use etcd_client::{Client, WatchOptions as RawWatchOptions};
use registry_api::{PutOptions, Registry};
use registry_etcd::EtcdRegistry;
use registry_service::{
    Discovery, DiscoveryEvent, DiscoveryEvents, DiscoveryHub, DiscoveryOptions, ServiceInstance,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PART: &str = "e";
const HANDLES: usize = 1_000;
const BLOCK: usize = 10;
const WAIT: Duration = Duration::from_secs(5);

async fn connect(endpoint: &str, namespace: String) -> Result<Arc<Recorded>, String> {
    let etcd = EtcdRegistry::builder([endpoint])
        .key_prefix(namespace)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(Recording::new(Arc::new(etcd))))
}

/// etcd's watcher count once it has grown by `expected` over `before`, or after 2 s: a cache
/// reports itself synced when it has listed, a moment before its watch is registered.
async fn watchers_after(endpoint: &str, before: Option<f64>, expected: f64) -> Option<f64> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let now = etcd_metrics::watchers(endpoint);
        let grown = matches!((before, now), (Some(b), Some(n)) if n - b >= expected);
        if grown || Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn watcher_delta(before: Option<f64>, after: Option<f64>) -> String {
    match (before, after) {
        (Some(b), Some(a)) => format!("{}", a - b),
        _ => "unread".to_owned(),
    }
}

async fn shared_handles(
    report: &mut Report,
    endpoint: &str,
    run: &str,
    samples: usize,
) -> Result<(), String> {
    let recording = connect(endpoint, format!("bench/{run}/fan/")).await?;
    let registry: Arc<dyn Registry> = recording.clone();
    let before = etcd_metrics::watchers(endpoint);
    let hub = DiscoveryHub::new(registry.clone(), DiscoveryOptions::default());
    let mut handles = Vec::with_capacity(HANDLES);
    for _ in 0..HANDLES {
        handles.push(hub.discovery("fan").map_err(|e| e.to_string())?);
    }
    handles[0]
        .wait_synced(WAIT)
        .await
        .map_err(|_| "the shared cache did not sync".to_owned())?;
    let after = watchers_after(endpoint, before, 1.0).await;
    let opened = recording.intercept().watches_opened();
    report.row(
        PART,
        format!("watches opened by {HANDLES} hub handles of one service (ours / etcd's count)"),
        format!("{opened} / {}", watcher_delta(before, after)),
        "",
        "",
        "shared, not 1000",
        Verdict::from_bool(opened == 1 && hub.live_caches() == 1),
    );
    let mut events: Vec<DiscoveryEvents> = handles.iter().map(Discovery::subscribe).collect();

    let mut client = Client::connect([endpoint], None)
        .await
        .map_err(|e| e.to_string())?;
    let raw_prefix = format!("bench/{run}/raw/fan/");
    let mut raw = client
        .watch(
            raw_prefix.clone(),
            Some(RawWatchOptions::new().with_prefix()),
        )
        .await
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(WAIT, raw.message()).await {
        Ok(Ok(Some(resp))) if resp.created() => {}
        _ => return Err("the raw watch was not created".into()),
    }

    let (mut a, mut b) = (
        Samples::with_capacity(samples),
        Samples::with_capacity(samples),
    );
    let mut i = 0usize;
    let total = samples.div_ceil(BLOCK) * 2 * BLOCK + 2 * BLOCK;
    for step in 0..total {
        // A warm-up block of each, then ABBA blocks.
        let block = step / BLOCK;
        let ours_turn = if block < 2 {
            block == 0
        } else {
            (block / 2) % 2 == block % 2
        };
        let measured = block >= 2;
        i += 1;
        if ours_turn {
            let id = format!("i{i}");
            let value = ServiceInstance::new("fan", &id, "127.0.0.1:8080").to_json();
            let start = Instant::now();
            registry
                .put(
                    format!("services/fan/{id}").as_bytes(),
                    &value,
                    PutOptions::default(),
                )
                .await
                .map_err(|e| e.to_string())?;
            for subscription in &mut events {
                loop {
                    match tokio::time::timeout(WAIT, subscription.recv()).await {
                        Ok(Some(DiscoveryEvent::Added(added))) if added.id == id => break,
                        Ok(Some(_)) => {}
                        _ => return Err(format!("a handle did not see {id}")),
                    }
                }
            }
            if measured {
                a.push(start.elapsed());
            }
        } else {
            let key = format!("{raw_prefix}i{i}");
            let value = ServiceInstance::new("raw", format!("i{i}"), "127.0.0.1:8080").to_json();
            let start = Instant::now();
            client
                .put(key.as_bytes(), value, None)
                .await
                .map_err(|e| e.to_string())?;
            crate::raw_watch::wait_for_key(&mut raw, key.as_bytes(), WAIT).await?;
            if measured {
                b.push(start.elapsed());
            }
        }
    }
    for (label, q) in [("p50", 0.5), ("p99", 0.99)] {
        let (ours, base) = (a.quantile(q), b.quantile(q));
        let goal_met = label == "p50" || ours <= base + Duration::from_micros(300);
        report.row(
            PART,
            format!(
                "change -> all {HANDLES} handles, {label} (n={}) vs one raw watch",
                a.len()
            ),
            fmt_duration(ours),
            fmt_duration(base),
            format!("+{}", fmt_duration(ours.saturating_sub(base))),
            if label == "p99" {
                "<= raw + 0.3 ms"
            } else {
                ""
            },
            if label == "p99" {
                Verdict::from_bool(goal_met)
            } else {
                Verdict::Info
            },
        );
    }
    drop(events);
    drop(handles);
    Ok(())
}

async fn unshared_caches(
    report: &mut Report,
    endpoint: &str,
    run: &str,
    count: usize,
) -> Result<(), String> {
    let recording = connect(endpoint, format!("bench/{run}/unshared/")).await?;
    let registry: Arc<dyn Registry> = recording.clone();
    let before = etcd_metrics::watchers(endpoint);
    let mut caches = Vec::with_capacity(count);
    for _ in 0..count {
        caches.push(
            Discovery::start(registry.clone(), "fan", DiscoveryOptions::default())
                .map_err(|e| e.to_string())?,
        );
    }
    for cache in &caches {
        cache
            .wait_synced(WAIT * 4)
            .await
            .map_err(|_| "an unshared cache did not sync".to_owned())?;
    }
    let after = watchers_after(endpoint, before, count as f64).await;
    report.row(
        PART,
        format!("for contrast: {count} caches started without the hub (ours / etcd's count)"),
        format!(
            "{} / {}",
            recording.intercept().watches_opened(),
            watcher_delta(before, after)
        ),
        "",
        "",
        "",
        Verdict::Info,
    );
    Ok(())
}

pub(crate) async fn run(endpoint: String, quick: bool) -> Report {
    let endpoint = endpoint.as_str();
    let mut report = Report::default();
    let run = format!("{}-{}", std::process::id(), crate::run_stamp());
    let samples = if quick { 30 } else { 600 };
    eprintln!("(e) {HANDLES} hub handles: {samples} changes each side");
    if let Err(e) = shared_handles(&mut report, endpoint, &run, samples).await {
        report.note(format!("(e) fan-out failed: {e}"));
    }
    let count = if quick { 100 } else { HANDLES };
    eprintln!("(e) {count} caches without the hub");
    if let Err(e) = unshared_caches(&mut report, endpoint, &run, count).await {
        report.note(format!("(e) unshared caches failed: {e}"));
    }
    if let Ok(mut client) = Client::connect([endpoint], None).await {
        let _ = client
            .delete(
                format!("bench/{run}/"),
                Some(etcd_client::DeleteOptions::new().with_prefix()),
            )
            .await;
    }
    report
}
