//! Command-line interface. Library code returns typed errors; here they gain
//! context (`anyhow`) and become one line on stderr.

mod shutdown;
mod trace;

pub use shutdown::Shutdown;

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};

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
    #[arg(long, global = true, default_value = crate::kernel_settings::DEFAULT_RUN_DIR)]
    pub run_dir: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
        Command::Trace(args) => trace::run(&cli.root, &cli.run_dir, args),
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
