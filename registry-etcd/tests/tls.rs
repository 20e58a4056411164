//! TLS against a real etcd whose certificates are made in the test: refusals that say what is
//! wrong (a wrong CA, no client certificate, a client certificate from another CA, plaintext
//! to a TLS port), none of them retried, and a client certificate as the etcd user, refused
//! the prefixes its role does not cover.

mod common;

use common::next_item;
use registry_api::{Error, PutOptions, Registry, WatchOptions};
use registry_etcd::acl::{AccessControl, Credentials};
use registry_etcd::testing::{EtcdServer, TestCa, TlsMode};
use registry_etcd::{EtcdRegistry, TlsError, TlsOptions};
use std::time::{Duration, Instant};

/// A refusal must come at once, not after the connect timeout or retries.
const AT_ONCE: Duration = Duration::from_secs(2);

async fn connect(
    server: &EtcdServer,
    tls: Option<TlsOptions>,
) -> (Result<EtcdRegistry, Error>, Duration) {
    let started = Instant::now();
    let mut builder = EtcdRegistry::builder(server.endpoints());
    if let Some(tls) = tls {
        builder = builder.tls(tls);
    }
    let result = builder.connect().await;
    (result, started.elapsed())
}

/// The error's TLS cause, which must be there.
fn tls_cause(err: &Error) -> &TlsError {
    assert!(matches!(err, Error::Backend { .. }), "{err:?}");
    assert!(
        !err.is_retryable(),
        "a TLS refusal must not be retried: {err:?}"
    );
    std::error::Error::source(err)
        .and_then(|source| source.downcast_ref::<TlsError>())
        .unwrap_or_else(|| panic!("no TlsError under {err:?}"))
}

#[tokio::test]
async fn a_server_certificate_is_verified_against_the_given_ca() {
    let server = EtcdServer::start_tls(TlsMode::ServerOnly).expect("etcd with TLS");
    assert!(server.endpoint().starts_with("https://"));

    let (registry, _) = connect(&server, server.tls_options()).await;
    let registry = registry.expect("the right CA connects");
    let put = registry
        .put(b"k", b"v", PutOptions::default())
        .await
        .unwrap();
    assert_eq!(
        registry.get(b"k").await.unwrap().kv.unwrap().mod_revision,
        put.revision
    );

    let other = TestCa::new("someone else's CA").unwrap();
    let wrong = TlsOptions::new().ca_certificate(other.certificate());
    let (refused, took) = connect(&server, Some(wrong)).await;
    let err = refused.expect_err("a wrong CA must be refused");
    assert!(
        matches!(tls_cause(&err), TlsError::ServerCertificate(_)),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("certificate verification failed"), "{text}");
    assert!(text.contains("UnknownIssuer"), "{text}");
    assert!(took < AT_ONCE, "refused after {took:?}");

    // No CA at all: the same refusal, not a hang or a retry.
    let (refused, _) = connect(&server, None).await;
    let err = refused.expect_err("no trusted CA must be refused");
    assert!(
        err.to_string().contains("certificate verification failed"),
        "{err}"
    );

    // The certificate names 127.0.0.1 and localhost, not another host.
    let elsewhere = server
        .tls_options()
        .unwrap()
        .domain_name("registry.invalid");
    let (refused, _) = connect(&server, Some(elsewhere)).await;
    let err = refused.expect_err("a name the certificate does not carry must be refused");
    assert!(err.to_string().contains("not valid for name"), "{err}");
}

#[tokio::test]
async fn a_client_certificate_is_required_when_etcd_asks_for_one() {
    let server = EtcdServer::start_tls(TlsMode::ClientCertRequired).expect("etcd with TLS");

    let (refused, took) = connect(&server, server.tls_options()).await;
    let err = refused.expect_err("no client certificate must be refused");
    assert!(
        matches!(
            tls_cause(&err),
            TlsError::ClientCertificateRequired(_) | TlsError::ClosedDuringHandshake(_)
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("client certificate"), "{text}");
    assert!(text.contains("--cert and --key"), "{text}");
    assert!(took < AT_ONCE, "refused after {took:?}");

    // A certificate from a CA etcd does not trust.
    let other = TestCa::new("someone else's CA").unwrap();
    let foreign = server
        .tls_options()
        .unwrap()
        .identity(other.client("intruder").unwrap().identity());
    let (refused, _) = connect(&server, Some(foreign)).await;
    let err = refused.expect_err("a client certificate from another CA must be refused");
    assert!(
        matches!(
            tls_cause(&err),
            TlsError::ClientCertificateRefused(_) | TlsError::ClosedDuringHandshake(_)
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("client certificate"), "{err}");

    let (registry, _) = connect(&server, Some(server.client_tls_options("anyone").unwrap())).await;
    let registry = registry.expect("a certificate signed by etcd's CA connects");
    registry
        .put(b"k", b"v", PutOptions::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn plaintext_to_a_tls_port_is_refused() {
    let server = EtcdServer::start_tls(TlsMode::ServerOnly).expect("etcd with TLS");
    let plain = server.endpoint().replace("https://", "http://");
    let started = Instant::now();
    let err = EtcdRegistry::builder([plain.clone()])
        .connect()
        .await
        .expect_err("plaintext to a TLS port must be refused");
    assert!(
        matches!(tls_cause(&err), TlsError::PlaintextToTls(_)),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&plain) && text.contains("serves TLS"),
        "{text}"
    );
    assert!(text.contains("https://"), "{text}");
    assert!(
        started.elapsed() < AT_ONCE,
        "refused after {:?}",
        started.elapsed()
    );

    // A port where nothing listens stays a plain, retryable Unavailable.
    drop(server);
    let err = EtcdRegistry::builder([plain])
        .connect()
        .await
        .expect_err("nothing listens");
    assert!(err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn a_certificate_identity_is_refused_prefixes_its_role_does_not_cover() {
    let server = EtcdServer::start_tls(TlsMode::ClientCertIsUser).expect("etcd with TLS and auth");
    let root = EtcdRegistry::builder(server.endpoints())
        .tls(server.client_tls_options("root").unwrap())
        .connect()
        .await
        .expect("root's certificate connects");
    let acl = AccessControl::new(&root);
    assert!(acl.auth_enabled().await.unwrap());
    acl.add_service("a", &[b"services/a/"], "svc-a", Credentials::Certificate)
        .await
        .unwrap();

    let a = EtcdRegistry::builder(server.endpoints())
        .tls(server.client_tls_options("svc-a").unwrap())
        .connect()
        .await
        .expect("svc-a's certificate connects, with no password");
    let own = a.put(b"services/a/1", b"v", PutOptions::default()).await;
    assert!(own.is_ok(), "its own prefix: {own:?}");

    let started = Instant::now();
    let err = a
        .put(b"services/b/1", b"v", PutOptions::default())
        .await
        .expect_err("another service's prefix must be refused");
    assert!(started.elapsed() < AT_ONCE);
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    assert!(err.to_string().contains("permission denied"), "{err}");
    let err = a.get(b"services/b/1").await.expect_err("nor read");
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    let mut watch = a
        .watch(b"services/b/", WatchOptions::default())
        .await
        .unwrap();
    match next_item(&mut watch, Duration::from_secs(5)).await {
        Some(Err(Error::PermissionDenied { .. })) => {}
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
    assert!(
        root.get(b"services/b/1").await.unwrap().kv.is_none(),
        "nothing written"
    );

    // A certificate for a user etcd does not know acts as no one.
    let stranger = EtcdRegistry::builder(server.endpoints())
        .tls(server.client_tls_options("stranger").unwrap())
        .connect()
        .await
        .expect("connecting reads nothing the user lacks");
    let err = stranger
        .put(b"services/a/2", b"v", PutOptions::default())
        .await
        .expect_err("an unknown user writes nothing");
    assert!(!err.is_retryable(), "{err:?}");
    println!("unknown user: {err}");
}
