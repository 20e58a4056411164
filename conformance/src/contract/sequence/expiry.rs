//! Time in a sequence: advances of a virtual clock, and following a backend whose reaper
//! deletes expired leases' keys late (within its declared
//! [`expiry_lateness`](crate::contract::Capabilities::expiry_lateness)).

use super::Session;
use crate::contract::backend::{Backend, Time};
use crate::contract::observe::{Outcome, Step};
use crate::failure::{ensure, Check};
use registry_api::{Bytes, ListOptions};
use std::collections::BTreeSet;
use std::time::Duration;

impl<B: Backend + ?Sized> Session<'_, B> {
    /// Moves virtual time (real time passes by itself: skipped), then checks that the backend
    /// deleted what it had to by now.
    pub(super) async fn advance(&mut self, by: Duration) -> Check {
        let millis = by.as_millis();
        let outcome = match self.caps.time {
            Time::Virtual => {
                self.backend.advance(by).await;
                self.model
                    .advance_with_lateness(by, self.caps.expiry_lateness);
                Outcome::Advanced
            }
            Time::Real => Outcome::Skipped,
        };
        self.steps.push(Step {
            request: format!("advance {millis} ms"),
            outcome: outcome.clone(),
        });
        if outcome == Outcome::Skipped {
            self.note(format!("advance {millis} ms: real time, not sent"));
            return Ok(());
        }
        self.note(format!(
            "advance {millis} ms (virtual time now {:?})",
            self.model.now()
        ));
        self.follow_the_reaper(true).await
    }

    /// With leases past their deadline whose keys the backend may delete late: reads the
    /// prefix and applies to the model the deletions the backend made (all of a lease's keys,
    /// in deadline order), then checks that the revisions agree. After an advance it checks
    /// the revision even with nothing pending: a lease past its deadline plus the declared
    /// lateness must be gone by now.
    pub(super) async fn follow_the_reaper(&mut self, just_advanced: bool) -> Check {
        let expired = self.model.expired_leases();
        if expired.is_empty() && !just_advanced {
            return Ok(());
        }
        let listing = self
            .registry
            .list(&self.prefix, ListOptions::default())
            .await
            .map_err(|e| format!("reading the prefix after time moved failed: {e}"))?;
        let present: BTreeSet<Bytes> = listing.kvs.iter().map(|kv| kv.key.clone()).collect();
        for id in expired {
            let Some(keys) = self.model.lease(id).map(|l| l.keys.clone()) else {
                continue;
            };
            let gone = keys.iter().filter(|k| !present.contains(*k)).count();
            if keys.is_empty() || gone == 0 {
                continue;
            }
            let name = self.request(|n| n.lease(id)).1;
            ensure!(
                gone == keys.len(),
                "L5: the backend deleted {gone} of the {} keys of expired lease {name}: a lease's keys go in one revision",
                keys.len()
            );
            let revision = self.model.reap(id).map_err(|e| e.to_string())?;
            self.note(format!(
                "the backend deleted the keys of expired lease {name} (late, within its declared lateness): rev {}",
                revision.0
            ));
        }
        ensure!(
            listing.revision == self.model.revision(),
            "L3: after time moved the backend is at rev {} and the model at rev {}: a lease past its deadline plus the declared lateness of {:?} still has its keys, or expired leases' keys went out of deadline order",
            listing.revision.0,
            self.model.revision().0,
            self.caps.expiry_lateness
        );
        Ok(())
    }
}
