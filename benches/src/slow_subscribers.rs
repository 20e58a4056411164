//! (g) Memory of slow subscribers: 1,000 discovery subscribers that never read while 10,000
//! changes flow, against one fast reader alone, and against unbounded per-subscriber queues
//! (what discovery did before its subscriptions were bounded).
//!
//! Each scenario runs in a process of its own (freed memory is not always returned to the
//! system, so one scenario would hide in another's leftovers), on a fresh `MemoryRegistry`
//! (compacted as it goes, so the store's history stays small) with one `Discovery` of 100
//! instances; the changes are weight updates spread over the instances. Growth is the peak
//! resident size during the scenario minus the resident size at its start.

use crate::procfs;
use crate::report::{Report, Verdict};
use crate::stats::{fmt_bytes, fmt_duration};
use registry_api::{PutOptions, Registry};
use registry_memory::MemoryRegistry;
use registry_service::{
    Discovery, DiscoveryEvent, DiscoveryEvents, DiscoveryOptions, Metadata, ServiceInstance,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PART: &str = "g";
const INSTANCES: usize = 100;

struct Scale {
    subscribers: usize,
    changes: usize,
}

fn instance(index: usize, weight: u32) -> ServiceInstance {
    ServiceInstance::new("slow", format!("i{index:03}"), format!("10.2.0.{index}:80"))
        .with_metadata(
            Metadata::default()
                .with_weight(weight)
                .with_version("1.0.0")
                .with_zone("bench-zone"),
        )
}

async fn put(registry: &Arc<dyn Registry>, instance: &ServiceInstance) {
    let key = format!("services/slow/{}", instance.id);
    registry
        .put(key.as_bytes(), &instance.to_json(), PutOptions::default())
        .await
        .ok();
}

/// Seeds the instances, starts a discovery and waits until it holds them.
async fn setup() -> (MemoryRegistry, Arc<dyn Registry>, Discovery) {
    let memory = MemoryRegistry::builder().instant().build();
    let registry: Arc<dyn Registry> = Arc::new(memory.clone());
    for index in 0..INSTANCES {
        put(&registry, &instance(index, 1)).await;
    }
    let discovery = Discovery::start(
        registry.clone(),
        "slow",
        DiscoveryOptions::default().seed(1),
    )
    .expect("a valid service");
    discovery
        .wait_for_len(INSTANCES, Duration::from_secs(30))
        .await
        .expect("seeded");
    (memory, registry, discovery)
}

/// Writes `changes` updates, compacting as it goes, then waits until the discovery has them.
async fn churn(
    memory: &MemoryRegistry,
    registry: &Arc<dyn Registry>,
    discovery: &Discovery,
    changes: usize,
) {
    for change in 0..changes {
        put(registry, &instance(change % INSTANCES, 2 + change as u32)).await;
        if change % 1_000 == 999 {
            registry.compact(memory.current_revision()).await.ok();
            // Let the discovery's task keep pace, as a live process would.
            tokio::task::yield_now().await;
        }
    }
    let target = memory.current_revision();
    while discovery.revision() < target {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A reader that keeps up, replaying into a map; returns the map when the stream ends.
fn fast_reader(
    mut events: DiscoveryEvents,
) -> tokio::task::JoinHandle<BTreeMap<String, ServiceInstance>> {
    tokio::spawn(async move {
        let mut held = BTreeMap::new();
        while let Some(event) = events.recv().await {
            apply(&mut held, event);
        }
        held
    })
}

fn apply(held: &mut BTreeMap<String, ServiceInstance>, event: DiscoveryEvent) {
    match event {
        DiscoveryEvent::Added(new) | DiscoveryEvent::Updated { new, .. } => {
            held.insert(new.id.clone(), new);
        }
        DiscoveryEvent::Removed(old) => {
            held.remove(&old.id);
        }
    }
}

struct Outcome {
    growth: u64,
    took: Duration,
    /// The first slow subscriber, drained afterwards, equals the final instances.
    exact: bool,
    lagged: u64,
}

async fn with_bounded_subscribers(scale: &Scale, subscribers: usize) -> Outcome {
    let (memory, registry, discovery) = setup().await;
    procfs::reset_peak();
    let start_rss = procfs::rss();
    let started = Instant::now();
    let fast = fast_reader(discovery.subscribe());
    let mut silent: Vec<DiscoveryEvents> =
        (0..subscribers).map(|_| discovery.subscribe()).collect();
    churn(&memory, &registry, &discovery, scale.changes).await;
    let growth = procfs::peak_rss().saturating_sub(start_rss);
    let took = started.elapsed();

    let truth: Vec<ServiceInstance> = discovery.snapshot().to_vec();
    let (exact, lagged) = match silent.first_mut() {
        Some(first) => {
            let mut held = BTreeMap::new();
            while let Some(event) = first.try_recv() {
                apply(&mut held, event);
            }
            (
                held.into_values().collect::<Vec<_>>() == truth,
                first.lagged(),
            )
        }
        None => (true, 0),
    };
    drop(silent);
    discovery.shutdown().await;
    let fast_held = fast.await.unwrap_or_default();
    Outcome {
        growth,
        took,
        exact: exact && fast_held.into_values().collect::<Vec<_>>() == truth,
        lagged,
    }
}

/// The design before bounded subscriptions: every subscriber had its own unbounded queue, fed
/// one shared (`Arc`) copy of each event. Modelled with a `Vec` per subscriber, fed the same
/// events the discovery publishes (an `Updated` per change), which holds exactly what such a
/// queue holds for a reader that never reads. The events are made here rather than read from a
/// discovery subscription, which (being bounded) would itself lag and drop them.
async fn with_unbounded_queues(scale: &Scale) -> Outcome {
    let (_memory, _registry, discovery) = setup().await;
    procfs::reset_peak();
    let start_rss = procfs::rss();
    let started = Instant::now();
    let mut queues: Vec<Vec<Arc<DiscoveryEvent>>> = vec![Vec::new(); scale.subscribers];
    let mut weights = vec![1u32; INSTANCES];
    for change in 0..scale.changes {
        let index = change % INSTANCES;
        let weight = 2 + change as u32;
        let event = Arc::new(DiscoveryEvent::Updated {
            old: instance(index, weights[index]),
            new: instance(index, weight),
        });
        weights[index] = weight;
        for queue in &mut queues {
            queue.push(event.clone());
        }
    }
    let growth = procfs::peak_rss().saturating_sub(start_rss);
    let took = started.elapsed();
    let queued: usize = queues.iter().map(Vec::len).sum();
    drop(queues);
    discovery.shutdown().await;
    Outcome {
        growth,
        took,
        exact: queued == scale.changes * scale.subscribers,
        lagged: 0,
    }
}

/// Which scenario a child process runs.
const SCENARIO_ENV: &str = "REGISTRY_BENCH_SLOW_SCENARIO";

fn scale(quick: bool) -> Scale {
    if quick {
        Scale {
            subscribers: 100,
            changes: 1_000,
        }
    } else {
        Scale {
            subscribers: 1_000,
            changes: 10_000,
        }
    }
}

/// Runs one scenario in this process and reports it as a note the parent reads back.
fn run_scenario(name: &str, quick: bool) -> Report {
    let scale = scale(quick);
    let mut report = Report::default();
    procfs::reset_peak();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            report.note(format!("(g) no runtime: {e}"));
            return report;
        }
    };
    let outcome = match name {
        "fast" => runtime.block_on(with_bounded_subscribers(&scale, 0)),
        "bounded" => runtime.block_on(with_bounded_subscribers(&scale, scale.subscribers)),
        _ => runtime.block_on(with_unbounded_queues(&scale)),
    };
    report.note(format!(
        "SCENARIO {name} {} {} {} {}",
        outcome.growth,
        outcome.took.as_nanos(),
        outcome.exact,
        outcome.lagged
    ));
    report
}

/// Runs `name` in a child process of this executable.
fn in_child(name: &str, quick: bool) -> Option<Outcome> {
    let exe = std::env::current_exe().ok()?;
    let mut command = std::process::Command::new(exe);
    command.args(["slow", "--child"]).env(SCENARIO_ENV, name);
    if quick {
        command.arg("--quick");
    }
    let output = command.output().ok()?;
    let report = Report::from_lines(&String::from_utf8_lossy(&output.stdout));
    report.notes.iter().find_map(|note| {
        let fields: Vec<&str> = note.strip_prefix("SCENARIO ")?.split(' ').collect();
        let [_, growth, took, exact, lagged] = fields[..] else {
            return None;
        };
        Some(Outcome {
            growth: growth.parse().ok()?,
            took: Duration::from_nanos(took.parse().ok()?),
            exact: exact == "true",
            lagged: lagged.parse().ok()?,
        })
    })
}

pub(crate) fn run(quick: bool) -> Report {
    if let Ok(name) = std::env::var(SCENARIO_ENV) {
        return run_scenario(&name, quick);
    }
    let scale = scale(quick);
    let mut report = Report::default();
    if !procfs::reset_peak() {
        report.note(
            "(g) the kernel refused to reset the peak RSS: growth figures include the start-up",
        );
    }
    eprintln!("(g) one fast reader");
    let fast = in_child("fast", quick);
    eprintln!("(g) {} silent subscribers, bounded", scale.subscribers);
    let bounded = in_child("bounded", quick);
    eprintln!(
        "(g) {} silent subscribers, unbounded queues",
        scale.subscribers
    );
    let unbounded = in_child("unbounded", quick);
    let (Some(fast), Some(bounded), Some(unbounded)) = (fast, bounded, unbounded) else {
        report.note("(g) a scenario's process failed");
        return report;
    };

    let per_subscriber = bounded.growth.saturating_sub(fast.growth) / scale.subscribers as u64;
    report.row(
        PART,
        format!(
            "{} changes, one fast reader: peak RSS growth",
            scale.changes
        ),
        format!(
            "{} ({})",
            fmt_bytes(fast.growth as f64),
            fmt_duration(fast.took)
        ),
        "",
        "",
        "",
        Verdict::Info,
    );
    let ratio = bounded.growth as f64 / fast.growth.max(1) as f64;
    report.row(
        PART,
        format!(
            "{} changes, {} subscribers that never read (+ the fast one): peak RSS growth",
            scale.changes, scale.subscribers
        ),
        format!(
            "{} ({}; ~{} per subscriber over the fast run; lagged {}x then recovered exactly: {})",
            fmt_bytes(bounded.growth as f64),
            fmt_duration(bounded.took),
            fmt_bytes(per_subscriber as f64),
            bounded.lagged,
            if bounded.exact && fast.exact {
                "yes"
            } else {
                "NO"
            }
        ),
        fmt_bytes(fast.growth as f64),
        format!("{ratio:.1}x the fast reader"),
        "bounded: < 64 KiB per silent subscriber, and exact",
        Verdict::from_bool(per_subscriber < 64 * 1024 && bounded.exact && fast.exact),
    );
    let saved = unbounded.growth as f64 / bounded.growth.max(1) as f64;
    report.row(
        PART,
        "same, with unbounded per-subscriber queues (the design before)",
        fmt_bytes(bounded.growth as f64),
        format!(
            "{} ({}; every event queued for every subscriber: {})",
            fmt_bytes(unbounded.growth as f64),
            fmt_duration(unbounded.took),
            if unbounded.exact { "yes" } else { "NO" }
        ),
        format!("{saved:.1}x less with bounded subscriptions"),
        "less than unbounded (full run; --quick is too small to tell from noise)",
        if quick {
            Verdict::Info
        } else {
            Verdict::from_bool(bounded.growth < unbounded.growth)
        },
    );
    report
}
