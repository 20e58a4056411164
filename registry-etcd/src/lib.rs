//! The registry-api contract over a real etcd server, through the etcd-client crate.
