//! `hello-service`: a hello gRPC node that registers itself under `hello` and keeps its
//! registration alive until Ctrl-C or SIGTERM, when it drains: it marks itself draining (so
//! gateways stop picking it), keeps serving for `--drain-grace-ms`, then deregisters and stops.
//!
//! ```text
//! hello-service --etcd http://127.0.0.1:2379 --listen 127.0.0.1:0 --id a --ttl 5 --meta zone=eu-1
//! ```
//!
//! It prints `listening on <addr>` and then `registered <key>` on stdout once it is visible (and
//! `metrics on <url>` with `--metrics ADDR`).

use clap::Parser;
use registry_examples::backend::BackendArgs;
use registry_examples::cli::{self, parse_meta_pair};
use registry_examples::go_naming::{self, GoEndpoint, GoMetadata};
use registry_examples::hello::{self, HelloNode};
use registry_examples::metrics;
use registry_examples::BoxError;
use registry_service::{Registration, RegistrationOptions, ServiceInstance};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;
use tokio::net::TcpListener;

/// A hello gRPC node that registers itself in the registry.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    backend: BackendArgs,
    /// The service name to register under.
    #[arg(long, default_value = "hello")]
    service: String,
    /// Where to listen; port 0 picks a free port, and the real one is registered.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The address to register, when clients must use another one than `--listen` (a
    /// wildcard `0.0.0.0` listen address, NAT, a container).
    #[arg(long)]
    advertise: Option<String>,
    /// This node's instance id [default: node-PORT].
    #[arg(long)]
    id: Option<String>,
    /// The lease TTL in seconds: how long the entry outlives a crash.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    ttl: u64,
    /// Metadata, repeatable: `version=`, `zone=`, `weight=` or any label `key=value`.
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta_pair)]
    meta: Vec<(String, String)>,
    /// Also publish this node in etcd's Go naming layout under this target (key
    /// `<target>/<addr>`, value `{"Op":0,"Addr":..,"Metadata":null}`, what Go's
    /// `endpoints.Manager` writes), for Go gRPC clients on the `etcd:///<target>` resolver.
    #[arg(long, value_name = "TARGET")]
    go_target: Option<String>,
    /// What `Metadata` carries in the Go layout: `none` (null, safe with every grpc-go
    /// balancer), `string` (this node's metadata as a JSON string, also safe) or `object` (as a
    /// JSON object: crashes Go clients on grpc-go's default pick_first balancer at the first
    /// resolver update; only for fleets whose Go clients all use round_robin).
    #[arg(long, value_name = "MODE", default_value_t = GoMetadata::None, requires = "go_target")]
    go_metadata: GoMetadata,
    /// How long to keep trying to register before giving up at start.
    #[arg(long, default_value_t = 30)]
    register_timeout: u64,
    /// Serve the registration's metrics in Prometheus text format on `http://ADDR/metrics`.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// On Ctrl-C or SIGTERM, how long to keep serving while marked draining before
    /// deregistering: the time gateways' caches need to see the change (0: deregister at once).
    #[arg(long, default_value_t = 2000)]
    drain_grace_ms: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    cli::init_tracing("info");
    cli::exit_code(run(Args::parse()).await)
}

async fn run(args: Args) -> Result<(), BoxError> {
    // Listening from the start: a SIGTERM sent as soon as a line is printed is a clean stop.
    let shutdown = cli::shutdown_signal();
    // Before the registration: it takes its series from the recorder installed when it starts.
    let _metrics = metrics::serve_flag(args.metrics).await?;
    let metadata = cli::metadata_from_pairs(&args.meta)?;
    let backend = args.backend.connect().await?;
    let listener = TcpListener::bind(args.listen).await?;
    let bound = listener.local_addr()?;
    let address = args.advertise.unwrap_or_else(|| bound.to_string());
    let id = args.id.unwrap_or_else(|| format!("node-{}", bound.port()));
    let instance = ServiceInstance::new(args.service.clone(), id.clone(), address.clone())
        .with_metadata(metadata.clone());
    instance.validate()?;

    // Serve first, so the node answers by the time anyone discovers it.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(hello::serve(
        listener,
        HelloNode::new(&id, &address),
        async {
            let _ = stopped.await;
        },
    ));
    println!("listening on {bound}");

    let options = RegistrationOptions::default()
        .ttl(Duration::from_secs(args.ttl))
        .namespace(backend.layout.namespace());
    let registration = tokio::time::timeout(
        Duration::from_secs(args.register_timeout),
        Registration::start(backend.registry.clone(), instance, options),
    )
    .await
    .map_err(|_| {
        format!(
            "could not register within {} s ({})",
            args.register_timeout, backend.kind
        )
    })??;
    println!(
        "registered {} at {address} ({})",
        registration.key(),
        backend.kind
    );
    let _go_naming = match &args.go_target {
        Some(target) => {
            let endpoint =
                GoEndpoint::new(address.clone()).with_metadata(&metadata, args.go_metadata);
            let (key, task) =
                go_naming::publish(backend.registry.clone(), &registration, target, endpoint)
                    .await?;
            println!("published {key} (etcd's Go naming layout)");
            Some(AbortOnDrop(task))
        }
        None => None,
    };

    tokio::select! {
        () = shutdown => {}
        result = server => {
            // The server stopped on its own: leave the registry too, then report why.
            registration.deregister().await?;
            result??;
            return Err("the gRPC server stopped".into());
        }
    }
    // Drain before stopping the server: marked draining, gateways stop picking this node
    // while it still answers the calls already on their way; then the lease is revoked.
    println!("draining {}", registration.key());
    registration
        .shutdown(Duration::from_millis(args.drain_grace_ms))
        .await?;
    println!("deregistered {}", registration.key());
    let _ = stop.send(());
    Ok(())
}

/// Stops a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
