//! The key prefix that isolates one registry's keys from every other user of the same etcd.
//!
//! etcd-client has prefix wrappers for KV and leases but none for watches, so the backend applies
//! the key prefix itself, in one place: every key, range, delete and watch goes through
//! [`KeyPrefix::key`] or [`KeyPrefix::range`], and every key coming back through
//! [`KeyPrefix::strip`].

use registry_api::limits::prefix_end;
use registry_api::Bytes;

/// The all-keys marker of etcd: as a key, "from the first key"; as a range end, "to the last".
const ALL_KEYS: u8 = 0;

/// A byte prefix prepended to every key sent and stripped from every key received.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyPrefix {
    prefix: Vec<u8>,
}

impl KeyPrefix {
    /// A key prefix of `prefix`; an empty prefix is the whole keyspace.
    pub(crate) fn new(prefix: impl Into<Vec<u8>>) -> Self {
        KeyPrefix {
            prefix: prefix.into(),
        }
    }

    /// The raw prefix.
    pub(crate) fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// The etcd key for the caller's `key`.
    pub(crate) fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.prefix.len() + key.len());
        full.extend_from_slice(&self.prefix);
        full.extend_from_slice(key);
        full
    }

    /// The etcd `(key, range_end)` covering every caller key under `prefix`. An empty `prefix`
    /// covers the whole key prefix (the whole keyspace when the key prefix is empty too).
    pub(crate) fn range(&self, prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let start = self.key(prefix);
        match prefix_end(&start) {
            Some(end) => (start, end),
            // An empty or all-0xff start has no upper bound: etcd spells "to the end" as "\0".
            None if start.is_empty() => (vec![ALL_KEYS], vec![ALL_KEYS]),
            None => (start, vec![ALL_KEYS]),
        }
    }

    /// The caller's key for an etcd key, or `None` when the key lies outside the key prefix
    /// (a lease can hold keys under other key prefixes; they are not ours to show).
    pub(crate) fn strip(&self, key: &[u8]) -> Option<Vec<u8>> {
        key.strip_prefix(self.prefix.as_slice()).map(<[u8]>::to_vec)
    }

    /// [`KeyPrefix::strip`] for a key the caller owns: the result shares its buffer, no copy.
    pub(crate) fn strip_owned(&self, key: Vec<u8>) -> Option<Bytes> {
        key.starts_with(&self.prefix)
            .then(|| Bytes::from(key).slice(self.prefix.len()..))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_and_stripped() {
        let ns = KeyPrefix::new("app/");
        assert_eq!(ns.key(b"svc/a"), b"app/svc/a".to_vec());
        assert_eq!(ns.strip(b"app/svc/a"), Some(b"svc/a".to_vec()));
        assert_eq!(ns.strip(b"other/svc/a"), None);
        assert_eq!(
            ns.strip_owned(b"app/svc/a".to_vec()).as_deref(),
            Some(&b"svc/a"[..])
        );
        assert_eq!(ns.strip_owned(b"other/svc/a".to_vec()), None);
    }

    #[test]
    fn ranges_stay_inside_the_key_prefix() {
        let ns = KeyPrefix::new("app/");
        assert_eq!(
            ns.range(b"svc/"),
            (b"app/svc/".to_vec(), b"app/svc0".to_vec())
        );
        assert_eq!(ns.range(b""), (b"app/".to_vec(), b"app0".to_vec()));
    }

    #[test]
    fn the_empty_key_prefix_is_the_whole_keyspace() {
        let ns = KeyPrefix::default();
        assert_eq!(ns.key(b"k"), b"k".to_vec());
        assert_eq!(ns.range(b""), (vec![0], vec![0]));
        assert_eq!(ns.range(&[0xff]), (vec![0xff], vec![0]));
        assert_eq!(ns.strip(b"k"), Some(b"k".to_vec()));
    }
}
