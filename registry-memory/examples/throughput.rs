//! Rough throughput of the simulator: puts per second, watch deliveries per second with many
//! watchers, and leases kept alive on virtual time. Run it optimised:
//!
//! ```sh
//! cargo run -p registry-memory --release --example throughput
//! ```
//!
//! Bounded in count, single-threaded except where noted; numbers vary with the machine.

use futures::{FutureExt, StreamExt};
use registry_api::{PutOptions, Registry, WatchOptions};
use registry_memory::MemoryRegistry;
use std::time::{Duration, Instant};

const PUTS: usize = 1_000_000;
const WATCHERS: usize = 1_000;
const PUTS_WATCHED: usize = 2_000;
const INSTANCES: usize = 10_000;

async fn puts() {
    let registry = MemoryRegistry::builder()
        .manual_clock()
        .history_limit(10_000)
        .build();
    let keys: Vec<Vec<u8>> = (0..1_000)
        .map(|i| format!("svc/hello/{i}").into_bytes())
        .collect();
    let start = Instant::now();
    for i in 0..PUTS {
        registry
            .put(
                &keys[i % keys.len()],
                b"127.0.0.1:8080",
                PutOptions::default(),
            )
            .await
            .expect("put");
    }
    let elapsed = start.elapsed();
    println!(
        "puts: {PUTS} in {elapsed:?}: {:.0} puts/s",
        PUTS as f64 / elapsed.as_secs_f64()
    );
}

async fn deliveries() {
    let registry = MemoryRegistry::with_manual_clock();
    let mut watches = Vec::with_capacity(WATCHERS);
    for _ in 0..WATCHERS {
        watches.push(
            registry
                .watch(b"svc/", WatchOptions::default())
                .await
                .expect("watch"),
        );
    }
    let start = Instant::now();
    let mut delivered = 0usize;
    for round in 0..PUTS_WATCHED / 100 {
        for i in 0..100 {
            let key = format!("svc/hello/{}", (round * 100 + i) % 50);
            registry
                .put(key.as_bytes(), b"127.0.0.1:8080", PutOptions::default())
                .await
                .expect("put");
        }
        for watch in &mut watches {
            while let Some(Some(batch)) = watch.next().now_or_never() {
                delivered += batch.expect("batch").events.len();
            }
        }
    }
    let elapsed = start.elapsed();
    assert_eq!(delivered, WATCHERS * PUTS_WATCHED);
    println!(
        "watch deliveries: {delivered} to {WATCHERS} watchers in {elapsed:?}: {:.0} events/s",
        delivered as f64 / elapsed.as_secs_f64()
    );
}

fn keep_alives() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let registry = MemoryRegistry::builder().instant().build();
        let start = Instant::now();
        let mut tasks = Vec::with_capacity(INSTANCES);
        for i in 0..INSTANCES {
            let registry = registry.clone();
            tasks.push(tokio::spawn(async move {
                let lease = registry.lease_grant(10, None).await.expect("grant");
                let key = format!("svc/hello/{i}");
                registry
                    .put(key.as_bytes(), b"127.0.0.1:8080", PutOptions::with_lease(lease.id))
                    .await
                    .expect("put");
                let mut renewals = 0u64;
                let end = tokio::time::Instant::now() + Duration::from_secs(3600);
                while tokio::time::Instant::now() < end {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    registry.lease_keep_alive(lease.id).await.expect("keep alive");
                    renewals += 1;
                }
                renewals
            }));
        }
        let mut renewals = 0;
        for task in tasks {
            renewals += task.await.expect("task");
        }
        let elapsed = start.elapsed();
        let live = registry.list(b"svc/", Default::default()).await.expect("list").kvs.len();
        assert_eq!(live, INSTANCES);
        println!(
            "keep-alive: {INSTANCES} instances, a virtual hour, {renewals} keep-alives in {elapsed:?}"
        );
    });
}

/// The same hour on the manual clock, without tokio's timers: the simulator's own cost.
async fn keep_alives_manual() {
    let registry = MemoryRegistry::with_manual_clock();
    let mut leases = Vec::with_capacity(INSTANCES);
    for i in 0..INSTANCES {
        let lease = registry.lease_grant(10, None).await.expect("grant");
        let key = format!("svc/hello/{i}");
        registry
            .put(
                key.as_bytes(),
                b"127.0.0.1:8080",
                PutOptions::with_lease(lease.id),
            )
            .await
            .expect("put");
        leases.push(lease.id);
    }
    let start = Instant::now();
    let mut renewals = 0u64;
    for _ in 0..1_200 {
        registry.advance(Duration::from_secs(3));
        for lease in &leases {
            registry.lease_keep_alive(*lease).await.expect("keep alive");
            renewals += 1;
        }
    }
    let elapsed = start.elapsed();
    println!(
        "keep-alive (manual clock): {INSTANCES} instances, a virtual hour, {renewals} keep-alives in {elapsed:?}"
    );
}

fn main() {
    futures::executor::block_on(keep_alives_manual());
    if std::env::var_os("ONLY_MANUAL").is_some() {
        return;
    }
    if std::env::var_os("ONLY_KA").is_none() {
        futures::executor::block_on(puts());
        futures::executor::block_on(deliveries());
    }
    keep_alives();
}
