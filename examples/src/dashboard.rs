//! A live dashboard of a registry: one HTML page that lists every service of a namespace and its
//! instances (address, metadata, status, lease time left) and a log of recent changes, kept
//! current over server-sent events.
//!
//! `registry ui --etcd URL` serves it for an etcd; the demo serves it on its in-memory registry
//! with `--ui ADDR`. The page is one file with its script ([`PAGE`]), embedded in the binary:
//! there is no build step.
//!
//! Routes:
//!
//! - `GET /`: the page;
//! - `GET /events`: server-sent events, one `fleet` event with the whole fleet as JSON at once
//!   and after every change (and every second, as lease times move);
//! - `GET /api/fleet`: the same JSON, once.
//!
//! Services are found by listing `<namespace>/` and watching it for new ones; each service is
//! followed by its own [`Discovery`](registry_service::Discovery), and the time each lease has
//! left is read with `lease_time_to_live` every second.
//!
//! ```no_run
//! use registry_examples::dashboard::Dashboard;
//! use registry_memory::MemoryRegistry;
//! use registry_service::KeyLayout;
//! use std::sync::Arc;
//!
//! # async fn run() -> Result<(), registry_examples::BoxError> {
//! let dashboard = Dashboard::start(Arc::new(MemoryRegistry::new()), KeyLayout::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! dashboard.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```

mod fleet;

use crate::BoxError;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Json};
use axum::routing::get;
use axum::Router;
use fleet::{Fleet, FleetView, Tasks};
use futures::Stream;
use registry_api::Registry;
use registry_service::instance::validate_instance_id;
use registry_service::KeyLayout;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The page: HTML, style and script in one file.
pub const PAGE: &str = include_str!("dashboard/page.html");

/// The service a key under `<namespace>/` belongs to: `hello` for `<namespace>/hello/a`. `None`
/// for a key outside the namespace or not exactly one instance id below a service.
pub fn service_of<'k>(layout: &KeyLayout, key: &'k [u8]) -> Option<&'k str> {
    let rest = key
        .strip_prefix(layout.namespace().as_bytes())?
        .strip_prefix(b"/")?;
    let rest = std::str::from_utf8(rest).ok()?;
    let (service, id) = rest.split_once('/')?;
    registry_service::instance::validate_service(service).ok()?;
    validate_instance_id(id).ok()?;
    Some(service)
}

/// A running dashboard: the tasks that follow the registry, and the page and event stream that
/// show what they see. Dropping it stops the tasks.
#[derive(Debug)]
pub struct Dashboard {
    fleet: Arc<Fleet>,
    _tasks: Tasks,
}

/// What the handlers share: the fleet, and the signal that ends the event streams on shutdown
/// (open event streams would otherwise hold a graceful shutdown forever).
#[derive(Clone, Debug)]
struct AppState {
    fleet: Arc<Fleet>,
    stop: watch::Receiver<bool>,
}

impl Dashboard {
    /// Starts following every service under `layout`'s namespace in `registry`. Returns at once;
    /// the first list follows in the background. Must be called inside a tokio runtime.
    pub fn start(registry: Arc<dyn Registry>, layout: KeyLayout) -> Dashboard {
        Self::start_labelled(registry, layout, String::new())
    }

    /// Like [`start`](Self::start), with a label saying where the registry is
    /// (`etcd at http://...`), shown in the page's header.
    pub fn start_labelled(
        registry: Arc<dyn Registry>,
        layout: KeyLayout,
        source: impl Into<String>,
    ) -> Dashboard {
        let (fleet, tasks) = Fleet::start(registry, layout, source.into());
        Dashboard {
            fleet,
            _tasks: tasks,
        }
    }

    /// The fleet as the page shows it now, as JSON (what `GET /api/fleet` returns).
    pub fn snapshot_json(&self) -> serde_json::Value {
        serde_json::to_value(&*self.fleet.view()).unwrap_or_default()
    }

    /// Serves the page on `listener` until `shutdown` resolves, then closes the event streams
    /// and returns once every connection is done.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), BoxError> {
        let (stop_tx, stop) = watch::channel(false);
        let app = router(AppState {
            fleet: self.fleet.clone(),
            stop,
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                stop_tx.send_replace(true);
            })
            .await?;
        Ok(())
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/events", get(events))
        .route("/api/fleet", get(fleet_json))
        .with_state(state)
}

async fn page() -> impl IntoResponse {
    ([("cache-control", "no-store")], Html(PAGE))
}

async fn fleet_json(State(state): State<AppState>) -> impl IntoResponse {
    Json(FleetView::clone(&state.fleet.view()))
}

async fn events(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut views = state.fleet.subscribe();
    // The current view goes out first, so a new page shows the fleet at once.
    views.mark_changed();
    let stream = futures::stream::unfold((views, state.stop), |(mut views, mut stop)| async move {
        tokio::select! {
            changed = views.changed() => changed.ok()?,
            _ = stop.wait_for(|stopped| *stopped) => return None,
        }
        let view = views.borrow_and_update().clone();
        let event = Event::default()
            .event("fleet")
            .json_data(&*view)
            .unwrap_or_else(|error| Event::default().comment(error.to_string()));
        Some((Ok(event), (views, stop)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_service_only_when_directly_under_one() {
        let layout = KeyLayout::default();
        assert_eq!(service_of(&layout, b"services/hello/a"), Some("hello"));
        assert_eq!(service_of(&layout, b"services/hello/"), None);
        assert_eq!(service_of(&layout, b"services/hello/a/b"), None);
        assert_eq!(service_of(&layout, b"services/hello"), None);
        assert_eq!(service_of(&layout, b"servicesx/hello/a"), None);
        assert_eq!(service_of(&layout, b"other/hello/a"), None);
        let nested = KeyLayout::new("prod/services").unwrap();
        assert_eq!(service_of(&nested, b"prod/services/db/1"), Some("db"));
    }
}
