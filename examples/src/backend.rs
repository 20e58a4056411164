//! Choosing the registry from the command line: a real etcd (`--etcd URL[,URL...]`) or, by
//! default, the in-memory registry, which only the current process sees.

use crate::BoxError;
use registry_api::Registry;
use registry_etcd::EtcdRegistry;
use registry_memory::MemoryRegistry;
use registry_service::{KeyLayout, DEFAULT_NAMESPACE};
use std::fmt;
use std::sync::Arc;

/// The backend options every binary takes (`#[command(flatten)]` them).
#[derive(Clone, Default, clap::Args)]
pub struct BackendArgs {
    /// etcd endpoints, comma-separated (`http://127.0.0.1:2379`). Without it, an in-memory
    /// registry that only this process sees.
    #[arg(
        long,
        value_delimiter = ',',
        env = "REGISTRY_ETCD",
        value_name = "URL[,URL...]"
    )]
    pub etcd: Vec<String>,
    /// The key namespace of the service layer: instances live under `<namespace>/<service>/`.
    #[arg(long, default_value = DEFAULT_NAMESPACE, env = "REGISTRY_NAMESPACE")]
    pub namespace: String,
    /// A raw key prefix the etcd client adds to every key (and strips from every result), to
    /// share one etcd between isolated setups.
    #[arg(long, value_name = "PREFIX")]
    pub key_prefix: Option<String>,
    /// etcd user name (etcd authentication). Not needed with a client certificate when etcd
    /// takes its common name as the user (`--client-cert-auth` with auth on).
    #[arg(long, env = "REGISTRY_ETCD_USER", requires = "password")]
    pub user: Option<String>,
    /// etcd password of `--user`.
    #[arg(
        long,
        env = "REGISTRY_ETCD_PASSWORD",
        hide_env_values = true,
        requires = "user"
    )]
    pub password: Option<String>,
    /// TLS options for `https://` endpoints.
    #[command(flatten)]
    pub tls: TlsArgs,
}

impl fmt::Debug for BackendArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the password.
        f.debug_struct("BackendArgs")
            .field("etcd", &self.etcd)
            .field("namespace", &self.namespace)
            .field("key_prefix", &self.key_prefix)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// TLS options, named as etcdctl names them.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TlsArgs {
    /// PEM file of the CA that signed etcd's server certificate.
    #[arg(
        long,
        value_name = "PEM",
        alias = "ca-cert",
        env = "REGISTRY_ETCD_CACERT"
    )]
    pub cacert: Option<std::path::PathBuf>,
    /// PEM file of this client's certificate (with `--key`): required by an etcd that runs
    /// with `--client-cert-auth`, and with auth on its common name is the etcd user.
    #[arg(long, value_name = "PEM", requires = "key", env = "REGISTRY_ETCD_CERT")]
    pub cert: Option<std::path::PathBuf>,
    /// PEM file of this client's private key.
    #[arg(long, value_name = "PEM", requires = "cert", env = "REGISTRY_ETCD_KEY")]
    pub key: Option<std::path::PathBuf>,
    /// The name to check etcd's certificate against, when it differs from the endpoint's host.
    #[arg(long, value_name = "NAME")]
    pub tls_domain: Option<String>,
}

/// Which registry a [`Backend`] talks to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// The in-memory registry of this process.
    Memory,
    /// A real etcd at these endpoints.
    Etcd(Vec<String>),
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendKind::Memory => f.write_str("in-memory registry (this process only)"),
            BackendKind::Etcd(endpoints) => write!(f, "etcd at {}", endpoints.join(",")),
        }
    }
}

/// A connected registry and the key layout to use on it.
#[derive(Clone, Debug)]
pub struct Backend {
    /// The registry.
    pub registry: Arc<dyn Registry>,
    /// What it is, for messages.
    pub kind: BackendKind,
    /// Where instances live.
    pub layout: KeyLayout,
}

impl BackendArgs {
    /// True when `--etcd` was given.
    pub fn is_etcd(&self) -> bool {
        !self.etcd.is_empty()
    }

    /// Checks the options and connects (one round trip to etcd, so a wrong endpoint or password
    /// fails here). Must run inside a tokio runtime.
    pub async fn connect(&self) -> Result<Backend, BoxError> {
        let layout = KeyLayout::new(self.namespace.clone())?;
        if !self.is_etcd() {
            tracing::info!(
                "no --etcd given: using an in-memory registry that only this process sees"
            );
            return Ok(Backend {
                registry: Arc::new(MemoryRegistry::new()),
                kind: BackendKind::Memory,
                layout,
            });
        }
        let registry = self.connect_etcd().await?;
        Ok(Backend {
            registry: Arc::new(registry),
            kind: BackendKind::Etcd(self.etcd.clone()),
            layout,
        })
    }

    /// As [`connect`](Self::connect), without the round trip to etcd: for a process that
    /// starts while etcd may be down and has something to serve meanwhile (the gateway's
    /// snapshot file). Its calls fail as unavailable until etcd answers.
    pub async fn connect_lazy(&self) -> Result<Backend, BoxError> {
        if !self.is_etcd() {
            return self.connect().await;
        }
        let layout = KeyLayout::new(self.namespace.clone())?;
        let registry = self.etcd_builder()?.connect_lazy().await?;
        Ok(Backend {
            registry: Arc::new(registry),
            kind: BackendKind::Etcd(self.etcd.clone()),
            layout,
        })
    }

    /// Connects to etcd (`--etcd` must be given) with the key prefix, credentials and TLS
    /// options: for what only etcd has, such as its users and roles.
    pub async fn connect_etcd(&self) -> Result<EtcdRegistry, BoxError> {
        Ok(self.etcd_builder()?.connect().await?)
    }

    fn etcd_builder(&self) -> Result<registry_etcd::EtcdRegistryBuilder, BoxError> {
        if !self.is_etcd() {
            return Err("this needs etcd: give --etcd URL (or REGISTRY_ETCD)".into());
        }
        let mut builder = EtcdRegistry::builder(self.etcd.clone());
        if let Some(prefix) = &self.key_prefix {
            builder = builder.key_prefix(prefix.clone());
        }
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            builder = builder.user(user.clone(), password.clone());
        }
        if let Some(tls) = self.tls.options()? {
            builder = builder.tls(tls);
        }
        Ok(builder)
    }
}

impl TlsArgs {
    /// The TLS settings, or `None` when no TLS option was given.
    fn options(&self) -> Result<Option<registry_etcd::TlsOptions>, BoxError> {
        if self.cacert.is_none() && self.cert.is_none() && self.tls_domain.is_none() {
            return Ok(None);
        }
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))
        };
        let mut tls = registry_etcd::TlsOptions::new();
        if let Some(ca) = &self.cacert {
            tls = tls.ca_certificate(registry_etcd::Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            tls = tls.identity(registry_etcd::Identity::from_pem(read(cert)?, read(key)?));
        }
        if let Some(domain) = &self.tls_domain {
            tls = tls.domain_name(domain.clone());
        }
        Ok(Some(tls))
    }
}
