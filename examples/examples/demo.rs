//! The whole project in one process, in about five seconds, with nothing installed:
//!
//! ```text
//! cargo run --example demo
//! ```
//!
//! Three hello nodes register in an in-memory registry (the simulated etcd), a gateway
//! discovers them and forwards requests, one node is killed without deregistering and
//! disappears when its lease runs out, and a new node is picked up without restarting
//! anything. Every step prints what the gateway sees and which node answered each request.
//! `RUST_LOG=info cargo run --example demo` also shows the gateway's own log, and
//! `cargo run --example demo -- --ui 127.0.0.1:8080` serves the live dashboard of the demo's
//! registry there, and keeps serving it after the story until Ctrl-C.
//!
//! Each node runs its gRPC server on a tokio runtime of its own, so killing the node is
//! dropping that runtime: its connections close at once, as when a process dies.

use registry_api::Registry;
use registry_examples::dashboard::Dashboard;
use registry_examples::gateway::{Gateway, GatewayOptions, RETRIED_FROM};
use registry_examples::hello::{self, HelloNode};
use registry_examples::proto::greeter_client::GreeterClient;
use registry_examples::proto::HelloRequest;
use registry_examples::{cli, BoxError};
use registry_memory::MemoryRegistry;
use registry_service::{
    Discovery, DiscoveryEvent, DiscoveryEvents, DiscoveryOptions, KeyLayout, Registration,
    RegistrationOptions, ServiceInstance,
};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Runtime;
use tokio::time::Instant;
use tonic::transport::Channel;

/// The lease TTL of every node: how long a crashed node's entry outlives it.
const TTL: Duration = Duration::from_secs(2);
/// The longest any step may wait for the registry to show a change.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> ExitCode {
    // The demo prints its own story; RUST_LOG=info adds the gateway's log on stderr.
    cli::init_tracing("error");
    cli::exit_code(run().await)
}

/// Prints a line with the time since the demo started.
struct Story {
    start: Instant,
}

impl Story {
    fn say(&self, line: impl AsRef<str>) {
        let elapsed = self.start.elapsed().as_secs_f64();
        println!("[{elapsed:5.2}s] {}", line.as_ref());
    }

    fn step(&self, title: &str) {
        println!();
        self.say(format!("== {title}"));
    }
}

/// One hello node: a gRPC server on its own runtime, and its registration.
struct Node {
    id: String,
    address: String,
    runtime: Runtime,
    registration: Registration,
}

impl Node {
    async fn start(registry: &Arc<dyn Registry>, id: &str) -> Result<Node, BoxError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("node-{id}"))
            .enable_all()
            .build()?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?.to_string();
        let node = HelloNode::new(id, &address);
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            hello::serve(listener, node, std::future::pending()).await?;
            Ok::<(), BoxError>(())
        });
        // The registration's keep-alive task runs on the demo's runtime, like the registry.
        let registration = Registration::start(
            registry.clone(),
            ServiceInstance::new("hello", id, &address),
            RegistrationOptions::default().ttl(TTL),
        )
        .await?;
        Ok(Node {
            id: id.to_owned(),
            address,
            runtime,
            registration,
        })
    }

    /// A crash: the server and its connections vanish, and nobody deregisters.
    fn kill(self) {
        self.registration.abandon();
        self.runtime.shutdown_background();
    }

    /// A clean shutdown: deregister first, then stop serving.
    async fn stop(self) -> Result<(), BoxError> {
        self.registration.deregister().await?;
        self.runtime.shutdown_background();
        Ok(())
    }
}

/// Sends requests through the gateway and prints who answered.
struct Client {
    client: GreeterClient<Channel>,
    sent: u32,
}

impl Client {
    /// Sends `count` requests; returns the nodes that answered, in order. Any failed request
    /// fails the demo: the gateway is meant to hide a dead node by retrying.
    async fn send(&mut self, story: &Story, count: u32) -> Result<Vec<String>, BoxError> {
        let mut served = Vec::new();
        for _ in 0..count {
            self.sent += 1;
            let request = HelloRequest {
                name: format!("request {}", self.sent),
            };
            let response = self
                .client
                .say_hello(request)
                .await
                .map_err(|status| format!("request {} failed: {status}", self.sent))?;
            let retried = response
                .metadata()
                .get(RETRIED_FROM)
                .and_then(|value| value.to_str().ok())
                .map(|node| format!("   (node {node} failed first; the gateway retried)"))
                .unwrap_or_default();
            let reply = response.into_inner();
            story.say(format!(
                "  request {:>2} -> answered by node {} at {}{retried}",
                self.sent, reply.node, reply.address
            ));
            served.push(reply.node);
        }
        Ok(served)
    }
}

fn ids(gateway: &Gateway) -> String {
    let nodes = gateway.nodes();
    if nodes.is_empty() {
        return "(no nodes)".to_owned();
    }
    let ids: Vec<&str> = nodes.iter().map(|node| node.id.as_str()).collect();
    ids.join(", ")
}

/// Waits for the next membership event and prints it.
async fn next_event(
    events: &mut DiscoveryEvents,
    story: &Story,
) -> Result<DiscoveryEvent, BoxError> {
    let event = tokio::time::timeout(STEP_TIMEOUT, events.recv())
        .await
        .map_err(|_| "the gateway saw no change in time")?
        .ok_or("the discovery stopped")?;
    let (what, node) = match &event {
        DiscoveryEvent::Added(node) => ("joined", node),
        DiscoveryEvent::Updated { new, .. } => ("changed", new),
        DiscoveryEvent::Removed(node) => ("left", node),
    };
    story.say(format!(
        "  gateway: node {} {what} ({})",
        node.id, node.address
    ));
    Ok(event)
}

async fn run() -> Result<(), BoxError> {
    let story = Story {
        start: Instant::now(),
    };
    println!("Service registry demo: hello nodes, a gateway and an in-memory registry (a");
    println!("simulated etcd) in one process. Every node registers with a {TTL:?} lease.");

    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let ui = match std::env::args().skip_while(|arg| arg != "--ui").nth(1) {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(&address).await?;
            let url = format!("http://{}/", listener.local_addr()?);
            let dashboard = Dashboard::start_labelled(
                registry.clone(),
                KeyLayout::default(),
                "the demo's in-memory registry",
            );
            tokio::spawn(dashboard.serve(listener, cli::shutdown_signal()));
            println!("The dashboard of this registry: {url}");
            Some(url)
        }
        None => None,
    };

    story.step("1. The gateway starts first and discovers service `hello`: nothing yet");
    let discovery = Discovery::start(registry.clone(), "hello", DiscoveryOptions::default())?;
    discovery.wait_synced(Duration::from_secs(5)).await?;
    let mut events = discovery.subscribe();
    let gateway = Gateway::new(discovery, GatewayOptions::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let gateway_address = listener.local_addr()?;
    tokio::spawn(hello::serve(
        listener,
        gateway.clone(),
        std::future::pending(),
    ));
    story.say(format!(
        "  gateway listening on {gateway_address}, sees: {}",
        ids(&gateway)
    ));

    story.step("2. Three hello nodes start; each registers under services/hello/<id>");
    let mut nodes = Vec::new();
    for id in ["a", "b", "c"] {
        let node = Node::start(&registry, id).await?;
        story.say(format!(
            "  node {} serving on {}, registered as {}",
            node.id,
            node.address,
            node.registration.key()
        ));
        nodes.push(node);
    }
    for _ in 0..3 {
        next_event(&mut events, &story).await?;
    }
    story.say(format!("  gateway sees: {}", ids(&gateway)));

    story.step("3. Six requests through the gateway (the faster of two random nodes wins)");
    let channel = registry_examples::gateway::endpoint(&gateway_address.to_string())?
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    let mut client = Client {
        client: GreeterClient::new(channel),
        sent: 0,
    };
    client.send(&story, 6).await?;

    story.step("4. Node b crashes: its server is gone and it does NOT deregister");
    let b = nodes.remove(1);
    b.kill();
    let killed_at = Instant::now();
    story.say(format!(
        "  its entry stays until its lease runs out, so the gateway still sees: {}",
        ids(&gateway)
    ));
    let served = client.send(&story, 4).await?;
    if served.iter().any(|node| node == "b") {
        return Err("a request was answered by the dead node b".into());
    }
    story.say("  a call to b is refused: the gateway retries that request on another node and");
    story.say("  counts the failure against b, so b gets almost no calls and no request failed");

    story.step("5. Node b's lease expires: the registry deletes its entry, the gateway drops it");
    loop {
        if let DiscoveryEvent::Removed(node) = next_event(&mut events, &story).await? {
            if node.id == "b" {
                break;
            }
        }
    }
    story.say(format!(
        "  {:.1} s after the crash: a lease ends one TTL after its last keep-alive, and",
        killed_at.elapsed().as_secs_f64(),
    ));
    story.say(format!(
        "  keep-alives go every TTL/3. The gateway sees: {}",
        ids(&gateway)
    ));
    let served = client.send(&story, 4).await?;
    if served.iter().any(|node| node == "b") {
        return Err("a request was answered by the dead node b".into());
    }

    story.step("6. A new node d starts: the gateway picks it up without a restart");
    let d = Node::start(&registry, "d").await?;
    story.say(format!(
        "  node d serving on {}, registered as {}",
        d.address,
        d.registration.key()
    ));
    next_event(&mut events, &story).await?;
    nodes.push(d);
    story.say(format!("  gateway sees: {}", ids(&gateway)));
    let served = client.send(&story, 6).await?;
    if !served.iter().any(|node| node == "d") {
        return Err("the new node d received no request".into());
    }

    story.step("7. Clean shutdown: each node deregisters (its lease is revoked) and goes at once");
    for node in nodes {
        node.stop().await?;
        next_event(&mut events, &story).await?;
    }
    story.say(format!("  gateway sees: {}", ids(&gateway)));
    println!();
    println!(
        "Done: {} requests, none failed; the crashed node left within its {TTL:?} TTL.",
        client.sent
    );
    if let Some(url) = ui {
        let shutdown = cli::shutdown_signal();
        println!("The dashboard stays at {url} until Ctrl-C.");
        shutdown.await;
    }
    Ok(())
}
