//! A hello service that forwards each call to a discovered node.
//!
//! The [`Gateway`] follows one service through a [`Discovery`] and picks a node per call with
//! a [`Picker`] (power-of-two-choices on peak EWMA latency by default), which also ejects
//! failing nodes and probes them before they take traffic again. What is left here is what is
//! specific to a gateway: one tonic [`Channel`] per node (keyed by id and address), forwarding,
//! and one retry on another node ([`Picker::pick_excluding`]) when the first fails because of
//! the node (unreachable, timed out).
//!
//! Each reply carries two response headers saying where the call went: [`SERVED_BY`] (the
//! node's id) and, when the first node failed, [`RETRIED_FROM`].

use crate::go_naming::MixedFleet;
use crate::proto::greeter_client::GreeterClient;
use crate::proto::greeter_server::Greeter;
use crate::proto::{HelloReply, HelloRequest};
use registry_service::{
    Discovery, EjectionOptions, InstanceSource, Pick, Picker, PickerOptions, ServiceInstance,
    Strategy,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
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
    /// How nodes are picked and when a failing node is ejected.
    pub picker: PickerOptions,
    /// How long one forwarded call may take before it counts as a node failure.
    pub call_timeout: Duration,
    /// How long connecting to a node may take.
    pub connect_timeout: Duration,
}

impl Default for GatewayOptions {
    /// Power-of-two-choices on peak EWMA latency: a slow node gets few calls, where
    /// round-robin would send it its full share (the `gateway` benchmark measures the p99 of
    /// both). A node failing 3 calls in a row is ejected for 5 s, growing to 60 s, up to half
    /// of the nodes at once (a gateway's fleets are small). 2 s per call, 1 s to connect.
    fn default() -> Self {
        GatewayOptions {
            picker: PickerOptions::new(Strategy::PowerOfTwoChoices).ejection(
                EjectionOptions::default()
                    .consecutive_failures(3)
                    .ejection_time(Duration::from_secs(5), Duration::from_secs(60))
                    .max_ejection_percent(50),
            ),
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

#[derive(Debug)]
struct Inner {
    discovery: Discovery,
    /// Endpoints registered by Go services in etcd's naming layout, routed to beside ours.
    go: Option<Discovery>,
    picker: Picker,
    /// One channel per node, keyed by id and address (a node that moves gets a new one).
    /// Entries of nodes no longer listed are pruned whenever a channel is added, so the map
    /// holds at most the listed nodes plus one.
    channels: Mutex<HashMap<(String, String), Channel>>,
    options: GatewayOptions,
}

/// Forwards hello calls to the nodes of a discovered service. Cheap to clone; serve it with
/// [`hello::serve`](crate::hello::serve).
#[derive(Clone, Debug)]
pub struct Gateway {
    inner: Arc<Inner>,
}

impl Gateway {
    /// A gateway over `discovery`'s nodes.
    pub fn new(discovery: Discovery, options: GatewayOptions) -> Self {
        Gateway {
            inner: Arc::new(Inner {
                picker: Picker::new(discovery.clone(), options.picker.clone()),
                discovery,
                go: None,
                channels: Mutex::new(HashMap::new()),
                options,
            }),
        }
    }

    /// A gateway over a mixed fleet: `discovery`'s nodes and the endpoints Go services
    /// registered under a Go naming target (`go`, a discovery with a
    /// [`GoTarget`](crate::go_naming::GoTarget) layout), as one list.
    pub fn with_go_target(discovery: Discovery, go: Discovery, options: GatewayOptions) -> Self {
        let fleet = MixedFleet::new(discovery.clone(), go.clone());
        Gateway {
            inner: Arc::new(Inner {
                picker: Picker::new(fleet, options.picker.clone()),
                discovery,
                go: Some(go),
                channels: Mutex::new(HashMap::new()),
                options,
            }),
        }
    }

    /// The nodes it can route to now, in id order (ours, then Go-registered ones).
    pub fn nodes(&self) -> Arc<[ServiceInstance]> {
        match &self.inner.go {
            Some(go) => MixedFleet::new(self.inner.discovery.clone(), go.clone()).instances(),
            None => self.inner.discovery.snapshot(),
        }
    }

    /// The discovery it follows.
    pub fn discovery(&self) -> &Discovery {
        &self.inner.discovery
    }

    /// The picker it uses (to read its view of the nodes: latency, ejections).
    pub fn picker(&self) -> &Picker {
        &self.inner.picker
    }

    /// Forwards one call: picks a node, calls it, and on a node failure retries once on
    /// another node. Fails with `UNAVAILABLE` when no node is registered, and with the last
    /// node's status when both attempts fail (or no other node is there to retry on).
    pub async fn forward(&self, request: HelloRequest) -> Result<Forwarded, Status> {
        let picker = &self.inner.picker;
        let first = picker
            .pick()
            .ok_or_else(|| Status::unavailable("no node is registered"))?;
        let first_id = first.id.clone();
        let first_error = match self.attempt(first, request.clone()).await {
            Ok(reply) => {
                return Ok(Forwarded {
                    reply,
                    node: first_id,
                    retried_from: None,
                })
            }
            Err(status) => status,
        };
        tracing::warn!(node = %first_id, error = %first_error.message(),
            "node failed; retrying on another node");
        let second = picker
            .pick_excluding(&[first_id.as_str()])
            .ok_or_else(|| first_error.clone())?;
        let second_id = second.id.clone();
        match self.attempt(second, request).await {
            Ok(reply) => Ok(Forwarded {
                reply,
                node: second_id,
                retried_from: Some((first_id, first_error)),
            }),
            Err(status) => {
                tracing::warn!(node = %second_id, error = %status.message(), "retry failed too");
                Err(status)
            }
        }
    }

    /// One call to the picked node, its outcome marked on the guard: a node failure counts
    /// against the node; anything else (an answer, or an application error) shows it is alive.
    async fn attempt(&self, node: Pick, request: HelloRequest) -> Result<HelloReply, Status> {
        let result = self.call(&node, request).await;
        let failed = matches!(&result, Err(status) if is_node_failure(status));
        if failed {
            node.failure();
        } else {
            tracing::info!(node = %node.id, address = %node.address, "call served");
            node.success();
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
        let key = (node.id.clone(), node.address.clone());
        let mut channels = self.inner.lock_channels();
        if let Some(channel) = channels.get(&key) {
            return Ok(channel.clone());
        }
        let channel = endpoint(&node.address)
            .map_err(|why| Status::unavailable(format!("node {}: {why}", node.id)))?
            .connect_timeout(self.inner.options.connect_timeout)
            .connect_lazy();
        let listed = self.inner.discovery.snapshot();
        channels.retain(|(id, address), _| {
            listed
                .iter()
                .any(|node| &node.id == id && &node.address == address)
        });
        channels.insert(key, channel.clone());
        Ok(channel)
    }
}

impl Inner {
    fn lock_channels(&self) -> MutexGuard<'_, HashMap<(String, String), Channel>> {
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
