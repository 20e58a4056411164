//! Least privilege on etcd's role-based access control: a service writes only its own keys, a
//! client reads only the services it calls, and an operator manages the whole namespace.
//!
//! The roles ([`service_role`], [`reader_role`], [`OPERATOR_ROLE`]) are etcd roles with
//! permissions on key prefixes. The caller names the prefixes (the service layer knows where a
//! service's instances live: `<namespace>/<service>/`); this module makes the users and roles,
//! grants them, enables auth, and reports what it changed. Every call is idempotent: a second
//! run changes nothing and says so with an empty list of [`Change`]s.
//!
//! What etcd 3.5 checks, as observed on the server (`registry-etcd/tests/acl.rs` asserts each):
//! - a put, get, list or delete needs write or read permission on its key or range;
//! - a watch needs read permission on its range when it is created (an open watch keeps
//!   delivering after the permission is revoked); its progress requests need nothing more;
//! - lease grant, keep-alive and the lease list need no permission at all, for any
//!   authenticated user;
//! - a lease revoke needs write permission on every key attached to the lease;
//! - time-to-live asking for the lease's keys (as [`EtcdRegistry`] does) needs read permission
//!   on every attached key;
//! - compaction needs no permission: any authenticated user may compact.
//!
//! ```no_run
//! # async fn demo() -> registry_api::Result<()> {
//! use registry_etcd::acl::{AccessControl, Credentials};
//! use registry_etcd::EtcdRegistry;
//!
//! let admin = EtcdRegistry::connect(["http://127.0.0.1:2379"]).await?;
//! let acl = AccessControl::new(&admin);
//! acl.add_service("hello", &[b"services/hello/"], "hello", Credentials::password("pw"))
//!     .await?;
//! acl.grant_read("gateway", Credentials::password("pw2"), &[b"services/hello/"])
//!     .await?;
//! acl.enable(Credentials::password("root-pw")).await?;
//! # Ok(()) }
//! ```

mod access;
mod change;

pub use access::{Access, AccessKind};
pub use change::{AclReport, Change, RoleEntry, UserEntry};

use crate::errors::{self, Context};
use crate::EtcdRegistry;
use etcd_client::{Client, UserAddOptions};
use registry_api::{Error, InvalidArgument, Result};
use std::fmt;

/// etcd's administrator: the user `auth enable` requires, with the built-in `root` role.
pub const ROOT_USER: &str = "root";
/// etcd's built-in role that may do everything.
pub const ROOT_ROLE: &str = "root";
/// The role of operators: read and write under the whole namespace (the CLI, the dashboard).
pub const OPERATOR_ROLE: &str = "registry-operator";

/// The role of service `service`: read and write under its own prefix (and its Go naming
/// target, if it publishes one).
pub fn service_role(service: &str) -> String {
    format!("registry-service-{service}")
}

/// The role of a reader (a gateway, a client): read under each service it calls.
pub fn reader_role(user: &str) -> String {
    format!("registry-reader-{user}")
}

/// How a user proves who it is.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A password.
    Password(String),
    /// No password: the user is the common name of a client certificate (etcd's
    /// `--client-cert-auth` with auth enabled).
    Certificate,
}

impl Credentials {
    /// [`Credentials::Password`].
    pub fn password(password: impl Into<String>) -> Self {
        Credentials::Password(password.into())
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the password.
        match self {
            Credentials::Password(_) => f.write_str("Password(..)"),
            Credentials::Certificate => f.write_str("Certificate"),
        }
    }
}

/// Sets up and shows the role layout on one etcd, through a registry's connection (which must
/// be root's once auth is on). Prefixes given to it are relative to the registry's key prefix,
/// as every other key of the registry is; the permissions hold the raw etcd keys.
#[derive(Clone)]
pub struct AccessControl {
    client: Client,
    key_prefix: Vec<u8>,
}

impl fmt::Debug for AccessControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessControl")
            .field("key_prefix", &String::from_utf8_lossy(&self.key_prefix))
            .finish_non_exhaustive()
    }
}

impl AccessControl {
    /// Works through `registry`'s connection and under its key prefix.
    pub fn new(registry: &EtcdRegistry) -> Self {
        AccessControl {
            client: registry.client(),
            key_prefix: registry.key_prefix().to_vec(),
        }
    }

    /// Whether etcd has authentication on. Asked the one way that needs no permission: an
    /// authentication attempt, which etcd refuses with "authentication is not enabled" when it
    /// is off.
    pub async fn auth_enabled(&self) -> Result<bool> {
        let attempt = self
            .client
            .auth_client()
            .authenticate(PROBE_USER.to_owned(), PROBE_USER.to_owned())
            .await;
        match attempt {
            Err(etcd_client::Error::GRpcStatus(status))
                if status.message().contains("authentication is not enabled") =>
            {
                Ok(false)
            }
            Err(etcd_client::Error::GRpcStatus(status))
                if status.message().contains("authentication failed") =>
            {
                Ok(true)
            }
            Ok(_) => Ok(true),
            Err(e) => Err(errors::from_etcd(e, Context::default())),
        }
    }

    /// Makes the `root` user (with `root`'s credentials, if it does not exist), grants it the
    /// `root` role, and enables authentication. Done once, by an operator; after it every
    /// client needs a user (a password, or a client certificate whose common name is the user).
    pub async fn enable(&self, root: Credentials) -> Result<Vec<Change>> {
        let mut changes = Vec::new();
        self.ensure_user(ROOT_USER, &root, &mut changes).await?;
        self.ensure_user_role(ROOT_USER, ROOT_ROLE, &mut changes)
            .await?;
        if !self.auth_enabled().await? {
            let mut client = self.client.clone();
            client.auth_enable().await.map_err(map)?;
            changes.push(Change::AuthEnabled);
        }
        Ok(changes)
    }

    /// Gives `user` the role of service `service`: read and write on each of `prefixes` (the
    /// service's own, `<namespace>/<service>/`, and its Go naming target's `<target>/` if it
    /// publishes one). The user is made with `credentials` if it does not exist; an existing
    /// user keeps its password.
    pub async fn add_service(
        &self,
        service: &str,
        prefixes: &[&[u8]],
        user: &str,
        credentials: Credentials,
    ) -> Result<Vec<Change>> {
        check_name("service", service)?;
        self.grant(
            &service_role(service),
            AccessKind::ReadWrite,
            prefixes,
            user,
            &credentials,
        )
        .await
    }

    /// Lets `user` (a gateway, a client) read each of `prefixes`, the services it calls, through
    /// its own role [`reader_role`]. Adds to what it could read before.
    pub async fn grant_read(
        &self,
        user: &str,
        credentials: Credentials,
        prefixes: &[&[u8]],
    ) -> Result<Vec<Change>> {
        self.grant(
            &reader_role(user),
            AccessKind::Read,
            prefixes,
            user,
            &credentials,
        )
        .await
    }

    /// Gives `user` the operator role: read and write on each of `prefixes` (the whole
    /// namespace, for the CLI and the dashboard).
    pub async fn add_operator(
        &self,
        user: &str,
        credentials: Credentials,
        prefixes: &[&[u8]],
    ) -> Result<Vec<Change>> {
        self.grant(
            OPERATOR_ROLE,
            AccessKind::ReadWrite,
            prefixes,
            user,
            &credentials,
        )
        .await
    }

    /// Every user and role, with their roles and permissions, and whether auth is on.
    pub async fn show(&self) -> Result<AclReport> {
        let auth_enabled = self.auth_enabled().await?;
        let mut client = self.client.clone();
        let mut users = Vec::new();
        let mut names = client.user_list().await.map_err(map)?.users().to_vec();
        names.sort();
        for name in names {
            let mut roles = client
                .user_get(name.as_str())
                .await
                .map_err(map)?
                .roles()
                .to_vec();
            roles.sort();
            users.push(UserEntry { name, roles });
        }
        let mut roles = Vec::new();
        let mut names = client.role_list().await.map_err(map)?.roles().to_vec();
        names.sort();
        for name in names {
            let permissions = self.permissions(&name).await?;
            roles.push(RoleEntry { name, permissions });
        }
        Ok(AclReport {
            auth_enabled,
            users,
            roles,
        })
    }

    /// Makes `role` with `kind` on every prefix and grants it to `user`.
    async fn grant(
        &self,
        role: &str,
        kind: AccessKind,
        prefixes: &[&[u8]],
        user: &str,
        credentials: &Credentials,
    ) -> Result<Vec<Change>> {
        check_name("user", user)?;
        if prefixes.is_empty() {
            return Err(config(
                "no key prefix given: a role with no permission is useless",
            ));
        }
        if prefixes.iter().any(|p| p.is_empty()) {
            return Err(config(
                "an empty key prefix would cover every key of the registry",
            ));
        }
        let mut changes = Vec::new();
        let mut client = self.client.clone();
        let roles = client.role_list().await.map_err(map)?;
        if !roles.roles().iter().any(|r| r == role) {
            client.role_add(role).await.map_err(map)?;
            changes.push(Change::RoleAdded {
                role: role.to_owned(),
            });
        }
        let held = self.permissions(role).await?;
        for prefix in prefixes {
            let mut raw = self.key_prefix.clone();
            raw.extend_from_slice(prefix);
            let access = Access::prefix(kind, &raw);
            if !held.contains(&access) {
                client
                    .role_grant_permission(role, access.to_etcd())
                    .await
                    .map_err(map)?;
                changes.push(Change::PermissionGranted {
                    role: role.to_owned(),
                    access,
                });
            }
        }
        self.ensure_user(user, credentials, &mut changes).await?;
        self.ensure_user_role(user, role, &mut changes).await?;
        Ok(changes)
    }

    async fn permissions(&self, role: &str) -> Result<Vec<Access>> {
        let mut client = self.client.clone();
        let got = client.role_get(role).await.map_err(map)?;
        let mut permissions: Vec<Access> =
            got.permissions().iter().map(Access::from_etcd).collect();
        permissions.sort();
        Ok(permissions)
    }

    async fn ensure_user(
        &self,
        user: &str,
        credentials: &Credentials,
        changes: &mut Vec<Change>,
    ) -> Result<()> {
        let mut client = self.client.clone();
        let users = client.user_list().await.map_err(map)?;
        if users.users().iter().any(|u| u == user) {
            return Ok(());
        }
        match credentials {
            Credentials::Password(password) => {
                if password.is_empty() {
                    return Err(config(format!("the password of user {user} is empty")));
                }
                client.user_add(user, password.as_str(), None).await
            }
            Credentials::Certificate => {
                client
                    .user_add(user, "", Some(UserAddOptions::new().with_no_pwd()))
                    .await
            }
        }
        .map_err(map)?;
        changes.push(Change::UserAdded {
            user: user.to_owned(),
            password: matches!(credentials, Credentials::Password(_)),
        });
        Ok(())
    }

    async fn ensure_user_role(
        &self,
        user: &str,
        role: &str,
        changes: &mut Vec<Change>,
    ) -> Result<()> {
        let mut client = self.client.clone();
        let held = client.user_get(user).await.map_err(map)?;
        if held.roles().iter().any(|r| r == role) {
            return Ok(());
        }
        client.user_grant_role(user, role).await.map_err(map)?;
        changes.push(Change::RoleGranted {
            user: user.to_owned(),
            role: role.to_owned(),
        });
        Ok(())
    }
}

/// A user name no one has: authenticating as it tells whether auth is on, and nothing else.
const PROBE_USER: &str = "registry-acl-probe\u{0}";

fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(config(format!("the {what} name is empty")));
    }
    Ok(())
}

fn config(why: impl Into<String>) -> Error {
    InvalidArgument::Config(why.into()).into()
}

fn map(e: etcd_client::Error) -> Error {
    errors::from_etcd(e, Context::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_never_printed() {
        let shown = format!("{:?}", Credentials::password("hunter2"));
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
