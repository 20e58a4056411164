//! (a) `EtcdRegistry` against raw `etcd-client` on the same local etcd: put, get, list,
//! register (grant + put with the lease + one keep-alive) and a keep-alive round trip.
//!
//! Each side has its own connection. Samples alternate in blocks, in ABBA order, after an
//! unmeasured warm-up of each; the keys are the same shape on both sides (the registry's
//! namespace prefix has the raw side's length).

use crate::report::{Report, Verdict};
use crate::stats::{fmt_duration, fmt_ratio, ratio, Samples};
use etcd_client::{Client, GetOptions, LeaseKeepAliveStream, LeaseKeeper};
use registry_api::{ListOptions, PutOptions, Registry};
use registry_etcd::EtcdRegistry;
use std::time::{Duration, Instant};

const PART: &str = "a";
const BLOCK: usize = 20;
const LIST_KEYS: usize = 100;
const VALUE: &[u8] =
    br#"{"service":"hello","id":"a-0001","address":"127.0.0.1:8080","metadata":{"version":"1.2.0","weight":1,"zone":"eu-1","labels":{}}}"#;
const LEASE_TTL: i64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Put,
    Get,
    List,
    Register,
    KeepAlive,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::List => "list (100 keys)",
            Op::Register => "register (grant + put + keep-alive)",
            Op::KeepAlive => "keep-alive round trip",
        }
    }
}

type Outcome = Result<Duration, String>;

/// One side of a comparison: times one operation.
trait Side {
    async fn sample(&mut self, op: Op, i: usize) -> Outcome;
}

/// The raw etcd-client side.
struct Raw {
    client: Client,
    prefix: String,
    keeper: LeaseKeeper,
    responses: LeaseKeepAliveStream,
}

impl Raw {
    fn key(&self, rest: &str) -> Vec<u8> {
        format!("{}{rest}", self.prefix).into_bytes()
    }

    /// A raw side on `client`, keys under `prefix`, with a lease of its own held alive.
    async fn new(mut client: Client, prefix: String) -> Result<Self, String> {
        let lease = client
            .lease_grant(LEASE_TTL, None)
            .await
            .map_err(|e| e.to_string())?;
        let (keeper, responses) = client
            .lease_keep_alive(lease.id())
            .await
            .map_err(|e| e.to_string())?;
        Ok(Raw {
            client,
            prefix,
            keeper,
            responses,
        })
    }
}

impl Side for Raw {
    async fn sample(&mut self, op: Op, i: usize) -> Outcome {
        let e = |e: etcd_client::Error| e.to_string();
        let start = Instant::now();
        match op {
            Op::Put => {
                self.client
                    .put(self.key(&format!("put/{}", i % 100)), VALUE, None)
                    .await
                    .map_err(e)?;
            }
            Op::Get => {
                let resp = self
                    .client
                    .get(self.key(&format!("list/{:03}", i % LIST_KEYS)), None)
                    .await
                    .map_err(e)?;
                if resp.kvs().is_empty() {
                    return Err("raw get found nothing".into());
                }
            }
            Op::List => {
                let resp = self
                    .client
                    .get(self.key("list/"), Some(GetOptions::new().with_prefix()))
                    .await
                    .map_err(e)?;
                if resp.kvs().len() != LIST_KEYS {
                    return Err(format!("raw list found {}", resp.kvs().len()));
                }
            }
            Op::Register => {
                let grant = self.client.lease_grant(LEASE_TTL, None).await.map_err(e)?;
                let options = etcd_client::PutOptions::new().with_lease(grant.id());
                self.client
                    .put(self.key(&format!("reg/{}", i % 100)), VALUE, Some(options))
                    .await
                    .map_err(e)?;
                let (mut keeper, mut responses) =
                    self.client.lease_keep_alive(grant.id()).await.map_err(e)?;
                keeper.keep_alive().await.map_err(e)?;
                let reply = responses.message().await.map_err(e)?;
                let elapsed = start.elapsed();
                if reply.map_or(true, |r| r.ttl() <= 0) {
                    return Err("raw keep-alive of a fresh lease failed".into());
                }
                self.client.lease_revoke(grant.id()).await.map_err(e)?;
                return Ok(elapsed);
            }
            Op::KeepAlive => {
                self.keeper.keep_alive().await.map_err(e)?;
                let reply = self.responses.message().await.map_err(e)?;
                if reply.map_or(true, |r| r.ttl() <= 0) {
                    return Err("raw keep-alive failed".into());
                }
            }
        }
        Ok(start.elapsed())
    }
}

/// The `EtcdRegistry` side.
struct Ours {
    registry: EtcdRegistry,
    lease: registry_api::LeaseId,
}

impl Side for Ours {
    async fn sample(&mut self, op: Op, i: usize) -> Outcome {
        let e = |e: registry_api::Error| e.to_string();
        let start = Instant::now();
        match op {
            Op::Put => {
                let key = format!("put/{}", i % 100);
                self.registry
                    .put(key.as_bytes(), VALUE, PutOptions::default())
                    .await
                    .map_err(e)?;
            }
            Op::Get => {
                let key = format!("list/{:03}", i % LIST_KEYS);
                if self
                    .registry
                    .get(key.as_bytes())
                    .await
                    .map_err(e)?
                    .kv
                    .is_none()
                {
                    return Err("get found nothing".into());
                }
            }
            Op::List => {
                let list = self
                    .registry
                    .list(b"list/", ListOptions::default())
                    .await
                    .map_err(e)?;
                if list.kvs.len() != LIST_KEYS {
                    return Err(format!("list found {}", list.kvs.len()));
                }
            }
            Op::Register => {
                let grant = self
                    .registry
                    .lease_grant(LEASE_TTL, None)
                    .await
                    .map_err(e)?;
                let key = format!("reg/{}", i % 100);
                self.registry
                    .put(key.as_bytes(), VALUE, PutOptions::with_lease(grant.id))
                    .await
                    .map_err(e)?;
                self.registry.lease_keep_alive(grant.id).await.map_err(e)?;
                let elapsed = start.elapsed();
                self.registry.lease_revoke(grant.id).await.map_err(e)?;
                return Ok(elapsed);
            }
            Op::KeepAlive => {
                self.registry
                    .lease_keep_alive(self.lease)
                    .await
                    .map_err(e)?;
            }
        }
        Ok(start.elapsed())
    }
}

async fn connect(endpoint: &str, run: &str) -> Result<(Raw, Ours), String> {
    let mut client = Client::connect([endpoint], None)
        .await
        .map_err(|e| e.to_string())?;
    // Same length on both sides: "bench/<run>/raw/" and "bench/<run>/reg/".
    let raw_prefix = format!("bench/{run}/raw/");
    let registry = EtcdRegistry::builder([endpoint])
        .key_prefix(format!("bench/{run}/reg/"))
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    for n in 0..LIST_KEYS {
        let key = format!("list/{n:03}");
        client
            .put(format!("{raw_prefix}{key}"), VALUE, None)
            .await
            .map_err(|e| e.to_string())?;
        registry
            .put(key.as_bytes(), VALUE, PutOptions::default())
            .await
            .map_err(|e| e.to_string())?;
    }
    let lease = registry
        .lease_grant(LEASE_TTL, None)
        .await
        .map_err(|e| e.to_string())?
        .id;
    Ok((
        Raw::new(client, raw_prefix).await?,
        Ours { registry, lease },
    ))
}

async fn measure(
    raw: &mut impl Side,
    ours: &mut impl Side,
    op: Op,
    samples: usize,
) -> Result<(Samples, Samples), String> {
    let (mut a, mut b) = (
        Samples::with_capacity(samples),
        Samples::with_capacity(samples),
    );
    let mut i = 0;
    for _ in 0..BLOCK {
        ours.sample(op, i).await?;
        raw.sample(op, i).await?;
        i += 1;
    }
    let blocks = samples.div_ceil(BLOCK);
    for block in 0..blocks {
        for side in [block % 2, 1 - block % 2] {
            for _ in 0..BLOCK {
                if side == 0 {
                    a.push(ours.sample(op, i).await?);
                } else {
                    b.push(raw.sample(op, i).await?);
                }
                i += 1;
            }
        }
    }
    Ok((a, b))
}

pub(crate) async fn run(endpoint: String, quick: bool) -> Report {
    let endpoint = endpoint.as_str();
    let mut report = Report::default();
    let run = format!("{}-{}", std::process::id(), crate::run_stamp());
    let (mut raw, mut ours) = match connect(endpoint, &run).await {
        Ok(sides) => sides,
        Err(e) => {
            report.note(format!("(a) could not set up on {endpoint}: {e}"));
            return report;
        }
    };
    let scale = |n: usize| if quick { n / 10 } else { n };
    let plan = [
        (Op::Put, scale(4_000)),
        (Op::Get, scale(4_000)),
        (Op::List, scale(2_000)),
        (Op::Register, scale(1_000)),
        (Op::KeepAlive, scale(4_000)),
    ];
    for (op, samples) in plan {
        eprintln!("(a) {}: {samples} samples each side", op.name());
        match measure(&mut raw, &mut ours, op, samples).await {
            Ok((a, b)) => {
                for (label, q, goal) in [("p50", 0.5, 1.05), ("p99", 0.99, 1.10)] {
                    let r = ratio(a.quantile(q), b.quantile(q));
                    report.row(
                        PART,
                        format!("{} {label} (n={})", op.name(), a.len()),
                        fmt_duration(a.quantile(q)),
                        fmt_duration(b.quantile(q)),
                        fmt_ratio(r),
                        format!("<= {goal:.2}"),
                        Verdict::from_bool(r <= goal),
                    );
                }
            }
            Err(e) => report.note(format!("(a) {} failed: {e}", op.name())),
        }
    }
    hop(&mut report, endpoint, &run, &mut raw, scale(2_000)).await;
    // Leave nothing behind in a shared etcd.
    let _ = raw.client.lease_revoke(raw.keeper.id()).await;
    let _ = ours.registry.lease_revoke(ours.lease).await;
    let _ = raw
        .client
        .delete(
            format!("bench/{run}/"),
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await;
    report
}

/// What the connection's own runtime costs by itself: the raw client with its connection on a
/// one-thread runtime of its own (as `EtcdRegistry` connects) against the raw client on the
/// caller's runtime, for a put and a keep-alive round trip. No goal: it is the part of (a), (d)
/// and (e) that comes from where the connection runs, not from the registry layer.
async fn hop(report: &mut Report, endpoint: &str, run: &str, raw: &mut Raw, samples: usize) {
    let (client, stop) = match crate::raw_watch::connect_on_own_runtime(endpoint).await {
        Ok(connected) => connected,
        Err(e) => {
            report.note(format!("(a) hop: could not connect: {e}"));
            return;
        }
    };
    let mut own = match Raw::new(client, format!("bench/{run}/hop/")).await {
        Ok(side) => side,
        Err(e) => {
            report.note(format!("(a) hop: could not set up: {e}"));
            return;
        }
    };
    for op in [Op::Put, Op::KeepAlive] {
        eprintln!("(a) hop, {}: {samples} samples each side", op.name());
        match measure(&mut own, raw, op, samples).await {
            Ok((a, b)) => {
                for (label, q) in [("p50", 0.5), ("p99", 0.99)] {
                    report.row(
                        PART,
                        format!(
                            "raw client, connection on a runtime of its own vs on the caller's: {} {label} (n={})",
                            op.name(),
                            a.len()
                        ),
                        fmt_duration(a.quantile(q)),
                        fmt_duration(b.quantile(q)),
                        fmt_ratio(ratio(a.quantile(q), b.quantile(q))),
                        "",
                        Verdict::Info,
                    );
                }
            }
            Err(e) => report.note(format!("(a) hop, {} failed: {e}", op.name())),
        }
    }
    let _ = own.client.lease_revoke(own.keeper.id()).await;
    drop(own);
    drop(stop);
}
