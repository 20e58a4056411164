//! The input checks every backend applies before it writes anything, so that the same bad input
//! fails the same way on every backend.

use crate::{Error, InvalidArgument, LeaseId, Result, Revision};

/// etcd's default `--max-request-bytes`: 1.5 MiB.
pub const ETCD_MAX_REQUEST_BYTES: usize = 3 * 512 * 1024;

/// The largest key plus value a put accepts by default: a little under etcd's request limit, so
/// that the server never sees a request it would refuse for its size after framing.
pub const DEFAULT_MAX_VALUE_BYTES: usize = ETCD_MAX_REQUEST_BYTES - 4096;

/// etcd's largest lease TTL, in seconds (`MaxLeaseTTL`).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// etcd's default minimum lease TTL, in seconds: 1.5 × the default election timeout, rounded up.
pub const DEFAULT_MIN_LEASE_TTL: i64 = 2;

/// The most leases one [`lease_keep_alive_many`](crate::Registry::lease_keep_alive_many) call
/// renews. A batch is answered as one unit (under one lock in the simulator, as one burst on
/// etcd's keep-alive stream), so a bound keeps one caller from holding the others up; callers
/// with more leases due at once send several batches.
pub const MAX_KEEP_ALIVE_BATCH: usize = 1_000;

/// Rejects a keep-alive batch of more than [`MAX_KEEP_ALIVE_BATCH`] leases.
pub fn check_keep_alive_batch(len: usize) -> Result<()> {
    if len > MAX_KEEP_ALIVE_BATCH {
        return Err(InvalidArgument::BatchTooLarge {
            len,
            max: MAX_KEEP_ALIVE_BATCH,
        }
        .into());
    }
    Ok(())
}

/// Rejects an empty key.
pub fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(InvalidArgument::EmptyKey.into());
    }
    Ok(())
}

/// Rejects an empty key and a key plus value over `limit` bytes.
pub fn check_put(key: &[u8], value: &[u8], limit: usize) -> Result<()> {
    check_key(key)?;
    let size = key.len().saturating_add(value.len());
    if size > limit {
        return Err(Error::TooLarge {
            size: Some(size),
            limit: Some(limit),
        });
    }
    Ok(())
}

/// Rejects a TTL above `max`, the only TTL a grant refuses: as in etcd 3.5, a TTL of zero or
/// below is not an error, the backend raises it to its minimum like any TTL under the minimum.
pub fn check_ttl_max(ttl: i64, max: i64) -> Result<()> {
    if ttl > max {
        return Err(InvalidArgument::TtlTooLarge { ttl, max }.into());
    }
    Ok(())
}

/// Rejects a lease id of zero or below: etcd never issues one, and 0 means "no lease".
pub fn check_lease_id(id: LeaseId) -> Result<()> {
    if id.0 <= 0 {
        return Err(InvalidArgument::LeaseId(id.0).into());
    }
    Ok(())
}

/// Rejects a revision of zero or below in a request.
pub fn check_revision(revision: Revision) -> Result<()> {
    if revision.0 <= 0 {
        return Err(InvalidArgument::Revision(revision.0).into());
    }
    Ok(())
}

/// The exclusive end of the key range under `prefix`, as etcd computes it: the prefix with its
/// last byte below 0xff incremented and the rest dropped. `None` means "to the end of the
/// keyspace" (an empty prefix, or one made only of 0xff bytes).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte_below_ff() {
        assert_eq!(prefix_end(b"svc/a/"), Some(b"svc/a0".to_vec()));
        assert_eq!(prefix_end(&[b'a', 0xff]), Some(vec![b'b']));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn bad_input_is_typed() {
        assert!(matches!(
            check_key(b""),
            Err(Error::InvalidArgument(InvalidArgument::EmptyKey))
        ));
        // Raised to the minimum by the backend, not refused.
        for ttl in [0, -5, i64::MIN] {
            assert!(check_ttl_max(ttl, 10).is_ok(), "{ttl}");
        }
        assert!(matches!(
            check_ttl_max(11, 10),
            Err(Error::InvalidArgument(InvalidArgument::TtlTooLarge {
                ttl: 11,
                max: 10
            }))
        ));
        assert!(check_ttl_max(10, 10).is_ok());
        assert!(matches!(
            check_put(b"k", &[0; 10], 10),
            Err(Error::TooLarge {
                size: Some(11),
                limit: Some(10)
            })
        ));
        assert!(check_put(b"k", &[0; 9], 10).is_ok());
        assert!(matches!(
            check_lease_id(LeaseId(0)),
            Err(Error::InvalidArgument(InvalidArgument::LeaseId(0)))
        ));
    }
}
