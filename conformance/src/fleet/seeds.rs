//! Which seeds a stamped search runs: a fixed range every time, plus a window of new seeds that
//! moves from commit to commit, so that CI explores instead of re-running the same seeds.

use registry_api::rng::SplitMix64;
use registry_api::seeding::{parse_range, parse_seed};
use std::fmt;
use std::ops::Range;

/// Replays one seed, and only it: `REGISTRY_SEED=<seed>`, the workspace's one seed variable
/// ([`registry_api::seeding::SEED_VAR`]).
pub const SEED_VAR: &str = registry_api::seeding::SEED_VAR;

/// What [`SEED_VAR`] was called before it was the workspace's: still read when [`SEED_VAR`] is
/// not set.
pub const FLEET_SEED_VAR: &str = "REGISTRY_FLEET_SEED";

/// Overrides the fixed seeds: `REGISTRY_FLEET_SEEDS=<count>` (from 0) or `<start>..<end>`.
pub const SEEDS_VAR: &str = "REGISTRY_FLEET_SEEDS";

/// Overrides the moving window: `REGISTRY_FLEET_WINDOW=<start>..<end>`, or `none`.
pub const WINDOW_VAR: &str = "REGISTRY_FLEET_WINDOW";

/// The commit the moving window is derived from (`scripts/test.sh` sets it from `git`):
/// `REGISTRY_FLEET_COMMIT=<hash>`. Unset, and with no [`WINDOW_VAR`], there is no window.
pub const COMMIT_VAR: &str = "REGISTRY_FLEET_COMMIT";

/// Moving windows start at or above this, clear of any fixed range a test would stamp.
const WINDOW_FLOOR: u64 = 1_000_000;
/// And below `WINDOW_FLOOR + WINDOW_SPAN`: a thousand million places for a window to land.
const WINDOW_SPAN: u64 = 1_000_000_000;

/// Where the moving window came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WindowSource {
    /// None asked for.
    None,
    /// Derived from this commit.
    Commit(String),
    /// Given in [`WINDOW_VAR`].
    Explicit,
}

/// The seeds of one search.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedPlan {
    /// The seed given in [`SEED_VAR`]: when set, the only seed run.
    pub replay: Option<u64>,
    /// The seeds every run covers.
    pub fixed: Range<u64>,
    /// New seeds for this run (empty when there is none).
    pub window: Range<u64>,
    /// Where the window came from.
    pub source: WindowSource,
}

impl SeedPlan {
    /// The seeds for a search stamped with `seeds` fixed seeds, as the environment sets them:
    /// [`SEED_VAR`] (or [`FLEET_SEED_VAR`]) alone if set; else the fixed seeds (`0..seeds`, or
    /// [`SEEDS_VAR`]) plus the window of [`WINDOW_VAR`], or else one of `seeds` seeds derived
    /// from [`COMMIT_VAR`].
    pub fn from_env(seeds: u64) -> SeedPlan {
        let var = |name: &str| std::env::var(name).ok().map(|v| v.trim().to_owned());
        Self::from_vars(
            seeds,
            var(SEED_VAR).or_else(|| var(FLEET_SEED_VAR)),
            var(SEEDS_VAR),
            var(WINDOW_VAR),
            var(COMMIT_VAR),
        )
    }

    fn from_vars(
        seeds: u64,
        replay: Option<String>,
        fixed: Option<String>,
        window: Option<String>,
        commit: Option<String>,
    ) -> SeedPlan {
        let replay = replay.and_then(|s| parse_seed(&s));
        let fixed = fixed.and_then(|s| parse_range(&s)).unwrap_or(0..seeds);
        let (window, source) = match (window, commit) {
            // Only a range makes a window: `none` (or anything else) turns it off.
            (Some(window), _) => match window.contains("..").then(|| parse_range(&window)) {
                Some(Some(range)) => (range, WindowSource::Explicit),
                _ => (0..0, WindowSource::None),
            },
            (None, Some(commit)) if !commit.is_empty() => {
                (window_for(&commit, seeds), WindowSource::Commit(commit))
            }
            (None, _) => (0..0, WindowSource::None),
        };
        SeedPlan {
            replay,
            fixed,
            window,
            source,
        }
    }

    /// The ranges to search: the replayed seed alone, or the fixed seeds and the window.
    pub fn ranges(&self) -> Vec<Range<u64>> {
        match self.replay {
            Some(seed) => std::iter::once(seed..seed.saturating_add(1)).collect(),
            None => [self.fixed.clone(), self.window.clone()]
                .into_iter()
                .filter(|r| !r.is_empty())
                .collect(),
        }
    }
}

/// The window of `size` seeds that `commit` moves the search to: the same commit gives the same
/// window, and windows of different commits almost never overlap.
///
/// ```
/// use registry_conformance::fleet::window_for;
///
/// let window = window_for("3f2a9c1", 1000);
/// assert_eq!(window, window_for("3f2a9c1", 1000));
/// assert_eq!(window.end - window.start, 1000);
/// assert!(window.start >= 1_000_000);
/// assert_ne!(window, window_for("3f2a9c2", 1000));
/// ```
pub fn window_for(commit: &str, size: u64) -> Range<u64> {
    let start = WINDOW_FLOOR + SplitMix64::derive(0, commit) % WINDOW_SPAN;
    start..start.saturating_add(size)
}

impl fmt::Display for SeedPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(seed) = self.replay {
            return write!(
                f,
                "fleet seeds: replaying seed {seed} alone (from {SEED_VAR})"
            );
        }
        write!(
            f,
            "fleet seeds: fixed {}..{} + moving window ",
            self.fixed.start, self.fixed.end
        )?;
        match &self.source {
            WindowSource::None => write!(
                f,
                "none (set {COMMIT_VAR}=<commit> or {WINDOW_VAR}=<start>..<end>)"
            ),
            WindowSource::Commit(commit) => write!(
                f,
                "{}..{} (from commit {commit}; {WINDOW_VAR}=<start>..<end> overrides)",
                self.window.start, self.window.end
            ),
            WindowSource::Explicit => write!(
                f,
                "{}..{} (from {WINDOW_VAR})",
                self.window.start, self.window.end
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(
        replay: Option<&str>,
        fixed: Option<&str>,
        window: Option<&str>,
        commit: Option<&str>,
    ) -> SeedPlan {
        let own = |s: Option<&str>| s.map(str::to_owned);
        SeedPlan::from_vars(1000, own(replay), own(fixed), own(window), own(commit))
    }

    #[test]
    fn the_fixed_seeds_and_no_window_by_default() {
        let p = plan(None, None, None, None);
        assert_eq!(p.ranges(), std::iter::once(0..1000).collect::<Vec<_>>());
        assert_eq!(p.source, WindowSource::None);
        assert!(p.to_string().contains("fixed 0..1000 + moving window none"));
    }

    #[test]
    fn a_commit_moves_the_window_and_the_same_commit_keeps_it() {
        let a = plan(None, None, None, Some("abc"));
        let b = plan(None, None, None, Some("abd"));
        assert_eq!(a, plan(None, None, None, Some("abc")));
        assert_ne!(a.window, b.window);
        assert_eq!(a.window.end - a.window.start, 1000);
        assert_eq!(a.ranges(), vec![0..1000, a.window.clone()]);
        let shown = a.to_string();
        assert!(shown.contains(&format!("{}..{}", a.window.start, a.window.end)));
        assert!(shown.contains("from commit abc"), "{shown}");
    }

    #[test]
    fn the_variables_override_and_a_replay_runs_alone() {
        let p = plan(None, Some("20..30"), Some("500..510"), Some("abc"));
        assert_eq!(p.ranges(), vec![20..30, 500..510]);
        assert_eq!(p.source, WindowSource::Explicit);
        assert_eq!(
            plan(None, Some("7"), None, None).ranges(),
            std::iter::once(0..7).collect::<Vec<_>>()
        );
        let none = plan(None, None, Some("none"), Some("abc"));
        assert_eq!(none.ranges(), std::iter::once(0..1000).collect::<Vec<_>>());
        assert_eq!(none.source, WindowSource::None);
        let replay = plan(Some("4967"), Some("20..30"), None, Some("abc"));
        assert_eq!(
            replay.ranges(),
            std::iter::once(4967..4968).collect::<Vec<_>>()
        );
        assert!(replay.to_string().contains("replaying seed 4967"));
    }
}
