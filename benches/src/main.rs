//! The workspace's benchmarks: the registry layer against raw `etcd-client` and against plain
//! baselines, printed as one markdown table of figures and ratios.
//!
//! ```sh
//! bash scripts/bench.sh                 # everything; also writes target/bench-results.md
//! bash scripts/bench.sh --quick         # a smoke run, scaled down
//! cargo run --release -p registry-benches -- memory   # one part: overhead, memory, sim,
//!                                                     # discovery, fanout, balance, slow or requests
//!                                                     # (or a..h)
//! ```
//!
//! `all` starts one etcd on 127.0.0.1 (unless `--endpoint` names one) and runs each part in a
//! child process of its own, so each part's peak memory is its own. Within a part the two
//! sides alternate in blocks, so machine noise falls on both. Benchmarks print figures; they
//! never fail on a slow machine (the exit code is non-zero only when a part could not run).

mod balance;
mod baseline;
mod crash;
mod etcd_discovery;
mod etcd_fanout;
mod etcd_metrics;
mod etcd_overhead;
mod memory_throughput;
mod procfs;
mod raw_watch;
mod recording;
mod report;
mod requests;
mod sim_floors;
mod sim_scale;
mod slow_subscribers;
mod stats;

use clap::{Parser, ValueEnum};
use registry_etcd::testing::EtcdServer;
use report::Report;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

/// Which part to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    /// Every part, each in a child process, with one etcd for all.
    All,
    /// (a) EtcdRegistry vs raw etcd-client: put, get, list, register, keep-alive.
    #[value(alias = "a")]
    Overhead,
    /// (b) MemoryRegistry vs BTreeMap + broadcast: puts/s and watch deliveries/s.
    #[value(alias = "b")]
    Memory,
    /// (c) 10,000 registrations for a virtual hour (and 100,000 once in a full run); memory per
    /// instance and cache entry.
    #[value(alias = "c")]
    Sim,
    /// (d) put -> N caches vs raw watches; crash -> removal vs TTL.
    #[value(alias = "d")]
    Discovery,
    /// (e) 1,000 discovery handles of one service: watches opened, change -> all.
    #[value(alias = "e")]
    Fanout,
    /// (f) Pick cost vs tower's p2c at 10/100/1,000 nodes; gateway p99 with a slow node.
    #[value(alias = "f")]
    Balance,
    /// (g) 1,000 discovery subscribers that never read while 10,000 changes flow: memory.
    #[value(alias = "g")]
    Slow,
    /// (h) Requests per registered instance-hour at TTL 10 s, a lease each and one shared.
    #[value(alias = "h")]
    Requests,
}

impl Part {
    fn needs_etcd(self) -> bool {
        matches!(
            self,
            Part::Overhead | Part::Discovery | Part::Fanout | Part::Requests
        )
    }

    fn name(self) -> &'static str {
        match self {
            Part::All => "all",
            Part::Overhead => "overhead",
            Part::Memory => "memory",
            Part::Sim => "sim",
            Part::Discovery => "discovery",
            Part::Fanout => "fanout",
            Part::Balance => "balance",
            Part::Slow => "slow",
            Part::Requests => "requests",
        }
    }
}

/// Benchmarks of the registry workspace.
#[derive(Debug, Parser)]
#[command(name = "registry-benches")]
struct Args {
    /// What to run.
    #[arg(value_enum, default_value = "all")]
    part: Part,
    /// Scale every part down for a smoke run.
    #[arg(long)]
    quick: bool,
    /// Use this etcd (`http://127.0.0.1:PORT`) instead of starting one.
    #[arg(long, env = "REGISTRY_BENCH_ETCD")]
    endpoint: Option<String>,
    /// Seed of the simulated hour.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where `all` writes the table.
    #[arg(long, default_value = "target/bench-results.md")]
    out: PathBuf,
    /// Print rows for a parent process instead of a table (used by `all`).
    #[arg(long, hide = true)]
    child: bool,
}

/// Nanoseconds since the epoch: keeps key namespaces of different runs apart.
pub(crate) fn run_stamp() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.part == Part::All {
        return run_all(&args);
    }
    let mut server = None;
    let endpoint = if args.part.needs_etcd() {
        match args.endpoint.clone() {
            Some(endpoint) => Some(endpoint),
            None => match EtcdServer::start() {
                Ok(started) => {
                    let endpoint = started.endpoint();
                    server = Some(started);
                    Some(endpoint)
                }
                Err(e) => {
                    eprintln!("registry-benches: etcd did not start: {e}");
                    return ExitCode::FAILURE;
                }
            },
        }
    } else {
        None
    };
    let report = run_part(args.part, endpoint.as_deref(), args.quick, args.seed);
    drop(server);
    if args.child {
        print!("{}", report.to_lines());
    } else {
        print!("{}", report.to_markdown());
    }
    ExitCode::SUCCESS
}

fn run_part(part: Part, endpoint: Option<&str>, quick: bool, seed: u64) -> Report {
    match part {
        Part::All => Report::default(),
        Part::Memory => memory_throughput::run(quick),
        Part::Sim => sim_scale::run(quick, seed),
        Part::Overhead => on_etcd(endpoint, |e| etcd_overhead::run(e, quick)),
        Part::Discovery => {
            let mut report = on_etcd(endpoint, |e| etcd_discovery::run(e, quick));
            eprintln!("(d) crash -> removal on the simulator");
            report.extend(etcd_discovery::simulator_crashes());
            report
        }
        Part::Fanout => on_etcd(endpoint, |e| etcd_fanout::run(e, quick)),
        Part::Balance => balance::run(quick),
        Part::Slow => slow_subscribers::run(quick),
        Part::Requests => {
            eprintln!("(h) requests per instance-hour on the simulator");
            let mut report = requests::simulator(quick);
            report.extend(on_etcd(endpoint, |e| requests::etcd(e, quick)));
            report
        }
    }
}

/// Runs an etcd part on a two-worker runtime, as a typical service would have.
fn on_etcd<F>(endpoint: Option<&str>, body: impl FnOnce(String) -> F) -> Report
where
    F: std::future::Future<Output = Report>,
{
    let mut report = Report::default();
    let Some(endpoint) = endpoint else {
        report.note("no etcd endpoint");
        return report;
    };
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => report.extend(runtime.block_on(body(endpoint.to_owned()))),
        Err(e) => report.note(format!("no runtime: {e}")),
    }
    report
}

/// Runs every part in a child process against one etcd, prints and writes the whole table.
fn run_all(args: &Args) -> ExitCode {
    let started = Instant::now();
    let mut server = None;
    let endpoint = match args.endpoint.clone() {
        Some(endpoint) => endpoint,
        None => match EtcdServer::start() {
            Ok(s) => {
                let endpoint = s.endpoint();
                server = Some(s);
                endpoint
            }
            Err(e) => {
                eprintln!("registry-benches: etcd did not start: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("registry-benches: cannot find myself: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Other work on the machine skews absolute figures (ratios less so): say how busy it was.
    let load_start = procfs::load_average();
    let etcd_version = etcd_metrics::server_version(&endpoint).unwrap_or_else(|| "unknown".into());
    let mut report = Report::default();
    let mut failed = false;
    // The memory-hungry simulated hour first, on a fresh machine state.
    for part in [
        Part::Sim,
        Part::Memory,
        Part::Overhead,
        Part::Discovery,
        Part::Fanout,
        Part::Balance,
        Part::Slow,
        Part::Requests,
    ] {
        let part_started = Instant::now();
        eprintln!("== {} ", part.name());
        let mut command = Command::new(&exe);
        command
            .arg(part.name())
            .arg("--child")
            .arg("--seed")
            .arg(args.seed.to_string())
            .arg("--endpoint")
            .arg(&endpoint)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if args.quick {
            command.arg("--quick");
        }
        match command.output() {
            Ok(output) if output.status.success() => {
                report.extend(Report::from_lines(&String::from_utf8_lossy(&output.stdout)));
            }
            Ok(output) => {
                failed = true;
                report.note(format!(
                    "part {} exited with {}",
                    part.name(),
                    output.status
                ));
            }
            Err(e) => {
                failed = true;
                report.note(format!("part {} did not start: {e}", part.name()));
            }
        }
        eprintln!(
            "== {} took {:.1} s",
            part.name(),
            part_started.elapsed().as_secs_f64()
        );
    }
    drop(server);
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let header = format!(
        "Machine: {}; load average at start {load_start}, at end {}; etcd {etcd_version} on 127.0.0.1; {rustc}; mode: {}; whole run {:.0} s; {} goal(s) missed.\n\n",
        procfs::machine(),
        procfs::load_average(),
        if args.quick { "--quick" } else { "full" },
        started.elapsed().as_secs_f64(),
        report.missed(),
    );
    let table = format!("{header}{}", report.to_markdown());
    println!("{table}");
    if let Some(dir) = args.out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(&args.out, &table) {
        eprintln!(
            "registry-benches: could not write {}: {e}",
            args.out.display()
        );
    } else {
        eprintln!("registry-benches: table written to {}", args.out.display());
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
