//! Command-line interface. Library code returns typed errors; here they gain
//! context (`anyhow`) and become one line on stderr.

mod check;
mod nodes;
mod run;
mod shutdown;
mod stats;
mod trace;

pub use shutdown::Shutdown;

use crate::{
    kernel,
    kernel::settings::{self, SavedSetting},
    sys::sysfs::read_u64,
    sys::topology::TierTopology,
};

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use hotpage_common::PfnRange;

/// Finds hot pages on lower-tier (CXL) memory and promotes them to a fast node.
#[derive(Debug, Parser)]
#[command(name = "hotpage", version, about, propagate_version = true)]
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
    }
}

/// What `run` and `trace` need before they change anything.
struct Preflight {
    topo: TierTopology,
    ranges: Vec<PfnRange>,
    release: String,
    /// The hint-fault hook, when hint faults are wanted.
    hook: Option<&'static str>,
}

/// Checks in the order an operator fixes them: what the machine lacks is
/// reported before what the user lacks.
fn preflight(root: &Path, what: &str, hint_faults: bool) -> Result<Preflight> {
    let topo = TierTopology::read(root).context("reading the NUMA topology")?;
    topo.require_lower_tier(root)?;
    let ranges = topo.lower_tier_ranges()?;
    let release = kernel::release(root);
    // Both programs are CO-RE: BTF is needed even without the hint-fault hook.
    let btf = kernel::kernel_btf(root)?;
    let hook = if hint_faults { Some(kernel::hint_fault_hook(&btf, &release)?) } else { None };
    drop(btf);
    require_root(what)?;
    Ok(Preflight { topo, ranges, release, hook })
}

/// Without changing settings: still put back what a crashed run left behind.
fn recover_only(root: &Path, run_dir: &Path) {
    match settings::recover(root, run_dir) {
        Ok(recovered) => report_recovered(&recovered),
        Err(e) => tracing::warn!("{e}"),
    }
    warn_if_no_hint_faults(root);
}

fn report_recovered(recovered: &[SavedSetting]) {
    for s in recovered {
        eprintln!(
            "hotpage: restored {} to {} (left at {} by a hotpage that did not stop cleanly)",
            s.path, s.original, s.applied
        );
    }
}

/// Hint faults on lower-tier pages need NUMA balancing on (mode 2 tiers, 1 or 3 too).
fn warn_if_no_hint_faults(root: &Path) {
    match read_u64(&root.join("proc/sys/kernel/numa_balancing")) {
        Ok(0) => tracing::warn!(
            "kernel.numa_balancing is 0: the kernel makes no hint faults, so no events will come \
             (set it to 2 for memory tiering)"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("{e}: this kernel may lack CONFIG_NUMA_BALANCING"),
    }
}

/// BPF programs and pfns in pagemap need root.
fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("{what} needs root (it loads BPF programs and reads pfns from pagemap): run it with sudo");
    }
    Ok(())
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}
