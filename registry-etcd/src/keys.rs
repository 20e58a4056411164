//! Puts, reads, deletes and compaction, mapped one to one onto etcd's KV service.

use crate::errors::{self, Context};
use crate::key_prefix::KeyPrefix;
use crate::Inner;
use etcd_client::{CompactionOptions, DeleteOptions, GetOptions};
use registry_api::{
    limits, DeleteResponse, Error, GetResponse, KeyValue, LeaseId, ListOptions, ListResponse,
    PutOptions, PutResponse, Result, Revision,
};
use tracing::Instrument;

/// Shows a key in spans: keys are usually UTF-8 paths.
pub(crate) fn show(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

/// The contract's key-value for an etcd one taken out of its response, with the key prefix
/// stripped; `None` when the key lies outside the key prefix. Key and value move, no copy.
pub(crate) fn key_value(key_prefix: &KeyPrefix, kv: etcd_client::KeyValue) -> Option<KeyValue> {
    let (create_revision, mod_revision, version, lease) = (
        kv.create_revision(),
        kv.mod_revision(),
        kv.version(),
        kv.lease(),
    );
    let (key, value) = kv.into_key_value();
    Some(KeyValue {
        key: key_prefix.strip_owned(key)?,
        value: value.into(),
        create_revision: Revision(create_revision),
        mod_revision: Revision(mod_revision),
        version,
        lease: (lease != 0).then_some(LeaseId(lease)),
    })
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Revision {
    Revision(header.map(|h| h.revision()).unwrap_or_default())
}

impl Inner {
    pub(crate) async fn put(
        &self,
        key: &[u8],
        value: &[u8],
        opts: PutOptions,
    ) -> Result<PutResponse> {
        let span =
            tracing::debug_span!("etcd.put", key = %show(key), lease = ?opts.lease.map(|l| l.0));
        async move {
            limits::check_put(key, value, self.max_value_bytes)?;
            let mut options = etcd_client::PutOptions::new();
            if let Some(lease) = opts.lease {
                limits::check_lease_id(lease)?;
                options = options.with_lease(lease.0);
            }
            if opts.prev_kv {
                options = options.with_prev_key();
            }
            let ctx = Context {
                lease: opts.lease,
                size: Some(key.len() + value.len()),
                ..Context::default()
            };
            let mut resp = self
                .kv
                .clone()
                .put(self.key_prefix.key(key), value, Some(options))
                .await
                .map_err(|e| errors::from_etcd(e, ctx))?;
            let revision = header_revision(resp.header());
            tracing::debug!(%revision, "put");
            Ok(PutResponse {
                revision,
                prev_kv: resp
                    .take_prev_key()
                    .and_then(|kv| key_value(&self.key_prefix, kv)),
            })
        }
        .instrument(span)
        .await
    }

    pub(crate) async fn get(&self, key: &[u8]) -> Result<GetResponse> {
        let span = tracing::debug_span!("etcd.get", key = %show(key));
        async move {
            limits::check_key(key)?;
            let mut resp = self
                .kv
                .clone()
                .get(self.key_prefix.key(key), None)
                .await
                .map_err(|e| errors::from_etcd(e, Context::default()))?;
            Ok(GetResponse {
                revision: header_revision(resp.header()),
                kv: resp
                    .take_kvs()
                    .into_iter()
                    .next()
                    .and_then(|kv| key_value(&self.key_prefix, kv)),
            })
        }
        .instrument(span)
        .await
    }

    pub(crate) async fn list(&self, prefix: &[u8], opts: ListOptions) -> Result<ListResponse> {
        let span = tracing::debug_span!(
            "etcd.list",
            prefix = %show(prefix),
            revision = ?opts.revision.map(|r| r.0)
        );
        async move {
            let (start, end) = self.key_prefix.range(prefix);
            let mut options = GetOptions::new().with_range(end);
            if let Some(revision) = opts.revision {
                limits::check_revision(revision)?;
                options = options.with_revision(revision.0);
            }
            let ctx = opts.revision.map(Context::revision).unwrap_or_default();
            let mut resp = match self.kv.clone().get(start, Some(options)).await {
                Ok(resp) => resp,
                Err(e) => return Err(self.complete(errors::from_etcd(e, ctx)).await),
            };
            Ok(ListResponse {
                revision: header_revision(resp.header()),
                kvs: resp
                    .take_kvs()
                    .into_iter()
                    .filter_map(|kv| key_value(&self.key_prefix, kv))
                    .collect(),
            })
        }
        .instrument(span)
        .await
    }

    pub(crate) async fn delete(&self, key: &[u8]) -> Result<DeleteResponse> {
        let span = tracing::debug_span!("etcd.delete", key = %show(key));
        async move {
            limits::check_key(key)?;
            let options = DeleteOptions::new().with_prev_key();
            self.delete_range(self.key_prefix.key(key), options).await
        }
        .instrument(span)
        .await
    }

    pub(crate) async fn delete_prefix(&self, prefix: &[u8]) -> Result<DeleteResponse> {
        let span = tracing::debug_span!("etcd.delete_prefix", prefix = %show(prefix));
        async move {
            let (start, end) = self.key_prefix.range(prefix);
            let options = DeleteOptions::new().with_range(end).with_prev_key();
            self.delete_range(start, options).await
        }
        .instrument(span)
        .await
    }

    async fn delete_range(&self, start: Vec<u8>, options: DeleteOptions) -> Result<DeleteResponse> {
        let mut resp = self
            .kv
            .clone()
            .delete(start, Some(options))
            .await
            .map_err(|e| errors::from_etcd(e, Context::default()))?;
        let mut prev_kvs: Vec<KeyValue> = resp
            .take_prev_kvs()
            .into_iter()
            .filter_map(|kv| key_value(&self.key_prefix, kv))
            .collect();
        // etcd returns them in key order already; the contract promises it, so make sure.
        prev_kvs.sort_by(|a, b| a.key.cmp(&b.key));
        let revision = header_revision(resp.header());
        tracing::debug!(deleted = resp.deleted(), %revision, "deleted");
        Ok(DeleteResponse {
            deleted: resp.deleted(),
            revision,
            prev_kvs,
        })
    }

    pub(crate) async fn compact(&self, revision: Revision) -> Result<Revision> {
        let span = tracing::debug_span!("etcd.compact", revision = revision.0);
        async move {
            limits::check_revision(revision)?;
            // Physical: the call returns once the history is gone, so later reads do not race
            // the background compaction.
            let options = CompactionOptions::new().with_physical();
            match self.kv.clone().compact(revision.0, Some(options)).await {
                Ok(resp) => Ok(header_revision(resp.header())),
                Err(e) => Err(self
                    .complete(errors::from_etcd(e, Context::revision(revision)))
                    .await),
            }
        }
        .instrument(span)
        .await
    }

    /// The store's current revision, from the cheapest read there is.
    pub(crate) async fn current_revision(&self) -> Result<Revision> {
        let resp = self
            .kv
            .clone()
            .get(
                self.key_prefix.key(&[0]),
                Some(GetOptions::new().with_count_only()),
            )
            .await
            .map_err(|e| errors::from_etcd(e, Context::default()))?;
        Ok(header_revision(resp.header()))
    }

    /// Fills in what etcd's error text leaves out: the current revision of a future-revision
    /// error, the compaction point of a compacted one. Best effort: if the lookup fails the
    /// error is returned as it was.
    pub(crate) async fn complete(&self, err: Error) -> Error {
        match err {
            Error::FutureRevision { requested, current } if current.0 == 0 => {
                match self.current_revision().await {
                    Ok(current) => Error::FutureRevision { requested, current },
                    Err(_) => Error::FutureRevision { requested, current },
                }
            }
            Error::Compacted { compact_revision } if compact_revision.0 == 0 => {
                match self.compact_revision().await {
                    Ok(Some(compact_revision)) => Error::Compacted { compact_revision },
                    _ => Error::Compacted { compact_revision },
                }
            }
            other => other,
        }
    }
}
