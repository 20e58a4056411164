//! What a named case works with: the backend's registry under a fresh prefix, the model kept in
//! step with every write, and helpers that compare each answer with the model's.

use crate::contract::backend::{Backend, Capabilities, Time};
use crate::contract::model::{Model, ModelLimits};
use crate::contract::observe::{Normalizer, ObsBatch};
use crate::contract::prefix::unique_prefix;
use crate::contract::watch_read::{check_properties, read_until, ready_now};
use crate::failure::{ensure, Check, Failure};
use registry_api::{
    DeleteResponse, Error, LeaseGrant, LeaseId, ListOptions, PutOptions, Registry, Result,
    Revision, WatchBatch, WatchOptions, WatchStream,
};
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A case's world.
pub(crate) struct Ctx<'b> {
    pub(crate) backend: &'b dyn Backend,
    pub(crate) registry: Arc<dyn Registry>,
    pub(crate) caps: Capabilities,
    pub(crate) prefix: Vec<u8>,
    pub(crate) model: Model,
    pub(crate) norm: Normalizer,
}

impl<'b> Ctx<'b> {
    pub(crate) async fn start(backend: &'b dyn Backend, case: &str) -> Result<Self, Failure> {
        let registry = backend.registry().await;
        let caps = backend.capabilities();
        let prefix = unique_prefix(case);
        let first = registry
            .list(&prefix, ListOptions::default())
            .await
            .map_err(|e| Failure::new(case, format!("listing a fresh prefix failed: {e}")))?;
        let limits = ModelLimits {
            min_ttl: caps.min_ttl,
            max_ttl: caps.max_ttl,
            max_value_bytes: caps.max_value_bytes,
        };
        Ok(Ctx {
            backend,
            registry,
            norm: Normalizer::new(first.revision, prefix.clone()),
            model: Model::new(first.revision, limits),
            caps,
            prefix,
        })
    }

    /// Revokes every lease the case left live, so a shared server is not left holding them.
    pub(crate) async fn cleanup(&mut self) {
        for id in self.model.leases() {
            let _ = self.registry.lease_revoke(id).await;
        }
    }

    /// `rel` under the case's prefix.
    pub(crate) fn key(&self, rel: &str) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(rel.as_bytes());
        k
    }

    /// The store's current revision, as a list of the prefix reports it.
    pub(crate) async fn revision(&self) -> Check<Revision> {
        let list = self
            .registry
            .list(&self.prefix, ListOptions::default())
            .await
            .map_err(|e| format!("list failed: {e}"))?;
        Ok(list.revision)
    }

    /// The leases the backend lists now.
    pub(crate) async fn leases(&self) -> Check<BTreeSet<LeaseId>> {
        let leases = self.registry.leases().await.map_err(|e| e.to_string())?;
        Ok(leases.into_iter().collect())
    }

    /// Compares a backend answer with the model's, normalised (relative revisions, lease
    /// order, relative keys), and returns the backend's.
    fn same<T: Debug, O: PartialEq + Debug>(
        &self,
        what: &str,
        actual: Result<T>,
        expected: Result<T>,
        view: impl Fn(&Normalizer, &T) -> O,
    ) -> Check<Result<T>> {
        let norm = &self.norm;
        let show = |r: &Result<T>| match r {
            Ok(v) => Ok(view(norm, v)),
            Err(e) => Err(norm.error(e)),
        };
        let (got, want) = (show(&actual), show(&expected));
        ensure!(
            got == want,
            "{what}: expected {want:?}, the backend answered {got:?}"
        );
        Ok(actual)
    }

    /// A put that the model says succeeds.
    pub(crate) async fn put(
        &mut self,
        rel: &str,
        value: &str,
        lease: Option<LeaseId>,
    ) -> Check<Revision> {
        let r = self.try_put(rel, value.as_bytes(), lease).await?;
        r.map_err(|e| format!("put {rel:?} failed: {e}"))
    }

    /// A put whose outcome the model decides.
    pub(crate) async fn try_put(
        &mut self,
        rel: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> Check<Result<Revision>> {
        let key = if rel.is_empty() {
            Vec::new()
        } else {
            self.key(rel)
        };
        self.put_raw(&key, value, lease).await
    }

    /// A put of an exact key.
    pub(crate) async fn put_raw(
        &mut self,
        key: &[u8],
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> Check<Result<Revision>> {
        let opts = PutOptions {
            lease,
            prev_kv: true,
        };
        let actual = self.registry.put(key, value, opts).await;
        let expected = self.model.put(key, value, lease, true);
        let what = format!("put {:?}", self.norm.key(key));
        let r = self.same(&what, actual, expected, |n, p| {
            (n.rev(p.revision), p.prev_kv.as_ref().map(|kv| n.kv(kv)))
        })?;
        Ok(r.map(|p| p.revision))
    }

    /// A delete whose outcome the model decides.
    pub(crate) async fn delete(&mut self, rel: &str) -> Check<Result<DeleteResponse>> {
        let key = if rel.is_empty() {
            Vec::new()
        } else {
            self.key(rel)
        };
        let actual = self.registry.delete(&key).await;
        let expected = self.model.delete(&key);
        self.same(&format!("delete {rel:?}"), actual, expected, delete_view)
    }

    /// A prefix delete.
    pub(crate) async fn delete_prefix(&mut self, rel: &str) -> Check<DeleteResponse> {
        let prefix = self.key(rel);
        let actual = self.registry.delete_prefix(&prefix).await;
        let expected = self.model.delete_prefix(&prefix);
        self.same(
            &format!("delete_prefix {rel:?}"),
            actual,
            expected,
            delete_view,
        )?
        .map_err(|e| format!("delete_prefix {rel:?} failed: {e}"))
    }

    /// A grant whose outcome the model decides.
    pub(crate) async fn try_grant(&mut self, ttl: i64) -> Check<Result<LeaseGrant>> {
        let actual = self.registry.lease_grant(ttl, None).await;
        let id = actual
            .as_ref()
            .map_or(crate::contract::sequence::UNKNOWN_LEASE, |g| g.id);
        let expected = self.model.lease_grant(ttl, id);
        if actual.is_ok() {
            self.norm.granted(id);
        }
        self.same(&format!("grant ttl {ttl}"), actual, expected, |_, g| g.ttl)
    }

    /// A grant that the model says succeeds.
    pub(crate) async fn grant(&mut self, ttl: i64) -> Check<LeaseGrant> {
        self.try_grant(ttl)
            .await?
            .map_err(|e| format!("grant ttl {ttl} failed: {e}"))
    }

    /// A keep-alive whose outcome the model decides.
    pub(crate) async fn keep_alive(&mut self, id: LeaseId) -> Check<Result<i64>> {
        let actual = self.registry.lease_keep_alive(id).await;
        let expected = self.model.lease_keep_alive(id);
        self.same(&format!("keep_alive {id}"), actual, expected, |_, t| *t)
    }

    /// A keep-alive batch whose outcome, as a whole and lease by lease, the model decides.
    pub(crate) async fn keep_alive_many(
        &mut self,
        ids: &[LeaseId],
    ) -> Check<Result<Vec<Result<i64>>>> {
        let actual = self.registry.lease_keep_alive_many(ids).await;
        let expected = self.model.lease_keep_alive_many(ids);
        let what = format!("keep_alive_many of {} leases", ids.len());
        self.same(&what, actual, expected, |n, answers| n.renewals(answers))
    }

    /// A revoke whose outcome the model decides.
    pub(crate) async fn revoke(&mut self, id: LeaseId) -> Check<Result<Revision>> {
        let actual = self.registry.lease_revoke(id).await;
        let expected = self.model.lease_revoke(id);
        self.same(&format!("revoke {id}"), actual, expected, |n, r| n.rev(*r))
    }

    /// A time-to-live whose outcome (granted TTL and keys) the model decides.
    pub(crate) async fn time_to_live(
        &mut self,
        id: LeaseId,
    ) -> Check<Result<registry_api::LeaseTimeToLive>> {
        let actual = self.registry.lease_time_to_live(id).await;
        let expected = self.model.lease_time_to_live(id);
        self.same(&format!("time_to_live {id}"), actual, expected, |n, t| {
            (
                t.granted_ttl,
                t.keys.iter().map(|k| n.key(k)).collect::<Vec<_>>(),
            )
        })
    }

    /// A compaction that the model says succeeds.
    pub(crate) async fn compact(&mut self, at: Revision) -> Check<Revision> {
        let actual = self.registry.compact(at).await;
        let expected = self.model.compact(at);
        self.same(&format!("compact at {at}"), actual, expected, |n, r| {
            n.rev(*r)
        })?
        .map_err(|e| format!("compact at {at} failed: {e}"))
    }

    /// Opens a watch on `rel` (relative prefix).
    pub(crate) async fn watch(&self, rel: &str, opts: WatchOptions) -> Check<WatchStream> {
        self.registry
            .watch(&self.key(rel), opts)
            .await
            .map_err(|e| format!("watch {rel:?} failed: {e}"))
    }

    /// Reads `stream` (a watch on `rel` from `start`) up to the model's last change under the
    /// prefix, checks every watch property and that the events are exactly the model's history
    /// from `start`, and returns the batches with events.
    pub(crate) async fn expect_watch(
        &self,
        stream: &mut WatchStream,
        rel: &str,
        start: Revision,
        prev_kv: bool,
        compacted_at_open: Option<Revision>,
    ) -> Check<Vec<WatchBatch>> {
        let prefix = self.key(rel);
        let want = self
            .model
            .changes_since(&prefix, start, prev_kv, compacted_at_open);
        let until = want.last().map(|b| b.revision);
        let got = match until {
            Some(u) => read_until(stream, Some(u), self.caps.watch_timeout()).await,
            None => Default::default(),
        };
        if let Some(e) = &got.error {
            return Err(format!("watch {rel:?} from {start} failed: {e}"));
        }
        self.settle().await;
        let extra = ready_now(stream);
        let mut all = got.batches.clone();
        all.extend(extra.batches.iter().cloned());
        check_properties(&all, &prefix, start)?;
        // A progress notification at R comes after every change up to R.
        let mut delivered = BTreeSet::new();
        for batch in &all {
            if !batch.is_progress() {
                delivered.insert(batch.revision);
                continue;
            }
            if let Some(missing) = want
                .iter()
                .find(|w| w.revision <= batch.revision && !delivered.contains(&w.revision))
            {
                return Err(format!(
                    "W6 bookmarkable: watch {rel:?} sent a progress notification at rev {} before the change at rev {}",
                    batch.revision.0, missing.revision.0
                ));
            }
        }
        let events = got.event_batches();
        let (g, w) = (self.batches(&events), self.batches(&want));
        ensure!(
            g == w,
            "W4 reliable: watch {rel:?} from rev {} delivered other events than the history{}:\n    {}",
            start.0,
            if got.timed_out { " (timed out waiting)" } else { "" },
            self.norm.event_diff(&w, &g).join("\n    ")
        );
        let more: Vec<Revision> = extra.event_batches().iter().map(|b| b.revision).collect();
        ensure!(
            more.is_empty(),
            "W2 unique: watch {rel:?} delivered revisions {more:?} beyond the history"
        );
        Ok(events)
    }

    pub(crate) fn batches(&self, b: &[WatchBatch]) -> Vec<ObsBatch> {
        b.iter().map(|b| self.norm.batch(b)).collect()
    }

    /// Gives a watch time to deliver anything it still holds.
    pub(crate) async fn settle(&self) {
        match self.caps.time {
            Time::Real => tokio::time::sleep(Duration::from_millis(150)).await,
            Time::Virtual => {
                for _ in 0..8 {
                    tokio::task::yield_now().await;
                }
            }
        }
    }

    /// Lets `by` pass: advances a virtual clock (and the model's), sleeps on real time (the
    /// model's clock is then only a lower bound, so real-time cases check timing themselves).
    pub(crate) async fn pass(&mut self, by: Duration) {
        match self.caps.time {
            Time::Virtual => {
                self.backend.advance(by).await;
                self.model.advance(by);
            }
            Time::Real => tokio::time::sleep(by).await,
        }
    }

    /// Whether `rel` exists now.
    pub(crate) async fn exists(&self, rel: &str) -> Check<bool> {
        let got = self
            .registry
            .get(&self.key(rel))
            .await
            .map_err(|e| format!("get {rel:?} failed: {e}"))?;
        Ok(got.kv.is_some())
    }

    /// On real time: polls `rel` every 50 ms until it is gone. Fails only on proof of a late
    /// expiry: a get sent after `deadline` that still found the key (a slow machine delaying
    /// the polls proves nothing).
    pub(crate) async fn wait_gone(&self, rel: &str, deadline: Instant) -> Check {
        loop {
            let sent = Instant::now();
            if !self.exists(rel).await? {
                return Ok(());
            }
            ensure!(
                sent < deadline,
                "L3: {rel:?} still exists past its lease's deadline plus the declared lateness of {:?}",
                self.caps.expiry_lateness
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// On real time: `rel` must exist until `until`. Fails only on proof of an early expiry: a
    /// "gone" answer received before `until`.
    pub(crate) async fn alive_until(&self, rel: &str, until: Instant, what: &str) -> Check {
        let exists = self.exists(rel).await?;
        ensure!(exists || Instant::now() >= until, "{what}");
        Ok(())
    }

    /// The answer to `what` must be `err`-shaped: a failure with exactly this normalised kind.
    pub(crate) fn expect_err<T: Debug>(
        &self,
        what: &str,
        got: Result<T>,
        ok: impl Fn(&Error) -> bool,
        wanted: &str,
    ) -> Check {
        match got {
            Err(e) if ok(&e) => Ok(()),
            Err(e) => Err(format!("{what}: expected {wanted}, got the error {e:?}")),
            Ok(v) => Err(format!("{what}: expected {wanted}, got success {v:?}")),
        }
    }
}

fn delete_view(
    n: &Normalizer,
    d: &DeleteResponse,
) -> (i64, i64, Vec<crate::contract::observe::ObsKv>) {
    (n.rev(d.revision), d.deleted, n.kvs(&d.prev_kvs))
}
