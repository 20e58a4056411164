//! (h) What each registered instance costs the server: requests per instance-hour at TTL 10 s.
//!
//! N registrations (1, 100, 1,000) go through one [`Registrar`] over a registry wrapped in a
//! counter of calls by kind, each with its own lease and then all on one shared lease. After
//! registering, the counts are reset and the registrations live on: a virtual hour on the
//! simulator, a real stretch on etcd scaled to an hour. The steady state is one keep-alive per
//! lease per TTL/3 (1,080 an hour at TTL 10 s), and for each registered service the key watch's
//! idle check (a read of the revision and a progress request per idle period, shared by the
//! service's registrations, printed apart); what registering costs once (grant, put, and one
//! list and watch per service) is printed beside it.
//!
//! The counter is `registry_api::wrap::Counting`, which works over any backend; a batch of
//! keep-alives counts as the leases it renews, and once among the calls: what batching saves
//! in round trips.

use crate::report::{Report, Verdict};
use registry_api::wrap::{CallKind, Counting};
use registry_api::Registry;
use registry_etcd::EtcdRegistry;
use registry_memory::MemoryRegistry;
use registry_service::{Registrar, RegistrarOptions, RegistrationOptions, ServiceInstance};
use std::sync::Arc;
use std::time::Duration;

const PART: &str = "h";
const TTL: Duration = Duration::from_secs(10);
const HOUR: Duration = Duration::from_secs(3600);
/// One keep-alive per TTL/3 for an hour.
const GOAL: f64 = 1_080.0;

/// (keep-alives, the calls they took, the key watches' idle checks, all requests) since the
/// last call, and back to zero.
fn take(counts: &Counting) -> (u64, u64, u64, u64) {
    let taken = counts.snapshot();
    counts.reset();
    let kind = CallKind::LeaseKeepAlive;
    let checks = taken.get(CallKind::Get) + taken.get(CallKind::ProgressRequest);
    (taken.get(kind), taken.calls(kind), checks, taken.total())
}

/// `inner`, with its requests counted.
fn counted<R: Registry + 'static>(inner: R) -> (Arc<dyn Registry>, Counting) {
    let counts = Counting::new();
    (Arc::new(counts.wrap(inner)), counts)
}

/// What one measurement gave.
#[derive(Debug, Clone, Copy)]
struct Cost {
    /// Requests of the steady stretch, per instance, scaled to an hour.
    per_instance_hour: f64,
    /// Of which keep-alives.
    keep_alives_per_instance_hour: f64,
    /// The keep-alive calls those took (a batch is one), per instance-hour.
    round_trips_per_instance_hour: f64,
    /// Of the requests, the key watches' idle checks (per service, shared by its instances).
    watch_checks_per_instance_hour: f64,
    /// Requests to register, per instance.
    setup_per_instance: f64,
}

/// Registers `n` instances of `services` services on `registry`, resets the counts, lets them
/// live for `stretch` (virtual or real), and scales the counts to an hour.
async fn measure(
    (registry, counts): (Arc<dyn Registry>, Counting),
    n: usize,
    shared: bool,
    stretch: Duration,
) -> std::result::Result<Cost, String> {
    let registration = RegistrationOptions::default().ttl(TTL).seed(5);
    let options = if shared {
        RegistrarOptions::default().shared_lease(registration.clone())
    } else {
        RegistrarOptions::default()
    };
    let registrar = Registrar::new(registry, options).map_err(|e| e.to_string())?;
    take(&counts);
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let instance = ServiceInstance::new(
            format!("svc-{}", i % 10),
            format!("i-{i:05}"),
            format!("10.0.{}.{}:80", i / 256 % 256, i % 256),
        );
        held.push(
            registrar
                .register(instance, registration.clone())
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let (_, _, _, setup) = take(&counts);
    tokio::time::sleep(stretch).await;
    let (keep_alives, round_trips, checks, total) = take(&counts);
    let scale = HOUR.as_secs_f64() / stretch.as_secs_f64() / n as f64;
    for registration in &held {
        registration.deregister().await.map_err(|e| e.to_string())?;
    }
    Ok(Cost {
        per_instance_hour: total as f64 * scale,
        keep_alives_per_instance_hour: keep_alives as f64 * scale,
        round_trips_per_instance_hour: round_trips as f64 * scale,
        watch_checks_per_instance_hour: checks as f64 * scale,
        setup_per_instance: setup as f64 / n as f64,
    })
}

fn row(report: &mut Report, backend: &str, stretch: &str, n: usize, shared: bool, cost: Cost) {
    let leases = if shared {
        "one shared lease"
    } else {
        "a lease each"
    };
    // With a shared lease the goal is the whole lease's cost spread over its registrations.
    let goal = if shared { GOAL / n as f64 } else { GOAL };
    report.row(
        PART,
        format!("{backend}: {n} registration(s), {leases}: requests per instance-hour ({stretch})"),
        format!(
            "{:.1} ({:.1} keep-alives in {:.1} calls; {:.1} key-watch idle checks; \
             registering cost {:.2} each, once)",
            cost.per_instance_hour,
            cost.keep_alives_per_instance_hour,
            cost.round_trips_per_instance_hour,
            cost.watch_checks_per_instance_hour,
            cost.setup_per_instance
        ),
        "",
        "",
        format!("<= {goal:.1} + the idle checks"),
        // Real time slips a little under load; allow the rounding of one round per stretch. The
        // idle checks are per service, not per lease: their share shrinks as services grow.
        Verdict::from_bool(
            cost.per_instance_hour - cost.watch_checks_per_instance_hour <= goal * 1.01,
        ),
    );
}

/// The simulator part: a virtual hour per measurement.
pub(crate) fn simulator(quick: bool) -> Report {
    let mut report = Report::default();
    let sizes: &[usize] = if quick { &[1, 100] } else { &[1, 100, 1_000] };
    for &n in sizes {
        for shared in [false, true] {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    report.note(format!("(h) no runtime: {e}"));
                    return report;
                }
            };
            let outcome = runtime.block_on(async {
                measure(
                    counted(MemoryRegistry::builder().instant().build()),
                    n,
                    shared,
                    HOUR,
                )
                .await
            });
            match outcome {
                Ok(cost) => row(&mut report, "simulator", "a virtual hour", n, shared, cost),
                Err(e) => report.note(format!("(h) simulator, {n}: {e}")),
            }
        }
    }
    report
}

/// The etcd part: a real stretch of six keep-alive rounds (20 s and a little), scaled.
pub(crate) async fn etcd(endpoint: String, quick: bool) -> Report {
    let mut report = Report::default();
    let sizes: &[usize] = if quick { &[1, 100] } else { &[1, 100, 1_000] };
    let rounds = if quick { 3 } else { 6 };
    let stretch = TTL / 3 * rounds + Duration::from_millis(100);
    let label = format!("{:.1} s real, scaled", stretch.as_secs_f64());
    for &n in sizes {
        for shared in [false, true] {
            let registry = match EtcdRegistry::builder([endpoint.as_str()])
                .key_prefix(format!("bench/{}/requests/", crate::run_stamp()))
                .connect()
                .await
            {
                Ok(registry) => registry,
                Err(e) => {
                    report.note(format!("(h) etcd connect: {e}"));
                    return report;
                }
            };
            eprintln!("(h) etcd: {n} registration(s), shared lease {shared}, {label}");
            match measure(counted(registry), n, shared, stretch).await {
                Ok(cost) => row(&mut report, "etcd", &label, n, shared, cost),
                Err(e) => report.note(format!("(h) etcd, {n}: {e}")),
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_virtual_hour_costs_one_keep_alive_per_round_and_nothing_else() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        let (separate, shared) = runtime.block_on(async {
            let memory = MemoryRegistry::builder().instant().build();
            let separate = measure(counted(memory.clone()), 20, false, HOUR)
                .await
                .expect("separate");
            let shared = measure(counted(memory), 20, true, HOUR)
                .await
                .expect("shared");
            (separate, shared)
        });
        // tokio's timer rounds each wait of TTL/3 up to the next millisecond, so an hour holds
        // 1,079 rounds rather than 1,080: never more than one per TTL/3. Beside them, each of
        // the 10 services' key watches checks it is alive once per idle period (a read and a
        // progress request), 119 times in the hour for the same reason.
        let idle = registry_service::WatcherConfig::default().idle_timeout;
        let checks = (HOUR.as_secs_f64() / idle.as_secs_f64() - 1.0) * 2.0 * 10.0 / 20.0;
        assert_eq!(separate.watch_checks_per_instance_hour, checks);
        assert_eq!(separate.per_instance_hour, GOAL - 1.0 + checks);
        assert_eq!(separate.keep_alives_per_instance_hour, GOAL - 1.0);
        // Started at one virtual instant, the 20 leases are renewed in one call a round.
        assert_eq!(separate.round_trips_per_instance_hour, (GOAL - 1.0) / 20.0);
        let expected = (GOAL - 1.0) / 20.0 + checks;
        assert!(
            (shared.per_instance_hour - expected).abs() < 1e-9,
            "{} against {expected}",
            shared.per_instance_hour
        );
        // A grant and a put each, and one list and one watch per service (10 services).
        assert_eq!(separate.setup_per_instance, 2.0 + 20.0 / 20.0);
    }
}
