//! `gateway`: serves the hello gRPC service by forwarding each call to a discovered `hello`
//! node, logging which node served it.
//!
//! ```text
//! gateway --etcd http://127.0.0.1:2379 --listen 127.0.0.1:50050
//! ```
//!
//! It prints `listening on <addr>` on stdout once its node list is loaded, then each node
//! joining or leaving (`node joined <id> at <addr>`, `node left <id> at <addr>`).

use clap::{Parser, ValueEnum};
use registry_examples::backend::BackendArgs;
use registry_examples::cli;
use registry_examples::gateway::{Gateway, GatewayOptions};
use registry_examples::go_naming::GoTarget;
use registry_examples::hello;
use registry_examples::metrics;
use registry_examples::BoxError;
use registry_service::{Discovery, DiscoveryEvent, DiscoveryOptions, Strategy};
use std::net::SocketAddr;
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
    // Before discovery and the picker: they take their series from the recorder installed when
    // they start.
    let _metrics = metrics::serve_flag(args.metrics).await?;
    let backend = args.backend.connect().await?;
    let discovery = Discovery::start(
        backend.registry.clone(),
        &args.service,
        DiscoveryOptions::default().namespace(backend.layout.namespace()),
    )?;
    discovery
        .wait_synced(Duration::from_secs(30))
        .await
        .map_err(|_| {
            format!(
                "could not list {} within 30 s ({})",
                args.service, backend.kind
            )
        })?;
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
            go.wait_synced(Duration::from_secs(30))
                .await
                .map_err(|_| format!("could not list Go target {target} within 30 s"))?;
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
    hello::serve(listener, gateway, cli::shutdown_signal()).await?;
    Ok(())
}
