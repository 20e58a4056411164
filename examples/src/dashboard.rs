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
    use registry_api::PutOptions;
    use registry_memory::MemoryRegistry;
    use registry_service::{Registration, RegistrationOptions, ServiceInstance, Status};
    use serde_json::Value;
    use std::time::Duration;

    /// Waits (on virtual time) until the dashboard's view satisfies `ready`.
    async fn view_when(dashboard: &Dashboard, ready: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..600 {
            let view = dashboard.snapshot_json();
            if ready(&view) {
                return view;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the view never got there: {:#}", dashboard.snapshot_json());
    }

    fn instance<'v>(view: &'v Value, service: &str, id: &str) -> Option<&'v Value> {
        view["services"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == service)?["instances"]
            .as_array()?
            .iter()
            .find(|i| i["id"] == id)
    }

    #[tokio::test(start_paused = true)]
    async fn the_fleet_follows_services_leases_statuses_and_expiry() {
        let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
        let options = RegistrationOptions::default().ttl(Duration::from_secs(5));
        let register = |service: &str, id: &str| {
            Registration::start(
                registry.clone(),
                ServiceInstance::new(service, id, "127.0.0.1:1"),
                options.clone(),
            )
        };
        let a = register("hello", "a").await.unwrap();
        let dashboard = Dashboard::start_labelled(registry.clone(), KeyLayout::default(), "mem");
        let view = view_when(&dashboard, |v| {
            instance(v, "hello", "a").is_some_and(|i| i["ttl_left"].is_i64())
        })
        .await;
        assert_eq!(view["source"], "mem");
        let shown = instance(&view, "hello", "a").unwrap();
        assert_eq!(shown["status"], "serving");
        assert_eq!(shown["granted_ttl"], 5);
        assert_eq!(shown["lease"], a.lease().unwrap().to_string());

        // A service that appears later is picked up by the namespace watch.
        let _b = register("billing", "b").await.unwrap();
        view_when(&dashboard, |v| instance(v, "billing", "b").is_some()).await;

        // A draining value is shown as draining and counted.
        let draining =
            ServiceInstance::new("hello", "c", "127.0.0.1:3").with_status(Status::Draining);
        registry
            .put(
                b"services/hello/c",
                &draining.to_json(),
                PutOptions::default(),
            )
            .await
            .unwrap();
        let view = view_when(&dashboard, |v| instance(v, "hello", "c").is_some()).await;
        assert_eq!(instance(&view, "hello", "c").unwrap()["status"], "draining");
        let hello = &view["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "hello")
            .unwrap();
        assert_eq!(
            (&hello["serving"], &hello["draining"]),
            (&Value::from(1), &Value::from(1))
        );
        assert!(instance(&view, "hello", "c").unwrap()["lease"].is_null());

        // A crash: the entry goes when the lease runs out, and the log says so.
        a.abandon();
        let view = view_when(&dashboard, |v| instance(v, "hello", "a").is_none()).await;
        let latest = &view["changes"][0];
        assert_eq!(
            (&latest["event"], &latest["id"]),
            (&Value::from("removed"), &Value::from("a"))
        );

        // The log keeps the last 50 changes only: 4 so far, and 60 more.
        for round in 0..60 {
            let value = draining.clone().with_metadata(
                registry_service::Metadata::default().with_label("round", round.to_string()),
            );
            registry
                .put(b"services/hello/c", &value.to_json(), PutOptions::default())
                .await
                .unwrap();
        }
        view_when(&dashboard, |v| {
            instance(v, "hello", "c").is_some_and(|i| i["metadata"]["labels"]["round"] == "59")
        })
        .await;
        // The cache can be ahead of the log: let every event reach the log.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let changes = dashboard.snapshot_json()["changes"].clone();
        let changes = changes.as_array().unwrap();
        assert_eq!(changes.len(), 50);
        assert!(
            changes.iter().all(|c| c["event"] == "updated"),
            "{changes:#?}"
        );
    }

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
