//! `hello-client`: calls a hello service (a node or the gateway) and prints who answered.
//!
//! ```text
//! hello-client --to 127.0.0.1:50050 --count 5
//! ```

use clap::Parser;
use registry_examples::cli;
use registry_examples::gateway::{endpoint, RETRIED_FROM};
use registry_examples::proto::greeter_client::GreeterClient;
use registry_examples::proto::HelloRequest;
use registry_examples::BoxError;
use std::process::ExitCode;
use std::time::Duration;

/// Sends hello calls and prints which node answered each.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The address to call.
    #[arg(long, default_value = "127.0.0.1:50050")]
    to: String,
    /// How many calls.
    #[arg(long, default_value_t = 5)]
    count: u32,
    /// Milliseconds between calls.
    #[arg(long, default_value_t = 200)]
    interval_ms: u64,
    /// The name to greet.
    #[arg(long, default_value = "world")]
    name: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    cli::init_tracing("warn");
    cli::exit_code(run(Args::parse()).await)
}

async fn run(args: Args) -> Result<(), BoxError> {
    let channel = endpoint(&args.to)?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    let mut client = GreeterClient::new(channel);
    let mut failures = 0;
    for call in 1..=args.count {
        let request = HelloRequest {
            name: args.name.clone(),
        };
        match client.say_hello(request).await {
            Ok(response) => {
                let retried = response
                    .metadata()
                    .get(RETRIED_FROM)
                    .and_then(|v| v.to_str().ok())
                    .map(|node| format!(" (after {node} failed)"))
                    .unwrap_or_default();
                let reply = response.into_inner();
                println!(
                    "call {call}: {:?} from node {} at {}{retried}",
                    reply.message, reply.node, reply.address
                );
            }
            Err(status) => {
                failures += 1;
                println!(
                    "call {call}: failed: {} {}",
                    status.code(),
                    status.message()
                );
            }
        }
        if call < args.count {
            tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
        }
    }
    if failures > 0 {
        return Err(format!("{failures} of {} calls failed", args.count).into());
    }
    Ok(())
}
