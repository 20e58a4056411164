//! What a call of [`AccessControl`](super::AccessControl) changed, and what `show` reads.

use super::Access;
use std::fmt;

/// One thing a call changed in etcd's auth store.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// A user was created (with a password, or for certificate identity).
    UserAdded {
        /// The user.
        user: String,
        /// Whether it has a password (otherwise only a client certificate names it).
        password: bool,
    },
    /// A role was created.
    RoleAdded {
        /// The role.
        role: String,
    },
    /// A role got a permission.
    PermissionGranted {
        /// The role.
        role: String,
        /// The permission.
        access: Access,
    },
    /// A user got a role.
    RoleGranted {
        /// The user.
        user: String,
        /// The role.
        role: String,
    },
    /// Authentication was enabled.
    AuthEnabled,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::UserAdded {
                user,
                password: true,
            } => write!(f, "added user {user} (password)"),
            Change::UserAdded {
                user,
                password: false,
            } => write!(
                f,
                "added user {user} (no password: client certificate only)"
            ),
            Change::RoleAdded { role } => write!(f, "added role {role}"),
            Change::PermissionGranted { role, access } => {
                write!(f, "granted {access} to role {role}")
            }
            Change::RoleGranted { user, role } => write!(f, "granted role {role} to user {user}"),
            Change::AuthEnabled => f.write_str("enabled authentication"),
        }
    }
}

/// etcd's auth store as [`AccessControl::show`](super::AccessControl::show) reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclReport {
    /// Whether authentication is on.
    pub auth_enabled: bool,
    /// Every user, by name, with its roles.
    pub users: Vec<UserEntry>,
    /// Every role, by name, with its permissions.
    pub roles: Vec<RoleEntry>,
}

/// A user and its roles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserEntry {
    /// The user.
    pub name: String,
    /// Its roles, sorted.
    pub roles: Vec<String>,
}

/// A role and its permissions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleEntry {
    /// The role.
    pub name: String,
    /// Its permissions, sorted.
    pub permissions: Vec<Access>,
}
