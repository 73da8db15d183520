//! `hotpage run`'s arguments: the configuration file with the flags on
//! top, resolved and validated, then handed to the daemon.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;

use crate::{
    daemon::{
        self,
        config::{DEFAULT_CONFIG, FileConfig, RunConfig},
    },
    hotmap::RecordMode,
    promoter::RateLimit,
    rule::Policy,
};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// TOML configuration file [default: /etc/hotpage/hotpage.toml when it exists].
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    sources: SourceArgs,
    /// Move nothing and change no kernel setting; count what would move.
    #[arg(long)]
    observe_only: bool,
    #[command(flatten)]
    rule: RuleArgs,
    /// Leave kernel.numa_balancing and its promotion rate limit alone.
    #[arg(long)]
    no_manage_numa_balancing: bool,
    /// NUMA-balancing scan knobs (debugfs sched/numa_balancing), ms; restored at exit.
    #[arg(long, value_name = "MS")]
    scan_delay_ms: Option<u64>,
    #[arg(long, value_name = "MS")]
    scan_period_min_ms: Option<u64>,
    #[arg(long, value_name = "MS")]
    scan_period_max_ms: Option<u64>,
    /// Rest NUMA balancing's scanner after this many seconds with nothing
    /// left to find (every node settled, nothing qualified); 0 (the default)
    /// never rests. Experimental: see docs/operations.md.
    #[arg(long, value_name = "SECONDS")]
    scan_rest_after_s: Option<u64>,
    /// Write a node_exporter textfile (hotpage.prom) into this directory.
    #[arg(long, value_name = "DIR")]
    textfile_dir: Option<PathBuf>,
    /// Serve Prometheus text on http://ADDR/metrics: ip:port, or a port for 127.0.0.1.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Stop after this many seconds (default: run until SIGTERM/SIGINT).
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// Also record every access the hot map receives, and its takes, to FILE
    /// (docs/recording.md); `hotpage replay FILE` replays it.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
}

fn parse_rate_limit(s: &str) -> Result<String, String> {
    RateLimit::parse(s).map(|_| s.to_owned())
}

/// Which sources feed the hot map: the flags `run` and `record` share.
#[derive(Debug, Args)]
pub struct SourceArgs {
    /// Which sources run, comma-separated: hint-faults, samples, damon (in
    /// place of the configuration file's). damon runs with NUMA balancing
    /// off, so not with hint-faults.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = ["hint-faults", "samples", "damon"])]
    sources: Option<Vec<String>>,
    /// Memory samples: auto (IBS/PEBS when present), hardware, software (page faults), off.
    #[arg(long, value_name = "MODE", value_parser = ["auto", "hardware", "software", "off"])]
    samples: Option<String>,
    /// Most CPU the sample source may cost, percent of one core.
    #[arg(long, value_name = "PERCENT")]
    cpu_budget_percent: Option<f64>,
    /// Most CPU the DAMON source may cost (its kdamond plus region
    /// expansion), percent of one core; 0: no budget.
    #[arg(long, value_name = "PERCENT")]
    damon_cpu_budget_percent: Option<f64>,
    /// Do not attach the hint-fault program (samples only).
    #[arg(long)]
    no_hint_faults: bool,
}

impl SourceArgs {
    /// The flags on top of `file`'s settings.
    pub fn apply(&self, file: &mut FileConfig) {
        if let Some(list) = &self.sources {
            let on = |name: &str| list.iter().any(|s| s == name);
            file.sources.hint_faults = on("hint-faults");
            file.sources.damon = on("damon");
            if !on("samples") {
                file.sources.samples = "off".into();
            } else if file.sources.samples == "off" {
                file.sources.samples = "auto".into();
            }
        }
        if let Some(m) = &self.samples {
            file.sources.samples = m.clone();
        }
        if let Some(b) = self.cpu_budget_percent {
            file.sources.cpu_budget_percent = b;
        }
        if let Some(b) = self.damon_cpu_budget_percent {
            file.damon.cpu_budget_percent = b;
        }
        if self.no_hint_faults {
            file.sources.hint_faults = false;
        }
    }
}

/// Which pages become hot and how they move: the knobs `run` and `replay` share.
#[derive(Debug, Args)]
pub struct RuleArgs {
    /// Promotion rate limit per target node: MB/s, 0 (observe only) or "unlimited".
    #[arg(long, value_name = "MBPS", value_parser = parse_rate_limit)]
    rate_limit: Option<String>,
    /// Hot-map record mode: "default" (1 byte per page) or "precise" (4 bytes).
    #[arg(long, value_parser = ["default", "precise"])]
    mode: Option<String>,
    /// Accesses within the window that make a page ready.
    #[arg(long)]
    freq_threshold: Option<u32>,
    /// Window for counting accesses, ms.
    #[arg(long, value_name = "MS")]
    freq_window_ms: Option<u32>,
    /// Pages per move_pages call.
    #[arg(long)]
    batch_pages: Option<usize>,
    /// MiB kept free on a target node above its low watermark (0 = automatic).
    #[arg(long, value_name = "MIB")]
    headroom_mib: Option<u64>,
    /// The promotion target of every page (default: each lower-tier node's nearest top-tier node).
    #[arg(long, value_name = "NODE")]
    target_nid: Option<u32>,
    /// Which hint faults count: "latency" (the page's scan-to-fault latencies
    /// are consistently fast; the default) or "pghot" (every fault).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(Policy::NAMES))]
    policy: Option<String>,
}

impl RuleArgs {
    /// The flags on top of `file`'s settings.
    pub fn apply(&self, file: &mut FileConfig) {
        let h = &mut file.hotmap;
        if let Some(m) = &self.mode {
            h.mode = Some(if m == "precise" { RecordMode::Precise } else { RecordMode::Default });
        }
        h.freq_threshold = self.freq_threshold.or(h.freq_threshold);
        h.freq_window_ms = self.freq_window_ms.or(h.freq_window_ms);
        h.target_nid = self.target_nid.or(h.target_nid);
        if let Some(p) = &self.policy {
            h.policy = p.parse().ok();
            // The policy's own threshold, unless given (a recording's is its policy's).
            h.freq_threshold = self.freq_threshold;
        }
        let p = &mut file.promoter;
        if let Some(r) = &self.rate_limit {
            p.rate_limit = Some(r.clone());
        }
        p.batch_pages = self.batch_pages.or(p.batch_pages);
        p.headroom_mib = self.headroom_mib.or(p.headroom_mib);
    }
}

impl RunArgs {
    /// The file's settings with the flags on top, validated.
    fn resolve(&self) -> Result<RunConfig> {
        let default = Path::new(DEFAULT_CONFIG);
        let (mut file, path) = match &self.config {
            Some(p) => (FileConfig::load(p)?, p.clone()),
            None if default.exists() => (FileConfig::load(default)?, default.to_owned()),
            None => (FileConfig::default(), PathBuf::from("configuration")),
        };
        self.sources.apply(&mut file);
        self.rule.apply(&mut file);
        if self.observe_only {
            file.promoter.rate_limit = Some("0".into());
        }
        let k = &mut file.kernel;
        if self.no_manage_numa_balancing {
            k.manage_numa_balancing = false;
        }
        k.scan_delay_ms = self.scan_delay_ms.or(k.scan_delay_ms);
        k.scan_period_min_ms = self.scan_period_min_ms.or(k.scan_period_min_ms);
        k.scan_period_max_ms = self.scan_period_max_ms.or(k.scan_period_max_ms);
        if let Some(s) = self.scan_rest_after_s {
            k.rest_after_s = s;
        }
        let m = &mut file.metrics;
        if self.textfile_dir.is_some() {
            m.textfile_dir = self.textfile_dir.clone();
        }
        if self.listen.is_some() {
            m.listen = self.listen.clone();
        }
        Ok(file.resolve(&path)?)
    }
}

pub fn run(root: &Path, run_dir: &Path, args: RunArgs) -> Result<()> {
    // Configuration errors come first: they need neither root nor a kernel.
    let cfg = args.resolve()?;
    daemon::run(root, run_dir, cfg, args.duration, args.record.as_deref())
}
