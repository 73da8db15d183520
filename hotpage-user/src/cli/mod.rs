//! Command-line interface. Library code returns typed errors; here they gain
//! context (`anyhow`) and become one line on stderr.

mod check;
mod generate;
mod nodes;
mod record;
mod replay;
mod run;
mod stats;
mod trace;

use std::path::PathBuf;

pub use replay::BadRecording;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// `hotpage --help` and the man page's DESCRIPTION.
const LONG_ABOUT: &str = "Finds the hot pages that sit on a slow memory node (CXL, or any CPU-less node the kernel \
puts in a lower memory tier) and promotes them to a fast node with move_pages(2). eBPF programs on the NUMA \
hint-fault path and on hardware memory samples report accesses to lower-tier pages; a latency rule keeps the \
faults of pages that are consistently fast to fault after NUMA balancing's scan; a userspace twin of the \
kernel's pghot hot map decides which pages are ready; a worker per lower-tier node moves them, hottest first. \
`hotpage check` says whether this machine can run it; `hotpage run` is the daemon.";

#[derive(Debug, Parser)]
#[command(name = "hotpage", version, about, long_about = LONG_ABOUT, propagate_version = true)]
pub struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Read /proc and /sys under this directory instead of / (for fixtures and tests).
    #[arg(long, global = true, default_value = "/", hide = true)]
    pub root: PathBuf,

    /// Directory for hotpage's lock, saved kernel settings and control socket.
    #[arg(long, global = true, default_value = crate::kernel::settings::DEFAULT_RUN_DIR)]
    pub run_dir: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: find hot lower-tier pages and promote them.
    Run(Box<run::RunArgs>),
    /// What the running daemon sees and did: nodes, sources, promoter, kernel counters.
    Stats(stats::StatsArgs),
    /// The processes with the most promoted and ready memory.
    Top(stats::TopArgs),
    /// One-shot Prometheus text from the running daemon.
    Metrics,
    /// NUMA nodes and memory tiers (numastat-like); no daemon needed.
    Nodes(nodes::NodesArgs),
    /// Can this kernel and machine run hotpage? Each requirement with the fix.
    Check(check::CheckArgs),
    /// Print lower-tier page accesses live, with a per-second summary.
    Trace(trace::TraceArgs),
    /// Write every lower-tier access to a file, to replay it later.
    Record(record::RecordArgs),
    /// Replay a recording through the hot map and a promotion rule, offline.
    Replay(Box<replay::ReplayArgs>),
    /// Shell completion script on standard output (bash, zsh, fish, ...).
    Completions(generate::CompletionsArgs),
    /// Writes the man pages into a directory (the Debian package's build runs it).
    #[command(hide = true)]
    Manpages(generate::ManpagesArgs),
}

pub fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => run::run(&cli.root, &cli.run_dir, *args),
        Command::Stats(args) => stats::stats(&cli.run_dir, args),
        Command::Top(args) => stats::top(&cli.run_dir, args),
        Command::Metrics => stats::metrics(&cli.run_dir),
        Command::Nodes(args) => nodes::run(&cli.root, args),
        Command::Check(args) => check::run(&cli.root, &cli.run_dir, args),
        Command::Trace(args) => trace::run(&cli.root, &cli.run_dir, args),
        Command::Record(args) => record::run(&cli.root, &cli.run_dir, args),
        Command::Replay(args) => replay::run(&cli.root, *args),
        Command::Completions(args) => generate::completions(args),
        Command::Manpages(args) => generate::manpages(args),
    }
}
