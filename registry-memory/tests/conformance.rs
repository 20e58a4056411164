//! The whole conformance suite on the simulator: one named test per case, on the manual clock.

use async_trait::async_trait;
use registry_api::Registry;
use registry_conformance::{Backend, Capabilities};
use registry_memory::MemoryRegistry;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Hands out a fresh store on a manual clock per call, and advances the last one.
#[derive(Debug, Default)]
struct Simulator {
    current: Mutex<Option<MemoryRegistry>>,
}

#[async_trait]
impl Backend for Simulator {
    async fn registry(&self) -> Arc<dyn Registry> {
        let registry = MemoryRegistry::with_manual_clock();
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(registry.clone());
        Arc::new(registry)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::simulator()
    }

    async fn advance(&self, by: Duration) {
        if let Some(registry) = &*self.current.lock().unwrap_or_else(|p| p.into_inner()) {
            registry.advance(by);
        }
    }
}

fn simulator() -> Simulator {
    Simulator::default()
}

registry_conformance::conformance_suite!(simulator);

/// A sequence proptest once shrank a failure to (a put, then a list at a revision picked
/// relative to the base), pinned as it is: a stored proptest seed replays through whatever the
/// generator is today, so it would no longer stand for this sequence.
#[test]
fn a_put_then_a_list_at_a_revision_relative_to_the_base() {
    use registry_conformance::ops::{KeySel, LeaseSel, RevSel, ValueSel};
    use registry_conformance::Op;
    let ops = [
        Op::Put {
            key: KeySel::Key(0),
            value: ValueSel::Small(0),
            lease: LeaseSel::None,
            prev_kv: false,
        },
        Op::List {
            prefix: 0,
            at: Some(RevSel(6030)),
        },
    ];
    let observation = registry_conformance::runtime()
        .block_on(registry_conformance::check(
            &simulator(),
            "pinned_put_list",
            &ops,
        ))
        .unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(observation.steps.len(), 2, "{observation:?}");
}
