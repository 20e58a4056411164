//! Pickers on the simulator with virtual time: the strategies, the guard (drop, panic,
//! cancellation), bounded ejection (growing time, cap, probe, panic threshold), draining
//! instances, bounded memory, and retrying on another node.

mod common;

use common::{hello, settle};
use registry_api::Registry;
use registry_memory::MemoryRegistry;
use registry_service::{
    Discovery, DiscoveryOptions, EjectionOptions, Health, InstanceSource, Metadata, Pick, Picker,
    PickerOptions, Registration, RegistrationOptions, ServiceInstance, Status, Strategy,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A discovery cache of `hello` with one instance per weight, ids n0, n1, ...
async fn cluster(weights: &[u32]) -> (Discovery, Vec<Registration>) {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let mut registrations = Vec::new();
    for (i, weight) in weights.iter().enumerate() {
        let instance =
            hello(&format!("n{i}")).with_metadata(Metadata::default().with_weight(*weight));
        registrations.push(
            Registration::start(registry.clone(), instance, RegistrationOptions::default())
                .await
                .unwrap(),
        );
    }
    let discovery = Discovery::start(registry, "hello", DiscoveryOptions::default()).unwrap();
    discovery
        .wait_synced(Duration::from_secs(5))
        .await
        .expect("synced");
    assert_eq!(discovery.len(), weights.len());
    (discovery, registrations)
}

/// `count` serving instances n0, n1, ... as a fixed list.
fn fixed(count: usize) -> Arc<[ServiceInstance]> {
    (0..count).map(|i| hello(&format!("n{i}"))).collect()
}

/// A source the test can change.
#[derive(Debug)]
struct Changing(Mutex<Arc<[ServiceInstance]>>);

impl Changing {
    fn set(&self, instances: Arc<[ServiceInstance]>) {
        *self.0.lock().unwrap() = instances;
    }
}

/// The picker's handle on a [`Changing`] source.
#[derive(Debug)]
struct Shared(Arc<Changing>);

impl InstanceSource for Shared {
    fn instances(&self) -> Arc<[ServiceInstance]> {
        self.0 .0.lock().unwrap().clone()
    }
}

/// Picks `picks` times, each call succeeding at once, and counts the picks per node.
fn tally(picker: &Picker, picks: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..picks {
        let node = picker.pick().expect("a node");
        *counts.entry(node.id.clone()).or_default() += 1;
        node.success();
    }
    counts
}

/// A call on `id`, whatever the strategy: every other node excluded.
fn pick_on(picker: &Picker, nodes: usize, id: &str) -> Pick {
    let others: Vec<String> = (0..nodes)
        .map(|i| format!("n{i}"))
        .filter(|other| other != id)
        .collect();
    let pick = picker.pick_excluding(&others).expect("the node");
    assert_eq!(pick.id, id);
    pick
}

fn ejecting(failures: u32) -> EjectionOptions {
    EjectionOptions::default()
        .consecutive_failures(failures)
        .ejection_time(Duration::from_secs(10), Duration::from_secs(25))
        .max_ejection_percent(100)
        .panic_threshold_percent(0)
}

#[tokio::test(start_paused = true)]
async fn round_robin_is_exact() {
    let (discovery, _registrations) = cluster(&[1, 1, 1, 1, 1]).await;
    let picker = Picker::new(discovery, PickerOptions::new(Strategy::RoundRobin));
    let counts = tally(&picker, 5 * 200);
    assert_eq!(counts.len(), 5);
    assert!(counts.values().all(|&n| n == 200), "{counts:?}");
}

#[tokio::test(start_paused = true)]
async fn weighted_picks_follow_the_weights() {
    let weights = [1, 2, 7];
    let (discovery, _registrations) = cluster(&weights).await;
    let picker = Picker::new(discovery, PickerOptions::new(Strategy::Weighted).seed(42));
    let picks = 20_000;
    let counts = tally(&picker, picks);
    let total: u32 = weights.iter().sum();
    for (i, weight) in weights.iter().enumerate() {
        let expected = f64::from(*weight) / f64::from(total);
        let share = counts[&format!("n{i}")] as f64 / picks as f64;
        assert!(
            (share - expected).abs() < 0.02,
            "n{i}: {share} vs {expected}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn random_picks_spread_evenly_and_repeat_with_the_seed() {
    let (discovery, _registrations) = cluster(&[1, 1, 1, 1]).await;
    let picker = Picker::new(
        discovery.clone(),
        PickerOptions::new(Strategy::Random).seed(5),
    );
    let counts = tally(&picker, 8_000);
    assert!(
        counts.values().all(|&n| (1_800..=2_200).contains(&n)),
        "{counts:?}"
    );
    let again = Picker::new(discovery, PickerOptions::new(Strategy::Random).seed(5));
    assert_eq!(tally(&again, 8_000), counts);
}

#[tokio::test(start_paused = true)]
async fn power_of_two_choices_avoids_calls_in_flight() {
    let (discovery, _registrations) = cluster(&[1, 1, 1]).await;
    let picker = Picker::new(
        discovery,
        PickerOptions::new(Strategy::PowerOfTwoChoices).seed(1),
    );
    // n0's call never finishes in this test.
    let _stuck = pick_on(&picker, 3, "n0");
    assert_eq!(picker.in_flight("n0"), 1);
    let counts = tally(&picker, 3_000);
    // With two candidates out of three, n0 wins only against itself: never.
    assert_eq!(counts.get("n0"), None, "{counts:?}");
    let n1 = counts["n1"] as f64;
    let n2 = counts["n2"] as f64;
    assert!((n1 / (n1 + n2) - 0.5).abs() < 0.05, "{counts:?}");
}

#[tokio::test(start_paused = true)]
async fn power_of_two_choices_avoids_the_slow_node_and_latency_is_exact() {
    let picker = Picker::new(
        fixed(3),
        PickerOptions::new(Strategy::PowerOfTwoChoices).seed(3),
    );
    for (id, millis) in [("n0", 50), ("n1", 2), ("n2", 2)] {
        let call = pick_on(&picker, 3, id);
        tokio::time::sleep(Duration::from_millis(millis)).await;
        call.success();
        // Measured on tokio's clock from the pick: exact on virtual time.
        assert_eq!(picker.latency(id), Some(Duration::from_millis(millis)));
    }
    let counts = tally(&picker, 1_000);
    assert_eq!(counts.get("n0"), None, "{counts:?}");
    // Round-robin would not care.
    let plain = Picker::new(fixed(3), PickerOptions::new(Strategy::RoundRobin));
    assert_eq!(tally(&plain, 999)["n0"], 333);
}

#[tokio::test(start_paused = true)]
async fn power_of_two_choices_gives_a_node_not_picked_for_a_second_one_call() {
    let source = Arc::new(Changing(Mutex::new(fixed(3))));
    let picker = Picker::new(
        Shared(source.clone()),
        PickerOptions::new(Strategy::PowerOfTwoChoices).seed(4),
    );
    for (id, millis) in [("n0", 50), ("n1", 2), ("n2", 2)] {
        let call = pick_on(&picker, 3, id);
        tokio::time::sleep(Duration::from_millis(millis)).await;
        call.success();
    }
    assert_eq!(tally(&picker, 1_000).get("n0"), None);
    settle(Duration::from_secs(1)).await;
    // Measured again once, found slow again, avoided again.
    assert_eq!(tally(&picker, 1_000).get("n0"), Some(&1));
    // A new node is tried at once rather than starved behind its default estimate.
    source.set(fixed(4));
    assert!(tally(&picker, 100).contains_key("n3"));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_guard_ends_the_in_flight_count() {
    let picker = Picker::new(fixed(2), PickerOptions::default());
    let a = picker.pick().unwrap();
    let b = picker.pick().unwrap();
    let c = picker.pick().unwrap();
    assert_eq!((a.id.as_str(), c.id.as_str()), ("n0", "n0"));
    assert_eq!(picker.in_flight("n0"), 2);
    assert_eq!(picker.in_flight("n1"), 1);
    drop(a);
    b.success();
    c.failure();
    assert_eq!(picker.in_flight("n0"), 0);
    assert_eq!(picker.in_flight("n1"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_call_ends_its_count() {
    let picker = Picker::new(fixed(2), PickerOptions::default());
    let held = picker.clone();
    let task = tokio::spawn(async move {
        let call = held.pick().unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        if call.id == "n0" {
            panic!("the handler panicked mid-call");
        }
        call.success();
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(picker.in_flight("n0"), 1);
    assert!(task.await.unwrap_err().is_panic());
    assert_eq!(picker.in_flight("n0"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_call_ends_its_count() {
    let picker = Picker::new(fixed(1), PickerOptions::default());
    let call = async {
        let call = picker.pick().unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        call.success();
    };
    let cancelled = tokio::time::timeout(Duration::from_secs(1), call).await;
    assert!(cancelled.is_err());
    assert_eq!(picker.in_flight("n0"), 0);
    // Cancellation is not a failure: nothing counts against the node.
    assert_eq!(picker.health("n0"), Some(Health::Healthy));
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_eject_and_a_success_resets_the_count() {
    let options = PickerOptions::default().ejection(ejecting(3));
    let picker = Picker::new(fixed(3), options);
    pick_on(&picker, 3, "n1").failure();
    pick_on(&picker, 3, "n1").failure();
    pick_on(&picker, 3, "n1").success();
    pick_on(&picker, 3, "n1").failure();
    pick_on(&picker, 3, "n1").failure();
    assert!(
        !picker.is_ejected("n1"),
        "the success started the count over"
    );
    pick_on(&picker, 3, "n1").failure();
    assert!(picker.is_ejected("n1"));
    let counts = tally(&picker, 100);
    assert_eq!(counts.get("n1"), None, "{counts:?}");
}

#[tokio::test(start_paused = true)]
async fn ejection_time_grows_with_each_ejection_up_to_the_cap_and_a_probe_comes_first() {
    let picker = Picker::new(fixed(4), PickerOptions::default().ejection(ejecting(1)));
    let start = tokio::time::Instant::now();
    pick_on(&picker, 4, "n1").failure();
    assert_eq!(
        picker.health("n1"),
        Some(Health::Ejected {
            until: start + Duration::from_secs(10)
        })
    );
    settle(Duration::from_secs(9)).await;
    assert!(matches!(picker.health("n1"), Some(Health::Ejected { .. })));
    assert_eq!(tally(&picker, 6).get("n1"), None);
    break_probe(&picker, 2).await;
    let now = tokio::time::Instant::now();
    assert_eq!(
        picker.health("n1"),
        Some(Health::Ejected {
            until: now + Duration::from_secs(20)
        })
    );
    break_probe(&picker, 3).await;
    // Third ejection: 25 s, the cap, not 30.
    let now = tokio::time::Instant::now();
    assert_eq!(
        picker.health("n1"),
        Some(Health::Ejected {
            until: now + Duration::from_secs(25)
        })
    );
    settle(Duration::from_secs(25)).await;
    assert_eq!(picker.health("n1"), Some(Health::AwaitingProbe));
    let probe = picker.pick().unwrap();
    assert!(probe.is_probe() && probe.id == "n1");
    probe.success();
    assert_eq!(picker.health("n1"), Some(Health::Healthy));
    assert_eq!(tally(&picker, 8)["n1"], 2, "full traffic again");
}

/// Waits out the rest of the current ejection, takes the probe and fails it; checks the new
/// ejection is the `times`-th.
async fn break_probe(picker: &Picker, times: u32) {
    while picker.health("n1") != Some(Health::AwaitingProbe) {
        settle(Duration::from_secs(1)).await;
    }
    let probe = picker.pick().unwrap();
    assert!(
        probe.is_probe(),
        "the first pick after the ejection is the trial"
    );
    assert_eq!(probe.id, "n1");
    // While the trial is in flight the node takes no other call.
    assert_eq!(tally(picker, 6).get("n1"), None);
    assert_eq!(picker.health("n1"), Some(Health::Probing));
    probe.failure();
    assert_eq!(picker.times_ejected("n1"), times);
}

#[tokio::test(start_paused = true)]
async fn ejection_lengths_are_base_times_count_capped() {
    let picker = Picker::new(fixed(4), PickerOptions::default().ejection(ejecting(1)));
    pick_on(&picker, 4, "n2").failure();
    let mut lengths = Vec::new();
    for _ in 0..4 {
        let Some(Health::Ejected { until }) = picker.health("n2") else {
            panic!("n2 should be ejected: {:?}", picker.health("n2"));
        };
        let now = tokio::time::Instant::now();
        lengths.push((until - now).as_secs());
        tokio::time::sleep_until(until).await;
        let probe = picker.pick().unwrap();
        assert!(probe.is_probe());
        probe.failure();
    }
    assert_eq!(lengths, [10, 20, 25, 25]);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_is_tried_again() {
    let picker = Picker::new(fixed(3), PickerOptions::default().ejection(ejecting(1)));
    pick_on(&picker, 3, "n0").failure();
    settle(Duration::from_secs(10)).await;
    let probe = picker.pick().unwrap();
    assert!(probe.is_probe());
    drop(probe);
    assert_eq!(picker.health("n0"), Some(Health::AwaitingProbe));
    let again = picker.pick().unwrap();
    assert!(again.is_probe() && again.id == "n0");
}

#[tokio::test(start_paused = true)]
async fn at_most_the_configured_share_of_nodes_is_ejected() {
    for (percent, most) in [(10, 1), (30, 3), (0, 0)] {
        let ejection = ejecting(1).max_ejection_percent(percent);
        let picker = Picker::new(fixed(10), PickerOptions::default().ejection(ejection));
        for i in 0..10 {
            pick_on(&picker, 10, &format!("n{i}")).failure();
        }
        let out = (0..10)
            .filter(|i| picker.is_ejected(&format!("n{i}")))
            .count();
        assert_eq!(out, most, "max ejection {percent} %");
    }
}

#[tokio::test(start_paused = true)]
async fn below_the_panic_threshold_every_node_is_picked() {
    let ejection = ejecting(1).panic_threshold_percent(50);
    let picker = Picker::new(fixed(4), PickerOptions::default().ejection(ejection));
    pick_on(&picker, 4, "n0").failure();
    pick_on(&picker, 4, "n1").failure();
    // Two healthy of four: 50 %, not below.
    let counts = tally(&picker, 20);
    assert_eq!(counts.keys().collect::<Vec<_>>(), ["n2", "n3"]);
    pick_on(&picker, 4, "n2").failure();
    assert!(picker.is_ejected("n2"));
    // One healthy of four: panic, every node takes calls.
    let counts = tally(&picker, 20);
    assert_eq!(counts.len(), 4, "{counts:?}");
}

#[tokio::test(start_paused = true)]
async fn draining_instances_are_not_picked_unless_asked() {
    let nodes: Arc<[ServiceInstance]> = vec![
        hello("n0"),
        hello("n1").with_status(Status::Draining),
        hello("n2").with_status(Status::Unknown),
    ]
    .into();
    let picker = Picker::new(nodes.clone(), PickerOptions::default());
    assert_eq!(tally(&picker, 9).keys().collect::<Vec<_>>(), ["n0"]);
    let all = Picker::new(nodes, PickerOptions::default().include_draining(true));
    assert_eq!(tally(&all, 9).len(), 3);
    let draining: Arc<[ServiceInstance]> = vec![hello("n0").with_status(Status::Draining)].into();
    assert!(Picker::new(draining, PickerOptions::default())
        .pick()
        .is_none());
}

#[tokio::test(start_paused = true)]
async fn records_of_nodes_gone_from_the_source_are_forgotten() {
    let source = Arc::new(Changing(Mutex::new(fixed(1_000))));
    let picker = Picker::new(
        Shared(source.clone()),
        PickerOptions::default().ejection(ejecting(1)),
    );
    let held = pick_on(&picker, 1_000, "n7");
    pick_on(&picker, 1_000, "n1").failure();
    assert_eq!(picker.tracked(), 1_000);
    source.set(fixed(2));
    assert_eq!(picker.tracked(), 2);
    assert!(picker.is_ejected("n1"), "n1 is still listed");
    // A guard of a node that left ends quietly.
    held.failure();
    source.set(fixed(0));
    assert_eq!(picker.tracked(), 0);
    assert!(picker.pick().is_none());
    // Back as a new node: a clean record.
    source.set(fixed(2));
    assert!(!picker.is_ejected("n1"));
}

#[tokio::test(start_paused = true)]
async fn a_retry_with_default_options_never_lands_on_the_node_that_failed() {
    let picker = Picker::new(fixed(3), PickerOptions::new(Strategy::Random).seed(11));
    let mut same_with_plain_pick = 0;
    for _ in 0..300 {
        let first = picker.pick().unwrap();
        let failed = first.id.clone();
        first.failure();
        let retry = picker.pick_excluding(&[failed.as_str()]).unwrap();
        assert_ne!(retry.id, failed);
        retry.success();
        // What a plain second pick does: the same node again, often.
        let first = picker.pick().unwrap();
        let failed = first.id.clone();
        first.failure();
        let plain = picker.pick().unwrap();
        same_with_plain_pick += usize::from(plain.id == failed);
        plain.success();
    }
    assert!(same_with_plain_pick > 50, "{same_with_plain_pick}");
    // Nothing left once every node is excluded.
    assert!(picker.pick_excluding(&["n0", "n1", "n2"]).is_none());
}

#[tokio::test(start_paused = true)]
async fn power_of_two_choices_picks_a_new_node_next_and_keeps_it_in_traffic() {
    let source = Arc::new(Changing(Mutex::new(fixed(3))));
    let picker = Picker::new(
        Shared(source.clone()),
        PickerOptions::new(Strategy::PowerOfTwoChoices).seed(4),
    );
    // Three nodes measured at 1 ms.
    for _ in 0..30 {
        let call = picker.pick().expect("a node");
        tokio::time::sleep(Duration::from_millis(1)).await;
        call.success();
    }
    // A new node is the very next pick; its call is dropped with no outcome (cancelled), so
    // it still has no latency sample.
    source.set(fixed(4));
    assert_eq!(
        picker.pick().expect("a node").id,
        "n3",
        "the first pick after it appears"
    );
    // Unmeasured, it is costed as its rival: about its share of 300 calls, not none until
    // `force_pick_after` (1 s) has passed, and not all of them.
    let mut n3 = 0;
    for _ in 0..300 {
        let call = picker.pick().expect("a node");
        n3 += usize::from(call.id == "n3");
        drop(call);
    }
    println!("the unmeasured new node got {n3} of 300 picks (a fair share: 75)");
    assert!((40..=150).contains(&n3), "{n3} of 300");
    // Several new at once: the k-th within k picks, in the source's order, skipping the
    // excluded.
    source.set(fixed(7));
    assert_eq!(picker.pick_excluding(&["n4"]).expect("a node").id, "n5");
    let next: Vec<String> = (0..2).map(|_| picker.pick().unwrap().id.clone()).collect();
    assert_eq!(next, ["n4", "n6"]);
}
