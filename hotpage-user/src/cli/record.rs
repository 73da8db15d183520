//! `hotpage record`: every lower-tier access the sources report, to a file
//! (docs/recording.md), beside `hotpage run` or on its own.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;

use super::run::SourceArgs;
use crate::daemon::{self, RecordRequest, config::FileConfig};

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// Where to write the recording.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: PathBuf,
    /// Stop after this many seconds (default: until SIGTERM/SIGINT).
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// Only this process's accesses.
    #[arg(long)]
    pid: Option<u32>,
    /// While recording, get hint faults on lower-tier pages without the
    /// kernel's own promotion (restored at the end, or at the next start).
    #[arg(long)]
    set_tiering: bool,
    /// TOML configuration file for the sources and the collector.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    sources: SourceArgs,
}

pub fn run(root: &Path, run_dir: &Path, args: RecordArgs) -> Result<()> {
    let (mut file, path) = match &args.config {
        Some(p) => (FileConfig::load(p)?, p.clone()),
        None => (FileConfig::default(), PathBuf::from("configuration")),
    };
    args.sources.apply(&mut file);
    let cfg = file.resolve(&path)?;
    if cfg.damon.is_some() {
        anyhow::bail!(
            "hotpage record does not run the DAMON source: record it with `hotpage run --sources damon --record FILE`"
        );
    }
    let req = RecordRequest {
        output: &args.output,
        duration: args.duration,
        pid: args.pid,
        set_tiering: args.set_tiering,
    };
    daemon::record(root, run_dir, cfg, req)
}
