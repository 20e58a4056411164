//! The watcher layer on the simulator, on virtual time: failures and resyncs are items of the
//! stream, a silent watch is detected and healed within its bound, a quiet live one is left
//! alone, a backend without progress requests is re-watched without a list, and re-lists of one
//! prefix go one at a time.

mod stalling;

use futures::StreamExt;
use registry_api::{PutOptions, Registry};
use registry_memory::MemoryRegistry;
use registry_service::{watcher, Backoff, Change, Error, Watcher, WatcherConfig, WatcherEvent};
use stalling::Stalling;
use std::sync::Arc;
use std::time::Duration;

const IDLE: Duration = Duration::from_secs(3);
const ANSWER: Duration = Duration::from_secs(1);

fn config() -> WatcherConfig {
    WatcherConfig::default()
        .backoff(Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(1),
        ))
        .idle_timeout(IDLE)
        .progress_timeout(ANSWER)
        .seed(11)
}

async fn put(registry: &Arc<dyn Registry>, key: &str, value: &str) {
    registry
        .put(key.as_bytes(), value.as_bytes(), PutOptions::default())
        .await
        .unwrap();
}

/// The next item, failing the test if none comes within `within` of virtual time.
async fn next(stream: &mut Watcher, within: Duration) -> WatcherEvent {
    tokio::time::timeout(within, stream.next())
        .await
        .expect("an item in time")
        .expect("the watcher never ends")
}

/// Items until (and including) the first `Synced`.
async fn until_synced(stream: &mut Watcher, within: Duration) -> Vec<WatcherEvent> {
    let mut items = Vec::new();
    loop {
        let item = next(stream, within).await;
        let synced = matches!(item, WatcherEvent::Synced { .. });
        items.push(item);
        if synced {
            return items;
        }
    }
}

fn puts_and_deletes(changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .map(|change| match change {
            Change::Put { kv, prev } => format!(
                "put {}={}{}",
                kv.key_str(),
                kv.value_str(),
                prev.as_ref()
                    .map(|p| format!(" (was {})", p.value_str()))
                    .unwrap_or_default()
            ),
            Change::Delete { prev } => format!("delete {}", prev.key_str()),
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn failures_and_resyncs_are_items_and_the_stream_goes_on() {
    let memory = MemoryRegistry::new();
    let registry: Arc<dyn Registry> = Arc::new(memory.clone());
    put(&registry, "p/a", "1").await;
    put(&registry, "p/b", "1").await;
    let mut stream = watcher(registry.clone(), "p/", config());

    let items = until_synced(&mut stream, Duration::from_secs(1)).await;
    let [WatcherEvent::Changed {
        changes,
        resync: true,
        ..
    }, WatcherEvent::Synced { .. }] = &items[..]
    else {
        panic!("list then synced: {items:?}")
    };
    assert_eq!(puts_and_deletes(changes), ["put p/a=1", "put p/b=1"]);

    memory.set_unavailable(true);
    let WatcherEvent::Failed { error, retry_in } = next(&mut stream, Duration::from_secs(1)).await
    else {
        panic!("the cut watch is an item")
    };
    assert!(error.is_retryable(), "{error}");
    assert!(retry_in <= Duration::from_secs(1));
    // Down: every re-list fails, and each failure is an item with a growing, capped wait.
    let WatcherEvent::Failed { .. } = next(&mut stream, Duration::from_secs(2)).await else {
        panic!("a failed list is an item")
    };

    memory.set_unavailable(false);
    put(&registry, "p/b", "2").await;
    registry.delete(b"p/a").await.unwrap();
    put(&registry, "p/c", "1").await;
    let items = until_synced(&mut stream, Duration::from_secs(3)).await;
    let changed: Vec<_> = items
        .iter()
        .filter_map(|item| match item {
            WatcherEvent::Changed {
                changes,
                resync: true,
                revision,
            } => Some((puts_and_deletes(changes), *revision)),
            WatcherEvent::Failed { .. } => None,
            WatcherEvent::Synced { .. } => None,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        changed,
        [(
            vec![
                "delete p/a".to_owned(),
                "put p/b=2 (was 1)".to_owned(),
                "put p/c=1".to_owned()
            ],
            memory.current_revision()
        )],
        "exactly the differences, once"
    );

    put(&registry, "p/c", "2").await;
    let WatcherEvent::Changed {
        changes,
        resync: false,
        ..
    } = next(&mut stream, Duration::from_secs(1)).await
    else {
        panic!("watching on")
    };
    assert_eq!(puts_and_deletes(&changes), ["put p/c=2 (was 1)"]);
}

#[tokio::test(start_paused = true)]
async fn a_silent_watch_is_detected_and_healed_within_the_idle_bound() {
    let memory = MemoryRegistry::new();
    let server: Arc<dyn Registry> = Arc::new(memory.clone());
    let link = Stalling::new(server.clone(), true);
    let mut stream = watcher(link.clone(), "p/", config());
    until_synced(&mut stream, Duration::from_secs(1)).await;
    assert_eq!(link.intercept().lists(), 1);

    // The member this watch reads from is cut off from its cluster: the watch stays open and
    // silent while writes go on elsewhere.
    link.intercept().freeze_open_watches();
    let frozen_at = tokio::time::Instant::now();
    put(&server, "p/a", "1").await;

    let bound = config().stall_bound() + config().backoff.max;
    let failed = next(&mut stream, bound).await;
    let WatcherEvent::Failed { error, .. } = &failed else {
        panic!("the stall is an item: {failed:?}")
    };
    assert!(
        matches!(**error, Error::WatchStalled { .. }),
        "the failure says why: {error}"
    );
    let detected = frozen_at.elapsed();
    assert!(
        detected >= IDLE && detected <= config().stall_bound(),
        "detected after {detected:?}, bound {:?}",
        config().stall_bound()
    );
    assert_eq!(
        link.intercept().progress_requests(),
        1,
        "asked once before giving up"
    );

    let items = until_synced(&mut stream, bound).await;
    let healed = frozen_at.elapsed();
    let resynced: Vec<_> = items
        .iter()
        .filter_map(|item| match item {
            WatcherEvent::Changed { changes, .. } => Some(puts_and_deletes(changes)),
            _ => None,
        })
        .collect();
    assert_eq!(resynced, [vec!["put p/a=1".to_owned()]]);
    assert!(healed <= bound, "healed after {healed:?}, bound {bound:?}");
    assert_eq!(link.intercept().lists(), 2, "healing costs one list");
}

#[tokio::test(start_paused = true)]
async fn a_watch_that_answers_but_stays_behind_is_re_listed() {
    let memory = MemoryRegistry::new();
    let server: Arc<dyn Registry> = Arc::new(memory.clone());
    let link = Stalling::new(server.clone(), true);
    let mut stream = watcher(link.clone(), "p/", config());
    until_synced(&mut stream, Duration::from_secs(1)).await;

    // The member stops following its cluster but still answers, from its stale revision.
    link.intercept().lag_open_watches();
    let lagged_at = tokio::time::Instant::now();
    put(&server, "p/a", "1").await;

    // One idle period to read where the store is, one more to see the watch has not got there.
    let bound = IDLE * 2 + ANSWER + config().backoff.max;
    let failed = next(&mut stream, bound).await;
    let WatcherEvent::Failed { error, .. } = &failed else {
        panic!("the lag is an item: {failed:?}")
    };
    assert!(
        matches!(**error, Error::WatchBehind { .. }),
        "the failure says why: {error}"
    );
    assert!(lagged_at.elapsed() <= IDLE * 2 + ANSWER);
    let items = until_synced(&mut stream, bound).await;
    assert!(items.iter().any(|item| matches!(
        item,
        WatcherEvent::Changed { changes, resync: true, .. } if puts_and_deletes(changes) == ["put p/a=1"]
    )));
    assert_eq!(link.intercept().lists(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_quiet_live_watch_answers_progress_and_is_kept() {
    let memory = MemoryRegistry::new();
    let server: Arc<dyn Registry> = Arc::new(memory.clone());
    let link = Stalling::new(server.clone(), true);
    let mut stream = watcher(link.clone(), "p/", config());
    until_synced(&mut stream, Duration::from_secs(1)).await;

    // Ten idle periods of silence on a live watch: asked each time, answered each time.
    let quiet = tokio::time::timeout(IDLE * 10, stream.next()).await;
    assert!(quiet.is_err(), "nothing to say: {quiet:?}");
    assert!(
        link.intercept().progress_requests() >= 9,
        "{}",
        link.intercept().progress_requests()
    );
    assert_eq!(
        link.intercept().lists(),
        1,
        "a quiet watch is not re-listed"
    );
    assert_eq!(link.intercept().watches(), 1);

    put(&server, "p/a", "1").await;
    let WatcherEvent::Changed { resync: false, .. } = next(&mut stream, IDLE).await else {
        panic!("the same watch delivers")
    };
}

#[tokio::test(start_paused = true)]
async fn without_progress_requests_an_idle_watch_is_reopened_without_a_list() {
    let memory = MemoryRegistry::new();
    let server: Arc<dyn Registry> = Arc::new(memory.clone());
    let link = Stalling::new(server.clone(), false);
    let mut stream = watcher(link.clone(), "p/", config());
    until_synced(&mut stream, Duration::from_secs(1)).await;

    link.intercept().freeze_open_watches();
    put(&server, "p/a", "1").await;
    let WatcherEvent::Synced { .. } = next(&mut stream, IDLE * 2).await else {
        panic!("a fresh watch after the idle period")
    };
    let WatcherEvent::Changed {
        changes,
        resync: false,
        revision,
    } = next(&mut stream, Duration::from_millis(1)).await
    else {
        panic!("the fresh watch replays what the frozen one held back")
    };
    assert_eq!(puts_and_deletes(&changes), ["put p/a=1"]);
    assert_eq!(revision, memory.current_revision());
    assert_eq!(link.intercept().lists(), 1, "no list");
    assert_eq!(link.intercept().watches(), 2);
}

#[tokio::test(start_paused = true)]
async fn re_lists_of_one_prefix_go_one_at_a_time_per_registry() {
    let memory = MemoryRegistry::new();
    let server: Arc<dyn Registry> = Arc::new(memory.clone());
    put(&server, "p/a", "1").await;
    let link = Stalling::new(server.clone(), true);
    link.intercept().set_list_delay(Duration::from_millis(500));
    let link_dyn: Arc<dyn Registry> = link.clone();

    let mut streams: Vec<Watcher> = (0..4)
        .map(|i| watcher(link_dyn.clone(), "p/", config().seed(i)))
        .collect();
    let start = tokio::time::Instant::now();
    let synced = futures::future::join_all(
        streams
            .iter_mut()
            .map(|stream| until_synced(stream, Duration::from_secs(10))),
    )
    .await;
    assert_eq!(synced.len(), 4);
    assert_eq!(link.intercept().lists(), 4);
    assert_eq!(
        link.intercept().max_concurrent_lists(),
        1,
        "one list of the prefix at a time"
    );
    assert!(start.elapsed() >= Duration::from_millis(2_000));

    // Another prefix, or another registry, has a gate of its own.
    let other = Stalling::new(server.clone(), true);
    other.intercept().set_list_delay(Duration::from_millis(500));
    let mut a = watcher(other.clone(), "p/", config());
    let mut b = watcher(link_dyn.clone(), "q/", config());
    let mut c = watcher(link_dyn.clone(), "p/", config());
    let (_, _, _) = futures::join!(
        until_synced(&mut a, Duration::from_secs(5)),
        until_synced(&mut b, Duration::from_secs(5)),
        until_synced(&mut c, Duration::from_secs(5)),
    );
    assert_eq!(other.intercept().max_concurrent_lists(), 1);
    assert_eq!(
        link.intercept().max_concurrent_lists(),
        2,
        "q/ listed alongside p/ on one registry"
    );
}

#[tokio::test(start_paused = true)]
async fn a_quiet_watch_on_the_simulator_answers_progress_and_stays_up() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let mut stream = watcher(registry.clone(), "p/", config());
    until_synced(&mut stream, Duration::from_secs(1)).await;
    // The simulator answers progress requests itself: ten idle periods pass with no failure,
    // no re-list and no re-watch (either would be an item).
    let quiet = tokio::time::timeout(IDLE * 10, stream.next()).await;
    assert!(quiet.is_err(), "nothing to say: {quiet:?}");
    put(&registry, "p/a", "1").await;
    let WatcherEvent::Changed { resync: false, .. } = next(&mut stream, IDLE).await else {
        panic!("the same watch delivers")
    };
}
