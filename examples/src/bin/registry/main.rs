//! `registry`: look at and change service registrations in etcd.
//!
//! ```text
//! registry --etcd http://127.0.0.1:2379 list hello
//! registry --etcd http://127.0.0.1:2379 --json watch hello
//! registry --etcd http://127.0.0.1:2379 register hello 127.0.0.1:9000 --id manual --ttl 10 --meta zone=eu-1
//! registry --etcd http://127.0.0.1:2379 deregister hello manual
//! registry status --etcd http://127.0.0.1:2379 --json
//! registry ui --etcd http://127.0.0.1:2379 --listen 127.0.0.1:8080
//! registry acl enable --root-password ROOTPW --etcd http://127.0.0.1:2379
//! registry acl add-service hello hello --user-password PW --etcd ... --user root --password ROOTPW
//! registry acl show --etcd ... --user root --password ROOTPW
//! ```
//!
//! Global options (`--etcd`, `--namespace`, `--json`...) go before or after the subcommand, as
//! etcdctl's flags do.

mod acl;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use registry_api::ListOptions;
use registry_examples::backend::{Backend, BackendArgs};
use registry_examples::cli::{self, parse_meta_pair};
use registry_examples::dashboard::{self, Dashboard};
use registry_examples::go_naming::{self, GoTarget};
use registry_examples::BoxError;
use registry_service::instance::{validate_instance_id, validate_service};
use registry_service::{
    Discovery, DiscoveryEvent, DiscoveryOptions, Registration, RegistrationOptions,
    ServiceInstance, Status,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

/// Lists, watches, registers and deregisters service instances in etcd, sums them up by status,
/// serves a live dashboard of them, and sets up least-privilege roles on etcd's RBAC.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Made global in `parse_args`: the shared `BackendArgs` cannot say so itself, since the
    /// other binaries have no subcommands.
    #[command(flatten)]
    backend: BackendArgs,
    /// Print JSON (one document, or one per line for `watch`) instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The instances of a service now.
    List {
        /// The service name (with `--go-target`, the Go naming target).
        service: String,
        /// Read `service` as a Go naming target (`<target>/<addr>` keys, `{"Op","Addr",
        /// "Metadata"}` values, as Go's `endpoints.Manager` writes them), merged with our own
        /// instances of the target's last segment.
        #[arg(long)]
        go_target: bool,
    },
    /// The instances of a service, then every change as it happens, until Ctrl-C.
    Watch {
        /// The service name.
        service: String,
    },
    /// Registers an instance and keeps it registered until Ctrl-C.
    Register {
        /// The service name.
        service: String,
        /// The instance's address.
        address: String,
        /// The instance id [default: cli-PID].
        #[arg(long)]
        id: Option<String>,
        /// The lease TTL in seconds.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
        ttl: u64,
        /// Metadata, repeatable: `version=`, `zone=`, `weight=` or any label `key=value`.
        #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta_pair)]
        meta: Vec<(String, String)>,
    },
    /// Deletes an instance's entry. A live instance that keeps itself registered puts it back.
    Deregister {
        /// The service name.
        service: String,
        /// The instance id.
        id: String,
    },
    /// Every service of the namespace with its instance counts by status.
    Status,
    /// Serves a live dashboard of the namespace's services and instances until Ctrl-C.
    Ui {
        /// The address to serve the page on (`http://ADDR/`).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Least privilege on etcd's RBAC: each service writes only its own instances, each client
    /// reads only the services it calls, operators manage the namespace. The connecting user
    /// (`--user`, `--password`, or a client certificate) must be root once auth is on.
    #[command(subcommand)]
    Acl(acl::AclCommand),
}

/// Parses the command line, with the backend options accepted after the subcommand too.
fn parse_args() -> Args {
    let command = Args::command().mut_args(|arg| {
        // Help and version stay where clap puts them; every other top-level option is global.
        match arg.get_id().as_str() {
            "help" | "version" => arg,
            _ => arg.global(true),
        }
    });
    let mut matches = command.clone().get_matches();
    Args::from_arg_matches_mut(&mut matches).unwrap_or_else(|error| {
        error.format(&mut command.clone()).exit();
    })
}

/// How long to wait for etcd before giving up on a command.
const WAIT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> ExitCode {
    cli::init_tracing("warn");
    cli::exit_code(run(parse_args()).await)
}

async fn run(args: Args) -> Result<(), BoxError> {
    if !args.backend.is_etcd() {
        return Err(
            "the registry CLI needs --etcd URL (or REGISTRY_ETCD): an in-memory \
                    registry would only hold what this one command does"
                .into(),
        );
    }
    if let Command::Acl(command) = args.command {
        let registry = tokio::time::timeout(WAIT, args.backend.connect_etcd())
            .await
            .map_err(|_| format!("could not reach etcd within {WAIT:?}"))??;
        let layout = registry_service::KeyLayout::new(args.backend.namespace.clone())?;
        return tokio::time::timeout(WAIT, acl::run(&registry, &layout, command, args.json))
            .await
            .map_err(|_| format!("etcd did not answer within {WAIT:?}"))?;
    }
    let backend = tokio::time::timeout(WAIT, args.backend.connect())
        .await
        .map_err(|_| format!("could not reach etcd within {WAIT:?}"))??;
    match args.command {
        Command::List {
            service,
            go_target: false,
        } => list(&backend, &service, args.json).await,
        Command::List {
            service,
            go_target: true,
        } => list_go_target(&backend, &service, args.json).await,
        Command::Watch { service } => watch(&backend, &service, args.json).await,
        Command::Register {
            service,
            address,
            id,
            ttl,
            meta,
        } => {
            let id = id.unwrap_or_else(|| format!("cli-{}", std::process::id()));
            let instance = ServiceInstance::new(service, id, address)
                .with_metadata(cli::metadata_from_pairs(&meta)?);
            register(&backend, instance, Duration::from_secs(ttl), args.json).await
        }
        Command::Deregister { service, id } => deregister(&backend, &service, &id, args.json).await,
        Command::Status => status(&backend, args.json).await,
        Command::Ui { listen } => ui(backend, listen, args.json).await,
        // Run above, before connecting as the service layer does.
        Command::Acl(_) => Err("acl subcommands need etcd's own client".into()),
    }
}

async fn synced_discovery(backend: &Backend, service: &str) -> Result<Discovery, BoxError> {
    let discovery = Discovery::start(
        backend.registry.clone(),
        service,
        DiscoveryOptions::default().namespace(backend.layout.namespace()),
    )?;
    discovery
        .wait_synced(WAIT)
        .await
        .map_err(|_| format!("could not list {service} within {WAIT:?}"))?;
    Ok(discovery)
}

async fn list(backend: &Backend, service: &str, json: bool) -> Result<(), BoxError> {
    let instances = read_instances(backend, service).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&instances)?);
        return Ok(());
    }
    println!(
        "{service}: {} instance(s) under {}",
        instances.len(),
        backend.layout.service_prefix(service)
    );
    for instance in &instances {
        println!("  {}", describe(instance));
    }
    Ok(())
}

/// A Go naming target and our own instances of its service, as one list.
async fn list_go_target(backend: &Backend, target: &str, json: bool) -> Result<(), BoxError> {
    let target = GoTarget::new(target)?;
    let go = tokio::time::timeout(WAIT, go_naming::list(&*backend.registry, &target))
        .await
        .map_err(|_| format!("could not list {} within {WAIT:?}", target.prefix()))??;
    let ours = read_instances(backend, target.service()).await?;
    let instances = go_naming::merge(&ours, &go);
    if json {
        println!("{}", serde_json::to_string_pretty(&instances)?);
        return Ok(());
    }
    println!(
        "{}: {} instance(s) under {} and {}",
        target.service(),
        instances.len(),
        backend.layout.service_prefix(target.service()),
        target.prefix()
    );
    for instance in &instances {
        println!("  {}", describe(instance));
    }
    Ok(())
}

/// One read of the service's prefix, keeping what discovery would: values that parse as an
/// instance whose service and id match the key.
async fn read_instances(
    backend: &Backend,
    service: &str,
) -> Result<Vec<ServiceInstance>, BoxError> {
    validate_service(service)?;
    let prefix = backend.layout.service_prefix(service);
    let listed = tokio::time::timeout(
        WAIT,
        backend
            .registry
            .list(prefix.as_bytes(), ListOptions::default()),
    )
    .await
    .map_err(|_| format!("could not list {prefix} within {WAIT:?}"))??;
    let mut instances = Vec::with_capacity(listed.kvs.len());
    for kv in &listed.kvs {
        let Some(id) = backend.layout.instance_id(service, &kv.key) else {
            continue;
        };
        match ServiceInstance::from_json(&kv.value) {
            Ok(instance) if instance.service == service && instance.id == id => {
                instances.push(instance);
            }
            _ => eprintln!("skipping {}: not an instance of {service}", kv.key_str()),
        }
    }
    Ok(instances)
}

async fn watch(backend: &Backend, service: &str, json: bool) -> Result<(), BoxError> {
    // One listener for the whole loop, made before anything is printed (see `shutdown_signal`).
    let shutdown = cli::shutdown_signal();
    tokio::pin!(shutdown);
    let discovery = synced_discovery(backend, service).await?;
    let mut events = discovery.subscribe();
    if !json {
        println!(
            "watching {} (Ctrl-C to stop); current instances first:",
            backend.layout.service_prefix(service)
        );
    }
    loop {
        let event = tokio::select! {
            () = &mut shutdown => return Ok(()),
            event = events.recv() => event,
        };
        let Some(event) = event else {
            return Err("the watch ended".into());
        };
        if json {
            let line = match &event {
                DiscoveryEvent::Added(instance) => json!({"event": "added", "instance": instance}),
                DiscoveryEvent::Updated { old, new } => {
                    json!({"event": "updated", "instance": new, "old": old})
                }
                DiscoveryEvent::Removed(instance) => {
                    json!({"event": "removed", "instance": instance})
                }
            };
            println!("{line}");
        } else {
            let verb = match &event {
                DiscoveryEvent::Added(_) => "added  ",
                DiscoveryEvent::Updated { .. } => "updated",
                DiscoveryEvent::Removed(_) => "removed",
            };
            println!("{verb} {}", describe(event.instance()));
        }
    }
}

async fn register(
    backend: &Backend,
    instance: ServiceInstance,
    ttl: Duration,
    json: bool,
) -> Result<(), BoxError> {
    instance.validate()?;
    // Before the line that says it is registered (see `shutdown_signal`).
    let shutdown = cli::shutdown_signal();
    let options = RegistrationOptions::default()
        .ttl(ttl)
        .namespace(backend.layout.namespace());
    let registration = tokio::time::timeout(
        WAIT,
        Registration::start(backend.registry.clone(), instance.clone(), options),
    )
    .await
    .map_err(|_| format!("could not register within {WAIT:?}"))??;
    let lease = registration.lease().map(|lease| lease.0);
    if json {
        println!(
            "{}",
            json!({"registered": instance, "key": registration.key(), "lease": lease})
        );
    } else {
        println!(
            "registered {} (key {}, lease {}); Ctrl-C deregisters",
            describe(&instance),
            registration.key(),
            lease.map_or_else(|| "?".to_owned(), |l| format!("{l:x}"))
        );
    }
    shutdown.await;
    registration.deregister().await?;
    if json {
        println!("{}", json!({"deregistered": registration.key()}));
    } else {
        println!("deregistered {}", registration.key());
    }
    Ok(())
}

async fn deregister(
    backend: &Backend,
    service: &str,
    id: &str,
    json: bool,
) -> Result<(), BoxError> {
    validate_service(service)?;
    validate_instance_id(id)?;
    let key = backend.layout.instance_key(service, id);
    let deleted = backend.registry.delete(key.as_bytes()).await?.deleted > 0;
    if json {
        println!("{}", json!({"key": key, "deleted": deleted}));
    } else if deleted {
        println!("deleted {key}");
    } else {
        println!("{key} is not registered");
    }
    if deleted {
        Ok(())
    } else {
        Err(format!("{key} is not registered").into())
    }
}

/// One service's instance counts, by status.
#[derive(Debug, Default, serde::Serialize)]
struct ServiceCounts {
    service: String,
    instances: usize,
    serving: usize,
    draining: usize,
    /// A status a newer writer set that this version does not know.
    unknown: usize,
    /// Values under the service's prefix that are not instances of it.
    malformed: usize,
}

async fn status(backend: &Backend, json: bool) -> Result<(), BoxError> {
    let namespace = format!("{}/", backend.layout.namespace());
    let listed = tokio::time::timeout(
        WAIT,
        backend
            .registry
            .list(namespace.as_bytes(), ListOptions::default()),
    )
    .await
    .map_err(|_| format!("could not list {namespace} within {WAIT:?}"))??;
    let mut services: BTreeMap<String, ServiceCounts> = BTreeMap::new();
    for kv in &listed.kvs {
        let Some(service) = dashboard::service_of(&backend.layout, &kv.key) else {
            continue;
        };
        let counts = services
            .entry(service.to_owned())
            .or_insert_with(|| ServiceCounts {
                service: service.to_owned(),
                ..ServiceCounts::default()
            });
        let id = backend.layout.instance_id(service, &kv.key);
        match ServiceInstance::from_json(&kv.value) {
            Ok(instance) if instance.service == service && Some(instance.id.as_str()) == id => {
                counts.instances += 1;
                match instance.status {
                    Status::Serving => counts.serving += 1,
                    Status::Draining => counts.draining += 1,
                    Status::Unknown => counts.unknown += 1,
                }
            }
            _ => counts.malformed += 1,
        }
    }
    let services: Vec<ServiceCounts> = services.into_values().collect();
    if json {
        let document = json!({
            "namespace": backend.layout.namespace(),
            "revision": listed.revision.0,
            "services": services,
        });
        println!("{}", serde_json::to_string_pretty(&document)?);
        return Ok(());
    }
    println!(
        "{} service(s) under {namespace} at revision {}",
        services.len(),
        listed.revision.0
    );
    if services.is_empty() {
        return Ok(());
    }
    let width = services
        .iter()
        .map(|counts| counts.service.len())
        .max()
        .unwrap_or(0)
        .max("SERVICE".len());
    println!(
        "{:<width$}  INSTANCES  SERVING  DRAINING  UNKNOWN  MALFORMED",
        "SERVICE"
    );
    for counts in &services {
        println!(
            "{:<width$}  {:>9}  {:>7}  {:>8}  {:>7}  {:>9}",
            counts.service,
            counts.instances,
            counts.serving,
            counts.draining,
            counts.unknown,
            counts.malformed
        );
    }
    Ok(())
}

async fn ui(backend: Backend, listen: SocketAddr, json: bool) -> Result<(), BoxError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let address = listener.local_addr()?;
    // Before the line that says where it listens (see `shutdown_signal`).
    let shutdown = cli::shutdown_signal();
    let dashboard = Dashboard::start_labelled(
        backend.registry.clone(),
        backend.layout.clone(),
        backend.kind.to_string(),
    );
    if json {
        println!(
            "{}",
            json!({"listening": address.to_string(), "url": format!("http://{address}/")})
        );
    } else {
        println!("dashboard listening on http://{address}/ (Ctrl-C to stop)");
    }
    dashboard.serve(listener, shutdown).await
}

/// One line for an instance: id, address, then the metadata that is set.
fn describe(instance: &ServiceInstance) -> String {
    let metadata = &instance.metadata;
    let mut line = format!(
        "{:<12} {:<21} weight={}",
        instance.id, instance.address, metadata.weight
    );
    if let Some(version) = &metadata.version {
        line.push_str(&format!(" version={version}"));
    }
    if let Some(zone) = &metadata.zone {
        line.push_str(&format!(" zone={zone}"));
    }
    for (key, value) in &metadata.labels {
        line.push_str(&format!(" {key}={value}"));
    }
    if !instance.status.is_serving() {
        line.push_str(&format!(" status={:?}", instance.status).to_lowercase());
    }
    line
}
