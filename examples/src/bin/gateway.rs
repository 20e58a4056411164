//! `gateway`: serves the hello gRPC service by forwarding each call to a discovered `hello`
//! node, logging which node served it.
//!
//! ```text
//! gateway --etcd http://127.0.0.1:2379 --listen 127.0.0.1:50050
//! ```
//!
//! It prints `listening on <addr>` on stdout once its node list is loaded, then each node
//! joining or leaving (`node joined <id> at <addr>`, `node left <id> at <addr>`).
//!
//! With `--snapshot-file PATH` it keeps its node list in that file (written atomically, at most
//! every `--snapshot-interval-ms`), and a restart while etcd is down serves the file's nodes at
//! once, flagged stale (`serving N node(s) from the snapshot file ...`), until etcd answers
//! (`synced with etcd at revision R`). A damaged or foreign file is refused with a warning.

use clap::{Parser, ValueEnum};
use registry_examples::backend::BackendArgs;
use registry_examples::cli;
use registry_examples::gateway::{Gateway, GatewayOptions};
use registry_examples::go_naming::GoTarget;
use registry_examples::hello;
use registry_examples::metrics;
use registry_examples::BoxError;
use registry_service::{
    Discovery, DiscoveryEvent, DiscoveryOptions, SnapshotFile, SnapshotLoad, Strategy,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio::net::TcpListener;

/// A hello gateway that balances over the registered hello nodes.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    backend: BackendArgs,
    /// The service to discover and forward to.
    #[arg(long, default_value = "hello")]
    service: String,
    /// Where to listen; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:50050")]
    listen: SocketAddr,
    /// How to pick a node per call.
    #[arg(long, value_enum, default_value_t = Pick::P2c)]
    pick: Pick,
    /// How long a node that keeps failing is ejected the first time, in milliseconds; each
    /// further ejection adds as much, up to twelve times this.
    #[arg(long, default_value_t = 5_000)]
    down_for_ms: u64,
    /// How long one forwarded call may take, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    call_timeout_ms: u64,
    /// Also route to the endpoints Go services registered under this target in etcd's Go
    /// naming layout (`<target>/<addr>` keys, `{"Op","Addr","Metadata"}` values).
    #[arg(long, value_name = "TARGET")]
    go_target: Option<String>,
    /// Serve the discovery cache's metrics in Prometheus text format on `http://ADDR/metrics`.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Keep the node list in this file, and at a start while etcd cannot be reached serve the
    /// file's nodes (flagged stale) until it can.
    #[arg(long, value_name = "PATH")]
    snapshot_file: Option<PathBuf>,
    /// At most one write of the snapshot file per this many milliseconds.
    #[arg(long, default_value_t = 5_000, requires = "snapshot_file")]
    snapshot_interval_ms: u64,
}

/// The picking strategies.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Pick {
    /// Each node in turn.
    RoundRobin,
    /// Uniformly at random.
    Random,
    /// At random, in proportion to each node's `weight`.
    Weighted,
    /// Of two random nodes, the one with the lower peak EWMA latency × calls in flight.
    P2c,
}

impl From<Pick> for Strategy {
    fn from(pick: Pick) -> Self {
        match pick {
            Pick::RoundRobin => Strategy::RoundRobin,
            Pick::Random => Strategy::Random,
            Pick::Weighted => Strategy::Weighted,
            Pick::P2c => Strategy::PowerOfTwoChoices,
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    cli::init_tracing("info");
    cli::exit_code(run(Args::parse()).await)
}

async fn run(args: Args) -> Result<(), BoxError> {
    // Listening from the start: a SIGTERM sent as soon as a line is printed is a clean stop.
    let shutdown = cli::shutdown_signal();
    // Before discovery and the picker: they take their series from the recorder installed when
    // they start.
    let _metrics = metrics::serve_flag(args.metrics).await?;
    // With a snapshot file there is something to serve while etcd is down: start without
    // waiting for it.
    let backend = match &args.snapshot_file {
        Some(_) => args.backend.connect_lazy().await?,
        None => args.backend.connect().await?,
    };
    let mut options = DiscoveryOptions::default().namespace(backend.layout.namespace());
    if let Some(path) = &args.snapshot_file {
        options = options.snapshot_file(
            SnapshotFile::at(path).interval(Duration::from_millis(args.snapshot_interval_ms)),
        );
    }
    let discovery = Discovery::start(backend.registry.clone(), &args.service, options)?;
    discovery
        .wait_seeded_or_synced(Duration::from_secs(30))
        .await
        .map_err(|error| {
            format!(
                "could not list {} within 30 s ({}): {error}",
                args.service, backend.kind
            )
        })?;
    if let Some(seeded) = discovery.status().seeded {
        println!(
            "serving {} node(s) from the snapshot file (stale: saved {:.1?} ago at revision {}) until {} answers",
            discovery.len(),
            seeded.age(),
            seeded.revision,
            backend.kind
        );
        let synced = discovery.clone();
        tokio::spawn(async move {
            // However long etcd stays away: the snapshot is served meanwhile. Any other error
            // means the discovery stopped.
            loop {
                match synced.wait_synced(Duration::from_secs(3600)).await {
                    Ok(()) => {
                        println!("synced with etcd at revision {}", synced.revision());
                        break;
                    }
                    Err(registry_service::Error::Timeout { .. }) => {}
                    Err(_) => break,
                }
            }
        });
    } else if let Some(SnapshotLoad::Refused(why)) =
        discovery.snapshot_file_status().map(|status| status.load)
    {
        println!("snapshot file not used: {why}");
    }
    let mut options = GatewayOptions::default();
    let base = Duration::from_millis(args.down_for_ms);
    options.picker.ejection = options
        .picker
        .ejection
        .ejection_time(base, base.saturating_mul(12));
    options.picker.strategy = args.pick.into();
    options.call_timeout = Duration::from_millis(args.call_timeout_ms);
    let gateway = match &args.go_target {
        Some(target) => {
            // Endpoints Go services registered with etcd's naming layout, beside our own.
            let go = Discovery::with_layout(
                backend.registry.clone(),
                GoTarget::new(target.clone())?,
                DiscoveryOptions::default(),
            )?;
            // With a snapshot file the gateway serves while etcd is down: the Go endpoints join
            // once it answers.
            if args.snapshot_file.is_none() {
                go.wait_synced(Duration::from_secs(30))
                    .await
                    .map_err(|_| format!("could not list Go target {target} within 30 s"))?;
            }
            Gateway::with_go_target(discovery, go, options)
        }
        None => Gateway::new(discovery, options),
    };

    let listener = TcpListener::bind(args.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    let nodes: Vec<String> = gateway
        .nodes()
        .iter()
        .map(|node| format!("{} at {}", node.id, node.address))
        .collect();
    println!(
        "forwarding to {} ({}): {} node(s) now [{}]",
        args.service,
        backend.kind,
        nodes.len(),
        nodes.join(", ")
    );
    // Membership changes on stdout, as they happen: `node joined`, `node updated`, `node left`.
    let mut events = gateway.discovery().subscribe();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let (what, node) = match &event {
                DiscoveryEvent::Added(node) => ("joined", node),
                DiscoveryEvent::Updated { new, .. } => ("updated", new),
                DiscoveryEvent::Removed(node) => ("left", node),
            };
            println!("node {what} {} at {}", node.id, node.address);
        }
    });
    hello::serve(listener, gateway, shutdown).await?;
    Ok(())
}
