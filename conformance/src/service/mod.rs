//! The service-layer suite: registration, discovery and picking scenarios over any backend.

mod backend;

pub use backend::{ServiceBackend, ServiceCapabilities};
