//! A property-based conformance suite that proves a registry-api backend behaves like etcd: watch ordering, revision accounting, lease expiry.
