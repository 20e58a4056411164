//! Staging a fault plan through a backend: what the fleet harness does, public so that an app
//! author runs a plan against an app of their own and checks their own invariants.

use super::plan::{Fault, FaultPlan, Step};
use crate::service::ServiceBackend;
use registry_api::{LeaseId, Registry};
use tokio::time::{sleep_until, Instant};

/// Stages one fault through `backend`: link faults on [`ServiceBackend::link`] (a partition
/// falls back to [`ServiceBackend::partition`]), outages, lease expiries (the lease
/// `lease_of(client)` names, if any), compactions at the current revision through `admin` (a
/// client no fault hits), leader changes. Returns false when the backend cannot stage it.
pub async fn stage<B: ServiceBackend + ?Sized>(
    backend: &B,
    fault: &Fault,
    lease_of: &dyn Fn(&str) -> Option<LeaseId>,
    admin: &dyn Registry,
) -> bool {
    let caps = backend.capabilities();
    let link = fault.client().and_then(|client| backend.link(client));
    match fault {
        Fault::Partition(client) | Fault::Heal(client) => {
            let cut = matches!(fault, Fault::Partition(_));
            match link {
                Some(link) if cut => link.partition(),
                Some(link) => link.heal(),
                None if caps.partition => backend.partition(client, cut).await,
                None => return false,
            }
        }
        Fault::CallLatency(_, latency) => match link {
            Some(link) => link.set_call_latency(*latency),
            None => return false,
        },
        Fault::DeliveryLatency(_, latency) => match link {
            Some(link) => link.set_delivery_latency(*latency),
            None => return false,
        },
        Fault::Hold(_) | Fault::Release(_) | Fault::StallWatches(_) | Fault::ResumeWatches(_) => {
            let Some(link) = link else { return false };
            match fault {
                Fault::Hold(_) => link.hold(),
                Fault::Release(_) => link.release(),
                Fault::StallWatches(_) => link.stall_watches(true),
                _ => link.stall_watches(false),
            }
        }
        Fault::LoseReplies(_, n) => match link {
            Some(link) => link.lose_next_replies(*n),
            None => return false,
        },
        Fault::OutageStart | Fault::OutageEnd => {
            if !caps.outage {
                return false;
            }
            backend.outage(matches!(fault, Fault::OutageStart)).await;
        }
        Fault::ExpireLease(client) => {
            if !caps.expire_lease {
                return false;
            }
            if let Some(lease) = lease_of(client) {
                backend.expire_lease(lease).await;
            }
        }
        Fault::Compact => {
            // Fails harmlessly during an outage or at the last compaction point.
            if let Ok(read) = admin.get(b"fleet-compaction-probe").await {
                let _ = admin.compact(read.revision).await;
            }
        }
        Fault::LeaderChange(extra) => return backend.leader_change(*extra).await,
    }
    true
}

/// Stages every step of `plan` at its time, counted from now (a virtual time on a paused
/// runtime), calling `on_step` before each. Returns how many steps the backend could not
/// stage. It does not heal at the end: call [`heal_all`].
pub async fn play<B: ServiceBackend + ?Sized>(
    plan: &FaultPlan,
    backend: &B,
    lease_of: &dyn Fn(&str) -> Option<LeaseId>,
    admin: &dyn Registry,
    mut on_step: impl FnMut(&Step),
) -> u64 {
    let start = Instant::now();
    let mut skipped = 0;
    for step in &plan.steps {
        sleep_until(start + step.at).await;
        on_step(step);
        if !stage(backend, &step.fault, lease_of, admin).await {
            skipped += 1;
        }
    }
    skipped
}

/// Undoes every fault: the links of `clients` healed and cleared, the server back.
pub async fn heal_all<B: ServiceBackend + ?Sized>(backend: &B, clients: &[String]) {
    let caps = backend.capabilities();
    for client in clients {
        match backend.link(client) {
            Some(link) => link.reset(),
            None if caps.partition => backend.partition(client, false).await,
            None => {}
        }
    }
    if caps.outage {
        backend.outage(false).await;
    }
}
