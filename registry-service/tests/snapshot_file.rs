//! A discovery's snapshot file: written while synced (atomically, at most once per interval),
//! served flagged stale at a start while the registry cannot be reached, replaced by the first
//! list with exactly the differences; every damaged, foreign or missing file refused with a
//! warning and a reason, the view then empty as without a file. Virtual time; the file I/O is
//! real (tokio does not move a paused clock while it runs).

mod common;

use common::{drain, hello, options, settle};
use proptest::prelude::*;
use registry_api::{PutOptions, Registry};
use registry_memory::MemoryRegistry;
use registry_service::{
    Discovery, DiscoveryEvent, DiscoveryHub, DiscoveryOptions, Metadata, Registration,
    ServiceInstance, SnapshotFile, SnapshotLoad, SnapshotRefusal,
};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a cache may take to sync (virtual time: the tests run on a paused clock).
const SYNC: Duration = Duration::from_secs(60);

fn with_file(file: SnapshotFile) -> DiscoveryOptions {
    DiscoveryOptions::default().seed(1).snapshot_file(file)
}

/// Waits (virtual time) until the discovery's file has been read at start.
async fn loaded(discovery: &Discovery) -> SnapshotLoad {
    for _ in 0..1_000 {
        let load = discovery.snapshot_file_status().expect("a file").load;
        if load != SnapshotLoad::Pending {
            return load;
        }
        settle(Duration::from_millis(10)).await;
    }
    panic!("the file was never read")
}

/// Waits until the discovery has written its file `writes` times.
async fn written(discovery: &Discovery, writes: u64) {
    for _ in 0..1_000 {
        if discovery.snapshot_file_status().expect("a file").writes >= writes {
            return;
        }
        settle(Duration::from_millis(10)).await;
    }
    panic!(
        "not written {writes} times: {:?}",
        discovery.snapshot_file_status()
    )
}

async fn register(registry: &Arc<dyn Registry>, id: &str) -> Registration {
    Registration::start(registry.clone(), hello(id), options())
        .await
        .expect("register")
}

#[tokio::test(start_paused = true)]
async fn a_restart_while_cut_off_serves_the_file_stale_then_the_list_replaces_it_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let file = SnapshotFile::at(dir.path().join("hello.json")).interval(Duration::from_secs(1));
    let server = MemoryRegistry::new();
    let registry: Arc<dyn Registry> = Arc::new(server.clone());
    let a = register(&registry, "a").await;
    let b = register(&registry, "b").await;
    let c = register(&registry, "c").await;

    let first = Discovery::start(registry.clone(), "hello", with_file(file.clone())).unwrap();
    assert_eq!(
        loaded(&first).await,
        SnapshotLoad::Refused(SnapshotRefusal::Missing)
    );
    first.wait_synced(SYNC).await.expect("synced");
    written(&first, 1).await;
    let saved = first.snapshot().to_vec();
    assert_eq!(saved.len(), 3);
    first.shutdown().await;
    assert!(first.snapshot_file_status().unwrap().stopped);

    // The process restarts while its link to the registry is cut; meanwhile `a` leaves,
    // `b` changes and `d` arrives.
    let cut_off: Arc<dyn Registry> = Arc::new(server.client("gateway"));
    server.link("gateway").partition();
    let second = Discovery::start(cut_off, "hello", with_file(file.clone())).unwrap();
    second
        .wait_seeded_or_synced(Duration::from_secs(1))
        .await
        .expect("served at once from the file");
    assert!(matches!(
        second.snapshot_file_status().unwrap().load,
        SnapshotLoad::Loaded { instances: 3, .. }
    ));
    assert_eq!(second.snapshot().to_vec(), saved);
    assert!(second.is_stale() && !second.is_synced());
    let status = second.status();
    let seeded = status.seeded.expect("seeded from the file");
    assert!(seeded.age() < Duration::from_secs(60));
    assert!(seeded.revision.get() > 0);
    let mut events = second.subscribe();
    settle(Duration::from_secs(3)).await;
    assert_eq!(drain(&mut events).len(), 3, "the file's instances, once");

    a.deregister().await.unwrap();
    let b2 = hello("b").with_metadata(Metadata::default().with_version("2"));
    b.update_metadata(b2.metadata.clone()).await.unwrap();
    let d = register(&registry, "d").await;
    settle(Duration::from_secs(1)).await;
    assert!(drain(&mut events).is_empty(), "nothing heard while cut off");
    assert_eq!(second.snapshot().to_vec(), saved, "still the file's");

    server.link("gateway").heal();
    second.wait_synced(SYNC).await.expect("synced");
    let mut changes = drain(&mut events);
    changes.sort_by(|x, y| x.instance().id.cmp(&y.instance().id));
    assert_eq!(
        changes,
        vec![
            DiscoveryEvent::Removed(hello("a")),
            DiscoveryEvent::Updated {
                old: hello("b"),
                new: b2.clone()
            },
            DiscoveryEvent::Added(hello("d")),
        ],
        "exactly the differences: `c` is not added again"
    );
    assert_eq!(second.snapshot().to_vec(), vec![b2, hello("c"), hello("d")]);
    assert!(!second.is_stale() && second.status().seeded.is_none());
    drop((c, d));
}

#[tokio::test(start_paused = true)]
async fn an_empty_list_after_seeding_removes_every_instance_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = SnapshotFile::in_dir(dir.path()).interval(Duration::from_millis(100));
    let server = MemoryRegistry::new();
    let registry: Arc<dyn Registry> = Arc::new(server.clone());
    let a = register(&registry, "a").await;
    let first = Discovery::start(registry.clone(), "hello", with_file(file.clone())).unwrap();
    first.wait_synced(SYNC).await.expect("synced");
    written(&first, 1).await;
    assert!(dir.path().join("hello.json").is_file());
    drop(first);
    a.deregister().await.unwrap();

    let second = Discovery::start(registry, "hello", with_file(file)).unwrap();
    let mut events = second.subscribe();
    second.wait_synced(SYNC).await.expect("synced");
    settle(Duration::from_millis(10)).await;
    let seen = drain(&mut events);
    assert_eq!(
        seen,
        vec![
            DiscoveryEvent::Added(hello("a")),
            DiscoveryEvent::Removed(hello("a"))
        ]
    );
    assert!(second.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_file_is_written_at_most_once_per_interval_and_ends_as_the_view() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hello.json");
    let interval = Duration::from_secs(2);
    let server = MemoryRegistry::new();
    let registry: Arc<dyn Registry> = Arc::new(server.clone());
    let discovery = Discovery::start(
        registry.clone(),
        "hello",
        with_file(SnapshotFile::at(&path).interval(interval)),
    )
    .unwrap();
    discovery.wait_synced(SYNC).await.expect("synced");
    // 20 s of changes every 100 ms.
    let mut registrations = Vec::new();
    for i in 0..200 {
        registrations.push(register(&registry, &format!("i{i:03}")).await);
        if i % 3 == 0 {
            registrations.remove(0).deregister().await.unwrap();
        }
        settle(Duration::from_millis(100)).await;
    }
    let writes = discovery.snapshot_file_status().unwrap().writes;
    assert!(
        (5..=11).contains(&writes),
        "{writes} writes in 20 s at one per {interval:?}"
    );
    settle(interval * 2).await;
    let status = discovery.snapshot_file_status().unwrap();
    assert_eq!(status.last_written_revision, Some(discovery.revision()));
    assert!(status.last_error.is_none());

    // What is on disk is the view.
    let unreachable = MemoryRegistry::new();
    unreachable.set_unavailable(true);
    let second = Discovery::start(
        Arc::new(unreachable),
        "hello",
        with_file(SnapshotFile::at(&path)),
    )
    .unwrap();
    second
        .wait_seeded_or_synced(Duration::from_secs(5))
        .await
        .expect("served from the file");
    assert!(
        second.snapshot() == discovery.snapshot(),
        "the file is not the view"
    );
    assert_eq!(second.len(), 133);
}

#[tokio::test(start_paused = true)]
async fn a_hub_keeps_one_file_per_service() {
    let dir = tempfile::tempdir().unwrap();
    let server = MemoryRegistry::new();
    let registry: Arc<dyn Registry> = Arc::new(server.clone());
    let mut other = hello("x");
    other.service = "other service".to_owned();
    registry
        .put(
            b"services/other service/x",
            &other.to_json(),
            PutOptions::default(),
        )
        .await
        .unwrap();
    let _a = register(&registry, "a").await;
    let hub = DiscoveryHub::new(
        registry,
        with_file(SnapshotFile::in_dir(dir.path()).interval(Duration::from_millis(100))),
    );
    for service in ["hello", "other service"] {
        let discovery = hub.discovery(service).unwrap();
        discovery.wait_synced(SYNC).await.expect("synced");
        written(&discovery, 1).await;
    }
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec!["hello.json", "other%20service.json"]);
}

/// A `tracing` subscriber that keeps what it prints, for checking the warnings.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A good file of `hello` with instances a and b, as a discovery writes it.
fn good_file(dir: &Path) -> Vec<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let path = dir.join("good.json");
    runtime.block_on(async {
        let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
        let _a = register(&registry, "a").await;
        let _b = register(&registry, "b").await;
        let discovery =
            Discovery::start(registry, "hello", with_file(SnapshotFile::at(&path))).unwrap();
        discovery.wait_synced(SYNC).await.expect("synced");
        written(&discovery, 1).await;
        discovery.shutdown().await;
    });
    std::fs::read(path).unwrap()
}

/// Starts a discovery of `service` on `bytes` as its file, with the registry unreachable:
/// what it made of the file, what it serves, and what it logged.
fn start_on(bytes: &[u8], service: &str) -> (SnapshotLoad, Vec<ServiceInstance>, bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshot.json");
    std::fs::write(&path, bytes).unwrap();
    let log = Captured::default();
    let sink = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = MemoryRegistry::new();
        server.set_unavailable(true);
        let discovery = Discovery::start(
            Arc::new(server),
            service,
            with_file(SnapshotFile::at(&path)),
        )
        .unwrap();
        let load = loaded(&discovery).await;
        let seeded = discovery.status().seeded.is_some();
        (load, discovery.snapshot().to_vec(), seeded, log.text())
    })
}

fn assert_refused(bytes: &[u8], service: &str) -> SnapshotRefusal {
    let (load, served, seeded, log) = start_on(bytes, service);
    let SnapshotLoad::Refused(refusal) = load else {
        panic!("accepted: {load:?}")
    };
    assert!(
        served.is_empty() && !seeded,
        "a refused file serves nothing"
    );
    assert!(
        log.contains("WARN") && log.contains("snapshot file refused"),
        "no warning: {log}"
    );
    refusal
}

#[test]
fn a_good_file_is_served_and_a_missing_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = good_file(dir.path());
    let (load, served, seeded, _) = start_on(&good, "hello");
    assert!(matches!(load, SnapshotLoad::Loaded { instances: 2, .. }));
    assert_eq!(served, vec![hello("a"), hello("b")]);
    assert!(seeded);

    let log = Captured::default();
    let sink = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let discovery = Discovery::start(
            Arc::new(MemoryRegistry::new()),
            "hello",
            with_file(SnapshotFile::at(dir.path().join("absent.json"))),
        )
        .unwrap();
        assert_eq!(
            loaded(&discovery).await,
            SnapshotLoad::Refused(SnapshotRefusal::Missing)
        );
    });
    assert!(log.text().contains("snapshot file refused"));
}

fn good() -> &'static [u8] {
    static GOOD: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    GOOD.get_or_init(|| good_file(tempfile::tempdir().unwrap().path()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn a_truncated_file_is_refused(cut in 0usize..10_000) {
        let good = good();
        let cut = cut % (good.len() - 1);
        let refusal = assert_refused(&good[..cut], "hello");
        prop_assert!(matches!(refusal, SnapshotRefusal::Corrupt(_)), "{refusal:?}");
    }

    #[test]
    fn random_bytes_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..2_000)) {
        let refusal = assert_refused(&bytes, "hello");
        prop_assert!(matches!(refusal, SnapshotRefusal::Corrupt(_)), "{refusal:?}");
    }

    #[test]
    fn another_version_is_refused(version in 2u64..) {
        let text = String::from_utf8(good().to_vec()).unwrap();
        let other = text.replace("\"version\": 1", &format!("\"version\": {version}"));
        prop_assert_eq!(assert_refused(other.as_bytes(), "hello"), SnapshotRefusal::Version { found: version });
    }

    #[test]
    fn another_service_is_refused(service in "[a-z][a-z0-9-]{0,12}") {
        prop_assume!(service != "hello");
        let refusal = assert_refused(good(), &service);
        prop_assert!(
            matches!(&refusal, SnapshotRefusal::OtherService { service, .. } if service == "hello"),
            "{refusal:?}"
        );
    }

    /// A damaged byte is refused, or (when it only changed white space) served exactly as
    /// written: never served with other instances.
    #[test]
    fn a_damaged_byte_is_never_served_as_other_instances(at in 0usize..10_000, flip in 1u8..) {
        let mut bytes = good().to_vec();
        let at = at % bytes.len();
        bytes[at] ^= flip;
        let (load, served, _, log) = start_on(&bytes, "hello");
        match load {
            SnapshotLoad::Refused(_) => {
                prop_assert!(served.is_empty());
                prop_assert!(log.contains("snapshot file refused"));
            }
            SnapshotLoad::Loaded { .. } => prop_assert_eq!(served, vec![hello("a"), hello("b")]),
            SnapshotLoad::Pending => prop_assert!(false, "never read"),
        }
    }
}
