//! An in-memory simulated etcd for the registry-api contract: revisions, leases on virtual time, watches with history, compaction and fault injection, fully deterministic.
