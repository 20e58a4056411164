//! (c) Simulated time at scale, and memory per instance and per cache entry.
//!
//! 10,000 instances registered through the real service layer ([`Registration`], default
//! options: TTL 10 s, keep-alive every TTL/3 through the process's one registrar task, which
//! renews the leases due at one instant in batches, keys checked by its watch of each service
//! rather than read each round) on the instant simulator
//! (`MemoryRegistry::builder().instant().build()`: no seeded delays, so the figures are the
//! service layer's and the store's own) under a paused tokio clock, spread over 100 services
//! with one discovery cache each (through a [`DiscoveryHub`]), live for one virtual hour. Every virtual
//! minute a seeded choice of instances crashes (their leases then expire) and as many new ones
//! register, so the caches have something to follow. One current-thread runtime runs it all:
//! a paused clock only jumps when every task is idle, and one thread means no cross-thread
//! wake-ups.
//!
//! The event log is what the observers saw: a raw watch on the whole namespace, each cache's
//! event stream, and the driver's own crash and start records, each stamped with virtual time.
//! Entries are ordered by (virtual time, observer, sequence within the observer), so the hash
//! checks what each observer saw and when, not how the scheduler interleaved the observers.

use crate::procfs;
use crate::report::{Report, Verdict};
use crate::stats::{fmt_bytes, fmt_duration};
use futures::StreamExt;
use registry_api::rng::{Fnv64, SplitMix64};
use registry_api::{EventKind, Registry, WatchOptions, WatchStream};
use registry_memory::MemoryRegistry;
use registry_service::{
    Discovery, DiscoveryEvent, DiscoveryHub, DiscoveryOptions, Registration, RegistrationOptions,
    ServiceInstance,
};
use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hasher;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const PART: &str = "c";
/// The registrations' TTL: `RegistrationOptions`' default.
pub(crate) const TTL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
pub(crate) struct Scale {
    pub(crate) instances: usize,
    pub(crate) services: usize,
    pub(crate) minutes: u64,
    /// Instances crashed, and as many started, each virtual minute.
    pub(crate) churn: usize,
}

impl Scale {
    /// Ten times the full scale, for its time and peak memory.
    pub(crate) fn fleet() -> Self {
        Scale {
            instances: 100_000,
            services: 100,
            minutes: 60,
            churn: 50,
        }
    }

    pub(crate) fn new(quick: bool) -> Self {
        if quick {
            Scale {
                instances: 1_000,
                services: 10,
                minutes: 10,
                churn: 2,
            }
        } else {
            Scale {
                instances: 10_000,
                services: 100,
                minutes: 60,
                churn: 5,
            }
        }
    }
}

/// What one simulated hour gave.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) setup_wall: Duration,
    pub(crate) run_wall: Duration,
    pub(crate) peak_rss: u64,
    pub(crate) rss_per_instance: f64,
    pub(crate) rss_per_cache_entry: f64,
    pub(crate) hash: u64,
    pub(crate) log_entries: usize,
    pub(crate) crashes: usize,
    /// Crash to removal from the cache, in virtual time, per crashed instance.
    pub(crate) removal_lags: Vec<Duration>,
    /// Every cache equals the live registrations of its service at the end.
    pub(crate) consistent: bool,
    /// Virtual time that passed while registering and syncing (should be none).
    pub(crate) setup_virtual: Duration,
}

/// One observed thing: when, who saw it, its place in that observer's order, and a digest.
type Entry = (u64, u32, u32, u64);

/// Which instance a cache removed, and when (virtual time since the start).
type Removals = Vec<(String, Duration)>;

fn digest(parts: &[&[u8]]) -> u64 {
    let mut h = Fnv64::default();
    for part in parts {
        h.write(&(part.len() as u64).to_le_bytes());
        h.write(part);
    }
    h.finish()
}

fn since(t0: tokio::time::Instant) -> u64 {
    u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn service_name(s: usize) -> String {
    format!("svc-{s:03}")
}

pub(crate) fn instance(service: usize, n: usize) -> ServiceInstance {
    ServiceInstance::new(
        service_name(service),
        format!("i-{n:06}"),
        format!("10.{}.{}.{}:8080", n / 65536 % 256, n / 256 % 256, n % 256),
    )
}

/// Logs a raw watch on the whole namespace until `stop`.
fn log_watch(
    mut stream: WatchStream,
    t0: tokio::time::Instant,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<Vec<Entry>> {
    tokio::spawn(async move {
        let mut log = Vec::new();
        let mut seq = 0u32;
        loop {
            tokio::select! {
                biased;
                batch = stream.next() => match batch {
                    Some(Ok(batch)) => {
                        for event in batch.events {
                            let kind: &[u8] = match event.kind {
                                EventKind::Put => b"put",
                                EventKind::Delete => b"delete",
                            };
                            let rev = batch.revision.get().to_le_bytes();
                            let d = digest(&[kind, &rev, &event.kv.key, &event.kv.value]);
                            log.push((since(t0), 0, seq, d));
                            seq += 1;
                        }
                    }
                    _ => break,
                },
                _ = stop.changed() => break,
            }
        }
        log
    })
}

/// Logs one cache's events until `stop`, and when each instance was removed.
fn log_cache(
    discovery: &Discovery,
    source: u32,
    t0: tokio::time::Instant,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<(Vec<Entry>, Removals)> {
    let mut events = discovery.subscribe();
    tokio::spawn(async move {
        let mut log = Vec::new();
        let mut removed = Vec::new();
        let mut seq = 0u32;
        let mut record = |event: DiscoveryEvent, log: &mut Vec<Entry>| {
            let kind: &[u8] = match &event {
                DiscoveryEvent::Added(_) => b"added",
                DiscoveryEvent::Updated { .. } => b"updated",
                DiscoveryEvent::Removed(i) => {
                    removed.push((i.id.clone(), t0.elapsed()));
                    b"removed"
                }
            };
            let i = event.instance();
            log.push((
                since(t0),
                source,
                seq,
                digest(&[kind, i.id.as_bytes(), i.address.as_bytes()]),
            ));
            seq += 1;
        };
        loop {
            tokio::select! {
                biased;
                event = events.recv() => match event {
                    Some(event) => record(event, &mut log),
                    None => break,
                },
                _ = stop.changed() => break,
            }
        }
        while let Some(event) = events.try_recv() {
            record(event, &mut log);
        }
        (log, removed)
    })
}

/// Runs the simulation once on a fresh current-thread runtime with a paused clock.
pub(crate) fn run_once(scale: Scale, seed: u64) -> std::io::Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    runtime.block_on(simulate(scale, seed))
}

async fn simulate(scale: Scale, seed: u64) -> std::io::Result<Outcome> {
    fn io(e: impl std::fmt::Display) -> std::io::Error {
        std::io::Error::other(e.to_string())
    }
    let wall = Instant::now();
    let t0 = tokio::time::Instant::now();
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::builder().instant().build());
    let (stop_tx, stop_rx) = watch::channel(false);
    let raw = registry
        .watch(b"services/", WatchOptions::default())
        .await
        .map_err(io)?;
    let raw_log = log_watch(raw, t0, stop_rx.clone());
    let options = RegistrationOptions::default().ttl(TTL).seed(seed);

    let rss_before = procfs::rss();
    let mut live: BTreeMap<String, (usize, Registration)> = BTreeMap::new();
    for n in 0..scale.instances {
        let instance = instance(n % scale.services, n);
        let registration = Registration::start(registry.clone(), instance.clone(), options.clone())
            .await
            .map_err(io)?;
        live.insert(instance.id, (n % scale.services, registration));
    }
    let rss_registered = procfs::rss();

    let hub = DiscoveryHub::new(registry.clone(), DiscoveryOptions::default().seed(seed));
    let mut caches = Vec::with_capacity(scale.services);
    for s in 0..scale.services {
        caches.push(hub.discovery(&service_name(s)).map_err(io)?);
    }
    for cache in &caches {
        cache
            .wait_synced(Duration::from_secs(60))
            .await
            .map_err(io)?;
    }
    let rss_cached = procfs::rss();
    let setup_virtual = t0.elapsed();
    let setup_wall = wall.elapsed();

    let cache_logs: Vec<_> = caches
        .iter()
        .enumerate()
        .map(|(s, cache)| log_cache(cache, s as u32 + 1, t0, stop_rx.clone()))
        .collect();
    let driver_source = scale.services as u32 + 1;
    let mut driver_log = Vec::new();
    let mut crashed_at: BTreeMap<String, Duration> = BTreeMap::new();
    // The seeded choice of instances to crash.
    let mut rng = SplitMix64::new(seed);
    let mut next_id = scale.instances;

    let run_wall = Instant::now();
    let start = tokio::time::Instant::now();
    for minute in 1..=scale.minutes {
        tokio::time::sleep_until(start + Duration::from_secs(60 * minute)).await;
        // The last minute only lets the last crashes expire.
        if minute == scale.minutes {
            break;
        }
        for _ in 0..scale.churn {
            let pick = rng.next_u64() % live.len().max(1) as u64;
            let victim = live.keys().nth(pick as usize).cloned();
            if let Some((service, registration)) = victim.as_ref().and_then(|id| live.remove(id)) {
                let id = victim.unwrap_or_default();
                registration.abandon();
                crashed_at.insert(id.clone(), t0.elapsed());
                driver_log.push((
                    since(t0),
                    driver_source,
                    driver_log.len() as u32,
                    digest(&[b"crash", id.as_bytes()]),
                ));
                let fresh = instance(service, next_id);
                next_id += 1;
                let registration =
                    Registration::start(registry.clone(), fresh.clone(), options.clone())
                        .await
                        .map_err(io)?;
                driver_log.push((
                    since(t0),
                    driver_source,
                    driver_log.len() as u32,
                    digest(&[b"start", fresh.id.as_bytes()]),
                ));
                live.insert(fresh.id, (service, registration));
            }
        }
    }
    let run_wall = run_wall.elapsed();

    // D1: each cache holds exactly its service's live registrations.
    let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (id, (service, _)) in &live {
        expected
            .entry(service_name(*service))
            .or_default()
            .insert(id.clone());
    }
    let consistent = caches.iter().all(|cache| {
        let held: BTreeSet<String> = cache.snapshot().iter().map(|i| i.id.clone()).collect();
        expected
            .get(cache.service())
            .map_or(held.is_empty(), |want| *want == held)
    });
    let peak_rss = procfs::peak_rss();

    stop_tx.send_replace(true);
    let mut log = raw_log.await.unwrap_or_default();
    let mut removal_lags = Vec::new();
    for handle in cache_logs {
        let (entries, removed) = handle.await.unwrap_or_default();
        log.extend(entries);
        for (id, at) in removed {
            if let Some(crash) = crashed_at.get(&id) {
                removal_lags.push(at.saturating_sub(*crash));
            }
        }
    }
    log.extend(driver_log);
    log.sort_unstable();
    let mut hash = Fnv64::default();
    for (t, source, seq, d) in &log {
        for word in [*t, u64::from(*source), u64::from(*seq), *d] {
            hash.write(&word.to_le_bytes());
        }
    }
    let per = |delta: u64| delta as f64 / scale.instances.max(1) as f64;
    Ok(Outcome {
        setup_wall,
        run_wall,
        peak_rss,
        rss_per_instance: per(rss_registered.saturating_sub(rss_before)),
        rss_per_cache_entry: per(rss_cached.saturating_sub(rss_registered)),
        hash: hash.finish(),
        log_entries: log.len(),
        crashes: crashed_at.len(),
        removal_lags,
        consistent,
        setup_virtual,
    })
}

pub(crate) fn run(quick: bool, seed: u64) -> Report {
    let scale = Scale::new(quick);
    let mut report = Report::default();

    let peak_reset = procfs::reset_peak();
    eprintln!(
        "(c) {} instances over {} services, {} virtual minutes, seed {seed}",
        scale.instances, scale.services, scale.minutes
    );
    let first = match run_once(scale, seed) {
        Ok(outcome) => outcome,
        Err(e) => {
            report.note(format!("(c) the simulation failed: {e}"));
            return report;
        }
    };
    eprintln!("(c) again with the same seed, then with seed {}", seed + 1);
    let second = run_once(scale, seed).ok();
    let other = run_once(scale, seed.wrapping_add(1)).ok();

    let hours = scale.minutes as f64 / 60.0;
    let label = if scale.minutes == 60 {
        "one virtual hour".to_owned()
    } else {
        format!("{} virtual minutes", scale.minutes)
    };
    let walls: Vec<Duration> = [Some(&first), second.as_ref(), other.as_ref()]
        .into_iter()
        .flatten()
        .map(|o| o.run_wall)
        .collect();
    let mut sorted = walls.clone();
    sorted.sort_unstable();
    let median = sorted[sorted.len() / 2];
    // The goal is for a whole hour; a shorter quick run is judged pro rata.
    let budget = Duration::from_secs_f64(hours);
    // Each instance renews every TTL/3 from its start; a count made with a counting decorator
    // at the quick scale matched this schedule exactly (1,000 x 180).
    let rounds = scale.instances as f64 * (scale.minutes * 60) as f64 / (TTL / 3).as_secs_f64();
    report.row(
        PART,
        format!("{} instances, {label}: wall time", scale.instances),
        format!(
            "{} (median of {}; {:.0}x real time; ~{:.1}M keep-alive rounds, {} each)",
            fmt_duration(median),
            walls.len(),
            scale.minutes as f64 * 60.0 / median.as_secs_f64(),
            rounds / 1e6,
            fmt_duration(median.div_f64(rounds.max(1.0)))
        ),
        "",
        "",
        format!("< {}", fmt_duration(budget)),
        Verdict::from_bool(median < budget),
    );
    match crate::sim_floors::floors(scale) {
        Ok(floors) => {
            let rows = [
                (
                    "same schedule, simulator alone (manual clock, one loop)",
                    floors.manual,
                ),
                (
                    "same schedule, simulator alone, in batches of 1,000",
                    floors.manual_batched,
                ),
                (
                    "same schedule, one bare task per instance (paused clock)",
                    floors.tasks,
                ),
                (
                    "same schedule, one task for all via dyn Registry: keep-alive only",
                    floors.one_task,
                ),
                (
                    "same schedule, one task for all via dyn Registry: keep-alive + key check",
                    floors.one_task_checked,
                ),
                (
                    "same schedule, one task for all via dyn Registry: batches of 1,000",
                    floors.one_task_batched,
                ),
            ];
            for (measure, wall) in rows {
                report.row(PART, measure, fmt_duration(wall), "", "", "", Verdict::Info);
            }
        }
        Err(e) => report.note(format!("(c) the floor runs failed: {e}")),
    }
    report.row(
        PART,
        "setup: register all + sync caches (wall)",
        format!(
            "{} (virtual time passed: {})",
            fmt_duration(first.setup_wall),
            fmt_duration(first.setup_virtual)
        ),
        "",
        "",
        "",
        Verdict::Info,
    );
    report.row(
        PART,
        "peak memory (VmHWM, whole process)",
        fmt_bytes(first.peak_rss as f64),
        "",
        "",
        "< 200 MB",
        Verdict::from_bool(peak_reset && first.peak_rss < 200_000_000),
    );
    let same = second.as_ref().map(|s| s.hash == first.hash);
    report.row(
        PART,
        "event-log hash, same seed twice",
        format!(
            "{:016x} / {} ({} entries)",
            first.hash,
            second
                .as_ref()
                .map_or("failed".to_owned(), |s| format!("{:016x}", s.hash)),
            first.log_entries
        ),
        "",
        "",
        "equal",
        Verdict::from_bool(same == Some(true)),
    );
    report.row(
        PART,
        "event-log hash, seed + 1 (must differ)",
        other
            .as_ref()
            .map_or("failed".to_owned(), |o| format!("{:016x}", o.hash)),
        "",
        "",
        "differs",
        Verdict::from_bool(other.as_ref().is_some_and(|o| o.hash != first.hash)),
    );
    let (lo, hi) = (
        first.removal_lags.iter().min().copied().unwrap_or_default(),
        first.removal_lags.iter().max().copied().unwrap_or_default(),
    );
    let in_bounds = first.removal_lags.len() == first.crashes
        && first
            .removal_lags
            .iter()
            .all(|lag| *lag > TTL - TTL / 3 && *lag <= TTL);
    report.row(
        PART,
        "crash -> removal from cache (virtual), all crashes",
        format!(
            "{} crashes, {} removed, {} .. {}",
            first.crashes,
            first.removal_lags.len(),
            fmt_duration(lo),
            fmt_duration(hi)
        ),
        "",
        "",
        "in (TTL - TTL/3, TTL]",
        Verdict::from_bool(in_bounds),
    );
    report.row(
        PART,
        "caches equal live registrations at the end (D1)",
        if first.consistent { "yes" } else { "no" },
        "",
        "",
        "yes",
        Verdict::from_bool(first.consistent),
    );
    report.row(
        "mem",
        "memory per registered instance (RSS growth / instances)",
        fmt_bytes(first.rss_per_instance),
        "",
        "",
        "",
        Verdict::Info,
    );
    report.row(
        "mem",
        "memory per cache entry (RSS growth / entries)",
        fmt_bytes(first.rss_per_cache_entry),
        "",
        "",
        "",
        Verdict::Info,
    );
    if !peak_reset {
        report.note("(c) the kernel refused to reset the peak RSS: the peak includes earlier work");
    }
    if !quick {
        fleet(&mut report, seed);
    }
    report
}

/// 100,000 registrations for a virtual hour, once: its wall time and peak memory.
fn fleet(report: &mut Report, seed: u64) {
    let scale = Scale::fleet();
    eprintln!(
        "(c) {} instances over {} services, {} virtual minutes, seed {seed}",
        scale.instances, scale.services, scale.minutes
    );
    let peak_reset = procfs::reset_peak();
    match run_once(scale, seed) {
        Ok(outcome) => {
            report.row(
                PART,
                format!("{} instances, one virtual hour: wall time", scale.instances),
                format!(
                    "{} (once; setup {}; {} crashes, caches consistent: {})",
                    fmt_duration(outcome.run_wall),
                    fmt_duration(outcome.setup_wall),
                    outcome.crashes,
                    if outcome.consistent { "yes" } else { "no" }
                ),
                "",
                "",
                "",
                Verdict::Info,
            );
            report.row(
                PART,
                format!("{} instances: peak memory (VmHWM)", scale.instances),
                format!(
                    "{}{}",
                    fmt_bytes(outcome.peak_rss as f64),
                    if peak_reset {
                        ""
                    } else {
                        " (includes the earlier runs)"
                    }
                ),
                "",
                "",
                "",
                Verdict::Info,
            );
        }
        Err(e) => report.note(format!("(c) the 100,000-instance run failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_simulation_is_deterministic_and_consistent() {
        let scale = Scale {
            instances: 60,
            services: 3,
            minutes: 3,
            churn: 2,
        };
        let a = run_once(scale, 7).expect("run");
        let b = run_once(scale, 7).expect("run");
        let c = run_once(scale, 8).expect("run");
        assert_eq!(a.hash, b.hash);
        assert_ne!(a.hash, c.hash);
        assert!(a.consistent);
        assert_eq!(a.crashes, 4);
        assert_eq!(a.removal_lags.len(), 4);
        assert!(a
            .removal_lags
            .iter()
            .all(|lag| *lag <= TTL && *lag > TTL - TTL / 3));
    }
}
