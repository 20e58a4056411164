//! How the generated cases (`model_check`, `public_api_survives_arbitrary_input`) run:
//! numbered sequences, each drawn from its own seed (derived from the run's seed and its
//! number), so that any one of them can be run again alone; a failure is shrunk (proptest's
//! shrinking, then single steps dropped while it still fails) and reported with its number, the
//! seed, and the one command that replays exactly it.
//!
//! Nothing is saved between runs. proptest's regression files replayed old seeds through
//! whatever the generator had become, before the new sequences, and a fixed seed already runs
//! the same sequences every time. To keep a shrunk sequence, pin it as a test of its own with
//! [`check`](crate::check), as `registry-memory/tests/conformance.rs` does.

use crate::failure::Failure;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use registry_api::wrap::SplitMix64;
use std::fmt::Debug;

/// The seed used when `REGISTRY_CONFORMANCE_SEED` is not set: the same sequences on every run.
pub(crate) const DEFAULT_SEED: u64 = 0x5eed_0005;

/// Sets the run's seed (decimal, or hex with `0x`).
pub const SEED_VAR: &str = "REGISTRY_CONFORMANCE_SEED";

/// Runs only the sequence of this number (as a failure prints it).
pub const CASE_VAR: &str = "REGISTRY_CONFORMANCE_CASE";

/// How many runs shrinking may take, in all.
const SHRINK_RUNS: u32 = 1_500;

/// Where a case was stamped, for the command that replays it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Site {
    /// The test file (`file!()` of the stamping macro).
    pub(crate) file: Option<&'static str>,
    /// The module that stamped it (`module_path!()`), when known.
    pub(crate) module: Option<&'static str>,
}

impl Site {
    /// `cargo test -p <package> --test <file stem> -- --exact <test name>`, as near as known.
    pub(crate) fn command(&self, case: &str) -> String {
        let mut command = "cargo test".to_owned();
        if let Ok(package) = std::env::var("CARGO_PKG_NAME") {
            command.push_str(&format!(" -p {package}"));
        }
        if let Some(stem) = self
            .file
            .and_then(|f| std::path::Path::new(f).file_stem())
            .map(|s| s.to_string_lossy().into_owned())
        {
            command.push_str(&format!(" --test {stem}"));
        }
        match self.module {
            Some(module) => {
                // The test's name is its path below the test crate's root module.
                let below: Vec<&str> = module.split("::").skip(1).collect();
                let mut name = below.join("::");
                if !name.is_empty() {
                    name.push_str("::");
                }
                command.push_str(&format!(" -- --exact {name}{case}"));
            }
            None => command.push_str(&format!(" -- {case}")),
        }
        command
    }
}

/// The run's seed: `REGISTRY_CONFORMANCE_SEED` if set, else the fixed default.
pub(crate) fn seed() -> u64 {
    std::env::var(SEED_VAR)
        .ok()
        .and_then(|v| parse_number(&v))
        .unwrap_or(DEFAULT_SEED)
}

fn parse_number(v: &str) -> Option<u64> {
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// The one sequence `REGISTRY_CONFORMANCE_CASE` asks for, if set.
pub(crate) fn only_case() -> Option<u32> {
    std::env::var(CASE_VAR)
        .ok()
        .and_then(|v| parse_number(&v))
        .and_then(|n| u32::try_from(n).ok())
}

/// The generator's seed for sequence `n` of a run seeded `seed`.
fn case_rng(seed: u64, n: u32) -> TestRng {
    let mut mix = SplitMix64::new(seed ^ u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut bytes = [0u8; 32];
    for chunk in bytes.chunks_mut(8) {
        chunk.copy_from_slice(&mix.next_u64().to_le_bytes());
    }
    TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
}

/// What a generated run found wrong: the failing sequence, shrunk, and how to replay it.
#[derive(Debug)]
pub(crate) struct Found<E> {
    /// The number of the first sequence that failed.
    pub(crate) case: u32,
    /// The shrunk sequence.
    pub(crate) shrunk: Vec<E>,
}

/// Runs sequences `0..cases` (or only `REGISTRY_CONFORMANCE_CASE`) of `strategy` through
/// `test`; on the first failure, shrinks it and returns a [`Failure`] of `name` that says which
/// sequence failed, the seed, the replay command, the shrunk sequence and its failure.
pub(crate) fn run<E, S, F>(
    name: &str,
    site: Site,
    cases: u32,
    strategy: &S,
    mut test: F,
) -> Result<(), Failure>
where
    E: Clone + Debug,
    S: Strategy<Value = Vec<E>>,
    F: FnMut(&[E]) -> Result<(), String>,
{
    let seed = seed();
    let numbers: Vec<u32> = match only_case() {
        Some(n) => vec![n],
        None => (0..cases).collect(),
    };
    for n in numbers {
        let mut runner = TestRunner::new_with_rng(Config::default(), case_rng(seed, n));
        let tree = strategy
            .new_tree(&mut runner)
            .map_err(|e| Failure::new(name, format!("cannot generate sequence {n}: {e}")))?;
        let original = tree.current();
        let Err(first) = test(&original) else {
            continue;
        };
        let (shrunk, why, runs) = shrink(tree, first.clone(), &mut test);
        let found = Found { case: n, shrunk };
        return Err(Failure::new(
            name,
            report(
                name,
                site,
                seed,
                cases,
                &found,
                original.len(),
                runs,
                &first,
                &why,
            ),
        ));
    }
    Ok(())
}

/// proptest's shrinking (simpler values while it still fails), then single steps dropped, one
/// at a time, while it still fails; at most [`SHRINK_RUNS`] runs in all. Returns the smallest
/// failing sequence, its failure, and the runs it took.
fn shrink<E, T, F>(mut tree: T, first: String, test: &mut F) -> (Vec<E>, String, u32)
where
    E: Clone + Debug,
    T: ValueTree<Value = Vec<E>>,
    F: FnMut(&[E]) -> Result<(), String>,
{
    let mut best = (tree.current(), first);
    let mut runs = 0;
    if tree.simplify() {
        while runs < SHRINK_RUNS {
            runs += 1;
            let candidate = tree.current();
            match test(&candidate) {
                Err(why) => {
                    best = (candidate, why);
                    if !tree.simplify() {
                        break;
                    }
                }
                Ok(()) => {
                    if !tree.complicate() {
                        break;
                    }
                }
            }
        }
    }
    // Selectors resolved against the state (the n-th lease granted so far) can keep a step
    // alive that proptest cannot drop alone: try dropping each step in turn.
    let mut i = best.0.len();
    while i > 0 && runs < SHRINK_RUNS {
        i -= 1;
        if i >= best.0.len() {
            continue;
        }
        let mut candidate = best.0.clone();
        candidate.remove(i);
        runs += 1;
        if let Err(why) = test(&candidate) {
            best = (candidate, why);
            i = best.0.len();
        }
    }
    (best.0, best.1, runs)
}

#[allow(clippy::too_many_arguments)]
fn report<E: Debug>(
    name: &str,
    site: Site,
    seed: u64,
    cases: u32,
    found: &Found<E>,
    original_len: usize,
    runs: u32,
    first: &str,
    why: &str,
) -> String {
    let first_line = first.lines().take(2).collect::<Vec<_>>().join("\n   ");
    format!(
        "generated sequence {case} (of {cases}, seed {seed:#x}) failed.\n\
         Replay exactly this sequence:\n    \
         {SEED_VAR}={seed:#x} {CASE_VAR}={case} {command}\n\
         It first failed with: {first_line}\n\
         Shrunk from {original_len} steps to {len} (in {runs} more runs), which fail with:\n\
         {why}\n\
         The shrunk sequence, to pin as a test with `registry_conformance::check`:\n    {shrunk:?}",
        case = found.case,
        command = site.command(name),
        len = found.shrunk.len(),
        shrunk = found.shrunk,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;

    #[test]
    fn a_failure_names_its_sequence_and_replays_alone_and_shrinks_to_what_fails() {
        // Fails on any sequence holding a 7 after a 3: the shrunk one is exactly [3, 7].
        let strategy = vec(0u8..10, 0..30);
        let fails = |s: &[u8]| {
            let three = s.iter().position(|x| *x == 3);
            match three.and_then(|i| s[i..].iter().position(|x| *x == 7)) {
                Some(_) => Err(format!("a 7 after a 3 in {s:?}")),
                None => Ok(()),
            }
        };
        let site = Site {
            file: Some("registry-memory/tests/conformance.rs"),
            module: Some("conformance::nested"),
        };
        let failure = run("model_check", site, 200, &strategy, fails).expect_err("no failure");
        let message = failure.message;
        assert!(
            message.contains("--test conformance -- --exact nested::model_check"),
            "{message}"
        );
        assert!(
            message.contains("fail with:\na 7 after a 3 in [3, 7]"),
            "{message}"
        );
        let case: u32 = message
            .split_whitespace()
            .nth(2)
            .and_then(|n| n.parse().ok())
            .expect("a sequence number");
        // The same number from the same seed is the same sequence, and fails alone.
        let mut runner = TestRunner::new_with_rng(Config::default(), case_rng(seed(), case));
        let again = strategy.new_tree(&mut runner).expect("a tree").current();
        assert!(fails(&again).is_err());
        let mut runner = TestRunner::new_with_rng(Config::default(), case_rng(seed(), 0));
        let zero = strategy.new_tree(&mut runner).expect("a tree").current();
        assert!(case == 0 || fails(&zero).is_ok(), "sequence 0 failed first");
    }

    #[test]
    fn seeds_parse_in_hex_and_decimal() {
        assert_eq!(parse_number("0x5eed0005"), Some(0x5eed_0005));
        assert_eq!(parse_number("17"), Some(17));
        assert_eq!(parse_number("x"), None);
    }
}
