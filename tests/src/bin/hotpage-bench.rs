//! Benchmark runner behind `cargo xtask bench` (needs root for BPF).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use hotpage_tests::bench;

#[derive(Parser)]
#[command(about = "hotpage benchmarks: hotpage and its baseline side by side")]
struct Cli {
    /// Where to write the JSON results.
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Per-event cost in the BPF program and the consumer, batched vs per-event wake-ups.
    Ring {
        /// Pages touched (one page fault, one event each) per round.
        #[arg(long, default_value_t = 131072)]
        pages: usize,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// In the box: hotpage's promotion path against a raw move_pages loop.
    Promote {
        #[arg(long, default_value_t = 256)]
        region_mib: usize,
        #[arg(long, default_value_t = 512)]
        batch: usize,
        /// Rounds (an even number: each path goes first equally often).
        #[arg(long, default_value_t = 4)]
        rounds: usize,
    },
    /// In the box: hotpage vs NUMAB-2 vs no migration on GUPS hot-set workloads.
    E2e {
        /// Small sizes, one repetition, and only correctness facts checked (CI).
        #[arg(long)]
        short: bool,
        /// Lower the NUMA-balancing scan knobs for every system (as the box tests do).
        #[arg(long)]
        fast_scan: bool,
        /// Only these systems (their JSON names, e.g. numab2,hotpage); all by default.
        #[arg(long, value_delimiter = ',')]
        systems: Vec<String>,
        /// Only scenarios whose name contains one of these.
        #[arg(long, value_delimiter = ',')]
        scenarios: Vec<String>,
        /// Repetitions of every cell (the table shows medians).
        #[arg(long)]
        reps: Option<usize>,
    },
    /// The sample source's CPU share at given sample rates, against its budget.
    Samples {
        /// Sample rates to measure, per second.
        #[arg(long, value_delimiter = ',', default_values_t = [1000u64, 10_000, 100_000])]
        rates: Vec<u64>,
        #[arg(long, default_value_t = 4.0)]
        seconds: f64,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// record_access cost (uniform and zipfian), memory per page, walk cost.
    Hotmap {
        /// Accesses per stream.
        #[arg(long, default_value_t = 20_000_000)]
        accesses: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// What reading the kernel's BTF costs hotpage's start: mapped against a full parse.
    Btf {
        #[arg(long, default_value_t = 6)]
        rounds: usize,
    },
    /// A recording's size per event and how fast it replays through the hot map.
    Replay {
        #[arg(long, default_value_t = 10_000_000)]
        events: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.bench {
        Bench::Ring { pages, rounds } => {
            hotpage_tests::require_root_or_exit();
            let report = bench::ring::run(pages, rounds)?;
            bench::ring::print(&report);
            let out = cli.out.unwrap_or_else(|| PathBuf::from("target/bench/ring.json"));
            bench::write_json(&out, &report)?;
            println!("results: {}", out.display());
        }
        Bench::Promote { region_mib, batch, rounds } => {
            hotpage_tests::require_root_or_exit();
            let report = bench::promote::run(region_mib, batch, rounds)?;
            bench::promote::print(&report);
            let out = cli.out.unwrap_or_else(|| PathBuf::from("target/bench/promote.json"));
            bench::write_json(&out, &report)?;
            println!("results: {}", out.display());
        }
        Bench::E2e { short, fast_scan, systems, scenarios, reps } => {
            hotpage_tests::require_root_or_exit();
            let plan = bench::e2e::Plan::new(short, fast_scan, &systems, &scenarios, reps)?;
            let report = bench::e2e::run(&plan)?;
            bench::e2e::print(&report);
            let out = cli.out.unwrap_or_else(|| PathBuf::from("target/bench/e2e.json"));
            bench::write_json(&out, &report)?;
            println!("results: {}", out.display());
        }
        Bench::Samples { rates, seconds, rounds } => {
            hotpage_tests::require_root_or_exit();
            let report = bench::samples::run(&rates, seconds, rounds)?;
            bench::samples::print(&report);
            let out = cli.out.unwrap_or_else(|| PathBuf::from("target/bench/samples.json"));
            bench::write_json(&out, &report)?;
            println!("results: {}", out.display());
        }
        Bench::Replay { events, rounds } => {
            let report = bench::replay::run(events, rounds)?;
            bench::replay::print(&report);
            let out = cli.out.unwrap_or_else(|| PathBuf::from("target/bench/replay.json"));
            bench::write_json(&out, &report)?;
            println!("results: {}", out.display());
        }
        Bench::Btf { rounds } => {
            let report = bench::btf::run(rounds)?;
            bench::btf::print(&report);
            let out = cli.out.unwrap_or_else(|| PathBuf::from("target/bench/btf.json"));
            bench::write_json(&out, &report)?;
            println!("results: {}", out.display());
        }
        Bench::Hotmap { accesses, rounds } => {
            let report = bench::hotmap::run(accesses, rounds);
            bench::hotmap::print(&report);
            let out = cli.out.unwrap_or_else(|| PathBuf::from("target/bench/hotmap.json"));
            bench::write_json(&out, &report)?;
            println!("results: {}", out.display());
        }
    }
    Ok(())
}
