//! How keys and values under a prefix become instances.

use crate::instance::{KeyLayout, ServiceInstance};
use registry_api::KeyValue;
use std::fmt::Debug;

/// Where a service's instances live and how their values read: the prefix to watch, which
/// keys under it are instances, and how a value decodes. [`JsonLayout`] (this crate's own
/// layout) is the default; another layout (etcd's Go naming layout, `<target>/<addr>` keys
/// with `{"Op","Addr","Metadata"}` values, say) plugs in through
/// [`Discovery::with_layout`](super::Discovery::with_layout).
pub trait InstanceLayout: Debug + Send + Sync + 'static {
    /// The service (or target) name, for logs and [`Discovery::service`](super::Discovery::service).
    fn service(&self) -> &str;

    /// The prefix to list and watch. End it with the separator, or `hello` also matches
    /// `hello-admin` (etcd #15022).
    fn prefix(&self) -> String;

    /// The instance id a key names, or `None` for a key under the prefix that is not an
    /// instance (deeper, or not a valid id): such keys are ignored.
    fn instance_id(&self, key: &[u8]) -> Option<String>;

    /// The instance a value describes, for a key whose id is `id`. An error (why it does not
    /// read) makes the key count as malformed: it is skipped, counted, and if it replaced an
    /// instance, that instance is removed.
    fn decode(&self, id: &str, kv: &KeyValue) -> Result<ServiceInstance, String>;
}

/// This crate's layout: key `<namespace>/<service>/<id>`, value the instance's JSON
/// ([`ServiceInstance::to_json`]), whose `service` and `id` must agree with the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonLayout {
    keys: KeyLayout,
    service: String,
}

impl JsonLayout {
    /// The layout of `service` under `keys`.
    pub fn new(keys: KeyLayout, service: impl Into<String>) -> Self {
        JsonLayout {
            keys,
            service: service.into(),
        }
    }
}

impl InstanceLayout for JsonLayout {
    fn service(&self) -> &str {
        &self.service
    }

    fn prefix(&self) -> String {
        self.keys.service_prefix(&self.service)
    }

    fn instance_id(&self, key: &[u8]) -> Option<String> {
        self.keys.instance_id(&self.service, key).map(str::to_owned)
    }

    fn decode(&self, id: &str, kv: &KeyValue) -> Result<ServiceInstance, String> {
        match ServiceInstance::from_json(&kv.value) {
            Ok(instance) if instance.service == self.service && instance.id == id => Ok(instance),
            Ok(_) => Err("service or id disagrees with the key".to_owned()),
            Err(e) => Err(e.to_string()),
        }
    }
}
