//! etcd restored from an older backup under a registered fleet and watching caches, both ways
//! operators do it: a plain `etcdutl snapshot restore` (the revision goes back) and one with
//! `--bump-revision 1000 --mark-compacted`. Real etcd processes on loopback; `etcdctl` and
//! `etcdutl` beside the etcd binary. `REGISTRY_FAULTS_FULL=1` runs 30 instances and 10 caches
//! (CI: 8 and 3).
//!
//! Between the backup and the restore: registrations made after the backup (their own leases,
//! which the restore takes away, and one on a shared lease granted before the backup, which it
//! keeps: only the registrar's key watch can see that key is gone), one instance leaves and
//! one dies (the restore brings both back, with their leases, until those expire), and enough
//! updates that every cache holds a revision far above the backup's. After the restore every
//! registration holds its key on a live lease again, every cache equals etcd within the stated
//! bound, and every cache event checks against etcd's history, the restore's jump included.

mod faults_support;

use faults_support::*;
use registry_api::Revision;
use registry_etcd::testing::EtcdServer;
use registry_service::{Registrar, RegistrarOptions, RegistrationState, WatcherConfig};
use std::time::Duration;
use tokio::time::Instant;

fn sizes() -> (usize, usize) {
    (scale(8, 30), scale(3, 10))
}

/// Lists refused as older than what a watcher holds, before one is believed.
const OLDER_LISTS: u32 = 3;

async fn restore_under_a_fleet(label: &str, bump: Option<u64>) {
    let mut server = blocking(EtcdServer::start).expect("etcd");
    let endpoints = server.endpoints();
    let (instances, caches) = sizes();
    let mut setup =
        Setup::start(label, &endpoints, &endpoints, &endpoints, instances, caches).await;

    // A registrar on one shared lease, granted before the backup.
    let shared = Registrar::new(
        connect(&endpoints, &setup.namespace).await,
        RegistrarOptions::default()
            .shared_lease(registration_options(900))
            .key_watch(
                WatcherConfig::default()
                    .backoff(backoff())
                    .seed(901)
                    .request_timeout(Duration::from_secs(1)),
            ),
    )
    .expect("registrar");
    let early_shared = shared
        .register(setup.fleet.instance(900), registration_options(900))
        .await
        .expect("register on the shared lease");
    setup.fleet.live.insert("i0900".to_owned(), early_shared);

    // The backup, with nothing being written.
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup.db");
    let (_, backup_revision) = truth(&*setup.checker, "hello").await.expect("revision");
    blocking(|| server.save_snapshot(&backup)).expect("etcdctl snapshot save");
    let (_, after_save) = truth(&*setup.checker, "hello").await.expect("revision");
    assert_eq!(
        backup_revision, after_save,
        "nothing wrote during the backup"
    );

    // After it: what the restore takes away, and what it brings back.
    setup.fleet.grow(2).await;
    let late_shared = shared
        .register(setup.fleet.instance(901), registration_options(901))
        .await
        .expect("register on the shared lease");
    setup.fleet.live.insert("i0901".to_owned(), late_shared);
    let leaving: Vec<String> = setup.fleet.live.keys().take(1).cloned().collect();
    setup.fleet.leave(&leaving[0]).await;
    setup.fleet.kill_some(1);
    // Churn after the backup: instances that come and go again.
    for _ in 0..3 {
        let before: Vec<String> = setup.fleet.live.keys().cloned().collect();
        setup.fleet.grow(4).await;
        let churned: Vec<String> = setup
            .fleet
            .live
            .keys()
            .filter(|id| !before.contains(id))
            .cloned()
            .collect();
        for id in churned {
            setup.fleet.leave(&id).await;
        }
    }
    converge(
        &*setup.checker,
        &setup.fleet,
        &setup.caches,
        Duration::from_secs(15),
        "before the restore",
    )
    .await;
    let (_, held) = truth(&*setup.checker, "hello").await.expect("revision");
    assert!(held.get() > backup_revision.get() + 20, "{held}");
    setup.oracle.caught_up(held, Duration::from_secs(5)).await;

    // The restore: etcd killed, its data dir replaced, started again.
    let restoring = Instant::now();
    blocking(|| server.restore_snapshot(&backup, bump)).expect("etcdutl snapshot restore");
    let outage = restoring.elapsed();
    let restored = Revision(backup_revision.get() + bump.map_or(0, |b| b as i64));
    setup
        .oracle
        .rebase(connect(&endpoints, &setup.namespace).await, restored)
        .await;

    // Every registration back on a live lease: a keep-alive round finds a lease gone (TTL/3,
    // a retry within half a second), or the key watch re-lists (a backoff wait, the older lists
    // refused, each at most the first backoff step); reconnecting first.
    let reregister_bound = RECONNECT + BACKOFF_MAX + Duration::from_millis(100) * OLDER_LISTS + TTL;
    // The instances the restore brought back leave when their leases expire: their whole TTL
    // after the restart, plus etcd's lateness.
    let stale_bound = outage + TTL + EXPIRY_LATENESS + RECONNECT + BACKOFF_MAX;
    setup
        .after_heal(label, reregister_bound.max(stale_bound), stale_bound)
        .await;
    let regressions: Vec<u64> = setup
        .caches
        .iter()
        .map(|cache| cache.discovery.regressions())
        .collect();
    let re_registered = setup
        .fleet
        .live
        .values()
        .filter(|r| r.status().re_registrations > 0)
        .count();
    assert!(setup
        .fleet
        .live
        .values()
        .all(|r| matches!(r.state(), RegistrationState::Registered { .. })));
    figure(
        label,
        format!(
            "restored from revision {held} to {restored} (backup at {backup_revision}) in {outage:.2?}; {re_registered} registrations re-registered; regressions seen per cache {regressions:?}"
        ),
    );
    match bump {
        // The lists after the restart are far below what the caches held.
        None => assert!(
            regressions.iter().all(|r| *r == 1),
            "every cache saw the revision go back once: {regressions:?}"
        ),
        Some(_) => assert!(
            regressions.iter().all(|r| *r == 0),
            "a bumped restore is a plain resync: {regressions:?}"
        ),
    }
    setup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_restore_from_an_older_backup() {
    restore_under_a_fleet("restore-plain", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_with_the_revision_bumped_and_compacted() {
    restore_under_a_fleet("restore-bumped", Some(1_000)).await;
}
