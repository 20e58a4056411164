//! The hello service: one gRPC call whose reply names the node that served it.

use crate::proto::greeter_server::{Greeter, GreeterServer};
use crate::proto::{HelloReply, HelloRequest};
use std::future::Future;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic::{Request, Response, Status};

/// One hello node: answers every call with a greeting and its own id and address.
#[derive(Clone, Debug)]
pub struct HelloNode {
    id: String,
    address: String,
}

impl HelloNode {
    /// A node that reports itself as `id` at `address`.
    pub fn new(id: impl Into<String>, address: impl Into<String>) -> Self {
        HelloNode {
            id: id.into(),
            address: address.into(),
        }
    }

    /// The id it reports.
    pub fn id(&self) -> &str {
        &self.id
    }
}

#[tonic::async_trait]
impl Greeter for HelloNode {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let name = request.into_inner().name;
        let name = if name.is_empty() { "world" } else { &name };
        tracing::debug!(node = %self.id, name, "say_hello");
        Ok(Response::new(HelloReply {
            message: format!("Hello, {name}!"),
            node: self.id.clone(),
            address: self.address.clone(),
        }))
    }
}

/// Serves `service` (a [`HelloNode`] or a gateway) on `listener` until `shutdown` resolves,
/// then lets calls in flight finish.
pub async fn serve<G: Greeter>(
    listener: TcpListener,
    service: G,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    Server::builder()
        .add_service(GreeterServer::new(service))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
        .await
}
