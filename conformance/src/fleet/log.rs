//! The log everything observable in a fleet run goes through: hashed as it comes, kept line by
//! line when asked, and the violations found.

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
            // FNV-1a's offset basis.
            hash: 0xcbf2_9ce4_8422_2325,
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
        for byte in at.iter().chain(line.as_bytes()).chain(b"\n") {
            self.hash ^= u64::from(*byte);
            self.hash = self.hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
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
