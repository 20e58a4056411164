//! Memory and machine facts from /proc: resident set size now and at its peak.

use std::fs;

/// A `kB` field of /proc/self/status (`VmRSS`, `VmHWM`), in bytes; 0 where unreadable.
fn status_kb(field: &str) -> u64 {
    let Ok(status) = fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

/// Resident memory now, in bytes.
pub(crate) fn rss() -> u64 {
    status_kb("VmRSS")
}

/// The peak resident memory since the process started or [`reset_peak`] was called.
pub(crate) fn peak_rss() -> u64 {
    status_kb("VmHWM")
}

/// Resets the peak to the current resident size (Linux's `clear_refs` value 5), so a part
/// measures its own peak. Returns false where the kernel refuses.
pub(crate) fn reset_peak() -> bool {
    fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The 1-minute load average, from /proc/loadavg.
pub(crate) fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// The CPU model, core count and memory, for the results header.
pub(crate) fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                let kb = l
                    .strip_prefix("MemTotal:")?
                    .trim()
                    .trim_end_matches("kB")
                    .trim();
                kb.parse::<u64>().ok()
            })
        })
        .map_or_else(
            || "? GiB".to_owned(),
            |kb| format!("{:.1} GiB", kb as f64 / 1048576.0),
        );
    format!("{cores} cores, {cpu}, {memory} RAM")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_resident_memory() {
        let before = rss();
        assert!(before > 0);
        assert!(peak_rss() >= before);
        // Touch 64 MiB: the peak must grow by most of it.
        let block = std::hint::black_box(vec![1u8; 64 << 20]);
        assert!(peak_rss() >= before + (48 << 20), "peak did not see 64 MiB");
        drop(block);
    }
}
