//! Publishing an instance in etcd's Go naming layout too (`go.etcd.io/etcd/client/v3/naming`),
//! so that Go gRPC clients using the etcd resolver (`etcd:///<target>`) find our services.
//!
//! That layout is one key per endpoint, `<target>/<addr>`, whose value is the JSON of Go's
//! `endpoints.Endpoint`: `{"Addr":"127.0.0.1:50051","Metadata":...}`. [`publish`] keeps such a
//! key next to the instance's own, attached to the same lease, so it lives and dies with the
//! registration: revoked on deregistration, expired after a crash, put again whenever the
//! registration comes back with a new lease.
//!
//! Only publishing is supported: discovery reads our own layout, not Go's.

use registry_api::{InvalidArgument, LeaseId, PutOptions, Registry, Result};
use registry_service::{Registration, RegistrationState};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Go's `endpoints.Endpoint`, field names and all.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GoEndpoint {
    /// The address gRPC dials, `host:port`.
    #[serde(rename = "Addr")]
    pub addr: String,
    /// Anything; Go's resolver passes it on as the address's metadata.
    #[serde(rename = "Metadata")]
    pub metadata: serde_json::Value,
}

/// The key Go's endpoints manager uses: `<target>/<addr>`. The target must be non-empty and
/// must not end with `/`; the address must be non-empty.
pub fn endpoint_key(target: &str, addr: &str) -> Result<String> {
    if target.is_empty() || target.ends_with('/') {
        return Err(InvalidArgument::Config(format!(
            "Go naming target {target:?} must be non-empty and not end with '/'"
        ))
        .into());
    }
    if addr.is_empty() {
        return Err(InvalidArgument::Config("Go naming address is empty".into()).into());
    }
    Ok(format!("{target}/{addr}"))
}

/// How long to wait before putting the key again after a failed put.
const RETRY: Duration = Duration::from_secs(1);

/// Puts `endpoint` under `<target>/<addr>` with the registration's lease, then keeps it there
/// in a background task (ended by deregistration or by aborting the handle). Fails when the
/// target is malformed, the registration has no lease yet, or the first put fails.
pub async fn publish(
    registry: Arc<dyn Registry>,
    registration: &Registration,
    target: &str,
    endpoint: GoEndpoint,
) -> Result<(String, JoinHandle<()>)> {
    let key = endpoint_key(target, &endpoint.addr)?;
    let value = serde_json::to_vec(&endpoint)
        .map_err(|e| InvalidArgument::Config(format!("Go naming metadata: {e}")))?;
    let lease = registration.lease().ok_or_else(|| {
        registry_api::Error::unavailable("the registration has no lease to attach to")
    })?;
    registry
        .put(key.as_bytes(), &value, PutOptions::with_lease(lease))
        .await?;
    let task = tokio::spawn(follow(
        registry,
        registration.subscribe(),
        key.clone(),
        value,
        lease,
    ));
    Ok((key, task))
}

/// Puts the key again each time the registration holds a lease the key is not attached to.
async fn follow(
    registry: Arc<dyn Registry>,
    mut states: watch::Receiver<RegistrationState>,
    key: String,
    value: Vec<u8>,
    mut attached: LeaseId,
) {
    loop {
        let state = states.borrow_and_update().clone();
        match state {
            RegistrationState::Deregistered => return,
            RegistrationState::Registered { lease, .. } if lease != attached => {
                match registry
                    .put(key.as_bytes(), &value, PutOptions::with_lease(lease))
                    .await
                {
                    Ok(_) => attached = lease,
                    Err(e) => {
                        tracing::warn!(key, error = %e, "could not put the Go naming key; retrying");
                        tokio::select! {
                            () = tokio::time::sleep(RETRY) => continue,
                            changed = states.changed() => if changed.is_err() { return },
                        }
                        continue;
                    }
                }
            }
            _ => {}
        }
        if states.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_and_key_have_go_shapes() {
        let endpoint = GoEndpoint {
            addr: "127.0.0.1:50051".into(),
            metadata: serde_json::Value::Null,
        };
        assert_eq!(
            serde_json::to_string(&endpoint).unwrap(),
            r#"{"Addr":"127.0.0.1:50051","Metadata":null}"#
        );
        assert_eq!(
            endpoint_key("foo/bar/my-service", "1.2.3.4:80").unwrap(),
            "foo/bar/my-service/1.2.3.4:80"
        );
        assert!(endpoint_key("", "a:1").is_err());
        assert!(endpoint_key("svc/", "a:1").is_err());
        assert!(endpoint_key("svc", "").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_key_follows_the_registration_lease() {
        use registry_service::{RegistrationOptions, ServiceInstance};
        let registry: Arc<dyn Registry> = Arc::new(registry_memory::MemoryRegistry::new());
        let registration = Registration::start(
            registry.clone(),
            ServiceInstance::new("hello", "a", "127.0.0.1:1"),
            RegistrationOptions::default().ttl(Duration::from_secs(3)),
        )
        .await
        .unwrap();
        let endpoint = GoEndpoint {
            addr: "127.0.0.1:1".into(),
            metadata: serde_json::json!({"zone": "z"}),
        };
        let (key, _task) = publish(registry.clone(), &registration, "hello", endpoint.clone())
            .await
            .unwrap();
        assert_eq!(key, "hello/127.0.0.1:1");
        let kv = registry.get(key.as_bytes()).await.unwrap().kv.expect("put");
        assert_eq!(kv.lease, registration.lease());
        let parsed: GoEndpoint = serde_json::from_slice(&kv.value).unwrap();
        assert_eq!(parsed, endpoint);

        // Someone revokes the lease: both keys go; the registration comes back with a new
        // lease, and the Go key follows it.
        let old = registration.lease().unwrap();
        registry.lease_revoke(old).await.unwrap();
        assert!(registry.get(key.as_bytes()).await.unwrap().kv.is_none());
        let mut states = registration.subscribe();
        let fresh = loop {
            if let RegistrationState::Registered { lease, .. } = *states.borrow_and_update() {
                if lease != old {
                    break lease;
                }
            }
            states.changed().await.unwrap();
        };
        let mut attached = None;
        for _ in 0..100 {
            attached = registry
                .get(key.as_bytes())
                .await
                .unwrap()
                .kv
                .and_then(|kv| kv.lease);
            if attached == Some(fresh) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(attached, Some(fresh));

        // Deregistration revokes the lease: the Go key goes with it.
        registration.deregister().await.unwrap();
        assert!(registry.get(key.as_bytes()).await.unwrap().kv.is_none());
    }
}
