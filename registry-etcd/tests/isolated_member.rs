//! A discovery cache on a real 3-member cluster whose member it reads from is cut off from its
//! peers while the client connection stays up (etcd #8980): the member's watch is ended by
//! require-leader, or, with require-leader off, found behind the cluster by the cache's idle
//! checks (a fresh read's revision, then a progress request the member answers from its stale
//! store); either way the cache converges through another member. Prints the time from the
//! write to the cache having it.

use registry_api::{PutOptions, Registry};
use registry_etcd::testing::EtcdCluster;
use registry_etcd::EtcdRegistry;
use registry_service::{Backoff, Discovery, DiscoveryOptions, ServiceInstance};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The bound this test holds the cache to: the member loses its leader within an election
/// timeout (0.5 s), require-leader ends its watches, and the re-list may first land on the
/// isolated member (a 2 s request timeout) before it reaches another one.
const BOUND: Duration = Duration::from_secs(15);

/// How many watchers member `endpoint` serves, from its `/metrics`.
fn watchers(endpoint: &str) -> Option<u64> {
    let addr = endpoint.strip_prefix("http://")?;
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut page = String::new();
    stream.read_to_string(&mut page).ok()?;
    page.lines().find_map(|line| {
        let value = line.strip_prefix("etcd_debugging_mvcc_watcher_total ")?;
        value.trim().parse::<f64>().ok().map(|v| v as u64)
    })
}

async fn connect(endpoints: Vec<String>) -> Arc<dyn Registry> {
    connect_with(endpoints, true).await
}

async fn connect_with(endpoints: Vec<String>, require_leader: bool) -> Arc<dyn Registry> {
    Arc::new(
        EtcdRegistry::builder(endpoints)
            .require_leader(require_leader)
            .connect_timeout(Duration::from_secs(1))
            .request_timeout(Duration::from_secs(2))
            .connect()
            .await
            .expect("connect"),
    )
}

async fn put_instance(registry: &Arc<dyn Registry>, id: &str) -> Instant {
    let instance = ServiceInstance::new("hello", id, format!("10.0.0.1:{}", 8000 + id.len()));
    let key = format!("services/hello/{id}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Retried: when the isolated member was the leader, the others elect a new one first.
        match registry
            .put(key.as_bytes(), &instance.to_json(), PutOptions::default())
            .await
        {
            Ok(_) => return Instant::now(),
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("the majority takes no write: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_on_a_member_cut_off_from_its_peers_converges_through_another() {
    cut_off(true, BOUND).await;
}

/// The second line of defence alone: with require-leader off the isolated member keeps the
/// watch open and answers progress requests from its stale store; the idle checks see it stay
/// behind a fresh read and re-list. Slower: two idle periods (1 s each here) to notice, and a
/// re-list or re-watch that lands on the isolated member again costs another round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_require_leader_the_idle_checks_find_the_cut_off_member() {
    cut_off(false, Duration::from_secs(25)).await;
}

async fn cut_off(require_leader: bool, bound: Duration) {
    let cluster = EtcdCluster::start_isolatable(3).expect("a 3-member cluster");
    cluster.leader().await.expect("a leader");

    let cache_registry = connect_with(cluster.endpoints(), require_leader).await;
    let options = DiscoveryOptions::default()
        .backoff(Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(1),
        ))
        .request_timeout(Duration::from_secs(2))
        // With require-leader on, the idle checks are set beyond the bound, so what heals the
        // cache within it is require-leader alone.
        .idle_timeout(Duration::from_secs(if require_leader { 30 } else { 1 }))
        .progress_timeout(Duration::from_secs(1))
        .seed(7);
    let discovery = Discovery::start(cache_registry, "hello", options).unwrap();
    discovery
        .wait_synced(Duration::from_secs(10))
        .await
        .expect("synced");

    // The member the cache's watch runs on (its client balances over all three).
    let deadline = Instant::now() + Duration::from_secs(10);
    let member = loop {
        let counts: Vec<Option<u64>> = cluster.endpoints().iter().map(|e| watchers(e)).collect();
        if let Some(member) = counts.iter().position(|c| c.unwrap_or(0) > 0) {
            break member;
        }
        assert!(
            Instant::now() < deadline,
            "no member reports the watch: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let other = (member + 1) % 3;
    let writer = connect(vec![cluster.endpoint(other).unwrap()]).await;
    put_instance(&writer, "a").await;
    discovery
        .wait_for_instance("a", Duration::from_secs(5))
        .await
        .expect("a healthy cache follows");

    assert!(discovery.last_error().is_none(), "healthy so far");
    let leader = cluster.leader().await;
    cluster.isolate(member).await.expect("isolate");
    let isolated_at = Instant::now();
    assert!(
        watchers(&cluster.endpoint(member).unwrap()).is_some(),
        "the isolated member's client port still answers"
    );
    let written = put_instance(&writer, "b").await;
    let seen = discovery.wait_for_instance("b", bound).await;
    let seen_at = Instant::now();
    let took = seen_at.duration_since(written);
    println!(
        "require-leader {require_leader}: member {member} ({}) cut off from its peers: the \
         write through member {other} was acknowledged {:?} after the cut; the cache had it \
         {:?} after the cut, {took:?} after the acknowledgement (bound {bound:?}); what the \
         cache saw: {:?}",
        if leader == Some(member) {
            "the leader"
        } else {
            "a follower"
        },
        written.duration_since(isolated_at),
        seen_at.duration_since(isolated_at),
        discovery.last_error().map(|e| e.to_string())
    );
    seen.expect("converged through another member within the bound");
    assert!(
        discovery.last_error().is_some(),
        "the cut was noticed, not missed"
    );
    assert_eq!(discovery.len(), 2);
    discovery
        .wait_synced(Duration::from_secs(10))
        .await
        .expect("synced again");
    cluster.heal();
}
