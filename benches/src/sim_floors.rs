//! The keep-alive schedule of (c) without the service layer, to show where (c)'s time goes:
//! the simulator alone (lease by lease and in batches), bare tasks, and one task renewing every
//! lease (lease by lease, lease by lease with the key check the old `Registration` made each
//! round, and in batches as the registrar does).

use crate::sim_scale::{instance, Scale, TTL};
use registry_api::limits::MAX_KEEP_ALIVE_BATCH;
use registry_api::{LeaseId, Registry};
use registry_memory::MemoryRegistry;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Walls of the same keep-alive schedule without the service layer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Floors {
    /// The simulator alone on its manual clock: one loop renews every lease, one call each.
    pub(crate) manual: Duration,
    /// The same, in batches of `MAX_KEEP_ALIVE_BATCH` (`lease_keep_alive_many`).
    pub(crate) manual_batched: Duration,
    /// One bare task per instance on the paused tokio clock: sleep, keep-alive, nothing else.
    pub(crate) tasks: Duration,
    /// One task for all instances on the paused clock, through `Arc<dyn Registry>`, one
    /// keep-alive call per lease.
    pub(crate) one_task: Duration,
    /// The same, also reading and comparing the key each round, as registrations did before
    /// their keys were checked from a watch.
    pub(crate) one_task_checked: Duration,
    /// One task for all, renewing in batches: what the registrar's rounds cost at the least.
    pub(crate) one_task_batched: Duration,
}

/// The same keep-alive schedule without the service layer, to show where the time goes.
pub(crate) fn floors(scale: Scale) -> std::io::Result<Floors> {
    let io = |e: registry_api::Error| std::io::Error::other(e.to_string());
    let interval = TTL / 3;
    let rounds =
        (Duration::from_secs(scale.minutes * 60).as_nanos() / interval.as_nanos()) as usize;
    let ttl = TTL.as_secs() as i64;
    let manual_run = |batched: bool| {
        futures::executor::block_on(async {
            let registry = MemoryRegistry::with_manual_clock();
            let leases = register_all(&registry, scale).await?;
            let wall = Instant::now();
            for _ in 0..rounds {
                registry.advance(interval);
                if batched {
                    for chunk in leases.chunks(MAX_KEEP_ALIVE_BATCH) {
                        renew_batch(&registry, chunk).await?;
                    }
                } else {
                    for lease in &leases {
                        registry.lease_keep_alive(*lease).await.map_err(io)?;
                    }
                }
            }
            Ok::<_, std::io::Error>(wall.elapsed())
        })
    };
    let manual = manual_run(false)?;
    let manual_batched = manual_run(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    let tasks = runtime.block_on(async {
        let registry = MemoryRegistry::builder().instant().build();
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
    let one_task_run = |mode: Mode| {
        runtime.block_on(async {
            let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::builder().instant().build());
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
            let leases: Vec<LeaseId> = held.iter().map(|(lease, _, _)| *lease).collect();
            for round in 1..=rounds as u32 {
                tokio::time::sleep_until(start + interval * round).await;
                if mode == Mode::Batched {
                    for chunk in leases.chunks(MAX_KEEP_ALIVE_BATCH) {
                        renew_batch(&*registry, chunk).await?;
                    }
                    continue;
                }
                for (lease, key, value) in &held {
                    registry.lease_keep_alive(*lease).await.map_err(io)?;
                    if mode == Mode::Single {
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
    Ok(Floors {
        manual,
        manual_batched,
        tasks,
        one_task: one_task_run(Mode::Single)?,
        one_task_checked: one_task_run(Mode::SingleChecked)?,
        one_task_batched: one_task_run(Mode::Batched)?,
    })
}

/// How the one task renews.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Single,
    SingleChecked,
    Batched,
}

/// Renews one batch, failing if any lease of it was not renewed.
async fn renew_batch(registry: &dyn Registry, leases: &[LeaseId]) -> std::io::Result<()> {
    let answers = registry
        .lease_keep_alive_many(leases)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    if answers.len() != leases.len() || answers.iter().any(Result::is_err) {
        return Err(std::io::Error::other("a batched keep-alive failed"));
    }
    Ok(())
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
