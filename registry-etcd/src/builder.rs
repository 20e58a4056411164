//! Connection options of [`EtcdRegistry`] and the checks run on them before connecting.

use crate::errors::{self, Context};
use crate::key_prefix::KeyPrefix;
use crate::leases::KeepAlives;
use crate::{EtcdRegistry, Inner};
use etcd_client::{Client, ConnectOptions, GetOptions};
use registry_api::limits::DEFAULT_MAX_VALUE_BYTES;
use registry_api::{Error, InvalidArgument, Result};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// How long connecting (TCP and HTTP/2 handshake, first round trip) may take by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one request may wait for its reply by default.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an HTTP/2 ping goes out on a connection that has read nothing, by default. Not
/// below etcd's `--grpc-keepalive-min-time` (5 s), or the server answers with `too_many_pings`.
pub const DEFAULT_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a ping may go unanswered before the connection is dropped, by default.
pub const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest list or watch response accepted. gRPC's default of 4 MiB is reached by a list of
/// some 20,000 registrations, or by a watch catching up over a long history.
const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// Builds an [`EtcdRegistry`]: endpoints, timeouts, credentials, TLS and a key prefix.
///
/// ```no_run
/// # async fn demo() -> registry_api::Result<()> {
/// use registry_etcd::EtcdRegistry;
/// use std::time::Duration;
///
/// let registry = EtcdRegistry::builder(["http://127.0.0.1:2379"])
///     .key_prefix("prod/")
///     .request_timeout(Duration::from_secs(2))
///     .connect()
///     .await?;
/// # let _ = registry; Ok(()) }
/// ```
#[derive(Clone)]
pub struct EtcdRegistryBuilder {
    endpoints: Vec<String>,
    key_prefix: Vec<u8>,
    connect_timeout: Duration,
    request_timeout: Duration,
    keep_alive: Option<(Duration, Duration)>,
    user: Option<(String, String)>,
    max_value_bytes: usize,
    require_leader: bool,
    #[cfg(feature = "tls")]
    tls: Option<etcd_client::TlsOptions>,
}

impl fmt::Debug for EtcdRegistryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the password.
        f.debug_struct("EtcdRegistryBuilder")
            .field("endpoints", &self.endpoints)
            .field("key_prefix", &String::from_utf8_lossy(&self.key_prefix))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("keep_alive", &self.keep_alive)
            .field("user", &self.user.as_ref().map(|(name, _)| name))
            .field("max_value_bytes", &self.max_value_bytes)
            .field("require_leader", &self.require_leader)
            .finish_non_exhaustive()
    }
}

impl EtcdRegistryBuilder {
    /// A builder for the given endpoints (`http://host:port`, or `https://` with the `tls`
    /// feature). Several endpoints of one cluster are balanced between.
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        EtcdRegistryBuilder {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            key_prefix: Vec::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            // On by default: without pings a connection that goes silent (a black-holed
            // network, a hung peer) is never noticed, and a watch on it looks healthy for ever.
            keep_alive: Some((DEFAULT_KEEP_ALIVE_INTERVAL, DEFAULT_KEEP_ALIVE_TIMEOUT)),
            user: None,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            // On by default: a member cut off from its peers otherwise keeps its watches open
            // and silent for as long as the partition lasts.
            require_leader: true,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Prefixes every key, list, delete and watch with `prefix`, and strips it from every
    /// result, so that registries with different key prefixes share one etcd without seeing
    /// each other. Leases are not prefixed: etcd has one lease space.
    ///
    /// This is the same concept as [`registry_api::wrap::KeyPrefix`], which works over any
    /// backend; here it is pushed into the client, which saves a copy of every key. It is not the
    /// service layer's `namespace` (the first segment of `<namespace>/<service>/<id>`).
    pub fn key_prefix(mut self, prefix: impl Into<Vec<u8>>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// How long connecting to an endpoint may take (default 3 s), so that a bad endpoint fails
    /// instead of hanging.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one request may wait for its reply (default 5 s). Watches are not cut by it.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sends an HTTP/2 ping when the connection has read nothing for `interval`, and drops it
    /// when a ping is not answered within `timeout`, so that a silent connection (no reply,
    /// no reset) ends its watches with `Unavailable` instead of leaving them quietly dead.
    /// Default: 10 s and 5 s; etcd refuses pings more often than its
    /// `--grpc-keepalive-min-time` (5 s by default).
    pub fn keep_alive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keep_alive = Some((interval, timeout));
        self
    }

    /// Sends no HTTP/2 pings: a silent connection is then noticed only by request timeouts,
    /// never by an open watch.
    pub fn no_keep_alive(mut self) -> Self {
        self.keep_alive = None;
        self
    }

    /// Authenticates as `user` with `password`. An expired token is renewed on its own.
    ///
    /// With client certificates (etcd's `--client-cert-auth` and auth on), no user is needed:
    /// etcd takes the certificate's common name as the user.
    pub fn user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((user.into(), password.into()));
        self
    }

    /// The largest key plus value a put accepts (default
    /// [`DEFAULT_MAX_VALUE_BYTES`](registry_api::limits::DEFAULT_MAX_VALUE_BYTES), a little
    /// under etcd's request limit). Raise it only with the server's `--max-request-bytes`.
    pub fn max_value_bytes(mut self, limit: usize) -> Self {
        self.max_value_bytes = limit;
        self
    }

    /// Whether every request asks the member it reaches to have a leader (etcd's `hasleader`
    /// metadata; default `true`).
    ///
    /// With it, a member that has lost its cluster (a partition, its peers down) ends the
    /// watches open on it with [`Error::Unavailable`] ("etcdserver: no leader") once it has had
    /// no leader for three election timeouts, and refuses new calls at once with the same
    /// error, so the caller re-watches through another member. Without it, such a member keeps
    /// its watches open and silent for as long as the partition lasts: the events committed by
    /// the rest of the cluster never reach them (etcd #8980).
    pub fn require_leader(mut self, require: bool) -> Self {
        self.require_leader = require;
        self
    }

    /// TLS settings for `https://` endpoints.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: etcd_client::TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Checks the settings, connects and makes one round trip, so that a wrong endpoint or
    /// password fails here rather than on first use.
    ///
    /// Fails with [`InvalidArgument::Config`] for malformed settings (nothing is sent),
    /// [`Error::Unavailable`] when no endpoint answers within the connect timeout, and
    /// [`Error::Backend`] with an [`AuthError`](crate::AuthError) source when the credentials
    /// are refused, and [`Error::Backend`] with a [`TlsError`](crate::TlsError) source when TLS
    /// cannot work: etcd's certificate fails verification, etcd refuses or requires a client
    /// certificate, or an `http://` endpoint serves TLS. A user who may not read the key prefix
    /// still connects: its calls fail with [`Error::PermissionDenied`].
    ///
    /// The backend needs real time: the timeouts of its calls sleep on the caller's tokio
    /// clock, and on a paused clock (`#[tokio::test(start_paused = true)]`,
    /// `tokio::time::pause()`) they would all fire at once. So `connect` on a paused clock
    /// fails at once with [`Error::NotSupported`] naming tokio's paused clock (nothing is
    /// sent); every call of a registry whose caller's clock was paused after connecting fails
    /// the same way before anything is sent; and a call in flight when the clock stopped fails
    /// with the same error instead of `Unavailable` ("Timeout expired"). The connection itself
    /// runs on a runtime of the backend's own, so its HTTP/2 pings keep real time and a pause
    /// never gets it a GOAWAY (`too_many_pings`): once the clock runs again, the registry and
    /// its open watches carry on. Tests on virtual time use `registry-memory`.
    pub async fn connect(self) -> Result<EtcdRegistry> {
        let span = tracing::info_span!("etcd.connect", endpoints = ?self.endpoints);
        self.open(true).instrument(span).await
    }

    /// Checks the settings and builds the client without a round trip: for a process that must
    /// start while etcd is down (a gateway serving its discovery snapshot file). Its calls fail
    /// with [`Error::Unavailable`] until an endpoint answers, then work on their own. Fails
    /// only for malformed settings, on a paused clock (as [`connect`](Self::connect)), and,
    /// with a user and password, when no endpoint answers: the client fetches its token here.
    pub async fn connect_lazy(self) -> Result<EtcdRegistry> {
        let span = tracing::info_span!("etcd.connect_lazy", endpoints = ?self.endpoints);
        self.open(false).instrument(span).await
    }

    /// Builds the client; with `probe_first`, one round trip must succeed first.
    async fn open(self, probe_first: bool) -> Result<EtcdRegistry> {
        self.validate()?;
        crate::clock::check()?;
        let options = self.connect_options();
        let wait = self.connect_timeout + self.request_timeout;
        let connecting = crate::connection::connect(self.endpoints.clone(), options);
        let client = tokio::time::timeout(wait, connecting)
            .await
            .map_err(|_| Error::unavailable(format!("connecting timed out after {wait:?}")))??
            .map_err(|e| errors::from_etcd(e, Context::default()))?;
        let tls = self.has_tls();
        let key_prefix = KeyPrefix::new(self.key_prefix);
        if probe_first {
            // A probe that went to a member that is down is sent again to another endpoint:
            // the backend is usable while any endpoint answers.
            let probed = crate::retry::retry(
                self.endpoints.len(),
                crate::retry::Idempotence::Safe,
                || probe(&client, &key_prefix, wait),
            )
            .await;
            if let Err(err) = probed {
                return Err(crate::diagnose::explain(err, &self.endpoints, tls).await);
            }
            tracing::debug!("connected");
        }
        Ok(EtcdRegistry {
            inner: Arc::new(Inner {
                keep_alive: KeepAlives::new(client.clone(), self.request_timeout),
                kv: client
                    .kv_client()
                    .max_decoding_message_size(MAX_RESPONSE_BYTES),
                watch: client
                    .watch_client()
                    .max_decoding_message_size(MAX_RESPONSE_BYTES),
                client,
                key_prefix,
                endpoints: self.endpoints,
                max_value_bytes: self.max_value_bytes,
                request_timeout: self.request_timeout,
            }),
        })
    }

    fn validate(&self) -> Result<()> {
        if self.endpoints.is_empty() {
            return Err(InvalidArgument::Config("no endpoints given".into()).into());
        }
        for endpoint in &self.endpoints {
            validate_endpoint(endpoint).map_err(|why| {
                Error::from(InvalidArgument::Config(format!(
                    "endpoint {endpoint:?}: {why}"
                )))
            })?;
        }
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return Err(InvalidArgument::Config("timeouts must be above zero".into()).into());
        }
        if self.max_value_bytes == 0 {
            return Err(
                InvalidArgument::Config("max_value_bytes must be above zero".into()).into(),
            );
        }
        if let Some((name, _)) = &self.user {
            if name.is_empty() {
                return Err(InvalidArgument::Config("user name is empty".into()).into());
            }
        }
        Ok(())
    }

    fn connect_options(&self) -> ConnectOptions {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_timeout(self.request_timeout)
            .with_require_leader(self.require_leader);
        if let Some((interval, timeout)) = self.keep_alive {
            options = options.with_keep_alive(interval, timeout);
        }
        if let Some((user, password)) = &self.user {
            // etcd's tokens expire (`--auth-token-ttl`, 5 minutes without use by default);
            // a registration that only renews its lease does not use its token, and its next
            // write would fail with "invalid auth token". Each call is then authenticated
            // again once and sent again.
            options = options
                .with_user(user.clone(), password.clone())
                .with_auto_token_refresh(true);
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            options = options.with_tls(tls.clone());
        }
        options
    }
}

impl EtcdRegistryBuilder {
    fn has_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        {
            self.tls.is_some()
        }
        #[cfg(not(feature = "tls"))]
        {
            false
        }
    }
}

/// One cheap read inside the key prefix: etcd-client connects lazily, so without it a refused
/// endpoint would only show on first use.
async fn probe(client: &Client, key_prefix: &KeyPrefix, wait: Duration) -> Result<()> {
    let mut client = client.clone();
    let key = key_prefix.key(&[0]);
    let read = client.get(key, Some(GetOptions::new().with_count_only()));
    match tokio::time::timeout(wait, read).await {
        Ok(Ok(_)) => Ok(()),
        // The server answered; the user may just not read this part of the keyspace.
        Ok(Err(etcd_client::Error::GRpcStatus(s))) if s.code() == tonic::Code::PermissionDenied => {
            Ok(())
        }
        Ok(Err(e)) => Err(errors::from_etcd(e, Context::default())),
        Err(_) => Err(Error::unavailable(format!(
            "no endpoint answered within {wait:?}"
        ))),
    }
}

/// Accepts `scheme://host[:port][/]` with scheme `http` (or `https`), a non-empty host and a
/// port in 1..=65535.
fn validate_endpoint(endpoint: &str) -> std::result::Result<(), String> {
    let (scheme, rest) = endpoint
        .split_once("://")
        .ok_or_else(|| "missing scheme (http:// or https://)".to_owned())?;
    match scheme {
        "http" => {}
        "https" if cfg!(feature = "tls") => {}
        "https" => return Err("https needs the `tls` feature of registry-etcd".into()),
        other => return Err(format!("unsupported scheme {other:?}")),
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() {
        return Err("missing host".into());
    }
    if authority.contains(['/', '?', '#', '@', ' ']) {
        return Err("expected only host and port".into());
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        // IPv6 literal: [::1]:2379
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| "unclosed [ in IPv6 host".to_owned())?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| "expected :port after ]".to_owned())?,
            ),
        };
        (host, port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("missing host".into());
    }
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(0) | Err(_) => return Err(format!("bad port {port:?}")),
            Ok(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate_endpoint;

    #[test]
    fn good_endpoints_pass() {
        for ok in [
            "http://127.0.0.1:2379",
            "http://localhost:2379/",
            "http://etcd",
            "http://[::1]:2379",
        ] {
            assert_eq!(validate_endpoint(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn malformed_endpoints_fail() {
        for bad in [
            "",
            "127.0.0.1:2379",
            "http://",
            "http://:2379",
            "http://host:0",
            "http://host:99999",
            "http://host:port",
            "ftp://host:1",
            "http://host:1/path",
            "http://[::1",
        ] {
            assert!(validate_endpoint(bad).is_err(), "{bad}");
        }
    }
}
