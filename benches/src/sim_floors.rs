//! The keep-alive schedule of (c) without the service layer, to show where (c)'s time goes:
//! the simulator alone, bare tasks, and one task renewing every lease, with and without the
//! key check a `Registration` makes each round.

use crate::sim_scale::{instance, Scale, TTL};
use registry_api::Registry;
use registry_memory::MemoryRegistry;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Walls of the same keep-alive schedule without the service layer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Floors {
    /// The simulator alone on its manual clock: one loop renews every lease.
    pub(crate) manual: Duration,
    /// One bare task per instance on the paused tokio clock: sleep, keep-alive, nothing else.
    pub(crate) tasks: Duration,
    /// One task for all instances on the paused clock, through `Arc<dyn Registry>`: keep-alive
    /// only. What a shared keep-alive scheduler in the service layer could cost.
    pub(crate) batched: Duration,
    /// The same, also reading and comparing the key each round as a `Registration` does.
    pub(crate) batched_checked: Duration,
}

/// The same keep-alive schedule without the service layer, to show where the time goes.
pub(crate) fn floors(scale: Scale) -> std::io::Result<Floors> {
    let io = |e: registry_api::Error| std::io::Error::other(e.to_string());
    let interval = TTL / 3;
    let rounds =
        (Duration::from_secs(scale.minutes * 60).as_nanos() / interval.as_nanos()) as usize;
    let ttl = TTL.as_secs() as i64;
    let manual = futures::executor::block_on(async {
        let registry = MemoryRegistry::with_manual_clock();
        let leases = register_all(&registry, scale).await?;
        let wall = Instant::now();
        for _ in 0..rounds {
            registry.advance(interval);
            for lease in &leases {
                registry.lease_keep_alive(*lease).await.map_err(io)?;
            }
        }
        Ok::<_, std::io::Error>(wall.elapsed())
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    let tasks = runtime.block_on(async {
        let registry = MemoryRegistry::new();
        let leases = register_all(&registry, scale).await?;
        let wall = Instant::now();
        let handles: Vec<_> = leases
            .into_iter()
            .map(|lease| {
                let registry = registry.clone();
                tokio::spawn(async move {
                    let start = tokio::time::Instant::now();
                    for round in 1..=rounds as u32 {
                        tokio::time::sleep_until(start + interval * round).await;
                        if registry.lease_keep_alive(lease).await.is_err() {
                            return false;
                        }
                    }
                    true
                })
            })
            .collect();
        let mut all_alive = true;
        for handle in handles {
            all_alive &= handle.await.unwrap_or(false);
        }
        if !all_alive {
            return Err(std::io::Error::other("a bare keep-alive failed"));
        }
        Ok(wall.elapsed())
    })?;
    let batched_run = |check: bool| {
        runtime.block_on(async {
            let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
            let mut held = Vec::with_capacity(scale.instances);
            for n in 0..scale.instances {
                let lease = registry.lease_grant(ttl, None).await.map_err(io)?;
                let i = instance(n % scale.services, n);
                let key = format!("services/{}/{}", i.service, i.id);
                let value = i.to_json();
                registry
                    .put(
                        key.as_bytes(),
                        &value,
                        registry_api::PutOptions::with_lease(lease.id),
                    )
                    .await
                    .map_err(io)?;
                held.push((lease.id, key, value));
            }
            let wall = Instant::now();
            let start = tokio::time::Instant::now();
            for round in 1..=rounds as u32 {
                tokio::time::sleep_until(start + interval * round).await;
                for (lease, key, value) in &held {
                    registry.lease_keep_alive(*lease).await.map_err(io)?;
                    if !check {
                        continue;
                    }
                    let current = registry.get(key.as_bytes()).await.map_err(io)?;
                    if current.kv.map_or(true, |kv| kv.value != *value) {
                        return Err(std::io::Error::other("a key went missing"));
                    }
                }
            }
            Ok::<_, std::io::Error>(wall.elapsed())
        })
    };
    let batched = batched_run(false)?;
    let batched_checked = batched_run(true)?;
    Ok(Floors {
        manual,
        tasks,
        batched,
        batched_checked,
    })
}

/// Grants a lease per instance and puts the instance with it, as a registration would.
async fn register_all(
    registry: &MemoryRegistry,
    scale: Scale,
) -> std::io::Result<Vec<registry_api::LeaseId>> {
    let io = |e: registry_api::Error| std::io::Error::other(e.to_string());
    let ttl = TTL.as_secs() as i64;
    let mut leases = Vec::with_capacity(scale.instances);
    for n in 0..scale.instances {
        let lease = registry.lease_grant(ttl, None).await.map_err(io)?;
        let i = instance(n % scale.services, n);
        let key = format!("services/{}/{}", i.service, i.id);
        registry
            .put(
                key.as_bytes(),
                &i.to_json(),
                registry_api::PutOptions::with_lease(lease.id),
            )
            .await
            .map_err(io)?;
        leases.push(lease.id);
    }
    Ok(leases)
}
