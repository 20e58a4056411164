//! A hello service that forwards each call to a discovered node.
//!
//! The [`Gateway`] follows one service through a [`Discovery`], picks a node per call with a
//! [`Picker`], and reuses one tonic [`Channel`] per node. A call that fails because of the node
//! (unreachable, timed out) is reported to the picker, which leaves that node out for a while,
//! and is retried once on another node. Nodes that leave the registry are no longer picked and
//! their channels are dropped; new ones are picked up as soon as discovery sees them.
//!
//! Each reply carries two response headers saying where the call went: [`SERVED_BY`] (the
//! node's id) and, when the first node failed, [`RETRIED_FROM`].

use crate::proto::greeter_client::GreeterClient;
use crate::proto::greeter_server::Greeter;
use crate::proto::{HelloReply, HelloRequest};
use registry_service::{
    Discovery, DiscoveryEvent, Picker, PickerOptions, ServiceInstance, Strategy,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};
use tracing::Instrument;

/// Response header naming the node that served the call.
pub const SERVED_BY: &str = "x-served-by";
/// Response header naming the node that failed first, when the call was retried.
pub const RETRIED_FROM: &str = "x-retried-from";

/// How a [`Gateway`] behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayOptions {
    /// How nodes are picked and how long a failing node is left out.
    pub picker: PickerOptions,
    /// How long one forwarded call may take before it counts as a node failure.
    pub call_timeout: Duration,
    /// How long connecting to a node may take.
    pub connect_timeout: Duration,
}

impl Default for GatewayOptions {
    /// Round-robin; a node that fails once is left out for 5 s; 2 s per call, 1 s to connect.
    fn default() -> Self {
        GatewayOptions {
            // One failure is enough: the call is retried elsewhere at once, and a dead node's
            // entry only disappears a TTL later.
            picker: PickerOptions::new(Strategy::RoundRobin)
                .failure_threshold(1)
                .down_for(Duration::from_secs(5)),
            call_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
        }
    }
}

/// Where a forwarded call went.
#[derive(Clone, Debug)]
pub struct Forwarded {
    /// The node's reply.
    pub reply: HelloReply,
    /// The id of the node that served it.
    pub node: String,
    /// The node tried first, and how it failed, when the call was retried.
    pub retried_from: Option<(String, Status)>,
}

#[derive(Clone, Debug)]
struct NodeChannel {
    address: String,
    channel: Channel,
}

#[derive(Debug)]
struct Inner {
    discovery: Discovery,
    picker: Picker,
    channels: Mutex<HashMap<String, NodeChannel>>,
    options: GatewayOptions,
}

/// Forwards hello calls to the nodes of a discovered service. Cheap to clone; serve it with
/// [`hello::serve`](crate::hello::serve).
#[derive(Clone, Debug)]
pub struct Gateway {
    inner: Arc<Inner>,
}

impl Gateway {
    /// A gateway over `discovery`'s nodes. Spawns a task (on the current tokio runtime) that
    /// logs nodes joining and leaving and drops the channels of nodes that left.
    pub fn new(discovery: Discovery, options: GatewayOptions) -> Self {
        let inner = Arc::new(Inner {
            picker: Picker::new(discovery.clone(), options.picker.clone()),
            discovery,
            channels: Mutex::new(HashMap::new()),
            options,
        });
        let events = inner.discovery.subscribe();
        tokio::spawn(follow(Arc::downgrade(&inner), events));
        Gateway { inner }
    }

    /// The nodes it can route to now, in id order.
    pub fn nodes(&self) -> Arc<[ServiceInstance]> {
        self.inner.discovery.snapshot()
    }

    /// The discovery it follows.
    pub fn discovery(&self) -> &Discovery {
        &self.inner.discovery
    }

    /// Forwards one call: picks a node, calls it, and on a node failure retries once on
    /// another node. Fails with `UNAVAILABLE` when no node is registered, and with the last
    /// node's status when both attempts fail.
    pub async fn forward(&self, request: HelloRequest) -> Result<Forwarded, Status> {
        let picker = &self.inner.picker;
        let first = picker
            .pick()
            .ok_or_else(|| Status::unavailable("no node is registered"))?;
        let first_error = match self.attempt(&first, request.clone()).await {
            Ok(reply) => {
                tracing::info!(node = %first.id, address = %first.address, "call served");
                return Ok(Forwarded {
                    reply,
                    node: first.id,
                    retried_from: None,
                });
            }
            Err(status) => status,
        };
        tracing::warn!(node = %first.id, address = %first.address, error = %first_error.message(),
            "node failed; retrying on another node");
        // The failure was reported, so the picker now leaves `first` out unless it is the only
        // node left; then the retry goes to it again, which is the best there is.
        let second = picker.pick().ok_or_else(|| first_error.clone())?;
        match self.attempt(&second, request).await {
            Ok(reply) => {
                tracing::info!(node = %second.id, address = %second.address,
                    retried_from = %first.id, "call served");
                Ok(Forwarded {
                    reply,
                    node: second.id,
                    retried_from: Some((first.id, first_error)),
                })
            }
            Err(status) => {
                tracing::warn!(node = %second.id, error = %status.message(), "retry failed too");
                Err(status)
            }
        }
    }

    /// One call to `node`, reported to the picker: a node failure counts against the node;
    /// anything else (an answer, or an application error) shows the node is alive.
    async fn attempt(
        &self,
        node: &ServiceInstance,
        request: HelloRequest,
    ) -> Result<HelloReply, Status> {
        let result = self.call(node, request).await;
        match &result {
            Err(status) if is_node_failure(status) => {
                self.inner.picker.report_failure(&node.id);
            }
            _ => self.inner.picker.report_success(&node.id),
        }
        result
    }

    async fn call(
        &self,
        node: &ServiceInstance,
        request: HelloRequest,
    ) -> Result<HelloReply, Status> {
        let channel = self.channel(node)?;
        let mut client = GreeterClient::new(channel);
        let timeout = self.inner.options.call_timeout;
        match tokio::time::timeout(timeout, client.say_hello(request)).await {
            Ok(result) => result.map(Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "node {} did not answer within {timeout:?}",
                node.id
            ))),
        }
    }

    /// The channel to `node`, made on first use and reused while its address stays the same.
    fn channel(&self, node: &ServiceInstance) -> Result<Channel, Status> {
        let mut channels = self.inner.lock_channels();
        if let Some(known) = channels.get(&node.id) {
            if known.address == node.address {
                return Ok(known.channel.clone());
            }
        }
        let channel = endpoint(&node.address)
            .map_err(|why| Status::unavailable(format!("node {}: {why}", node.id)))?
            .connect_timeout(self.inner.options.connect_timeout)
            .connect_lazy();
        channels.insert(
            node.id.clone(),
            NodeChannel {
                address: node.address.clone(),
                channel: channel.clone(),
            },
        );
        Ok(channel)
    }
}

impl Inner {
    fn lock_channels(&self) -> MutexGuard<'_, HashMap<String, NodeChannel>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The endpoint for a registered address: `host:port` means plain HTTP/2 (`http://host:port`);
/// a full URI is taken as it is.
pub fn endpoint(address: &str) -> Result<Endpoint, String> {
    let uri = if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    };
    Endpoint::from_shared(uri).map_err(|e| format!("address {address:?} is not usable: {e}"))
}

/// Statuses that say the node could not serve the call, rather than that it refused it.
fn is_node_failure(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
    )
}

/// Logs membership changes (at debug level: the gateway binary prints them) and drops the channels of nodes that left or moved.
async fn follow(gateway: Weak<Inner>, mut events: registry_service::DiscoveryEvents) {
    while let Some(event) = events.recv().await {
        let Some(inner) = gateway.upgrade() else {
            return;
        };
        match &event {
            DiscoveryEvent::Added(node) => {
                tracing::debug!(node = %node.id, address = %node.address, "node joined");
            }
            DiscoveryEvent::Updated { old, new } => {
                tracing::debug!(node = %new.id, address = %new.address, "node updated");
                if old.address != new.address {
                    inner.lock_channels().remove(&new.id);
                }
            }
            DiscoveryEvent::Removed(node) => {
                tracing::debug!(node = %node.id, address = %node.address, "node left");
                inner.lock_channels().remove(&node.id);
            }
        }
    }
}

#[tonic::async_trait]
impl Greeter for Gateway {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let forwarded = self
            .forward(request.into_inner())
            .instrument(tracing::info_span!("gateway.forward"))
            .await?;
        let mut response = Response::new(forwarded.reply);
        let headers = response.metadata_mut();
        if let Ok(value) = MetadataValue::try_from(forwarded.node.as_str()) {
            headers.insert(SERVED_BY, value);
        }
        if let Some((failed, _)) = &forwarded.retried_from {
            if let Ok(value) = MetadataValue::try_from(failed.as_str()) {
                headers.insert(RETRIED_FROM, value);
            }
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_become_http_endpoints() {
        assert_eq!(
            endpoint("127.0.0.1:8080").unwrap().uri().to_string(),
            "http://127.0.0.1:8080/"
        );
        assert_eq!(
            endpoint("https://node.example:443")
                .unwrap()
                .uri()
                .to_string(),
            "https://node.example:443/"
        );
        assert!(endpoint("not an address").is_err());
    }

    #[test]
    fn only_transport_like_statuses_count_against_a_node() {
        assert!(is_node_failure(&Status::unavailable("refused")));
        assert!(is_node_failure(&Status::deadline_exceeded("slow")));
        assert!(!is_node_failure(&Status::invalid_argument("bad name")));
        assert!(!is_node_failure(&Status::not_found("no such thing")));
    }
}
