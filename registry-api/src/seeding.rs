//! Where a seeded run takes its seed, and the command that replays it.
//!
//! The whole workspace's seeded runs (the simulator's timing, the service-layer suite over many
//! seeds, the fleet search) take their seed from one place, [`current`]:
//!
//! 1. a seed a harness put in scope for this thread ([`with_seed`]): a search running seed `n`
//!    makes every simulator it builds meanwhile use `n`;
//! 2. else the environment variable [`SEED_VAR`] (`REGISTRY_SEED=<n>`, decimal or `0x` hex):
//!    what a replay sets;
//! 3. else a seed derived from the name of the running test (libtest names each test's thread
//!    after the test), so that every test explores its own interleavings, the same ones on
//!    every run.
//!
//! A failing run prints its seed with [`replay_command`], one line that runs exactly that test
//! with exactly that seed.
//!
//! ```
//! use registry_api::seeding::{self, SeedSource};
//!
//! let inside = seeding::with_seed(42, seeding::current);
//! assert_eq!((inside.seed, inside.source), (42, SeedSource::Scoped));
//! // The same thread name always gives the same default seed.
//! assert_eq!(seeding::current().seed, seeding::current().seed);
//! assert!(seeding::replay_command(7).starts_with("REGISTRY_SEED=7 cargo test"));
//! ```

use crate::rng::SplitMix64;
use std::cell::Cell;
use std::fmt;
use std::path::Path;

/// The one environment variable of every seeded run: `REGISTRY_SEED=<n>` replays seed `n`
/// (decimal, or hex with `0x`).
pub const SEED_VAR: &str = "REGISTRY_SEED";

thread_local! {
    static SCOPED: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Overrides how many seeds a seeded search runs: `REGISTRY_SEEDS=<count>` (from 0) or
/// `<start>..<end>`.
pub const SEEDS_VAR: &str = "REGISTRY_SEEDS";

/// The seeds a search runs: only [`SEED_VAR`]'s when it is set (a replay), else
/// [`SEEDS_VAR`]'s, else `default`.
///
/// ```
/// # if std::env::var_os("REGISTRY_SEED").is_none() && std::env::var_os("REGISTRY_SEEDS").is_none() {
/// assert_eq!(registry_api::seeding::seeds_from_env(0..100), 0..100);
/// # }
/// ```
pub fn seeds_from_env(default: std::ops::Range<u64>) -> std::ops::Range<u64> {
    if let Some(seed) = env_seed() {
        return seed..seed.saturating_add(1);
    }
    std::env::var(SEEDS_VAR)
        .ok()
        .and_then(|text| parse_range(&text))
        .unwrap_or(default)
}

/// `<count>` (from 0) or `<start>..<end>`.
pub fn parse_range(text: &str) -> Option<std::ops::Range<u64>> {
    match text.trim().split_once("..") {
        Some((start, end)) => {
            let start = parse_seed(start)?;
            let end = parse_seed(end)?;
            Some(start..end.max(start))
        }
        None => parse_seed(text).map(|count| 0..count),
    }
}

/// Where a run's seed came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeedSource {
    /// Given by the code that built the seeded thing.
    Explicit,
    /// Put in scope by a harness ([`with_seed`]).
    Scoped,
    /// From [`SEED_VAR`].
    Env,
    /// Derived from the running test's name (or the thread's, outside a test).
    TestName,
}

/// A seed and where it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunSeed {
    /// The seed.
    pub seed: u64,
    /// Where it came from.
    pub source: SeedSource,
}

impl fmt::Display for RunSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let from = match self.source {
            SeedSource::Explicit => "given by the test",
            SeedSource::Scoped => "set by the running search",
            SeedSource::Env => SEED_VAR,
            SeedSource::TestName => "derived from the test's name",
        };
        write!(f, "seed {} ({from})", self.seed)
    }
}

/// Runs `f` with `seed` in scope on this thread: [`current`] returns it meanwhile. Scopes nest;
/// the previous one comes back when `f` returns or panics.
pub fn with_seed<R>(seed: u64, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<u64>);
    impl Drop for Restore {
        fn drop(&mut self) {
            SCOPED.with(|scoped| scoped.set(self.0));
        }
    }
    let _restore = Restore(SCOPED.with(|scoped| scoped.replace(Some(seed))));
    f()
}

/// The seed in [`SEED_VAR`], if it is set and a number.
pub fn env_seed() -> Option<u64> {
    parse_seed(&std::env::var(SEED_VAR).ok()?)
}

/// A seed as [`SEED_VAR`] takes it: `<n>` or `0x<hex>`.
pub fn parse_seed(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// The seed a seeded run uses now: the scoped one, else [`SEED_VAR`], else one derived from
/// the running test's name (see the [module docs](self)).
pub fn current() -> RunSeed {
    if let Some(seed) = SCOPED.with(Cell::get) {
        return RunSeed {
            seed,
            source: SeedSource::Scoped,
        };
    }
    if let Some(seed) = env_seed() {
        return RunSeed {
            seed,
            source: SeedSource::Env,
        };
    }
    let thread = std::thread::current();
    RunSeed {
        seed: SplitMix64::derive(0, thread.name().unwrap_or("")),
        source: SeedSource::TestName,
    }
}

/// The name of the test running on this thread: libtest names each test's thread after the
/// test. `None` on a thread with no name or the main thread (a doctest, a program).
pub fn test_name() -> Option<String> {
    let thread = std::thread::current();
    let name = thread.name()?;
    (name != "main" && !name.is_empty()).then(|| name.to_owned())
}

/// One line that runs the current test again with `seed`:
/// `REGISTRY_SEED=<seed> cargo test -p <package> --test <file> -- --exact <test>`, from what
/// cargo sets when it runs a test (`CARGO_PKG_NAME`, `CARGO_MANIFEST_DIR`), the test binary's
/// name and the test's thread name. What cannot be known is left out (the line then runs more
/// than the one test, still with the seed).
pub fn replay_command(seed: u64) -> String {
    replay_command_for(seed, test_name().as_deref())
}

/// The same line for the test named `test` of the running test binary (a search that runs
/// many tests' bodies names the one that failed); `None` leaves the test out.
pub fn replay_command_for(seed: u64, test: Option<&str>) -> String {
    let package = std::env::var("CARGO_PKG_NAME").ok();
    let mut line = format!("{SEED_VAR}={seed} cargo test");
    if let Some(package) = &package {
        line.push_str(&format!(" -p {package}"));
    }
    if let Some(target) = test_target(package.as_deref()) {
        line.push(' ');
        line.push_str(&target);
    }
    if let Some(test) = test {
        line.push_str(&format!(" -- --exact {test}"));
    }
    line
}

/// `--lib`, `--test <file>` or `--bin <name>`: the cargo target of the running test binary,
/// whose file is named `<target>-<16 hex digits>`.
fn test_target(package: Option<&str>) -> Option<String> {
    let exe = std::env::current_exe().ok()?;
    let stem = exe.file_stem()?.to_str()?;
    let (name, hash) = stem.rsplit_once('-')?;
    if hash.len() != 16 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let manifest = std::env::var("CARGO_MANIFEST_DIR").ok();
    let in_dir = |dir: &str| {
        manifest
            .as_deref()
            .is_some_and(|m| Path::new(m).join(dir).join(format!("{name}.rs")).exists())
    };
    if in_dir("tests") {
        return Some(format!("--test {name}"));
    }
    if package.is_some_and(|p| p.replace('-', "_") == name) {
        return Some("--lib".to_owned());
    }
    if in_dir("src/bin") {
        return Some(format!("--bin {name}"));
    }
    // Not found where cargo looks by default (a target with its own path): the name is the
    // best guess.
    Some(format!("--test {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_wins_and_is_restored_even_after_a_panic() {
        let outer = current();
        assert_eq!(with_seed(5, || with_seed(6, current)).seed, 6);
        assert_eq!(with_seed(5, current).seed, 5);
        let _ = std::panic::catch_unwind(|| with_seed(9, || panic!("inside")));
        assert_eq!(current(), outer);
    }

    #[test]
    fn the_default_comes_from_the_test_name() {
        // No REGISTRY_SEED in a plain `cargo test`; with one, the test checks nothing here.
        if env_seed().is_some() {
            return;
        }
        let seed = current();
        assert_eq!(seed.source, SeedSource::TestName);
        assert_eq!(
            seed.seed,
            SplitMix64::derive(0, "seeding::tests::the_default_comes_from_the_test_name")
        );
        let other = std::thread::Builder::new()
            .name("another test".into())
            .spawn(current)
            .unwrap()
            .join()
            .unwrap();
        assert_ne!(other.seed, seed.seed);
    }

    #[test]
    fn numbers_parse_in_decimal_and_hex() {
        assert_eq!(parse_seed(" 42 "), Some(42));
        assert_eq!(parse_seed("0x2a"), Some(42));
        assert_eq!(parse_seed("nope"), None);
        assert_eq!(parse_range("7"), Some(0..7));
        assert_eq!(parse_range("20..30"), Some(20..30));
        assert_eq!(parse_range("9..3"), Some(9..9));
        assert_eq!(parse_range("none"), None);
    }

    #[test]
    fn the_replay_line_names_this_test() {
        let line = replay_command(17);
        assert!(
            line.starts_with("REGISTRY_SEED=17 cargo test -p registry-api --lib"),
            "{line}"
        );
        assert!(
            line.ends_with("-- --exact seeding::tests::the_replay_line_names_this_test"),
            "{line}"
        );
    }
}
