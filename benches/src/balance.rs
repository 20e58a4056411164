//! (f) Balancing: the cost of one pick against tower's own p2c over the same nodes, and the
//! gateway's p99 latency with one slow node of five, load-aware picking against round-robin.
//!
//! Pick cost: our `Picker` (p2c on peak EWMA, and round-robin) picks and drops the guard;
//! `tower::balance::p2c::Balance` over trivial ready services (`PeakEwma`, and
//! `PendingRequests`) runs `ready()` + `call` + the response. Batches of picks are timed
//! together (the clock's own cost vanishes), the two sides alternate block by block, and the
//! median batch gives the figure.
//!
//! Gateway: five hello nodes on 127.0.0.1, one answering 20 ms late; the gateway forwards a
//! fixed number of requests from a few concurrent callers, once with each strategy.

use crate::report::{Report, Verdict};
use crate::stats::{fmt_duration, fmt_ratio, ratio, Samples};
use futures::StreamExt;
use registry_api::Registry;
use registry_examples::gateway::{Gateway, GatewayOptions};
use registry_examples::hello::{self, HelloNode};
use registry_examples::proto::greeter_server::Greeter;
use registry_examples::proto::{HelloReply, HelloRequest};
use registry_memory::MemoryRegistry;
use registry_service::{
    Discovery, DiscoveryOptions, Picker, PickerOptions, Registration, RegistrationOptions,
    ServiceInstance, Strategy,
};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::discover::Change;
use tower::load::{CompleteOnResponse, PeakEwma, PendingRequests};
use tower::{Service, ServiceExt};

const PART: &str = "f";
const BATCH: usize = 1_000;
const SLOW_BY: Duration = Duration::from_millis(20);

pub(crate) fn run(quick: bool) -> Report {
    let mut report = Report::default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            report.note(format!("no runtime: {e}"));
            return report;
        }
    };
    let blocks = if quick { 5 } else { 31 };
    for nodes in [10, 100, 1_000] {
        eprintln!("(f) pick cost over {nodes} nodes");
        runtime.block_on(pick_cost(&mut report, nodes, blocks));
    }
    eprintln!("(f) gateway p99 with one slow node of five");
    let requests = if quick { 500 } else { 3_000 };
    runtime.block_on(gateway_p99(&mut report, requests));
    report
}

fn instances(count: usize) -> Arc<[ServiceInstance]> {
    (0..count)
        .map(|i| ServiceInstance::new("bench", format!("n{i}"), format!("10.0.0.1:{i}")))
        .collect()
}

/// A ready service that answers at once.
fn trivial() -> impl Service<
    (),
    Response = (),
    Error = Infallible,
    Future = std::future::Ready<Result<(), Infallible>>,
> + Clone {
    tower::service_fn(|()| std::future::ready(Ok::<_, Infallible>(())))
}

/// Per-pick time of one batch of `BATCH` picks by `picker`.
fn time_picker(picker: &Picker) -> Duration {
    let started = Instant::now();
    for _ in 0..BATCH {
        let pick = picker.pick();
        std::hint::black_box(&pick);
        drop(pick);
    }
    started.elapsed() / BATCH as u32
}

/// Per-call time of one batch through tower's balancer.
async fn time_tower<S>(balance: &mut S) -> Duration
where
    S: Service<(), Response = ()>,
    S::Error: std::fmt::Debug,
{
    let started = Instant::now();
    for _ in 0..BATCH {
        let ready = match balance.ready().await {
            Ok(ready) => ready,
            Err(e) => panic!("tower's balancer has ready nodes: {e:?}"),
        };
        let response = ready.call(()).await;
        std::hint::black_box(response.is_ok());
    }
    started.elapsed() / BATCH as u32
}

async fn pick_cost(report: &mut Report, nodes: usize, blocks: usize) {
    let list = instances(nodes);
    let p2c = Picker::new(
        list.clone(),
        PickerOptions::new(Strategy::PowerOfTwoChoices).seed(1),
    );
    let round_robin = Picker::new(list.clone(), PickerOptions::new(Strategy::RoundRobin));
    let ewma_changes = futures::stream::iter((0..nodes).map(|i| {
        Ok::<_, Infallible>(Change::Insert(
            i,
            PeakEwma::new(
                trivial(),
                Duration::from_millis(30),
                10e9,
                CompleteOnResponse::default(),
            ),
        ))
    }));
    let pending_changes = futures::stream::iter((0..nodes).map(|i| {
        Ok::<_, Infallible>(Change::Insert(
            i,
            PendingRequests::new(trivial(), CompleteOnResponse::default()),
        ))
    }));
    let mut tower_ewma = tower::balance::p2c::Balance::new(ewma_changes.boxed());
    let mut tower_pending = tower::balance::p2c::Balance::new(pending_changes.boxed());
    // Warm up: every side picks once over all its nodes.
    time_picker(&p2c);
    time_picker(&round_robin);
    time_tower(&mut tower_ewma).await;
    time_tower(&mut tower_pending).await;
    let (mut ours_p2c, mut ours_rr, mut theirs_ewma, mut theirs_pending) = (
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
    );
    for block in 0..blocks {
        // ABBA: the order flips every block so drift falls on both sides.
        if block % 2 == 0 {
            ours_p2c.push(time_picker(&p2c));
            theirs_ewma.push(time_tower(&mut tower_ewma).await);
            ours_rr.push(time_picker(&round_robin));
            theirs_pending.push(time_tower(&mut tower_pending).await);
        } else {
            theirs_pending.push(time_tower(&mut tower_pending).await);
            ours_rr.push(time_picker(&round_robin));
            theirs_ewma.push(time_tower(&mut tower_ewma).await);
            ours_p2c.push(time_picker(&p2c));
        }
    }
    let rows = [
        (
            "p2c peak EWMA vs tower p2c + PeakEwma",
            ours_p2c.p50(),
            theirs_ewma.p50(),
        ),
        (
            "round-robin vs tower p2c + PendingRequests",
            ours_rr.p50(),
            theirs_pending.p50(),
        ),
    ];
    for (what, ours, theirs) in rows {
        report.row(
            PART,
            format!("pick + guard drop, {nodes} nodes: {what} (median)"),
            fmt_duration(ours),
            fmt_duration(theirs),
            fmt_ratio(ratio(ours, theirs)),
            "",
            Verdict::Info,
        );
    }
}

/// A hello node that answers `delay` late.
#[derive(Clone, Debug)]
struct SlowNode {
    inner: HelloNode,
    delay: Duration,
}

#[tonic::async_trait]
impl Greeter for SlowNode {
    async fn say_hello(
        &self,
        request: tonic::Request<HelloRequest>,
    ) -> Result<tonic::Response<HelloReply>, tonic::Status> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.inner.say_hello(request).await
    }
}

async fn gateway_p99(report: &mut Report, requests: usize) {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::builder().instant().build());
    let mut registrations = Vec::new();
    for i in 0..5 {
        let id = format!("n{i}");
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(listener) => listener,
            Err(e) => return report.note(format!("(f) cannot listen: {e}")),
        };
        let address = match listener.local_addr() {
            Ok(address) => address.to_string(),
            Err(e) => return report.note(format!("(f) no address: {e}")),
        };
        let node = SlowNode {
            inner: HelloNode::new(&id, &address),
            delay: if i == 0 { SLOW_BY } else { Duration::ZERO },
        };
        tokio::spawn(hello::serve(listener, node, std::future::pending()));
        match Registration::start(
            registry.clone(),
            ServiceInstance::new("hello", &id, &address),
            RegistrationOptions::default(),
        )
        .await
        {
            Ok(registration) => registrations.push(registration),
            Err(e) => return report.note(format!("(f) cannot register: {e}")),
        }
    }
    let discovery = match Discovery::start(registry, "hello", DiscoveryOptions::default()) {
        Ok(discovery) => discovery,
        Err(e) => return report.note(format!("(f) no discovery: {e}")),
    };
    if let Err(e) = discovery.wait_synced(Duration::from_secs(10)).await {
        return report.note(format!("(f) discovery did not sync: {e}"));
    }
    let mut p99 = Vec::new();
    for strategy in [Strategy::RoundRobin, Strategy::PowerOfTwoChoices] {
        let mut options = GatewayOptions::default();
        options.picker.strategy = strategy;
        let gateway = Gateway::new(discovery.clone(), options);
        let (samples, slow_share, failed) = drive(&gateway, requests).await;
        eprintln!(
            "(f) {strategy:?}: p50 {}, p99 {}, {:.1} % of calls to the slow node, {failed} failed",
            fmt_duration(samples.p50()),
            fmt_duration(samples.p99()),
            slow_share * 100.0
        );
        p99.push((samples.p99(), slow_share, failed));
    }
    let (rr, rr_slow, rr_failed) = p99[0];
    let (p2c, p2c_slow, p2c_failed) = p99[1];
    report.row(
        PART,
        format!(
            "gateway p99, 1 of 5 nodes +{}ms, {requests} requests, 8 callers: p2c peak EWMA vs round-robin (one run)",
            SLOW_BY.as_millis()
        ),
        fmt_duration(p2c),
        fmt_duration(rr),
        fmt_ratio(ratio(p2c, rr)),
        "< 1",
        Verdict::from_bool(p2c < rr),
    );
    report.note(format!(
        "(f) share of calls on the slow node: p2c {:.1} %, round-robin {:.1} %; failed calls: p2c {p2c_failed}, round-robin {rr_failed}",
        p2c_slow * 100.0,
        rr_slow * 100.0
    ));
    drop(registrations);
}

/// Forwards `requests` calls from 8 concurrent callers; the latencies, the share of calls the
/// slow node served, and how many failed.
async fn drive(gateway: &Gateway, requests: usize) -> (Samples, f64, usize) {
    const CALLERS: usize = 8;
    // Warm up the channels to every node.
    for _ in 0..20 {
        let _ = gateway
            .forward(HelloRequest {
                name: "warm".into(),
            })
            .await;
    }
    let mut callers = Vec::new();
    for caller in 0..CALLERS {
        let gateway = gateway.clone();
        let count = requests / CALLERS + usize::from(caller < requests % CALLERS);
        callers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(count);
            let (mut slow, mut failed) = (0, 0);
            for i in 0..count {
                let started = Instant::now();
                let result = gateway
                    .forward(HelloRequest {
                        name: format!("call {caller}-{i}"),
                    })
                    .await;
                latencies.push(started.elapsed());
                match result {
                    Ok(forwarded) => slow += usize::from(forwarded.node == "n0"),
                    Err(_) => failed += 1,
                }
            }
            (latencies, slow, failed)
        }));
    }
    let mut samples = Samples::with_capacity(requests);
    let (mut slow, mut failed) = (0, 0);
    for caller in callers {
        match caller.await {
            Ok((latencies, s, f)) => {
                for latency in latencies {
                    samples.push(latency);
                }
                slow += s;
                failed += f;
            }
            Err(_) => failed += requests / CALLERS,
        }
    }
    let share = slow as f64 / samples.len().max(1) as f64;
    (samples, share, failed)
}
