//! Pickers over a live discovery cache on the simulator: exact round-robin, weighted shares,
//! power-of-two-choices avoiding load, and the down-instance policy on virtual time. (That a
//! picker follows its cache as instances leave is a scenario of the service-layer suite.)

mod common;

use common::{hello, settle};
use registry_api::Registry;
use registry_memory::MemoryRegistry;
use registry_service::{
    Discovery, DiscoveryOptions, Metadata, Picker, PickerOptions, Registration,
    RegistrationOptions, Strategy,
};
use std::collections::BTreeMap;
use std::sync::Arc;
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
    discovery.wait_synced().await;
    assert_eq!(discovery.len(), weights.len());
    (discovery, registrations)
}

fn tally(picker: &Picker, picks: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..picks {
        let node = picker.pick().expect("a node");
        picker.report_success(&node.id);
        *counts.entry(node.id).or_default() += 1;
    }
    counts
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
async fn random_picks_spread_evenly() {
    let (discovery, _registrations) = cluster(&[1, 1, 1, 1]).await;
    let picker = Picker::new(discovery, PickerOptions::new(Strategy::Random).seed(5));
    let counts = tally(&picker, 8_000);
    assert!(
        counts.values().all(|&n| (1_800..=2_200).contains(&n)),
        "{counts:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn power_of_two_choices_prefers_the_less_loaded() {
    let (discovery, _registrations) = cluster(&[1, 1, 1]).await;
    let picker = Picker::new(
        discovery,
        PickerOptions::new(Strategy::PowerOfTwoChoices).seed(1),
    );
    // n0 is slow: its call never finishes in this test.
    loop {
        let node = picker.pick().unwrap();
        if node.id == "n0" {
            break;
        }
        picker.report_success(&node.id);
    }
    assert_eq!(picker.in_flight("n0"), 1);
    let counts = tally(&picker, 3_000);
    // With two candidates out of three, n0 wins only against itself: never.
    assert_eq!(counts.get("n0"), None, "{counts:?}");
    let n1 = counts["n1"] as f64;
    let n2 = counts["n2"] as f64;
    assert!((n1 / (n1 + n2) - 0.5).abs() < 0.05, "{counts:?}");
}

#[tokio::test(start_paused = true)]
async fn a_failing_node_is_left_out_then_restored() {
    let (discovery, _registrations) = cluster(&[1, 1, 1]).await;
    let options = PickerOptions::new(Strategy::RoundRobin)
        .failure_threshold(3)
        .down_for(Duration::from_secs(30));
    let picker = Picker::new(discovery, options);
    for _ in 0..2 {
        picker.report_failure("n1");
    }
    assert!(!picker.is_down("n1"), "two failures are not yet enough");
    picker.report_failure("n1");
    assert!(picker.is_down("n1"));
    let counts = tally(&picker, 100);
    assert_eq!(counts.get("n1"), None);
    assert_eq!(counts.values().sum::<usize>(), 100);

    settle(Duration::from_secs(29)).await;
    assert!(picker.is_down("n1"));
    settle(Duration::from_secs(1)).await;
    assert!(!picker.is_down("n1"));
    let counts = tally(&picker, 99);
    assert_eq!(counts["n1"], 33, "back in the rotation: {counts:?}");
}

#[tokio::test(start_paused = true)]
async fn when_every_node_is_down_all_are_candidates() {
    let (discovery, _registrations) = cluster(&[1, 1]).await;
    let picker = Picker::new(discovery, PickerOptions::default().failure_threshold(1));
    picker.report_failure("n0");
    picker.report_failure("n1");
    assert!(picker.is_down("n0") && picker.is_down("n1"));
    let picked: Vec<String> = (0..4).map(|_| picker.pick().unwrap().id).collect();
    assert_eq!(picked, ["n0", "n1", "n0", "n1"]);
    // One success brings a node back; the other stays out.
    picker.report_success("n0");
    let picked: Vec<String> = (0..3).map(|_| picker.pick().unwrap().id).collect();
    assert_eq!(picked, ["n0", "n0", "n0"]);
}
