//! The log everything observable in a fleet run goes through: hashed as it comes, kept line by
//! line when asked, and the violations found.

use registry_api::rng::Fnv64;
use std::hash::Hasher;
use std::time::Duration;
use tokio::time::Instant;

/// At most this many violations are kept per run: the first ones tell the story.
const MAX_VIOLATIONS: usize = 20;

#[derive(Debug)]
pub(super) struct Log {
    start: Instant,
    pub(super) hash: u64,
    pub(super) routes: u64,
    pub(super) events: u64,
    pub(super) violations: Vec<String>,
    pub(super) lines: Option<Vec<String>>,
}

impl Log {
    pub(super) fn new(keep_lines: bool) -> Self {
        Log {
            start: Instant::now(),
            hash: Fnv64::default().finish(),
            routes: 0,
            events: 0,
            violations: Vec::new(),
            lines: keep_lines.then(Vec::new),
        }
    }

    fn at(&self) -> Duration {
        self.start.elapsed()
    }

    /// One line, at the virtual time now.
    pub(super) fn record(&mut self, line: &str) {
        let now = self.at();
        if let Some(lines) = &mut self.lines {
            lines.push(format!("[{:>8.3}s] {line}", now.as_secs_f64()));
        }
        let at = now.as_millis().to_le_bytes();
        let mut hash = Fnv64::with_key(self.hash);
        hash.write(&[&at[..], line.as_bytes(), b"\n"].concat());
        self.hash = hash.finish();
    }

    /// One broken invariant, at the virtual time now.
    pub(super) fn violation(&mut self, what: String) {
        if self.violations.len() < MAX_VIOLATIONS {
            let at = self.at();
            self.violations
                .push(format!("[{:>8.3}s] {what}", at.as_secs_f64()));
        }
    }
}
