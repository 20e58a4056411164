//! A client built while etcd is down: `connect_lazy` succeeds without a round trip, calls fail
//! as unavailable while the server is down, and work on their own once it is back.

use registry_api::{Error, PutOptions, Registry};
use registry_etcd::testing::EtcdServer;
use registry_etcd::EtcdRegistry;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lazy_client_starts_while_etcd_is_down_and_works_once_it_is_back() {
    let mut server = tokio::task::block_in_place(EtcdServer::start).expect("etcd");
    tokio::task::block_in_place(|| server.stop());
    let builder = || {
        EtcdRegistry::builder(server.endpoints())
            .connect_timeout(Duration::from_millis(500))
            .request_timeout(Duration::from_millis(500))
    };
    assert!(
        matches!(builder().connect().await, Err(Error::Unavailable { .. })),
        "connect needs a round trip"
    );
    let lazy = builder()
        .connect_lazy()
        .await
        .expect("no round trip needed");
    assert!(matches!(
        lazy.get(b"k").await,
        Err(Error::Unavailable { .. })
    ));

    tokio::task::block_in_place(|| server.restart()).expect("etcd restarts");
    let back = Instant::now();
    loop {
        match lazy.put(b"k", b"v", PutOptions::default()).await {
            Ok(_) => break,
            Err(e) => {
                assert!(
                    back.elapsed() < Duration::from_secs(10),
                    "still failing 10 s after the restart: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let kv = lazy.get(b"k").await.unwrap().kv.expect("written");
    assert_eq!(&kv.value[..], b"v");
}
