//! Discovery caches on the simulator, on virtual time, where only the simulator can show it:
//! one watch shared by many, silent watches, lagging subscribers, filters and subsets,
//! stale-not-empty, shutdown, and layouts of other clients. The backend-independent scenarios
//! (resync after a partition and a compaction, a compacted watch, outages, malformed values,
//! sync only once the watch is up) are in the service-layer suite of `registry-conformance`.

mod common;
mod stalling;

use common::{delivered, drain, hello, settle, truth};
use registry_api::{KeyValue, PutOptions, Registry};
use registry_memory::MemoryRegistry;
use registry_service::{
    Backoff, Discovery, DiscoveryEvent, DiscoveryEvents, DiscoveryHub, DiscoveryOptions, Error,
    Filter, InstanceLayout, Metadata, Registration, RegistrationOptions, ServiceInstance, Status,
    View,
};
use stalling::Stalling;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

fn options() -> DiscoveryOptions {
    DiscoveryOptions::default()
        .backoff(Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(1),
        ))
        .seed(3)
}

async fn register(registry: &Arc<dyn Registry>, id: &str) -> Registration {
    Registration::start(
        registry.clone(),
        hello(id),
        RegistrationOptions::default().ttl(Duration::from_secs(6)),
    )
    .await
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_thousand_handles_share_one_watch() {
    let memory = MemoryRegistry::new();
    let registry: Arc<dyn Registry> = Arc::new(memory.clone());
    let hub = DiscoveryHub::new(registry.clone(), options());
    let handles: Vec<Discovery> = (0..1_000)
        .map(|_| hub.discovery("hello").unwrap())
        .collect();
    let other = hub.discovery("other").unwrap();
    assert_eq!(hub.live_caches(), 2);
    assert!(handles[0].shares_cache_with(&handles[999]));
    assert!(!handles[0].shares_cache_with(&other));
    handles[0]
        .wait_synced(Duration::from_secs(5))
        .await
        .expect("synced");
    settle(delivered()).await;
    assert_eq!(memory.watcher_count(), 2);

    let mut streams: Vec<_> = handles.iter().map(Discovery::subscribe).collect();
    let _a = register(&registry, "a").await;
    settle(delivered()).await;
    for (handle, stream) in handles.iter().zip(&mut streams) {
        assert_eq!(drain(stream), vec![DiscoveryEvent::Added(hello("a"))]);
        assert_eq!(handle.snapshot().to_vec(), vec![hello("a")]);
    }
    assert!(other.is_empty());

    drop(streams);
    drop(handles);
    settle(delivered()).await;
    assert_eq!(hub.live_caches(), 1);
    // Left: the other service's cache, and the registrar's key watch on `hello`.
    assert_eq!(memory.watcher_count(), 2, "the last handle stops the watch");
    let again = hub.discovery("hello").unwrap();
    again
        .wait_synced(Duration::from_secs(5))
        .await
        .expect("synced");
    assert_eq!(again.snapshot().to_vec(), vec![hello("a")]);
}

#[tokio::test(start_paused = true)]
async fn a_bad_service_name_is_refused() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    assert!(Discovery::start(registry.clone(), "a/b", options()).is_err());
    assert!(Discovery::start(registry.clone(), "", options()).is_err());
    assert!(DiscoveryHub::new(registry, options())
        .discovery("x/")
        .is_err());
}

/// Writes `instance` as its registration would, without a lease.
async fn put_instance(registry: &Arc<dyn Registry>, instance: &ServiceInstance) {
    let key = format!("services/{}/{}", instance.service, instance.id);
    registry
        .put(key.as_bytes(), &instance.to_json(), PutOptions::default())
        .await
        .unwrap();
}

async fn delete_instance(registry: &Arc<dyn Registry>, id: &str) {
    let key = format!("services/hello/{id}");
    registry.delete(key.as_bytes()).await.unwrap();
}

/// Applies events to a map, refusing duplicates and changes to what is not held.
fn apply(held: &mut BTreeMap<String, ServiceInstance>, events: Vec<DiscoveryEvent>) {
    for event in events {
        match event {
            DiscoveryEvent::Added(new) => {
                assert!(held.insert(new.id.clone(), new).is_none(), "duplicate add")
            }
            DiscoveryEvent::Updated { old, new } => {
                assert_eq!(
                    held.insert(new.id.clone(), new),
                    Some(old),
                    "update of a stranger"
                )
            }
            DiscoveryEvent::Removed(old) => {
                assert_eq!(held.remove(&old.id), Some(old), "removal of a stranger")
            }
        }
    }
}

fn ids(instances: &[ServiceInstance]) -> Vec<&str> {
    instances.iter().map(|i| i.id.as_str()).collect()
}

#[tokio::test(start_paused = true)]
async fn a_silent_watch_is_detected_and_the_view_healed_within_the_idle_bound() {
    let memory = MemoryRegistry::new();
    let server: Arc<dyn Registry> = Arc::new(memory.clone());
    let link = Stalling::new(server.clone(), true);
    let options = options()
        .idle_timeout(Duration::from_secs(10))
        .progress_timeout(Duration::from_secs(2));
    let discovery = Discovery::start(link.clone(), "hello", options.clone()).unwrap();
    discovery
        .wait_synced(Duration::from_secs(5))
        .await
        .expect("synced");

    link.intercept().freeze_open_watches();
    let frozen_at = tokio::time::Instant::now();
    put_instance(&server, &hello("a")).await;
    settle(Duration::from_secs(9)).await;
    assert!(discovery.is_empty(), "the frozen watch delivers nothing");
    assert!(discovery.is_synced(), "and nothing has noticed yet");

    let bound = options.watcher.stall_bound() + options.watcher.backoff.max;
    let found = discovery
        .wait_for_instance("a", bound)
        .await
        .expect("healed within the bound");
    assert_eq!(found, hello("a"));
    let healed = frozen_at.elapsed();
    assert!(
        healed >= options.watcher.idle_timeout && healed <= bound,
        "{healed:?}"
    );
    assert!(matches!(
        discovery.last_error().as_deref(),
        Some(Error::WatchStalled { .. })
    ));
    discovery
        .wait_synced(Duration::from_secs(5))
        .await
        .expect("synced");
    assert_eq!(link.intercept().lists(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_lagging_subscriber_is_bounded_and_recovers_exactly() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let capacity = 8;
    let discovery =
        Discovery::start(registry.clone(), "hello", options().capacity(capacity)).unwrap();
    discovery
        .wait_synced(Duration::from_secs(5))
        .await
        .expect("synced");
    for id in ["a", "b", "c"] {
        put_instance(&registry, &hello(id)).await;
    }
    settle(delivered()).await;
    let mut slow = discovery.subscribe();
    let mut fast = discovery.subscribe();
    let mut fast_held = BTreeMap::new();
    apply(&mut fast_held, drain(&mut fast));
    let mut slow_held = BTreeMap::new();
    apply(&mut slow_held, drain(&mut slow));
    assert_eq!(slow_held.len(), 3);

    // 500 changes while the slow one reads nothing: b's weight 1..=500, c leaves, d arrives.
    for weight in 1..=500u32 {
        let b = hello("b").with_metadata(Metadata::default().with_weight(weight));
        put_instance(&registry, &b).await;
        settle(delivered()).await;
        apply(&mut fast_held, drain(&mut fast));
    }
    delete_instance(&registry, "c").await;
    put_instance(&registry, &hello("d")).await;
    settle(delivered()).await;
    apply(&mut fast_held, drain(&mut fast));
    assert_eq!(fast.lagged(), 0, "a reader that keeps up never lags");

    let events = drain(&mut slow);
    assert!(slow.lagged() >= 1, "told it lagged");
    assert!(
        events.len() <= capacity + 3,
        "at most the ring and the differences, not 502 events: {}",
        events.len()
    );
    apply(&mut slow_held, events);
    let truth: Vec<_> = discovery.snapshot().to_vec();
    assert_eq!(slow_held.into_values().collect::<Vec<_>>(), truth);
    assert_eq!(fast_held.into_values().collect::<Vec<_>>(), truth);
    assert_eq!(ids(&truth), ["a", "b", "d"]);
}

#[tokio::test(start_paused = true)]
async fn filters_and_subsets_follow_changes() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let zoned = |id: &str, zone: &str| {
        hello(id).with_metadata(Metadata::default().with_zone(zone).with_version("2"))
    };
    for id in ["a", "b", "c"] {
        put_instance(&registry, &zoned(id, "z1")).await;
    }
    put_instance(&registry, &zoned("d", "z2")).await;
    let discovery = Discovery::start(registry.clone(), "hello", options()).unwrap();
    discovery
        .wait_synced(Duration::from_secs(5))
        .await
        .expect("synced");

    let z1 = discovery.view(View::all().filter(Filter::all().zone("z1").version("2")));
    let serving = discovery.serving();
    let subset = discovery.view(View::serving().subset(2, "client-1"));
    let mut z1_events = z1.subscribe();
    let mut serving_events = serving.subscribe();
    let mut subset_events = subset.subscribe();
    assert_eq!(ids(&z1.snapshot()), ["a", "b", "c"]);
    assert_eq!(serving.len(), 4);
    let chosen: Vec<String> = subset.snapshot().iter().map(|i| i.id.clone()).collect();
    assert_eq!(chosen.len(), 2);
    let mut z1_held = BTreeMap::new();
    let mut serving_held = BTreeMap::new();
    let mut subset_held = BTreeMap::new();
    apply(&mut z1_held, drain(&mut z1_events));
    apply(&mut serving_held, drain(&mut serving_events));
    apply(&mut subset_held, drain(&mut subset_events));

    // a moves to z2, b starts draining, one of the subset's choices leaves, e arrives in z1.
    put_instance(&registry, &zoned("a", "z2")).await;
    put_instance(&registry, &zoned("b", "z1").with_status(Status::Draining)).await;
    delete_instance(&registry, &chosen[0]).await;
    put_instance(&registry, &zoned("e", "z1")).await;
    settle(delivered()).await;

    let all = discovery.snapshot();
    let expect_z1: Vec<_> = all
        .iter()
        .filter(|i| i.metadata.zone.as_deref() == Some("z1"))
        .cloned()
        .collect();
    let expect_serving: Vec<_> = all
        .iter()
        .filter(|i| i.status.is_serving())
        .cloned()
        .collect();
    assert_eq!(z1.snapshot().to_vec(), expect_z1);
    assert_eq!(serving.snapshot().to_vec(), expect_serving);
    assert!(
        !serving.snapshot().iter().any(|i| i.id == "b"),
        "draining b left out"
    );
    let now_chosen: Vec<String> = subset.snapshot().iter().map(|i| i.id.clone()).collect();
    assert_eq!(now_chosen.len(), 2, "the subset refills");
    assert!(now_chosen.contains(&chosen[1]), "the survivor stays chosen");
    assert!(now_chosen
        .iter()
        .all(|id| expect_serving.iter().any(|i| &i.id == id)));

    apply(&mut z1_held, drain(&mut z1_events));
    apply(&mut serving_held, drain(&mut serving_events));
    apply(&mut subset_held, drain(&mut subset_events));
    assert_eq!(z1_held.into_values().collect::<Vec<_>>(), expect_z1);
    assert_eq!(
        serving_held.into_values().collect::<Vec<_>>(),
        expect_serving
    );
    assert_eq!(
        subset_held.into_values().collect::<Vec<_>>(),
        subset.snapshot().to_vec()
    );
}

#[tokio::test(start_paused = true)]
async fn the_view_never_empties_on_an_error_only_on_a_successful_read() {
    let memory = MemoryRegistry::new();
    let registry: Arc<dyn Registry> = Arc::new(memory.clone());
    let _a = register(&registry, "a").await;
    let b = register(&registry, "b").await;
    let link = memory.link("gateway");
    let discovery =
        Discovery::start(Arc::new(memory.client("gateway")), "hello", options()).unwrap();
    discovery
        .wait_synced(Duration::from_secs(5))
        .await
        .expect("synced");
    assert!(!discovery.is_stale());
    assert!(discovery.last_error().is_none());

    link.partition();
    settle(Duration::from_secs(60)).await;
    assert_eq!(discovery.len(), 2, "a minute of errors empties nothing");
    assert!(discovery.is_stale());
    assert!(discovery.status().ready && !discovery.status().synced);
    let error = discovery.last_error().expect("the reason is kept");
    assert!(error.is_retryable(), "{error}");

    // While cut off, every instance really leaves: the next successful list says so.
    b.deregister().await.unwrap();
    drop(_a);
    settle(Duration::from_secs(10)).await;
    assert!(truth(&*registry, "hello").await.is_empty());
    assert_eq!(discovery.len(), 2, "still as last read");
    link.heal();
    let empty = discovery
        .wait_for_len(0, Duration::from_secs(2))
        .await
        .expect("the read that says empty empties it");
    assert!(empty.is_empty());
    assert!(discovery.is_synced() && !discovery.is_stale());
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_the_task_and_waits_for_it() {
    let memory = MemoryRegistry::new();
    let registry: Arc<dyn Registry> = Arc::new(memory.clone());
    let _a = register(&registry, "a").await;
    // The registrar keeps a watch of its own on the service, to put its key back.
    let registrar_watches = memory.watcher_count();
    let discovery = Discovery::start(registry.clone(), "hello", options()).unwrap();
    let other_handle = discovery.clone();
    discovery
        .wait_synced(Duration::from_secs(5))
        .await
        .expect("synced");
    let mut events = discovery.subscribe();
    assert_eq!(memory.watcher_count(), registrar_watches + 1);

    discovery.shutdown().await;
    assert_eq!(
        memory.watcher_count(),
        registrar_watches,
        "the watch is gone when shutdown returns"
    );
    assert!(other_handle.status().closed, "every handle sees it stopped");
    assert!(!other_handle.is_synced());
    assert_eq!(
        other_handle.snapshot().to_vec(),
        vec![hello("a")],
        "last read stays"
    );
    assert_eq!(drain(&mut events), vec![DiscoveryEvent::Added(hello("a"))]);
    assert_eq!(events.recv().await, None, "the stream ends");
    other_handle.shutdown().await;
    assert!(
        matches!(
            other_handle.wait_synced(Duration::from_secs(5)).await,
            Err(Error::Stopped(_))
        ),
        "a wait on a stopped discovery returns at once, saying so"
    );
}

/// etcd's Go naming layout, as grpc-go's etcd resolver writes it: key `<target>/<addr>`,
/// value `{"Op":0,"Addr":"<addr>","Metadata":...}`.
#[derive(Debug)]
struct GoNaming {
    target: String,
}

impl InstanceLayout for GoNaming {
    fn service(&self) -> &str {
        &self.target
    }
    fn prefix(&self) -> String {
        format!("{}/", self.target)
    }
    fn instance_id(&self, key: &[u8]) -> Option<String> {
        let rest = key.strip_prefix(self.prefix().as_bytes())?;
        let id = std::str::from_utf8(rest).ok()?;
        (!id.is_empty() && !id.contains('/')).then(|| id.to_owned())
    }
    fn decode(&self, id: &str, kv: &KeyValue) -> Result<ServiceInstance, String> {
        #[derive(serde::Deserialize)]
        struct Update {
            #[serde(rename = "Addr")]
            addr: String,
        }
        let update: Update = serde_json::from_slice(&kv.value).map_err(|e| e.to_string())?;
        if update.addr != id {
            return Err("Addr disagrees with the key".to_owned());
        }
        Ok(ServiceInstance::new(&self.target, id, update.addr))
    }
}

#[tokio::test(start_paused = true)]
async fn another_clients_layout_plugs_in() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let put = |key: &'static str, value: &'static str| {
        let registry = registry.clone();
        async move {
            registry
                .put(key.as_bytes(), value.as_bytes(), PutOptions::default())
                .await
                .unwrap();
        }
    };
    put("my-service/10.0.0.1:80", r#"{"Op":0,"Addr":"10.0.0.1:80"}"#).await;
    put("my-service/10.0.0.2:80", r#"{"Op":0,"Addr":"wrong"}"#).await;
    let layout = GoNaming {
        target: "my-service".to_owned(),
    };
    let discovery = Discovery::with_layout(registry.clone(), layout, options()).unwrap();
    let instances = discovery
        .wait_until(|instances| !instances.is_empty(), Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(discovery.service(), "my-service");
    assert_eq!(ids(&instances), ["10.0.0.1:80"]);
    assert_eq!(instances[0].address, "10.0.0.1:80");
    assert_eq!(discovery.malformed(), 1);
    let mut events: DiscoveryEvents = discovery.subscribe();
    drain(&mut events);
    registry.delete(b"my-service/10.0.0.1:80").await.unwrap();
    settle(delivered()).await;
    assert_eq!(
        drain(&mut events),
        vec![DiscoveryEvent::Removed(ServiceInstance::new(
            "my-service",
            "10.0.0.1:80",
            "10.0.0.1:80"
        ))]
    );
    let timed_out = discovery
        .wait_for_len(5, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(timed_out, Error::Timeout { .. }), "{timed_out}");
}

#[tokio::test(start_paused = true)]
async fn watch_restarts_and_resyncs_are_counted() {
    let memory = MemoryRegistry::new();
    let registry: Arc<dyn Registry> = Arc::new(memory.clone());
    let _a = register(&registry, "a").await;
    let client: Arc<dyn Registry> = Arc::new(memory.client("cache"));
    let discovery = Discovery::start(client, "hello", options()).unwrap();
    discovery
        .wait_synced(Duration::from_secs(5))
        .await
        .expect("synced");
    assert_eq!((discovery.watch_restarts(), discovery.resyncs()), (0, 0));

    memory.link("cache").partition();
    settle(Duration::from_secs(5)).await;
    assert!(!discovery.is_synced());
    let restarts = discovery.watch_restarts();
    assert!(restarts >= 1, "the cut watch counts: {restarts}");
    assert_eq!(discovery.resyncs(), 0, "not synced again yet");

    memory.link("cache").heal();
    discovery
        .wait_synced(Duration::from_secs(5))
        .await
        .expect("synced");
    assert_eq!(discovery.resyncs(), 1);
    assert_eq!(
        discovery.watch_restarts(),
        restarts,
        "the list after healing worked"
    );
}
