//! What a registered instance is, how it is stored, and where.
//!
//! # Key layout
//!
//! One key per instance: `<namespace>/<service>/<instance-id>`, the namespace `services` by
//! default. A service's instances are the keys directly under `<namespace>/<service>/`, so
//! `etcdctl get --prefix services/hello/` lists every instance of `hello`. Service names and
//! instance ids are non-empty and contain no `/`, so a key names exactly one instance.
//!
//! # Value
//!
//! The value is the [`ServiceInstance`] as UTF-8 JSON, every field written:
//!
//! ```json
//! {"service":"hello","id":"a","address":"127.0.0.1:8080",
//!  "metadata":{"version":"1.2.0","weight":1,"zone":"eu-1","labels":{"tier":"web"}},
//!  "status":"serving"}
//! ```
//!
//! `status` is `serving` or `draining` (shutting down: discovery leaves it out of picks); a
//! missing status means `serving`. Readers must accept missing `metadata` fields (`version` and `zone` null, `weight` 1,
//! `labels` empty) and ignore fields they do not know, so the format can grow. The `service`
//! and `id` in the value must match the key; a value that does not parse, or disagrees with its
//! key, is not an instance (discovery skips and counts it).

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The namespace keys live under unless configured otherwise.
pub const DEFAULT_NAMESPACE: &str = "services";

/// One running copy of a service, as registered and as discovered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInstance {
    /// The service's name, e.g. `hello`. Non-empty, no `/`.
    pub service: String,
    /// This instance's id, unique within the service. Non-empty, no `/`.
    pub id: String,
    /// Where to reach it, e.g. `127.0.0.1:8080` or a URL; opaque to the registry.
    pub address: String,
    /// Version, weight, zone and labels.
    #[serde(default)]
    pub metadata: Metadata,
    /// Whether it takes new work.
    #[serde(default)]
    pub status: Status,
}

/// Whether an instance takes new work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// It serves: pickers may send it work.
    #[default]
    Serving,
    /// It is shutting down: it finishes the work it has, and pickers send it no more.
    Draining,
    /// A status written by a newer version that this one does not know: not picked.
    #[serde(other)]
    Unknown,
}

impl Status {
    /// True when pickers may send the instance new work.
    pub fn is_serving(self) -> bool {
        self == Status::Serving
    }
}

impl ServiceInstance {
    /// An instance with default metadata (weight 1, nothing else).
    pub fn new(
        service: impl Into<String>,
        id: impl Into<String>,
        address: impl Into<String>,
    ) -> Self {
        ServiceInstance {
            service: service.into(),
            id: id.into(),
            address: address.into(),
            metadata: Metadata::default(),
            status: Status::Serving,
        }
    }

    /// Replaces the metadata.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Replaces the status.
    pub fn with_status(mut self, status: Status) -> Self {
        self.status = status;
        self
    }

    /// Checks the service name and id: typed errors, never a panic.
    pub fn validate(&self) -> Result<()> {
        validate_service(&self.service)?;
        validate_instance_id(&self.id)
    }

    /// The stored JSON value.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain strings, numbers and string maps cannot fail; an empty value would
        // be rejected by discovery as malformed rather than crash anything.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a stored JSON value.
    pub fn from_json(value: &[u8]) -> std::result::Result<Self, serde_json::Error> {
        serde_json::from_slice(value)
    }
}

/// What a client may want to know about an instance besides its address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The version it runs, free-form.
    #[serde(default)]
    pub version: Option<String>,
    /// Its share of traffic under weighted picking, relative to the others; 0 drains it.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Where it runs (zone, rack, region), free-form.
    #[serde(default)]
    pub zone: Option<String>,
    /// Anything else, as string pairs.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn default_weight() -> u32 {
    1
}

impl Default for Metadata {
    /// Weight 1, nothing else.
    fn default() -> Self {
        Metadata {
            version: None,
            weight: default_weight(),
            zone: None,
            labels: BTreeMap::new(),
        }
    }
}

impl Metadata {
    /// Sets the version.
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Sets the weight.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Sets the zone.
    pub fn with_zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// Adds or replaces a label.
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }
}

/// Rejects an empty service name or one with `/`.
pub fn validate_service(service: &str) -> Result<()> {
    if service.is_empty() || service.contains('/') {
        return Err(Error::ServiceName(service.to_owned()));
    }
    Ok(())
}

/// Rejects an empty instance id or one with `/`.
pub fn validate_instance_id(id: &str) -> Result<()> {
    if id.is_empty() || id.contains('/') {
        return Err(Error::InstanceId(id.to_owned()));
    }
    Ok(())
}

/// Where instances are stored: `<namespace>/<service>/<instance-id>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyLayout {
    namespace: String,
}

impl Default for KeyLayout {
    /// The [`DEFAULT_NAMESPACE`], `services`.
    fn default() -> Self {
        KeyLayout {
            namespace: DEFAULT_NAMESPACE.to_owned(),
        }
    }
}

impl KeyLayout {
    /// A layout under `namespace`, which may itself contain `/` (`prod/services`) but must not
    /// be empty nor start or end with `/`.
    pub fn new(namespace: impl Into<String>) -> Result<Self> {
        let namespace = namespace.into();
        if namespace.is_empty() || namespace.starts_with('/') || namespace.ends_with('/') {
            return Err(Error::InvalidOption(format!(
                "namespace {namespace:?} must be non-empty and not start or end with '/'"
            )));
        }
        Ok(KeyLayout { namespace })
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `<namespace>/<service>/`: the prefix to list or watch for one service.
    pub fn service_prefix(&self, service: &str) -> String {
        format!("{}/{}/", self.namespace, service)
    }

    /// `<namespace>/<service>/<id>`: one instance's key.
    pub fn instance_key(&self, service: &str, id: &str) -> String {
        format!("{}/{}/{}", self.namespace, service, id)
    }

    /// The instance id a key names, when it lies directly under `service`'s prefix.
    pub fn instance_id<'k>(&self, service: &str, key: &'k [u8]) -> Option<&'k str> {
        let prefix = self.service_prefix(service);
        let rest = key.strip_prefix(prefix.as_bytes())?;
        let id = std::str::from_utf8(rest).ok()?;
        validate_instance_id(id).ok()?;
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_and_is_documented_shape() {
        let instance = ServiceInstance::new("hello", "a", "127.0.0.1:8080").with_metadata(
            Metadata::default()
                .with_version("1.2.0")
                .with_zone("eu-1")
                .with_label("tier", "web"),
        );
        let json = instance.to_json();
        assert_eq!(
            std::str::from_utf8(&json).unwrap(),
            r#"{"service":"hello","id":"a","address":"127.0.0.1:8080","metadata":{"version":"1.2.0","weight":1,"zone":"eu-1","labels":{"tier":"web"}},"status":"serving"}"#
        );
        assert_eq!(ServiceInstance::from_json(&json).unwrap(), instance);
    }

    #[test]
    fn missing_metadata_fields_take_defaults_and_unknown_fields_are_ignored() {
        let parsed = ServiceInstance::from_json(
            br#"{"service":"s","id":"i","address":"x","metadata":{"zone":"z"},"extra":1}"#,
        )
        .unwrap();
        assert_eq!(parsed.metadata.weight, 1);
        assert_eq!(parsed.metadata.zone.as_deref(), Some("z"));
        let bare =
            ServiceInstance::from_json(br#"{"service":"s","id":"i","address":"x"}"#).unwrap();
        assert_eq!(bare.metadata, Metadata::default());
        assert_eq!(bare.status, Status::Serving);
        let later = ServiceInstance::from_json(
            br#"{"service":"s","id":"i","address":"x","status":"paused"}"#,
        )
        .unwrap();
        assert_eq!(later.status, Status::Unknown);
        assert!(!later.status.is_serving());
        assert!(ServiceInstance::from_json(b"not json").is_err());
    }

    #[test]
    fn names_are_validated_with_typed_errors() {
        assert!(ServiceInstance::new("s", "i", "a").validate().is_ok());
        for (service, id) in [("", "i"), ("a/b", "i")] {
            assert!(matches!(
                ServiceInstance::new(service, id, "a").validate(),
                Err(Error::ServiceName(s)) if s == service
            ));
        }
        for id in ["", "x/y"] {
            assert!(matches!(
                ServiceInstance::new("s", id, "a").validate(),
                Err(Error::InstanceId(s)) if s == id
            ));
        }
    }

    #[test]
    fn key_layout() {
        let layout = KeyLayout::default();
        assert_eq!(layout.service_prefix("hello"), "services/hello/");
        assert_eq!(layout.instance_key("hello", "a"), "services/hello/a");
        assert_eq!(layout.instance_id("hello", b"services/hello/a"), Some("a"));
        assert_eq!(layout.instance_id("hello", b"services/hello/a/b"), None);
        assert_eq!(layout.instance_id("hello", b"services/hello/"), None);
        assert_eq!(layout.instance_id("hello", b"services/hello2/a"), None);
        let nested = KeyLayout::new("prod/svc").unwrap();
        assert_eq!(nested.instance_key("s", "i"), "prod/svc/s/i");
        for bad in ["", "/x", "x/"] {
            assert!(matches!(KeyLayout::new(bad), Err(Error::InvalidOption(_))));
        }
    }
}
