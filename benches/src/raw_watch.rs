//! Waiting on a raw etcd-client watch, the baseline the registry's discovery is measured against.

use etcd_client::WatchStream;
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
