//! `registry acl ...`: the least-privilege role layout on etcd's RBAC, set up and shown. The
//! roles themselves are made by `registry_etcd::acl`; this parses and prints.
//!
//! The user a role is given to is a positional argument: `--user` and `--password` are, as in
//! etcdctl, who runs the command (root, once auth is on).

use clap::{Args, Subcommand};
use registry_etcd::acl::{AccessControl, AclReport, Change, Credentials};
use registry_etcd::EtcdRegistry;
use registry_examples::go_naming::GoTarget;
use registry_examples::BoxError;
use registry_service::instance::validate_service;
use registry_service::KeyLayout;
use serde_json::{json, Value};

/// The `acl` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum AclCommand {
    /// Makes the `root` user, grants it the `root` role and enables authentication. Once, by an
    /// operator; from then on every command needs `--user`/`--password` or a client
    /// certificate.
    Enable {
        #[command(flatten)]
        root: NewPassword,
    },
    /// Lets USER write SERVICE's instances (`<namespace>/SERVICE/`) and nothing else: the role
    /// `registry-service-SERVICE`, read and write on that prefix (and on the Go naming target's).
    AddService {
        /// The service.
        service: String,
        /// The etcd user the service connects as (made if it does not exist).
        #[arg(value_name = "USER")]
        account: String,
        /// Also its Go naming target (`<target>/` keys), if it publishes one.
        #[arg(long, value_name = "TARGET")]
        go_target: Option<String>,
        #[command(flatten)]
        password: NewPassword,
    },
    /// Lets USER (a gateway, a client) read the instances of each SERVICE and nothing else: the
    /// role `registry-reader-USER`, read on each service's prefix. Adds to what it read before.
    GrantRead {
        /// The etcd user (made if it does not exist).
        #[arg(value_name = "USER")]
        account: String,
        /// The services it calls.
        #[arg(required = true)]
        services: Vec<String>,
        #[command(flatten)]
        password: NewPassword,
    },
    /// Lets USER manage the whole namespace (`registry` commands, the dashboard): the role
    /// `registry-operator`, read and write on `<namespace>/`.
    AddOperator {
        /// The etcd user (made if it does not exist).
        #[arg(value_name = "USER")]
        account: String,
        #[command(flatten)]
        password: NewPassword,
    },
    /// Whether auth is on, every user with its roles, every role with its permissions.
    Show,
}

/// How a new user proves who it is: exactly one of the two. An existing user keeps its own.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub(crate) struct NewPassword {
    /// The new user's password.
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "REGISTRY_ACL_USER_PASSWORD",
        hide_env_values = true
    )]
    user_password: Option<String>,
    /// No password: the user is named by the common name of its client certificate (etcd's
    /// `--client-cert-auth` with auth on).
    #[arg(long)]
    no_password: bool,
}

impl NewPassword {
    fn credentials(&self) -> Credentials {
        match &self.user_password {
            Some(password) => Credentials::password(password.clone()),
            None => Credentials::Certificate,
        }
    }
}

/// Runs one `acl` subcommand through `registry`'s connection.
pub(crate) async fn run(
    registry: &EtcdRegistry,
    layout: &KeyLayout,
    command: AclCommand,
    json: bool,
) -> Result<(), BoxError> {
    let acl = AccessControl::new(registry);
    let changes = match command {
        AclCommand::Show => {
            let report = acl.show().await?;
            print_report(&report, json)?;
            return Ok(());
        }
        AclCommand::Enable { root } => acl.enable(root.credentials()).await?,
        AclCommand::AddService {
            service,
            account,
            go_target,
            password,
        } => {
            validate_service(&service)?;
            let mut prefixes = vec![layout.service_prefix(&service)];
            if let Some(target) = go_target {
                prefixes.push(GoTarget::new(target)?.prefix());
            }
            let prefixes: Vec<&[u8]> = prefixes.iter().map(|p| p.as_bytes()).collect();
            acl.add_service(&service, &prefixes, &account, password.credentials())
                .await?
        }
        AclCommand::GrantRead {
            account,
            services,
            password,
        } => {
            let mut prefixes = Vec::with_capacity(services.len());
            for service in &services {
                validate_service(service)?;
                prefixes.push(layout.service_prefix(service));
            }
            let prefixes: Vec<&[u8]> = prefixes.iter().map(|p| p.as_bytes()).collect();
            acl.grant_read(&account, password.credentials(), &prefixes)
                .await?
        }
        AclCommand::AddOperator { account, password } => {
            let namespace = format!("{}/", layout.namespace());
            acl.add_operator(&account, password.credentials(), &[namespace.as_bytes()])
                .await?
        }
    };
    print_changes(&changes, json)
}

fn print_changes(changes: &[Change], json: bool) -> Result<(), BoxError> {
    if json {
        let document = json!({
            "changed": !changes.is_empty(),
            "changes": changes.iter().map(change_json).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&document)?);
    } else if changes.is_empty() {
        println!("nothing to change: already set up");
    } else {
        for change in changes {
            println!("{change}");
        }
    }
    Ok(())
}

fn change_json(change: &Change) -> Value {
    let text = change.to_string();
    match change {
        Change::UserAdded { user, password } => {
            json!({"change": "user_added", "user": user, "password": password, "text": text})
        }
        Change::RoleAdded { role } => json!({"change": "role_added", "role": role, "text": text}),
        Change::PermissionGranted { role, access } => json!({
            "change": "permission_granted",
            "role": role,
            "permission": access.to_string(),
            "text": text,
        }),
        Change::RoleGranted { user, role } => {
            json!({"change": "role_granted", "user": user, "role": role, "text": text})
        }
        Change::AuthEnabled => json!({"change": "auth_enabled", "text": text}),
        _ => json!({"change": "other", "text": text}),
    }
}

fn print_report(report: &AclReport, json: bool) -> Result<(), BoxError> {
    if json {
        let document = json!({
            "auth_enabled": report.auth_enabled,
            "users": report.users.iter().map(|u| json!({"name": u.name, "roles": u.roles})).collect::<Vec<_>>(),
            "roles": report.roles.iter().map(|r| json!({
                "name": r.name,
                "permissions": r.permissions.iter().map(|p| json!({
                    "kind": p.kind.as_str(),
                    "key": String::from_utf8_lossy(&p.key),
                    "range_end": String::from_utf8_lossy(&p.range_end),
                    "prefix": p.is_prefix(),
                    "text": p.to_string(),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&document)?);
        return Ok(());
    }
    println!(
        "authentication: {}",
        if report.auth_enabled {
            "enabled"
        } else {
            "disabled"
        }
    );
    println!("users:");
    for user in &report.users {
        println!("  {:<24} {}", user.name, user.roles.join(", "));
    }
    println!("roles:");
    for role in &report.roles {
        let permissions: Vec<String> = role.permissions.iter().map(ToString::to_string).collect();
        let shown = if permissions.is_empty() {
            "(no permission)".to_owned()
        } else {
            permissions.join("; ")
        };
        println!("  {:<24} {shown}", role.name);
    }
    Ok(())
}
