//! Examples for the registry workspace: a hello service, a gateway that discovers and balances
//! over it, a CLI and an in-process demo.
//!
//! The binaries (`hello-service`, `gateway`, `hello-client`, `registry`) and the examples
//! (`demo`, `tonic_balance`) share the code here:
//!
//! - [`backend`]: choosing the registry from the command line (`--etcd ...` or in-memory);
//! - [`hello`]: the hello gRPC service, whose replies name the node that served them;
//! - [`gateway`]: a hello service that forwards each call to a discovered node;
//! - [`go_naming`]: publishing in etcd's Go naming layout too, for Go gRPC clients;
//! - [`dashboard`]: a live web page of a registry's services and instances;
//! - [`metrics`]: `--metrics ADDR`, registration and discovery series in Prometheus format;
//! - [`cli`]: parsing `k=v` metadata, logging, Ctrl-C / SIGTERM, and error reporting.
//!
//! See the crate's README for how to run them.

pub mod backend;
pub mod cli;
pub mod dashboard;
pub mod gateway;
pub mod go_naming;
pub mod hello;
pub mod metrics;

/// The generated gRPC code of `proto/hello.proto`: `greeter_server::{Greeter, GreeterServer}`,
/// `greeter_client::GreeterClient`, `HelloRequest` and `HelloReply`.
#[allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    rust_2018_idioms,
    clippy::all,
    clippy::pedantic
)]
pub mod proto {
    tonic::include_proto!("hello");
}

/// The error type of the binaries and examples: anything, printed with its sources.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
