//! Which instances a view keeps.

use crate::instance::{ServiceInstance, Status};
use std::fmt;
use std::sync::Arc;

/// A condition on instances: all of its parts must hold. `Filter::all()` keeps everything;
/// each builder call adds a condition, and [`and`](Self::and) joins two filters.
///
/// ```
/// use registry_service::{Filter, Metadata, ServiceInstance, Status};
///
/// let filter = Filter::serving().version("2.0").zone("eu-1");
/// let a = ServiceInstance::new("hello", "a", "10.0.0.1:80")
///     .with_metadata(Metadata::default().with_version("2.0").with_zone("eu-1"));
/// assert!(filter.matches(&a));
/// assert!(!filter.matches(&a.clone().with_status(Status::Draining)));
/// ```
#[derive(Clone, Default)]
pub struct Filter {
    conditions: Vec<Condition>,
}

#[derive(Clone)]
enum Condition {
    Version(String),
    Zone(String),
    Label(String, String),
    Status(Status),
    Custom(Arc<dyn Fn(&ServiceInstance) -> bool + Send + Sync>),
}

impl Filter {
    /// Keeps every instance.
    pub fn all() -> Self {
        Filter::default()
    }

    /// Keeps instances that take new work ([`Status::is_serving`]): what a picker should read.
    pub fn serving() -> Self {
        Filter::all().status(Status::Serving)
    }

    /// Also requires this exact version.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.conditions.push(Condition::Version(version.into()));
        self
    }

    /// Also requires this zone.
    pub fn zone(mut self, zone: impl Into<String>) -> Self {
        self.conditions.push(Condition::Zone(zone.into()));
        self
    }

    /// Also requires the label `key` to be `value`.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.conditions
            .push(Condition::Label(key.into(), value.into()));
        self
    }

    /// Also requires this status.
    pub fn status(mut self, status: Status) -> Self {
        self.conditions.push(Condition::Status(status));
        self
    }

    /// Also requires `condition`.
    pub fn matching(
        mut self,
        condition: impl Fn(&ServiceInstance) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.conditions.push(Condition::Custom(Arc::new(condition)));
        self
    }

    /// Both this filter and `other`.
    pub fn and(mut self, other: Filter) -> Self {
        self.conditions.extend(other.conditions);
        self
    }

    /// True when `instance` passes every condition.
    pub fn matches(&self, instance: &ServiceInstance) -> bool {
        self.conditions.iter().all(|condition| match condition {
            Condition::Version(version) => {
                instance.metadata.version.as_deref() == Some(version.as_str())
            }
            Condition::Zone(zone) => instance.metadata.zone.as_deref() == Some(zone.as_str()),
            Condition::Label(key, value) => instance.metadata.labels.get(key) == Some(value),
            Condition::Status(status) => instance.status == *status,
            Condition::Custom(condition) => condition(instance),
        })
    }

    /// True when the filter keeps everything.
    pub fn is_all(&self) -> bool {
        self.conditions.is_empty()
    }
}

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for condition in &self.conditions {
            match condition {
                Condition::Version(v) => list.entry(&format_args!("version = {v:?}")),
                Condition::Zone(z) => list.entry(&format_args!("zone = {z:?}")),
                Condition::Label(k, v) => list.entry(&format_args!("label {k:?} = {v:?}")),
                Condition::Status(s) => list.entry(&format_args!("status = {s:?}")),
                Condition::Custom(_) => list.entry(&format_args!("custom")),
            };
        }
        list.finish()
    }
}
