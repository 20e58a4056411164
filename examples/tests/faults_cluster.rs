//! A three-member etcd cluster under a registered fleet and watching caches, every client given
//! all three endpoints: kill the leader, kill a follower, restart both, lose quorum for a while
//! and regain it. After each step heals, the checks of `faults_support` run.

mod faults_support;

use faults_support::*;
use registry_etcd::testing::EtcdCluster;
use std::time::Duration;
use tokio::time::Instant;

/// A new leader in ~0.5-0.7 s (fast elections), then the clients' retries: etcd-client keeps
/// sending a share of the calls to a dead member, where they fail and are retried after a
/// backoff, so healing after a member loss takes a few retries more than after a restart.
const FAILOVER: Duration = Duration::from_secs(4);

async fn leader(cluster: &EtcdCluster) -> usize {
    let start = Instant::now();
    loop {
        if let Some(leader) = cluster.leader().await {
            return leader;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no leader elected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_and_follower_loss_and_quorum_loss() {
    let mut cluster = blocking(|| EtcdCluster::start(3)).expect("cluster");
    let endpoints = cluster.endpoints();
    let (instances, caches) = (scale(12, 50), scale(3, 10));
    let mut setup = Setup::start(
        "cluster", &endpoints, &endpoints, &endpoints, instances, caches,
    )
    .await;
    // An election extends every lease by about the election timeout.
    let stale_slack = TTL + EXPIRY_LATENESS + FAILOVER + BACKOFF_MAX + RECONNECT;
    let mut survived = 0;

    // The leader dies; a process dies with it.
    let old_leader = leader(&cluster).await;
    setup.fleet.kill_some(1);
    let t = Instant::now();
    blocking(|| cluster.kill(old_leader));
    setup
        .after_heal(
            "cluster-leader-killed",
            TTL + FAILOVER + BACKOFF_MAX + RECONNECT,
            t.elapsed() + stale_slack,
        )
        .await;
    survived += 1;

    // A follower dies too (quorum of 2 out of 3 left: the one running plus... none spare).
    // First bring the old leader back so that killing a follower keeps quorum.
    blocking(|| cluster.restart(old_leader)).expect("old leader rejoins");
    setup
        .after_heal(
            "cluster-leader-restarted",
            TTL + FAILOVER + BACKOFF_MAX + RECONNECT,
            t.elapsed() + stale_slack,
        )
        .await;
    survived += 1;
    let current = leader(&cluster).await;
    let follower = (current + 1) % cluster.len();
    setup.fleet.kill_some(1);
    let t = Instant::now();
    blocking(|| cluster.kill(follower));
    setup.fleet.grow(1).await;
    setup
        .after_heal(
            "cluster-follower-killed",
            TTL + FAILOVER + BACKOFF_MAX + RECONNECT,
            t.elapsed() + stale_slack,
        )
        .await;
    survived += 1;
    blocking(|| cluster.restart(follower)).expect("follower rejoins");
    setup
        .after_heal(
            "cluster-follower-restarted",
            TTL + FAILOVER + BACKOFF_MAX + RECONNECT,
            t.elapsed() + stale_slack,
        )
        .await;
    survived += 1;

    // Quorum lost: two of three die, for longer than the TTL. Nothing can be written, and no
    // lease can expire either (expiry needs a leader).
    let current = leader(&cluster).await;
    let gone: Vec<usize> = (0..cluster.len()).filter(|&i| i != current).collect();
    setup.fleet.kill_some(1);
    let t = Instant::now();
    for &i in &gone {
        blocking(|| cluster.kill(i));
    }
    let down = TTL + scale(Duration::from_secs(1), Duration::from_secs(4));
    tokio::time::sleep(down).await;
    let lost = setup.fleet.unregistered();
    assert!(lost > 0, "without quorum no keep-alive can succeed");
    for &i in &gone {
        blocking(|| cluster.restart(i)).expect("member rejoins");
    }
    let outage = t.elapsed();
    figure(
        "cluster-quorum",
        format!("quorum lost for {outage:.2?}: {lost} registrations declared their lease lost"),
    );
    setup
        .after_heal(
            "cluster-quorum-regained",
            TTL + FAILOVER + BACKOFF_MAX + RECONNECT,
            outage + stale_slack,
        )
        .await;
    survived += 1;
    figure(
        "cluster",
        format!("{survived} cluster faults survived with {} instances and {} caches on all three endpoints", setup.fleet.live.len(), setup.caches.len()),
    );
    setup.shutdown().await;
}
