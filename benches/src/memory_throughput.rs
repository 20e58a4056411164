//! (b) The simulator against the plain baseline: puts per second, and watch deliveries per
//! second with 1, 100 and 1,000 watchers; and the puts of one named client while another
//! client is partitioned or has 1,000 calls held, against none. Single-threaded, no runtime (the simulator's manual
//! clock needs none); A and B alternate in blocks, in ABBA order.

use crate::baseline::PlainStore;
use crate::report::{Report, Verdict};
use crate::stats::{fmt_duration, fmt_rate, fmt_ratio, Samples};
use futures::executor::block_on;
use futures::{FutureExt, StreamExt};
use registry_api::{PutOptions, Registry, WatchOptions, WatchStream};
use registry_memory::MemoryRegistry;
use std::time::{Duration, Instant};

const PART: &str = "b";
/// Puts timed together: one sample is the mean of a batch, so the clock's own cost vanishes.
const BATCH: usize = 100;
/// Distinct keys written in turn.
const KEYS: usize = 1_000;
/// Watch rounds write this many puts, then drain every watcher.
const ROUND_PUTS: usize = 100;
/// A realistic value: an instance's JSON.
const VALUE: &[u8] =
    br#"{"service":"hello","id":"a-0001","address":"127.0.0.1:8080","metadata":{"version":"1.2.0","weight":1,"zone":"eu-1","labels":{}}}"#;

#[derive(Debug, Clone, Copy)]
struct Scale {
    blocks: usize,
    puts_per_block: usize,
    deliveries_per_block: usize,
}

/// Throughput of one side: per-op times of each sample, and the rate of each block.
#[derive(Debug, Default)]
struct Throughput {
    per_op: Samples,
    /// Ops and time of the block under way.
    ops: u64,
    elapsed: Duration,
    block_rates: Vec<f64>,
}

impl Throughput {
    fn record(&mut self, ops: usize, elapsed: Duration) {
        self.ops += ops as u64;
        self.elapsed += elapsed;
        self.per_op.push(elapsed / ops.max(1) as u32);
    }

    /// Closes a block: its rate joins those the median is taken of.
    fn end_block(&mut self) {
        if self.ops > 0 {
            self.block_rates
                .push(self.ops as f64 / self.elapsed.as_secs_f64().max(1e-12));
        }
        self.ops = 0;
        self.elapsed = Duration::ZERO;
    }

    /// The median block's rate: a burst of other work on the machine spoils one block, not
    /// the figure.
    fn rate(&self) -> f64 {
        let mut rates = self.block_rates.clone();
        rates.sort_by(f64::total_cmp);
        rates.get(rates.len() / 2).copied().unwrap_or(0.0)
    }

    fn describe(&self) -> String {
        format!(
            "{} (median of {} blocks; p50 {}, p99 {} per op)",
            fmt_rate(self.rate()),
            self.block_rates.len(),
            fmt_duration(self.per_op.p50()),
            fmt_duration(self.per_op.p99())
        )
    }
}

pub(crate) fn run(quick: bool) -> Report {
    let scale = if quick {
        Scale {
            blocks: 4,
            puts_per_block: 20_000,
            deliveries_per_block: 200_000,
        }
    } else {
        Scale {
            blocks: 12,
            puts_per_block: 100_000,
            deliveries_per_block: 1_000_000,
        }
    };
    let keys: Vec<Vec<u8>> = (0..KEYS)
        .map(|i| format!("svc/hello/{i:04}").into_bytes())
        .collect();
    let mut report = Report::default();
    puts(&mut report, scale, &keys);
    for watchers in [1, 100, 1_000] {
        deliveries(&mut report, scale, &keys, watchers);
    }
    for other in [OtherClient::Partitioned, OtherClient::Holding] {
        client_puts(&mut report, scale, &keys, other);
    }
    report
}

/// What happens to the other client while one client's puts are timed.
#[derive(Debug, Clone, Copy)]
enum OtherClient {
    Partitioned,
    /// Its link is held with this many calls waiting.
    Holding,
}

/// Calls held on the other client's link.
const HELD_CALLS: usize = 1_000;

/// Puts through client "a" while client "b" is cut off (or holds 1,000 calls), against puts
/// through "a" on a server whose other client is healthy: a fault on one link costs the others
/// nothing, because it lives in that link's own wrapper.
fn client_puts(report: &mut Report, scale: Scale, keys: &[Vec<u8>], other: OtherClient) {
    eprintln!(
        "(b) client puts, other client {other:?}: {} blocks of {} each side",
        scale.blocks, scale.puts_per_block
    );
    let build = || {
        MemoryRegistry::builder()
            .manual_clock()
            .history_limit(10_000)
            .build()
    };
    let (faulty, healthy) = (build(), build());
    let (a_faulty, a_healthy) = (faulty.client("a"), healthy.client("a"));
    let b = faulty.client("b");
    let _b_healthy = healthy.client("b");
    let mut held: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>> =
        Vec::new();
    match other {
        OtherClient::Partitioned => faulty.link("b").partition(),
        OtherClient::Holding => {
            faulty.link("b").hold();
            let waker = futures::task::noop_waker();
            let mut cx = std::task::Context::from_waker(&waker);
            for key in keys.iter().cycle().take(HELD_CALLS) {
                let b = &b;
                let mut call: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
                    Box::pin(async move {
                        let _ = b.get(key).await;
                    });
                // One poll queues the call on the held link.
                let _ = call.as_mut().poll(&mut cx);
                held.push(call);
            }
            if faulty.link("b").queued_calls() != HELD_CALLS as u64 {
                eprintln!("(b) expected {HELD_CALLS} held calls");
            }
        }
    }
    let (mut ours, mut base) = (Throughput::default(), Throughput::default());
    let mut next = 0usize;
    let block = |client: &registry_memory::MemoryClient, t: &mut Throughput, next: &mut usize| {
        block_on(async {
            for _ in 0..scale.puts_per_block / BATCH {
                let start = Instant::now();
                for _ in 0..BATCH {
                    let key = &keys[*next % keys.len()];
                    *next += 1;
                    if client.put(key, VALUE, PutOptions::default()).await.is_err() {
                        eprintln!("(b) a client put failed");
                    }
                }
                t.record(BATCH, start.elapsed());
            }
            t.end_block();
        })
    };
    block(&a_faulty, &mut Throughput::default(), &mut next);
    block(&a_healthy, &mut Throughput::default(), &mut next);
    for round in 0..scale.blocks {
        if round % 2 == 0 {
            block(&a_faulty, &mut ours, &mut next);
            block(&a_healthy, &mut base, &mut next);
        } else {
            block(&a_healthy, &mut base, &mut next);
            block(&a_faulty, &mut ours, &mut next);
        }
    }
    drop(held);
    let ratio = ours.rate() / base.rate();
    let label = match other {
        OtherClient::Partitioned => "client puts/s, another client partitioned",
        OtherClient::Holding => "client puts/s, another client holding 1,000 calls",
    };
    report.row(
        PART,
        label,
        ours.describe(),
        format!("{} (no fault on the other client)", base.describe()),
        fmt_ratio(ratio),
        ">= 0.9x",
        Verdict::from_bool(ratio >= 0.9),
    );
}

fn puts(report: &mut Report, scale: Scale, keys: &[Vec<u8>]) {
    eprintln!(
        "(b) puts: {} blocks of {} each side",
        scale.blocks, scale.puts_per_block
    );
    let registry = MemoryRegistry::builder()
        .manual_clock()
        .history_limit(10_000)
        .build();
    let plain = PlainStore::new(1024);
    let (mut ours, mut base) = (Throughput::default(), Throughput::default());
    let mut next = 0usize;
    let registry_block = |t: &mut Throughput, next: &mut usize| {
        block_on(async {
            for _ in 0..scale.puts_per_block / BATCH {
                let start = Instant::now();
                for _ in 0..BATCH {
                    let key = &keys[*next % keys.len()];
                    *next += 1;
                    if registry
                        .put(key, VALUE, PutOptions::default())
                        .await
                        .is_err()
                    {
                        eprintln!("(b) a put failed");
                    }
                }
                t.record(BATCH, start.elapsed());
            }
            t.end_block();
        })
    };
    let plain_block = |t: &mut Throughput, next: &mut usize| {
        block_on(async {
            for _ in 0..scale.puts_per_block / BATCH {
                let start = Instant::now();
                for _ in 0..BATCH {
                    let key = &keys[*next % keys.len()];
                    *next += 1;
                    plain.put(key, VALUE).await;
                }
                t.record(BATCH, start.elapsed());
            }
            t.end_block();
        })
    };
    // One unmeasured block each to warm caches and the allocator.
    registry_block(&mut Throughput::default(), &mut next);
    plain_block(&mut Throughput::default(), &mut next);
    for block in 0..scale.blocks {
        if block % 2 == 0 {
            registry_block(&mut ours, &mut next);
            plain_block(&mut base, &mut next);
        } else {
            plain_block(&mut base, &mut next);
            registry_block(&mut ours, &mut next);
        }
    }
    let ratio = ours.rate() / base.rate();
    let met = ours.rate() >= 3e6 && ratio >= 0.2;
    report.row(
        PART,
        "memory puts/s",
        ours.describe(),
        base.describe(),
        fmt_ratio(ratio),
        ">= 3M/s, >= 0.2x",
        Verdict::from_bool(met),
    );
}

fn deliveries(report: &mut Report, scale: Scale, keys: &[Vec<u8>], watchers: usize) {
    let rounds = scale
        .deliveries_per_block
        .div_ceil(watchers * ROUND_PUTS)
        .max(1);
    eprintln!(
        "(b) deliveries to {watchers} watchers: {} blocks of {rounds} rounds each side",
        scale.blocks
    );
    let registry = MemoryRegistry::builder()
        .manual_clock()
        .history_limit(10_000)
        .build();
    let mut streams: Vec<WatchStream> = block_on(async {
        let mut streams = Vec::with_capacity(watchers);
        for _ in 0..watchers {
            match registry.watch(b"svc/", WatchOptions::default()).await {
                Ok(stream) => streams.push(stream),
                Err(e) => eprintln!("(b) watch failed: {e}"),
            }
        }
        streams
    });
    let plain = PlainStore::new(ROUND_PUTS * 2);
    let mut receivers: Vec<_> = (0..watchers).map(|_| plain.watch()).collect();
    let (mut ours, mut base) = (Throughput::default(), Throughput::default());
    let (mut expected, mut lost) = (0u64, 0u64);
    let mut next = 0usize;

    let mut registry_block = |t: &mut Throughput, next: &mut usize, lost: &mut u64| {
        block_on(async {
            for _ in 0..rounds {
                let start = Instant::now();
                for _ in 0..ROUND_PUTS {
                    let key = &keys[*next % 50];
                    *next += 1;
                    if registry
                        .put(key, VALUE, PutOptions::default())
                        .await
                        .is_err()
                    {
                        eprintln!("(b) a put failed");
                    }
                }
                let mut delivered = 0usize;
                for stream in streams.iter_mut() {
                    while let Some(Some(Ok(batch))) = stream.next().now_or_never() {
                        delivered += batch.events.len();
                    }
                }
                t.record(delivered.max(1), start.elapsed());
                *lost += (watchers * ROUND_PUTS).saturating_sub(delivered) as u64;
            }
            t.end_block();
        })
    };
    let mut plain_block = |t: &mut Throughput, next: &mut usize, lost: &mut u64| {
        block_on(async {
            for _ in 0..rounds {
                let start = Instant::now();
                for _ in 0..ROUND_PUTS {
                    let key = &keys[*next % 50];
                    *next += 1;
                    plain.put(key, VALUE).await;
                }
                let mut delivered = 0usize;
                for receiver in receivers.iter_mut() {
                    while let Ok(event) = receiver.try_recv() {
                        // Read the event, as a consumer would.
                        delivered += usize::from(
                            event.revision > 0 && !event.key.is_empty() && !event.value.is_empty(),
                        );
                    }
                }
                t.record(delivered.max(1), start.elapsed());
                *lost += (watchers * ROUND_PUTS).saturating_sub(delivered) as u64;
            }
            t.end_block();
        })
    };
    let mut warm = 0u64;
    registry_block(&mut Throughput::default(), &mut next, &mut warm);
    plain_block(&mut Throughput::default(), &mut next, &mut warm);
    for block in 0..scale.blocks {
        expected += 2 * (rounds * watchers * ROUND_PUTS) as u64;
        if block % 2 == 0 {
            registry_block(&mut ours, &mut next, &mut lost);
            plain_block(&mut base, &mut next, &mut lost);
        } else {
            plain_block(&mut base, &mut next, &mut lost);
            registry_block(&mut ours, &mut next, &mut lost);
        }
    }
    let ratio = ours.rate() / base.rate();
    let (goal, met) = if watchers == 1_000 {
        (">= 25M/s, >= 0.25x", ours.rate() >= 2.5e7 && ratio >= 0.25)
    } else {
        (">= 0.25x", ratio >= 0.25)
    };
    report.row(
        PART,
        format!("watch deliveries/s, {watchers} watcher(s)"),
        ours.describe(),
        base.describe(),
        fmt_ratio(ratio),
        goal,
        Verdict::from_bool(met),
    );
    if lost > 0 || warm > 0 {
        report.note(format!(
            "(b) {watchers} watchers: {lost} of {expected} expected deliveries missing in the measured blocks ({warm} in warm-up)"
        ));
    }
}
