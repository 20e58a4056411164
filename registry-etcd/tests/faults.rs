//! Behaviour that needs a server of its own: exact revision accounting, compaction (it is
//! store-wide), server death and restart, progress notifications, watch cancellation, auth,
//! connection errors and a three-member cluster.

mod common;

use common::{next_batch, next_item, stays_quiet};
use etcd_client::Permission;
use registry_api::{
    Error, InvalidArgument, ListOptions, PutOptions, Registry, Revision, WatchOptions,
};
use registry_etcd::testing::{EtcdCluster, EtcdServer};
use registry_etcd::EtcdRegistry;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

async fn connect(server: &EtcdServer) -> EtcdRegistry {
    EtcdRegistry::connect(server.endpoints())
        .await
        .expect("connect")
}

#[tokio::test]
async fn revision_accounting_matches_etcd() {
    let server = EtcdServer::start().expect("etcd");
    let r = connect(&server).await;
    let start = r.get(b"k").await.unwrap().revision;
    assert_eq!(
        start,
        Revision::INITIAL,
        "a fresh etcd starts at revision 1"
    );

    let put = r.put(b"a", b"1", PutOptions::default()).await.unwrap();
    assert_eq!(put.revision, Revision(2));
    // Same value again still bumps.
    assert_eq!(
        r.put(b"a", b"1", PutOptions::default())
            .await
            .unwrap()
            .revision,
        Revision(3)
    );
    // Deleting nothing, granting, keeping alive, revoking an empty lease: no revision.
    assert_eq!(r.delete(b"missing").await.unwrap().revision, Revision(3));
    assert_eq!(
        r.delete_prefix(b"missing/").await.unwrap().revision,
        Revision(3)
    );
    let empty = r.lease_grant(10, None).await.unwrap();
    r.lease_keep_alive(empty.id).await.unwrap();
    assert_eq!(r.lease_revoke(empty.id).await.unwrap(), Revision(3));
    // A lease with three keys: three puts, one revoke revision.
    let lease = r.lease_grant(10, None).await.unwrap();
    for key in [&b"l/1"[..], b"l/2", b"l/3"] {
        r.put(key, b"v", PutOptions::with_lease(lease.id))
            .await
            .unwrap();
    }
    assert_eq!(r.lease_revoke(lease.id).await.unwrap(), Revision(7));
    // A prefix delete of several keys: one revision.
    r.put(b"p/1", b"v", PutOptions::default()).await.unwrap();
    r.put(b"p/2", b"v", PutOptions::default()).await.unwrap();
    let deleted = r.delete_prefix(b"p/").await.unwrap();
    assert_eq!((deleted.deleted, deleted.revision), (2, Revision(10)));
    assert_eq!(r.compact(Revision(5)).await.unwrap(), Revision(10));
}

#[tokio::test]
async fn compaction_is_reported_with_the_compact_revision() {
    let server = EtcdServer::start().expect("etcd");
    let r = connect(&server).await;
    assert_eq!(r.compact_revision().await.unwrap(), None);
    for i in 0..5 {
        r.put(format!("k/{i}").as_bytes(), b"v", PutOptions::default())
            .await
            .unwrap();
    }
    // Revisions 2..=6; compact at 4.
    let compact_at = Revision(4);
    assert_eq!(r.compact(compact_at).await.unwrap(), Revision(6));
    assert_eq!(r.compact_revision().await.unwrap(), Some(compact_at));

    match r.list(b"k/", ListOptions::at(Revision(3))).await {
        Err(Error::Compacted { compact_revision }) => assert_eq!(compact_revision, compact_at),
        other => panic!("expected Compacted, got {other:?}"),
    }
    // At exactly the compaction point reads still work.
    assert_eq!(
        r.list(b"k/", ListOptions::at(compact_at))
            .await
            .unwrap()
            .kvs
            .len(),
        3
    );

    // A watch from below the compaction point: Compacted as its only item, then the end.
    let mut watch = r
        .watch(b"k/", WatchOptions::from_revision(Revision(2)))
        .await
        .unwrap();
    match next_item(&mut watch, Duration::from_secs(5)).await {
        Some(Err(Error::Compacted { compact_revision })) => {
            assert_eq!(compact_revision, compact_at)
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(next_item(&mut watch, Duration::from_secs(5))
        .await
        .is_none());
    // From exactly the compaction point it replays.
    let mut watch = r
        .watch(b"k/", WatchOptions::from_revision(compact_at))
        .await
        .unwrap();
    assert_eq!(next_batch(&mut watch).await.revision, compact_at);

    // etcd's answers, passed through: at or below the last compaction, compacted (with the
    // compaction point); above the current revision, a future revision.
    for bad in [compact_at, Revision(compact_at.0 - 1)] {
        assert!(
            matches!(
                r.compact(bad).await,
                Err(Error::Compacted { compact_revision }) if compact_revision == compact_at
            ),
            "compact at {bad}"
        );
    }
    assert!(matches!(
        r.compact(Revision(100)).await,
        Err(Error::FutureRevision {
            requested: Revision(100),
            ..
        })
    ));
}

#[tokio::test]
async fn a_dead_server_fails_watches_and_calls_then_recovers() {
    let mut server = EtcdServer::start().expect("etcd");
    let r = EtcdRegistry::builder(server.endpoints())
        .connect_timeout(Duration::from_millis(500))
        .request_timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap();
    let lease = r.lease_grant(60, None).await.unwrap();
    r.lease_keep_alive(lease.id).await.unwrap();
    assert_eq!(r.keep_alive_streams_opened(), 1);
    let mut watch = r.watch(b"", WatchOptions::default()).await.unwrap();

    server.stop();
    match next_item(&mut watch, Duration::from_secs(5)).await {
        Some(Err(err @ Error::Unavailable { .. })) => assert!(err.is_retryable()),
        other => panic!("expected Unavailable from the watch, got {other:?}"),
    }
    assert!(next_item(&mut watch, Duration::from_secs(1))
        .await
        .is_none());
    let down = r.get(b"k").await.unwrap_err();
    assert!(down.is_retryable(), "{down:?}");
    assert!(r
        .lease_keep_alive(lease.id)
        .await
        .unwrap_err()
        .is_retryable());

    server.restart().expect("restart");
    // The client reconnects by itself within a couple of seconds; poll, bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match r.put(b"k", b"v", PutOptions::default()).await {
            Ok(_) => break,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("no recovery after restart: {e:?}"),
        }
    }
    // The lease survived (same data dir) and keep-alives go over a new stream.
    assert_eq!(r.lease_keep_alive(lease.id).await.unwrap(), 60);
    assert!(r.keep_alive_streams_opened() >= 2);
    let mut watch = r.watch(b"", WatchOptions::default()).await.unwrap();
    let put = r.put(b"k", b"again", PutOptions::default()).await.unwrap();
    assert_eq!(next_batch(&mut watch).await.revision, put.revision);
}

#[tokio::test]
async fn progress_notifications_are_empty_batches() {
    let server =
        EtcdServer::start_with_args(["--experimental-watch-progress-notify-interval=200ms"])
            .expect("etcd");
    let r = connect(&server).await;
    let put = r.put(b"svc/a", b"v", PutOptions::default()).await.unwrap();
    let mut watch = r
        .watch(b"svc/", WatchOptions::default().with_progress_notify())
        .await
        .unwrap();
    let batch = next_batch(&mut watch).await;
    assert!(batch.is_progress(), "{batch:?}");
    assert_eq!(batch.revision, put.revision);
    let later = r.put(b"svc/b", b"v", PutOptions::default()).await.unwrap();
    // Skip any progress notification that raced the put.
    let batch = loop {
        let batch = next_batch(&mut watch).await;
        if !batch.is_progress() {
            break batch;
        }
        assert!(batch.revision < later.revision);
    };
    assert_eq!(batch.revision, later.revision);
    // Without asking, there are none.
    let mut quiet = r.watch(b"svc/", WatchOptions::default()).await.unwrap();
    assert!(stays_quiet(&mut quiet, Duration::from_millis(700)).await);
}

/// etcd's gauge of live watchers, from its `/metrics` page.
fn watchers(port_url: &str) -> u64 {
    let addr = port_url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).expect("metrics");
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut page = String::new();
    stream.read_to_string(&mut page).unwrap();
    page.lines()
        .find_map(|l| l.strip_prefix("etcd_debugging_mvcc_watcher_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .expect("watcher gauge")
}

#[tokio::test]
async fn dropping_a_watch_cancels_it_on_the_server() {
    let server = EtcdServer::start().expect("etcd");
    let r = connect(&server).await;
    let endpoint = server.endpoint();
    assert_eq!(watchers(&endpoint), 0);
    let streams: Vec<_> =
        futures::future::join_all((0..3).map(|_| r.watch(b"x/", WatchOptions::default())))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    assert_eq!(watchers(&endpoint), 3);
    drop(streams);
    let deadline = Instant::now() + Duration::from_secs(5);
    while watchers(&endpoint) != 0 {
        assert!(
            Instant::now() < deadline,
            "watchers still open on the server"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn credentials_and_permissions_fail_clearly() {
    let server = EtcdServer::start().expect("etcd");
    let mut client = connect(&server).await.client();
    client.user_add("root", "secret", None).await.unwrap();
    client.user_grant_role("root", "root").await.unwrap();
    client.auth_enable().await.unwrap();

    let err = EtcdRegistry::builder(server.endpoints())
        .user("root", "wrong")
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Backend { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("authentication failed"), "{err}");
    let source = std::error::Error::source(&err).expect("source kept");
    assert!(source.downcast_ref::<registry_etcd::AuthError>().is_some());

    let r = EtcdRegistry::builder(server.endpoints())
        .user("root", "secret")
        .connect()
        .await
        .unwrap();
    r.put(b"k", b"v", PutOptions::default()).await.unwrap();

    // A user who may read only `app/`: writes and watches elsewhere are refused, typed.
    let mut admin = r.client();
    admin.user_add("reader", "pw", None).await.unwrap();
    admin.role_add("app-reader").await.unwrap();
    admin
        .role_grant_permission("app-reader", Permission::read("app/").with_prefix())
        .await
        .unwrap();
    admin.user_grant_role("reader", "app-reader").await.unwrap();
    let reader = EtcdRegistry::builder(server.endpoints())
        .user("reader", "pw")
        .connect()
        .await
        .expect("connecting needs no permission");
    let denied = reader
        .put(b"app/k", b"v", PutOptions::default())
        .await
        .unwrap_err();
    assert!(denied.to_string().contains("permission denied"), "{denied}");
    assert!(
        matches!(denied, Error::PermissionDenied { .. }),
        "{denied:?}"
    );
    assert!(!denied.is_retryable());
    let mut watch = reader
        .watch(b"other/", WatchOptions::default())
        .await
        .unwrap();
    match next_item(&mut watch, Duration::from_secs(5)).await {
        Some(Err(err @ Error::PermissionDenied { .. })) => {
            assert!(err.to_string().contains("permission denied"), "{err}")
        }
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
    assert!(next_item(&mut watch, Duration::from_secs(1))
        .await
        .is_none());
    let mut allowed = reader
        .watch(b"app/", WatchOptions::default())
        .await
        .unwrap();
    let put = r.put(b"app/x", b"v", PutOptions::default()).await.unwrap();
    assert_eq!(next_batch(&mut allowed).await.revision, put.revision);
}

#[tokio::test]
async fn malformed_endpoints_are_refused_before_connecting() {
    let empty: [&str; 0] = [];
    for endpoints in [
        &empty[..],
        &["127.0.0.1:2379"],
        &["http://"],
        &["http://:2379"],
        &["http://127.0.0.1:99999"],
        &["http://127.0.0.1:0"],
        &["http://127.0.0.1:2379", "nonsense"],
    ] {
        let err = EtcdRegistry::builder(endpoints.iter().copied())
            .connect()
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument(InvalidArgument::Config(_))),
            "{endpoints:?}: {err:?}"
        );
    }
}

#[tokio::test]
async fn a_refused_connection_is_unavailable_and_quick() {
    // A port that was free a moment ago: nobody listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let err = EtcdRegistry::builder([format!("http://127.0.0.1:{port}")])
        .connect_timeout(Duration::from_millis(500))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(std::error::Error::source(&err).is_some());
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_cluster_survives_its_leader() {
    let mut cluster = EtcdCluster::start(3).expect("cluster");
    assert_eq!(cluster.endpoints().len(), 3);
    let leader = cluster.leader().await.expect("a leader");
    // Talk to a follower only, so the killed leader is not in the way of unary calls.
    let follower = (leader + 1) % 3;
    let r = EtcdRegistry::builder([cluster.endpoint(follower).unwrap()])
        .request_timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap();
    let mut watch = r.watch(b"svc/", WatchOptions::default()).await.unwrap();
    r.put(b"svc/before", b"v", PutOptions::default())
        .await
        .unwrap();
    next_batch(&mut watch).await;

    cluster.kill(leader);
    let deadline = Instant::now() + Duration::from_secs(10);
    let new_leader = loop {
        match cluster.leader().await {
            Some(l) if l != leader => break l,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => panic!("no new leader"),
        }
    };
    assert_ne!(new_leader, leader);
    // Writes work again (retrying through the election), and the watch on the survivor
    // keeps delivering.
    let put = loop {
        match r.put(b"svc/after", b"v", PutOptions::default()).await {
            Ok(put) => break put,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("no write after failover: {e:?}"),
        }
    };
    assert_eq!(next_batch(&mut watch).await.revision, put.revision);

    cluster.restart(leader).expect("restart");
    assert!(cluster.is_running(leader));
}

#[tokio::test]
async fn the_harness_keeps_data_across_restarts_and_cleans_up_on_kill() {
    let mut server = EtcdServer::start().expect("etcd");
    let endpoint = server.endpoint();
    assert!(endpoint.starts_with("http://127.0.0.1:"));
    let r = connect(&server).await;
    r.put(b"kept", b"1", PutOptions::default()).await.unwrap();

    server.stop();
    assert!(!server.is_running());
    assert!(server.data_dir().exists(), "stop keeps the data");
    server.restart().expect("restart");
    assert!(server.is_running());
    assert_eq!(server.endpoint(), endpoint, "same ports after a restart");
    let r = connect(&server).await;
    assert_eq!(&r.get(b"kept").await.unwrap().kv.unwrap().value[..], b"1");

    let dir = server.data_dir().to_owned();
    server.kill();
    assert!(!dir.exists(), "kill removes the data dir");
}

/// Given all three endpoints with one member down, every call succeeds: etcd-client keeps
/// sending some calls to the dead member, where the connection is refused, and the backend
/// sends those again to another one. (A call in flight on a connection that breaks may fail:
/// a write that may have been applied is not resent; the service layer retries it.)
#[tokio::test]
async fn with_a_follower_down_every_call_succeeds_on_the_others() {
    let mut cluster = EtcdCluster::start(3).expect("cluster");
    let leader = cluster.leader().await.expect("a leader");
    cluster.kill((leader + 1) % 3);
    let r = EtcdRegistry::builder(cluster.endpoints())
        .connect_timeout(Duration::from_millis(500))
        .request_timeout(Duration::from_secs(2))
        .connect()
        .await
        .expect("connect with one endpoint down");

    let lease = r.lease_grant(30, None).await.expect("grant");
    for i in 0..40 {
        let key = format!("svc/{i}");
        let put = r
            .put(key.as_bytes(), b"v", PutOptions::with_lease(lease.id))
            .await
            .unwrap_or_else(|e| panic!("put {i}: {e}"));
        let got = r
            .get(key.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("get {i}: {e}"));
        assert_eq!(got.kv.map(|kv| kv.mod_revision), Some(put.revision));
        r.lease_keep_alive(lease.id)
            .await
            .unwrap_or_else(|e| panic!("keep-alive {i}: {e}"));
    }
    let list = r.list(b"svc/", ListOptions::default()).await.expect("list");
    assert_eq!(list.kvs.len(), 40, "every put landed exactly once");
    assert_eq!(
        r.lease_revoke(lease.id).await.expect("revoke"),
        list.revision.next()
    );
}

#[tokio::test]
async fn a_member_cut_off_from_its_cluster_ends_its_watches() {
    // The bound on how long a leaderless member may keep a watch open: etcd cancels
    // require-leader streams after three election timeouts without a leader (0.5 s each here),
    // once the survivor has noticed it lost its peers (one or two election timeouts).
    const BOUND: Duration = Duration::from_secs(8);
    let mut cluster = EtcdCluster::start(3).expect("cluster");
    let survivor = cluster.endpoint(0).unwrap();
    let strict = EtcdRegistry::builder([survivor.clone()])
        .request_timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap();
    let lax = EtcdRegistry::builder([survivor])
        .request_timeout(Duration::from_secs(2))
        .require_leader(false)
        .connect()
        .await
        .unwrap();
    let mut strict_watch = strict
        .watch(b"svc/", WatchOptions::default())
        .await
        .unwrap();
    let mut lax_watch = lax.watch(b"svc/", WatchOptions::default()).await.unwrap();
    strict
        .put(b"svc/a", b"v", PutOptions::default())
        .await
        .unwrap();
    next_batch(&mut strict_watch).await;
    next_batch(&mut lax_watch).await;

    cluster.kill(1);
    cluster.kill(2);
    let cut = Instant::now();
    let item = next_item(&mut strict_watch, BOUND).await;
    let ended_after = cut.elapsed();
    println!("the watch through the leaderless member ended {ended_after:?} after its peers died (bound {BOUND:?}): {item:?}");
    assert!(
        matches!(item, Some(Err(Error::Unavailable { .. }))),
        "{item:?}"
    );
    // New calls are refused at once rather than waiting for the request timeout.
    let asked = Instant::now();
    let refused = strict.get(b"svc/a").await;
    println!(
        "a read through the leaderless member failed in {:?}: {refused:?}",
        asked.elapsed()
    );
    assert!(
        matches!(refused, Err(Error::Unavailable { .. })),
        "{refused:?}"
    );
    // The control: without require-leader the same member keeps its watch open and silent.
    assert!(
        stays_quiet(&mut lax_watch, Duration::from_secs(1)).await,
        "the watch without require-leader ended too"
    );
}
