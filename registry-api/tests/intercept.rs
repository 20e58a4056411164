//! `Intercept::around`: a hook sees each whole call and its answer, with lease ids, and may
//! change either or answer in place of the inner registry.

use registry_api::wrap::{Answer, Call, Intercept, Intercepted, Next};
use registry_api::{async_trait, Error, LeaseGrant, LeaseId, PutOptions, Registry};
use registry_memory::MemoryRegistry;
use std::sync::Mutex;
/// Records the leases each answer renewed; drops the lease of every put; answers a grant
/// of TTL 99 itself.
#[derive(Debug, Default)]
struct Around {
    renewed: Mutex<Vec<LeaseId>>,
}

#[async_trait]
impl Intercept for Around {
    async fn around(&self, call: Call<'_>, next: Next<'_>) -> Answer {
        let call = match call {
            Call::Put {
                key,
                value,
                options,
            } => Call::Put {
                key,
                value,
                options: PutOptions {
                    lease: None,
                    ..options
                },
            },
            Call::LeaseGrant { ttl: 99, .. } => {
                return Answer::LeaseGrant(Ok(LeaseGrant {
                    id: LeaseId(4242),
                    ttl: 99,
                }))
            }
            call => call,
        };
        let asked = call.leases().to_vec();
        let answer = next.run(call).await;
        self.renewed.lock().unwrap().extend(answer.renewed(&asked));
        answer
    }
}

#[tokio::test]
async fn around_sees_lease_ids_and_answers_and_may_change_or_make_them() {
    let memory = MemoryRegistry::with_manual_clock();
    let registry = Intercepted::new(memory.clone(), Around::default());
    let a = registry.lease_grant(10, None).await.unwrap();
    let b = registry.lease_grant(10, None).await.unwrap();
    registry.lease_keep_alive(a.id).await.unwrap();
    let gone = LeaseId(777);
    let answers = registry
        .lease_keep_alive_many(&[a.id, gone, b.id])
        .await
        .unwrap();
    assert!(matches!(answers[1], Err(Error::LeaseNotFound(_))));
    assert_eq!(
        *registry.intercept().renewed.lock().unwrap(),
        vec![a.id, b.id, a.id, a.id, b.id],
        "the grants, the keep-alive, and the batch but for the unknown lease"
    );

    registry
        .put(b"k", b"v", PutOptions::with_lease(a.id))
        .await
        .unwrap();
    let kv = memory.get(b"k").await.unwrap().kv.unwrap();
    assert_eq!(kv.lease, None, "the hook changed the request");

    let made = registry.lease_grant(99, None).await.unwrap();
    assert_eq!(made.id, LeaseId(4242), "the hook answered itself");
    assert!(!memory.leases().await.unwrap().contains(&LeaseId(4242)));
}
