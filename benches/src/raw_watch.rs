//! Waiting on a raw etcd-client watch, the baseline the registry's discovery is measured against,
//! and a raw client connected as `EtcdRegistry` connects, to measure what that costs by itself.

use etcd_client::{Client, WatchStream};
use std::time::Duration;

/// Reads `watch` until an event for `key` arrives; an error if none does within `wait`.
pub(crate) async fn wait_for_key(
    watch: &mut WatchStream,
    key: &[u8],
    wait: Duration,
) -> Result<(), String> {
    loop {
        match tokio::time::timeout(wait, watch.message()).await {
            Ok(Ok(Some(resp)))
                if resp
                    .events()
                    .iter()
                    .any(|ev| ev.kv().is_some_and(|kv| kv.key() == key)) =>
            {
                return Ok(())
            }
            Ok(Ok(Some(_))) => {}
            _ => {
                return Err(format!(
                    "a raw watch did not see {} within {wait:?}",
                    String::from_utf8_lossy(key)
                ))
            }
        }
    }
}

/// A raw client whose connection runs on a one-thread runtime of its own, as `EtcdRegistry`'s
/// does (so that a paused clock on the caller's runtime cannot reach its pings): the same
/// client as the raw side, with that hop between the caller and the connection. Dropping the
/// returned sender ends the runtime's thread.
pub(crate) async fn connect_on_own_runtime(
    endpoint: &str,
) -> Result<(Client, tokio::sync::oneshot::Sender<()>), String> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready, connected) = tokio::sync::oneshot::channel();
    let endpoint = endpoint.to_owned();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("bench-etcd-io".into())
        .spawn(move || {
            runtime.block_on(async move {
                let _ = ready.send(Client::connect([endpoint], None).await);
                // The connection's tasks run here until the bench lets go.
                let _ = stopped.await;
            })
        })
        .map_err(|e| e.to_string())?;
    let client = connected
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok((client, stop))
}
