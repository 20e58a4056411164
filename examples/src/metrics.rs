//! `--metrics ADDR`: the exporter. The series themselves come from `registry-service` (its
//! `metrics` feature): every registration, discovery cache and picker of the process emits them
//! through the [`metrics`] facade. This installs the Prometheus recorder of
//! `metrics-exporter-prometheus` as the process's recorder and serves its text format on
//! `GET /metrics`. The crate README has the table of series.

use crate::BoxError;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use tokio::task::JoinHandle;

/// The server task of `GET /metrics`; dropping it stops the server.
#[derive(Debug)]
pub struct MetricsServer(JoinHandle<()>);

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Installs the Prometheus recorder as the process's `metrics` recorder and serves
/// `GET /metrics` on `address`. Call it before starting registrations, discovery and pickers:
/// they take their series from the recorder installed when they start. Returns the bound
/// address (port 0 picks one) and the server. Fails if the address cannot be bound or a
/// recorder is already installed.
pub async fn serve(address: SocketAddr) -> Result<(SocketAddr, MetricsServer), BoxError> {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    registry_service::metrics::describe();
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address} for metrics: {e}"))?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || render(handle.clone())),
    );
    let server = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the metrics server stopped");
        }
    });
    Ok((bound, MetricsServer(server)))
}

/// `--metrics ADDR` of a binary: [`serve`] on `address` when given, printing
/// `metrics on <url>` (what the tests wait for), else nothing.
pub async fn serve_flag(address: Option<SocketAddr>) -> Result<Option<MetricsServer>, BoxError> {
    let Some(address) = address else {
        return Ok(None);
    };
    let (bound, server) = serve(address).await?;
    println!("metrics on http://{bound}/metrics");
    Ok(Some(server))
}

async fn render(handle: PrometheusHandle) -> impl axum::response::IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        handle.render(),
    )
}
