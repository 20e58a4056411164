//! etcd's RBAC on a real server: what each call the project makes needs (as the server checks
//! it, which is what `registry_etcd::acl` documents), the role layout made by
//! `registry_etcd::acl` (idempotent, shown back), and the service layer under it:
//! registration, discovery, the registrar's key watch and drain work; writing another service's
//! entry fails at once with `PermissionDenied`; a registration that loses its permission ends.
//!
//! Each test starts its own etcd with auth on (roles are global to a server).

mod common;

use common::{next_batch, next_item};
use registry_api::{Error, PutOptions, Registry, Revision, WatchOptions};
use registry_etcd::acl::{
    service_role, AccessControl, AccessKind, Change, Credentials, OPERATOR_ROLE,
};
use registry_etcd::testing::EtcdServer;
use registry_etcd::EtcdRegistry;
use registry_service::{
    Discovery, DiscoveryOptions, Registration, RegistrationOptions, RegistrationState,
    ServiceInstance, Status,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A refusal must come at once: one round trip, no retries.
const AT_ONCE: Duration = Duration::from_secs(1);
const WAIT: Duration = Duration::from_secs(10);

/// A server with auth on (root's password `root-pw`) and root's connection.
async fn auth_server(args: &[&str]) -> (EtcdServer, EtcdRegistry) {
    let server = EtcdServer::start_with_args(args.iter().copied()).expect("etcd");
    let open = EtcdRegistry::connect(server.endpoints()).await.unwrap();
    let changes = AccessControl::new(&open)
        .enable(Credentials::password("root-pw"))
        .await
        .unwrap();
    assert!(changes.contains(&Change::AuthEnabled), "{changes:?}");
    let root = user(&server, "root", "root-pw").await;
    (server, root)
}

async fn user(server: &EtcdServer, name: &str, password: &str) -> EtcdRegistry {
    EtcdRegistry::builder(server.endpoints())
        .user(name, password)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{name} connects: {e}"))
}

/// The error, which must be a PermissionDenied that came at once.
async fn denied<T: std::fmt::Debug>(
    call: impl std::future::Future<Output = Result<T, Error>>,
) -> Error {
    let started = Instant::now();
    let outcome = call.await;
    let took = started.elapsed();
    let err = outcome.expect_err("must be refused");
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("permission denied"), "{err}");
    assert!(took < AT_ONCE, "refused after {took:?}");
    err
}

/// A registration's error (the service layer's, which shows the registry's as it is) is the
/// registry's `PermissionDenied`: its text, and etcd's refusal under it.
fn assert_permission_denied(error: &(dyn std::error::Error + 'static)) {
    assert!(
        error.to_string().starts_with("permission denied: "),
        "ended by {error:?}"
    );
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(auth) = cause.downcast_ref::<registry_etcd::AuthError>() {
            assert_eq!(auth.0.code(), tonic::Code::PermissionDenied, "{error:?}");
            return;
        }
        source = cause.source();
    }
    panic!("no etcd refusal under {error:?}");
}

#[tokio::test]
async fn lease_calls_need_what_the_server_checks() {
    let (server, root) = auth_server(&[]).await;
    let acl = AccessControl::new(&root);
    acl.add_service(
        "a",
        &[b"services/a/"],
        "svc-a",
        Credentials::password("a-pw"),
    )
    .await
    .unwrap();
    root.client()
        .user_add("nobody", "n-pw", None)
        .await
        .unwrap();
    let a = user(&server, "svc-a", "a-pw").await;
    let nobody = user(&server, "nobody", "n-pw").await;

    // Grant, keep-alive and the lease list need no permission, even of a user with no role,
    // and even on another user's lease.
    let own = a.lease_grant(30, None).await.unwrap();
    a.put(b"services/a/1", b"v", PutOptions::with_lease(own.id))
        .await
        .unwrap();
    nobody
        .lease_grant(30, None)
        .await
        .expect("grant needs no permission");
    assert_eq!(nobody.lease_keep_alive(own.id).await.unwrap(), own.ttl);
    assert!(nobody.leases().await.unwrap().contains(&own.id));

    // Time-to-live asks for the lease's keys: read permission on each of them.
    let ttl = a.lease_time_to_live(own.id).await.unwrap();
    assert_eq!(ttl.keys, vec![b"services/a/1".to_vec()]);
    denied(nobody.lease_time_to_live(own.id)).await;

    // Revoke needs write permission on every key on the lease.
    denied(nobody.lease_revoke(own.id)).await;
    assert!(
        root.get(b"services/a/1").await.unwrap().kv.is_some(),
        "nothing deleted"
    );
    let shared = a.lease_grant(30, None).await.unwrap();
    a.put(b"services/a/2", b"v", PutOptions::with_lease(shared.id))
        .await
        .unwrap();
    root.put(b"elsewhere/x", b"v", PutOptions::with_lease(shared.id))
        .await
        .unwrap();
    denied(a.lease_revoke(shared.id)).await;
    denied(a.lease_time_to_live(shared.id)).await;
    a.lease_revoke(own.id)
        .await
        .expect("every key on it is its own");
    assert!(root.get(b"services/a/1").await.unwrap().kv.is_none());

    // Reads and writes need their permission; a list of the whole namespace is refused.
    denied(a.put(b"services/b/1", b"v", PutOptions::default())).await;
    denied(a.list(b"services/", Default::default())).await;
    assert!(a.list(b"services/a/", Default::default()).await.is_ok());

    // A watch needs read permission when it is created; its progress requests need nothing.
    let mut watch = a
        .watch(b"services/a/", WatchOptions::default())
        .await
        .unwrap();
    let progress = watch.request_progress().await;
    assert!(progress.is_ok(), "{progress:?}");
    assert!(next_batch(&mut watch).await.is_progress());
    let mut other = a
        .watch(b"services/b/", WatchOptions::default())
        .await
        .unwrap();
    match next_item(&mut other, WAIT).await {
        Some(Err(Error::PermissionDenied { .. })) => {}
        got => panic!("expected PermissionDenied, got {got:?}"),
    }

    // An open watch keeps delivering after its permission is revoked: etcd checks at creation.
    root.client()
        .role_revoke_permission(
            service_role("a"),
            "services/a/",
            Some(etcd_client::RoleRevokePermissionOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    let put = root
        .put(b"services/a/3", b"v", PutOptions::default())
        .await
        .unwrap();
    assert_eq!(next_batch(&mut watch).await.revision, put.revision);
    denied(a.put(b"services/a/4", b"v", PutOptions::default())).await;

    // Compaction needs no permission at all (observed on 3.5.16: any user may compact).
    let compacted = nobody.compact(put.revision).await;
    assert!(matches!(compacted, Ok(Revision(_))), "{compacted:?}");
}

#[tokio::test]
async fn the_role_layout_is_made_once_and_shown() {
    let (_server, root) = auth_server(&[]).await;
    let acl = AccessControl::new(&root);
    // A second enable, by root, changes nothing.
    assert_eq!(
        acl.enable(Credentials::password("root-pw")).await.unwrap(),
        vec![]
    );

    let first = acl
        .add_service(
            "hello",
            &[b"services/hello/", b"go/hello/"],
            "hello",
            Credentials::password("h-pw"),
        )
        .await
        .unwrap();
    assert_eq!(
        first.len(),
        5,
        "role, two permissions, user, grant: {first:?}"
    );
    assert!(first.contains(&Change::RoleAdded {
        role: service_role("hello")
    }));
    let again = acl
        .add_service(
            "hello",
            &[b"services/hello/", b"go/hello/"],
            "hello",
            Credentials::password("h-pw"),
        )
        .await
        .unwrap();
    assert_eq!(again, vec![], "the second run changes nothing");

    let read = acl
        .grant_read("gateway", Credentials::Certificate, &[b"services/hello/"])
        .await
        .unwrap();
    assert!(read.contains(&Change::UserAdded {
        user: "gateway".into(),
        password: false
    }));
    let more = acl
        .grant_read(
            "gateway",
            Credentials::Certificate,
            &[b"services/hello/", b"services/world/"],
        )
        .await
        .unwrap();
    assert_eq!(more.len(), 1, "only the new prefix: {more:?}");
    acl.add_operator("ops", Credentials::password("o-pw"), &[b"services/"])
        .await
        .unwrap();

    let report = acl.show().await.unwrap();
    assert!(report.auth_enabled);
    let role = |name: &str| {
        report
            .roles
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("role {name} in {report:?}"))
    };
    let hello = role(&service_role("hello"));
    assert_eq!(hello.permissions.len(), 2);
    assert!(hello
        .permissions
        .iter()
        .all(|p| p.kind == AccessKind::ReadWrite && p.is_prefix()));
    assert!(hello.permissions[1].allows(AccessKind::Write, b"services/hello/x"));
    let gateway = role("registry-reader-gateway");
    assert!(gateway
        .permissions
        .iter()
        .all(|p| p.kind == AccessKind::Read));
    assert_eq!(gateway.permissions.len(), 2);
    assert_eq!(
        role(OPERATOR_ROLE).permissions[0].to_string(),
        "readwrite prefix services/"
    );
    let ops = report.users.iter().find(|u| u.name == "ops").unwrap();
    assert_eq!(ops.roles, vec![OPERATOR_ROLE.to_owned()]);

    // Bad input is refused before anything is sent.
    let err = acl
        .add_service("x", &[b""], "x", Credentials::password("pw"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert!(acl
        .show()
        .await
        .unwrap()
        .roles
        .iter()
        .all(|r| r.name != service_role("x")));
}

#[tokio::test]
async fn services_and_gateways_work_under_their_roles_and_no_further() {
    let (server, root) = auth_server(&[]).await;
    let acl = AccessControl::new(&root);
    for service in ["a", "b"] {
        let prefix = format!("services/{service}/");
        acl.add_service(
            service,
            &[prefix.as_bytes()],
            service,
            Credentials::password("pw"),
        )
        .await
        .unwrap();
    }
    acl.grant_read(
        "gw",
        Credentials::password("pw"),
        &[b"services/a/", b"services/b/"],
    )
    .await
    .unwrap();
    acl.add_operator("ops", Credentials::password("pw"), &[b"services/"])
        .await
        .unwrap();
    let a: Arc<dyn Registry> = Arc::new(user(&server, "a", "pw").await);
    let b: Arc<dyn Registry> = Arc::new(user(&server, "b", "pw").await);
    let gw: Arc<dyn Registry> = Arc::new(user(&server, "gw", "pw").await);
    let ops = user(&server, "ops", "pw").await;

    let options = || RegistrationOptions::default().ttl(Duration::from_secs(5));
    let reg_a = Registration::start(
        a.clone(),
        ServiceInstance::new("a", "1", "127.0.0.1:1"),
        options(),
    )
    .await
    .expect("a registers under its own prefix");
    let reg_b = Registration::start(
        b.clone(),
        ServiceInstance::new("b", "1", "127.0.0.1:2"),
        options(),
    )
    .await
    .expect("b registers under its own prefix");
    let discover = |service: &str| {
        Discovery::start(gw.clone(), service, DiscoveryOptions::default()).expect("discovery")
    };
    let (seen_a, seen_b) = (discover("a"), discover("b"));
    seen_a
        .wait_for_instance("1", WAIT)
        .await
        .expect("the gateway discovers a");
    seen_b
        .wait_for_instance("1", WAIT)
        .await
        .expect("the gateway discovers b");

    // The registrar's key watch works: the operator deletes a's key, a puts it back.
    ops.delete(b"services/a/1").await.unwrap();
    seen_a
        .wait_until(|now| now.len() == 1, WAIT)
        .await
        .expect("a put its key back");

    // A service writing another's entry, and the gateway writing at all: refused at once.
    let forged = ServiceInstance::new("b", "1", "10.0.0.66:1").to_json();
    denied(a.put(b"services/b/1", &forged, PutOptions::default())).await;
    denied(a.delete(b"services/b/1")).await;
    denied(gw.put(b"services/b/2", &forged, PutOptions::default())).await;
    denied(gw.delete(b"services/a/1")).await;
    assert_eq!(
        seen_b.get("1").unwrap().address,
        "127.0.0.1:2",
        "b's entry untouched"
    );

    // The operator sees every lease with its keys (the dashboard's time-left column).
    let lease = reg_b.lease().expect("registered");
    let ttl = ops.lease_time_to_live(lease).await.unwrap();
    assert_eq!(ttl.keys, vec![b"services/b/1".to_vec()]);

    // Drain: marked draining, then the lease revoked by its own service.
    reg_b
        .shutdown(Duration::from_millis(200))
        .await
        .expect("b drains");
    seen_b.wait_for_len(0, WAIT).await.expect("b is gone");
    assert_eq!(reg_b.state(), RegistrationState::Deregistered);
    reg_a
        .set_status(Status::Draining)
        .await
        .expect("a marks itself draining");
    reg_a.deregister().await.expect("a deregisters");
    seen_a.wait_for_len(0, WAIT).await.expect("a is gone");
}

/// A registration whose permission is taken away ends, with the refusal in `status()`. etcd
/// checks permissions on each write (an open watch and keep-alives go on), so the test makes
/// the registrar write: the operator deletes its key, and the registrar puts it back.
#[tokio::test]
async fn a_registration_that_loses_its_permission_ends_with_the_error() {
    let (server, root) = auth_server(&[]).await;
    let acl = AccessControl::new(&root);
    acl.add_service("a", &[b"services/a/"], "a", Credentials::password("pw"))
        .await
        .unwrap();
    let a: Arc<dyn Registry> = Arc::new(user(&server, "a", "pw").await);
    let registration = Registration::start(
        a,
        ServiceInstance::new("a", "1", "127.0.0.1:1"),
        RegistrationOptions::default().ttl(Duration::from_secs(5)),
    )
    .await
    .expect("registers");

    let mut admin = root.client();
    admin
        .role_revoke_permission(
            service_role("a"),
            "services/a/",
            Some(etcd_client::RoleRevokePermissionOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    root.delete(b"services/a/1").await.unwrap();

    let deadline = Instant::now() + WAIT;
    loop {
        let status = registration.status();
        // Any state but these ends a registration (a new terminal state included).
        let live = matches!(
            status.state,
            RegistrationState::WaitingForReady
                | RegistrationState::Registering
                | RegistrationState::Registered { .. }
                | RegistrationState::LeaseLost
                | RegistrationState::ReRegistering { .. }
        );
        if !live {
            let error = status.last_error.expect("the error that ended it");
            assert_permission_denied(&*error);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {:?} {WAIT:?} after losing its permission (last error: {:?}); a \
             PermissionDenied must end a registration, not be retried",
            status.state,
            status.last_error
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(root.get(b"services/a/1").await.unwrap().kv.is_none());
}

/// A service that registers under another service's name fails at once with the refusal,
/// instead of retrying a write that can never succeed.
#[tokio::test]
async fn a_registration_under_another_services_prefix_fails_at_once() {
    let (server, root) = auth_server(&[]).await;
    let acl = AccessControl::new(&root);
    acl.add_service("a", &[b"services/a/"], "a", Credentials::password("pw"))
        .await
        .unwrap();
    let a: Arc<dyn Registry> = Arc::new(user(&server, "a", "pw").await);
    let started = Instant::now();
    let attempt = tokio::time::timeout(
        WAIT,
        Registration::start(
            a,
            ServiceInstance::new("b", "1", "10.0.0.66:1"),
            RegistrationOptions::default().ttl(Duration::from_secs(5)),
        ),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "Registration::start under another service's prefix still retrying after \
             {WAIT:?}; a PermissionDenied must end it"
        )
    });
    match attempt {
        Err(error) => assert_permission_denied(&error),
        Ok(registration) => panic!("registered as b: {:?}", registration.status()),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        root.get(b"services/b/1").await.unwrap().kv.is_none(),
        "nothing written"
    );
}

/// etcd's tokens expire after `--auth-token-ttl` without use; the backend authenticates again
/// instead of failing the call with "invalid auth token".
#[tokio::test]
async fn an_expired_token_is_renewed() {
    let (server, root) = auth_server(&["--auth-token-ttl=1"]).await;
    AccessControl::new(&root)
        .add_service("a", &[b"services/a/"], "a", Credentials::password("pw"))
        .await
        .unwrap();
    let a = user(&server, "a", "pw").await;
    a.put(b"services/a/1", b"v", PutOptions::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let put = a.put(b"services/a/1", b"w", PutOptions::default()).await;
    assert!(put.is_ok(), "after the token expired: {put:?}");
}
