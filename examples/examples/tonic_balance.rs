//! tonic's own load balancer fed by the registry: `Channel::balance_channel` over the
//! discovered `hello` nodes, through `registry_service::tower_discover::discover`, whose task keeps
//! reading discovery even while tonic's balancer, idle between requests, takes no change.
//!
//! ```text
//! cargo run --example tonic_balance
//! ```
//!
//! Three nodes register in an in-memory registry; a tonic client balances 30 calls over them
//! with no gateway in between. Then one node deregisters, the balancer drops it, and the next
//! 30 calls go to the other two.

use futures::StreamExt;
use registry_api::Registry;
use registry_examples::gateway::endpoint;
use registry_examples::hello::{self, HelloNode};
use registry_examples::proto::greeter_client::GreeterClient;
use registry_examples::proto::HelloRequest;
use registry_examples::{cli, BoxError};
use registry_memory::MemoryRegistry;
use registry_service::tower_discover::discover;
use registry_service::{
    Discovery, DiscoveryOptions, Registration, RegistrationOptions, ServiceInstance,
};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::transport::{channel, Channel};
use tower::discover::Change;

#[tokio::main]
async fn main() -> ExitCode {
    cli::init_tracing("error");
    cli::exit_code(run().await)
}

async fn start_node(registry: &Arc<dyn Registry>, id: &str) -> Result<Registration, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    tokio::spawn(hello::serve(
        listener,
        HelloNode::new(id, &address),
        std::future::pending(),
    ));
    let instance = ServiceInstance::new("hello", id, &address);
    println!("node {id} serving on {address}");
    Ok(Registration::start(registry.clone(), instance, RegistrationOptions::default()).await?)
}

/// Waits until the feeding task has handed the balancer one more change, and prints it.
async fn wait_fed(fed: &mut mpsc::UnboundedReceiver<String>) -> Result<(), BoxError> {
    let line = tokio::time::timeout(Duration::from_secs(5), fed.recv())
        .await
        .map_err(|_| "the balancer was not fed in time")?
        .ok_or("the feed stopped")?;
    println!("{line}");
    Ok(())
}

/// Sends `count` calls and counts the answers per node.
async fn spread(
    client: &mut GreeterClient<Channel>,
    count: usize,
) -> Result<BTreeMap<String, usize>, BoxError> {
    let mut per_node = BTreeMap::new();
    for i in 0..count {
        let request = HelloRequest {
            name: format!("call {i}"),
        };
        let reply = tokio::time::timeout(Duration::from_secs(5), client.say_hello(request))
            .await
            .map_err(|_| "a call took over 5 s")??
            .into_inner();
        *per_node.entry(reply.node).or_insert(0) += 1;
    }
    Ok(per_node)
}

async fn run() -> Result<(), BoxError> {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let mut registrations = Vec::new();
    for id in ["a", "b", "c"] {
        registrations.push(start_node(&registry, id).await?);
    }

    let discovery = Discovery::start(registry.clone(), "hello", DiscoveryOptions::default())?;
    discovery.wait_synced(Duration::from_secs(5)).await?;

    // The balancer takes `Change<key, Endpoint>`s on a channel; the registry's discovery
    // stream gives `Change<instance id, ServiceInstance>`s: map each instance to its endpoint.
    let (channel, balancer) = Channel::balance_channel::<String>(16);
    let (fed, mut fed_rx) = mpsc::unbounded_channel();
    let mut endpoints = discover(&discovery, |instance| endpoint(&instance.address))?;
    tokio::spawn(async move {
        while let Some(Ok(change)) = endpoints.next().await {
            // tonic 0.14 has its own copy of tower's `Change` for this channel, and its own
            // reconnecting channels: it takes the plain endpoint.
            let (change, line) = match change {
                Change::Insert(id, node) => match node.into_inner() {
                    Ok(endpoint) => {
                        let line = format!("balancer: insert {id} ({})", endpoint.uri());
                        (channel::Change::Insert(id, endpoint), line)
                    }
                    Err(why) => {
                        eprintln!("skipping {id}: {why}");
                        continue;
                    }
                },
                Change::Remove(id) => {
                    let line = format!("balancer: remove {id}");
                    (channel::Change::Remove(id), line)
                }
            };
            if balancer.send(change).await.is_err() {
                return;
            }
            let _ = fed.send(line);
        }
    });
    let mut client = GreeterClient::new(channel);
    for _ in 0..3 {
        wait_fed(&mut fed_rx).await?;
    }

    let first = spread(&mut client, 30).await?;
    println!("30 calls over a, b, c: {first:?}");
    if first.len() < 2 {
        return Err("the calls were not spread over the nodes".into());
    }

    println!("node b deregisters");
    registrations.remove(1).deregister().await?;
    wait_fed(&mut fed_rx).await?;
    let second = spread(&mut client, 30).await?;
    println!("30 calls over a, c:    {second:?}");
    if second.contains_key("b") {
        return Err("a call went to the deregistered node b".into());
    }
    Ok(())
}
