//! The snapshot file's format (version 1), and why a file is refused.
//!
//! ```json
//! {
//!   "format": "registry-service discovery snapshot",
//!   "version": 1,
//!   "service": "hello",
//!   "prefix": "services/hello/",
//!   "revision": 42,
//!   "saved_at_ms": 1733550000000,
//!   "checksum": "fnv1a64:5e1f...",
//!   "instances": { "<id>": { "service": "hello", "id": "<id>", "address": "..." } }
//! }
//! ```
//!
//! The checksum covers everything else, so a file whose bytes changed still parses only when it
//! is refused for its checksum. Decoding is a pure function of the bytes, the identity expected
//! and the time now: the fuzz tests call it with any bytes.

use crate::instance::ServiceInstance;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::hash::Hasher;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the `format` field says: a file of something else is refused.
pub(super) const FORMAT: &str = "registry-service discovery snapshot";

/// The version this crate writes and reads.
pub const FORMAT_VERSION: u64 = 1;

/// The largest file read (a view of 100,000 instances is about 30 MiB).
pub(super) const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Which view a file belongs to: the service and the prefix it is listed under (the namespace
/// and the layout), both written into the file and checked on load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Identity {
    pub(super) service: String,
    pub(super) prefix: String,
}

/// Why a snapshot file was not used. The view then starts empty, as without a file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotRefusal {
    /// There is no file (the first start, or it was removed).
    #[error("no snapshot file")]
    Missing,
    /// It could not be read.
    #[error("the snapshot file cannot be read: {0}")]
    Unreadable(String),
    /// It is larger than any snapshot this crate writes.
    #[error("the snapshot file is too large ({bytes} bytes)")]
    TooLarge {
        /// Its size.
        bytes: u64,
    },
    /// It is not a snapshot file, or a truncated or damaged one: it does not parse.
    #[error("the snapshot file is corrupt: {0}")]
    Corrupt(String),
    /// It parses, but its checksum does not match its contents.
    #[error("the snapshot file's checksum does not match its contents")]
    Checksum,
    /// It was written in another format version.
    #[error("the snapshot file has format version {found}, this build reads {FORMAT_VERSION}")]
    Version {
        /// The version it says.
        found: u64,
    },
    /// It belongs to another view: another service, namespace or layout.
    #[error("the snapshot file belongs to service {service:?} under {prefix:?}")]
    OtherService {
        /// The service it says.
        service: String,
        /// The prefix it says.
        prefix: String,
    },
    /// It is older than [`SnapshotFile::max_age`](super::SnapshotFile::max_age).
    #[error("the snapshot file is {age:?} old, older than the allowed {max_age:?}")]
    TooOld {
        /// How old it is.
        age: Duration,
        /// The limit.
        max_age: Duration,
    },
    /// It parses and its checksum matches, but an instance in it is not valid.
    #[error("the snapshot file holds an invalid instance: {0}")]
    Invalid(String),
}

/// A file that was accepted.
#[derive(Debug)]
pub(super) struct Decoded {
    pub(super) revision: i64,
    pub(super) saved_at: SystemTime,
    pub(super) instances: BTreeMap<String, ServiceInstance>,
}

#[derive(Deserialize)]
struct Probe {
    format: Option<String>,
    version: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct FileV1 {
    format: String,
    version: u64,
    service: String,
    prefix: String,
    revision: i64,
    saved_at_ms: u64,
    checksum: String,
    instances: BTreeMap<String, ServiceInstance>,
}

/// The checksum of everything but the checksum: FNV-1a over the identity, revision, time and
/// the instances' JSON (deterministic: ordered maps, fields in declaration order).
fn checksum(
    identity: &Identity,
    revision: i64,
    saved_at_ms: u64,
    instances: &BTreeMap<String, ServiceInstance>,
) -> String {
    let mut hasher = fnv::FnvHasher::default();
    let header = format!(
        "{FORMAT}\n{FORMAT_VERSION}\n{}\n{}\n{revision}\n{saved_at_ms}\n",
        identity.service, identity.prefix
    );
    hasher.write(header.as_bytes());
    // Serializing owned strings and integers into a buffer cannot fail.
    hasher.write(&serde_json::to_vec(instances).unwrap_or_default());
    format!("fnv1a64:{:016x}", hasher.finish())
}

fn millis_since_epoch(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The file's bytes for `instances` (by store key) at `revision`, saved at `saved_at`.
pub(super) fn encode(
    identity: &Identity,
    revision: i64,
    saved_at: SystemTime,
    instances: BTreeMap<String, ServiceInstance>,
) -> Vec<u8> {
    let saved_at_ms = millis_since_epoch(saved_at);
    let file = FileV1 {
        format: FORMAT.to_owned(),
        version: FORMAT_VERSION,
        service: identity.service.clone(),
        prefix: identity.prefix.clone(),
        revision,
        saved_at_ms,
        checksum: checksum(identity, revision, saved_at_ms, &instances),
        instances,
    };
    let mut bytes = serde_json::to_vec_pretty(&file).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Reads a file's bytes, expecting `identity`; `now` and `max_age` judge its age.
pub(super) fn decode(
    bytes: &[u8],
    identity: &Identity,
    now: SystemTime,
    max_age: Option<Duration>,
) -> Result<Decoded, SnapshotRefusal> {
    // First what the file claims to be, so that a newer version is told apart from damage.
    let probe: Probe =
        serde_json::from_slice(bytes).map_err(|e| SnapshotRefusal::Corrupt(e.to_string()))?;
    if probe.format.as_deref() != Some(FORMAT) {
        return Err(SnapshotRefusal::Corrupt(
            "not a discovery snapshot (no format field of ours)".to_owned(),
        ));
    }
    match probe.version {
        Some(FORMAT_VERSION) => {}
        Some(found) => return Err(SnapshotRefusal::Version { found }),
        None => return Err(SnapshotRefusal::Corrupt("no version".to_owned())),
    }
    let file: FileV1 =
        serde_json::from_slice(bytes).map_err(|e| SnapshotRefusal::Corrupt(e.to_string()))?;
    if file.service != identity.service || file.prefix != identity.prefix {
        return Err(SnapshotRefusal::OtherService {
            service: file.service,
            prefix: file.prefix,
        });
    }
    if file.checksum != checksum(identity, file.revision, file.saved_at_ms, &file.instances) {
        return Err(SnapshotRefusal::Checksum);
    }
    if file.revision < 0 {
        return Err(SnapshotRefusal::Invalid(format!(
            "negative revision {}",
            file.revision
        )));
    }
    for (key, instance) in &file.instances {
        if key.is_empty() {
            return Err(SnapshotRefusal::Invalid("an empty id".to_owned()));
        }
        if let Err(e) = instance.validate() {
            return Err(SnapshotRefusal::Invalid(format!("{key}: {e}")));
        }
    }
    let saved_at = UNIX_EPOCH + Duration::from_millis(file.saved_at_ms);
    if let Some(max_age) = max_age {
        let age = now.duration_since(saved_at).unwrap_or_default();
        if age > max_age {
            return Err(SnapshotRefusal::TooOld { age, max_age });
        }
    }
    Ok(Decoded {
        revision: file.revision,
        saved_at,
        instances: file.instances,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            service: "hello".to_owned(),
            prefix: "services/hello/".to_owned(),
        }
    }

    fn instances() -> BTreeMap<String, ServiceInstance> {
        ["a", "b"]
            .into_iter()
            .map(|id| {
                let instance = ServiceInstance::new("hello", id, format!("10.0.0.{}:80", id.len()));
                (id.to_owned(), instance)
            })
            .collect()
    }

    fn saved_at() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn what_is_written_reads_back() {
        let bytes = encode(&identity(), 42, saved_at(), instances());
        let decoded = decode(&bytes, &identity(), saved_at(), None).expect("reads back");
        assert_eq!(decoded.revision, 42);
        assert_eq!(decoded.saved_at, saved_at());
        assert_eq!(decoded.instances, instances());
    }

    #[test]
    fn every_kind_of_bad_file_is_refused_for_its_reason() {
        let good = encode(&identity(), 42, saved_at(), instances());
        let now = saved_at();
        let refuse = |bytes: &[u8]| decode(bytes, &identity(), now, None).unwrap_err();
        assert!(matches!(
            refuse(&good[..good.len() / 2]),
            SnapshotRefusal::Corrupt(_)
        ));
        assert!(matches!(
            refuse(b"\x00\xff garbage"),
            SnapshotRefusal::Corrupt(_)
        ));
        assert!(matches!(refuse(b"{}"), SnapshotRefusal::Corrupt(_)));
        let text = String::from_utf8(good.clone()).unwrap();
        let newer = text.replace("\"version\": 1", "\"version\": 2");
        assert_eq!(
            refuse(newer.as_bytes()),
            SnapshotRefusal::Version { found: 2 }
        );
        let other = Identity {
            service: "other".to_owned(),
            prefix: "services/other/".to_owned(),
        };
        assert!(matches!(
            decode(&good, &other, now, None),
            Err(SnapshotRefusal::OtherService { service, .. }) if service == "hello"
        ));
        let tampered = text.replace("10.0.0.1:80", "10.0.0.9:80");
        assert_eq!(refuse(tampered.as_bytes()), SnapshotRefusal::Checksum);
        let old = decode(
            &good,
            &identity(),
            now + Duration::from_secs(3_600),
            Some(Duration::from_secs(60)),
        );
        assert!(matches!(old, Err(SnapshotRefusal::TooOld { .. })));
    }
}
