//! `hotpage run`'s configuration: a TOML file (every key optional, unknown
//! keys refused), then command-line flags on top. Every knob, its unit and
//! default is listed in docs/configuration.md.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use crate::{
    hotmap::{
        ConfigError as HotMapConfigError, DEFAULT_HINT_CAPACITY, HotMapConfig, RecordMode,
        SOURCE_HINT_FAULTS, SOURCE_HW_HINTS, SOURCE_PGTABLE_SCAN,
    },
    kernel::scan_rest::{DEFAULT_REST, RestConfig},
    promoter::{PromoterConfig, PromoterError, RateLimit},
    recording::Header,
    rule::Policy,
    sources::LoadOptions,
    sources::damon::DamonConfig,
    sources::samples::SamplesMode,
};

/// Where `hotpage run` looks for its file when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/hotpage/hotpage.toml";

#[derive(Debug, Error)]
pub enum ConfigFileError {
    #[error("cannot read the configuration file {path}: {error}", path = .path.display())]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{path}: {message}", path = .path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {0}", path = .1.display())]
    HotMap(HotMapConfigError, PathBuf),
    #[error("{path}: {0}", path = .1.display())]
    Promoter(PromoterError, PathBuf),
    #[error("{path}: {what}", path = .path.display())]
    Invalid { path: PathBuf, what: String },
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    pub sources: SourcesFile,
    /// `[damon]`: the DAMON source's knobs.
    pub damon: DamonConfig,
    pub hotmap: HotMapFile,
    pub promoter: PromoterFile,
    pub kernel: KernelFile,
    pub collector: CollectorFile,
    pub metrics: MetricsFile,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesFile {
    /// NUMA hint faults (fentry on numa_migrate_check).
    pub hint_faults: bool,
    /// DAMON's region reports (pghot's page-table-scan source); needs
    /// kernel.numa_balancing 0, so not with hint faults.
    pub damon: bool,
    /// Memory-access samples: "auto" (the PMU's, when there is one),
    /// "hardware" (the PMU's, or refuse), "software" (page faults), "off".
    pub samples: String,
    /// Events between samples at start (default: the PMU's; 1 for software).
    pub sample_period: Option<u64>,
    /// Most CPU the sample source may cost, percent of one core.
    pub cpu_budget_percent: f64,
}

impl Default for SourcesFile {
    fn default() -> Self {
        Self {
            hint_faults: true,
            damon: false,
            samples: "auto".into(),
            sample_period: None,
            cpu_budget_percent: crate::sources::samples::DEFAULT_BUDGET * 100.0,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HotMapFile {
    /// "default" (1 byte per page) or "precise" (4 bytes per page).
    pub mode: Option<RecordMode>,
    /// Accesses within the window that make a page ready.
    pub freq_threshold: Option<u32>,
    /// Window for counting accesses, ms.
    pub freq_window_ms: Option<u32>,
    /// Promotion target (a top-tier node) for pages without a recorded node:
    /// every page in default mode. Unset: each lower-tier node's nearest.
    pub target_nid: Option<u32>,
    /// Most (pid, vaddr) hints kept.
    pub hint_capacity: Option<usize>,
    /// Which hint faults count: "latency" (consistently fast scan-to-fault
    /// latencies; the default) or "pghot" (every fault).
    pub policy: Option<Policy>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PromoterFile {
    /// MB/s per target node; "0" = observe only; "unlimited".
    pub rate_limit: Option<String>,
    pub sleep_ms: Option<u64>,
    pub batch_pages: Option<usize>,
    pub max_round_pages: Option<usize>,
    /// MiB kept free above the target's low watermark; 0 = auto.
    pub headroom_mib: Option<u64>,
    pub move_shared: Option<bool>,
    pub rearm_busy: Option<bool>,
    pub check_lru: Option<bool>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct KernelFile {
    /// Turn on NUMA balancing's memory-tiering mode and set the kernel's own
    /// promotion rate limit to 0 while hotpage runs (restored afterwards).
    pub manage_numa_balancing: bool,
    /// NUMA-balancing scan knobs (debugfs), ms, set while hotpage runs and
    /// restored after. With the kernel's promotion held back its own period
    /// adaptation rarely runs, so hotpage sets the pace its rule needs:
    /// several scans of each page. A period of 0 leaves the kernel's value.
    pub scan_delay_ms: Option<u64>,
    pub scan_period_min_ms: Option<u64>,
    pub scan_period_max_ms: Option<u64>,
    /// Once the rule knows where fast ends on every lower-tier node and
    /// nothing has qualified for this long, NUMA balancing rests (off) and probes (on),
    /// s; 0 (the default) never rests (`kernel::scan_rest`: in the box the
    /// kernel did not always take the scan up again).
    pub rest_after_s: u64,
    /// How long each probe scans, s; also the first rest's length.
    pub rest_probe_s: u64,
    /// The longest rest, s.
    pub rest_max_s: u64,
}

/// hotpage's scan defaults, ms: what the box tests and `bench e2e
/// --fast-scan` use. Without the delay at 0 a new task's scans stayed
/// seconds apart in the box whatever the periods (docs/rule.md).
pub const SCAN_DELAY_MS: u64 = 0;
/// The longest `rest_*` setting taken, in seconds (a day).
pub const REST_LIMIT_S: u64 = 86_400;
pub const SCAN_PERIOD_MIN_MS: u64 = 100;
pub const SCAN_PERIOD_MAX_MS: u64 = 1000;

impl Default for KernelFile {
    fn default() -> Self {
        Self {
            manage_numa_balancing: true,
            scan_delay_ms: Some(SCAN_DELAY_MS),
            scan_period_min_ms: Some(SCAN_PERIOD_MIN_MS),
            scan_period_max_ms: Some(SCAN_PERIOD_MAX_MS),
            rest_after_s: DEFAULT_REST.after_ms / 1000,
            rest_probe_s: DEFAULT_REST.probe_ms / 1000,
            rest_max_s: DEFAULT_REST.max_rest_ms / 1000,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorFile {
    /// Events per CPU between consumer wake-ups.
    pub wakeup_every: u32,
    /// Longest wait of a tail of events in the ring, ms.
    pub drain_interval_ms: u64,
    /// Ring buffer size per source, MiB (a power of two).
    pub ring_mib: u32,
}

impl Default for CollectorFile {
    fn default() -> Self {
        Self {
            wakeup_every: LoadOptions::DEFAULT_WAKEUP_EVERY,
            drain_interval_ms: 100,
            ring_mib: LoadOptions::DEFAULT_RING_BYTES >> 20,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsFile {
    /// Directory for a node_exporter textfile (hotpage.prom); empty = off.
    pub textfile_dir: Option<PathBuf>,
    /// Seconds between textfile writes.
    pub textfile_interval_s: u64,
    /// Address for an HTTP /metrics endpoint, e.g. "127.0.0.1:9477"; empty = off.
    pub listen: Option<String>,
}

impl Default for MetricsFile {
    fn default() -> Self {
        Self { textfile_dir: None, textfile_interval_s: 15, listen: None }
    }
}

/// Everything `hotpage run` needs, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct RunConfig {
    pub hint_faults: bool,
    /// The DAMON source, when on.
    pub damon: Option<DamonConfig>,
    pub samples: SamplesMode,
    pub sample_period: Option<u64>,
    /// Share of one core (0.03 = 3%).
    pub cpu_budget: f64,
    pub hotmap: HotMapConfig,
    /// The operator's promotion target, when set (see [`HotMapFile::target_nid`]).
    pub target_nid: Option<u32>,
    pub hint_capacity: usize,
    pub policy: Policy,
    pub promoter: PromoterConfig,
    pub manage_numa_balancing: bool,
    pub scan: [(&'static str, Option<u64>); 3],
    /// When the scanner rests (hint faults with `manage_numa_balancing` only).
    pub scan_rest: RestConfig,
    pub load: LoadOptions,
    pub drain_interval_ms: u64,
    pub textfile_dir: Option<PathBuf>,
    pub textfile_interval_s: u64,
    pub listen: Option<std::net::SocketAddr>,
}

impl FileConfig {
    /// The settings a recording was made with, to replay it as it ran (its
    /// flags then go on top, as on a configuration file).
    pub fn of_recording(h: &Header) -> Self {
        let mut f = Self::default();
        f.sources.hint_faults = h.hotmap.enabled_sources & SOURCE_HINT_FAULTS != 0;
        // A recording of the DAMON source ran without hint faults.
        f.sources.damon = h.hotmap.enabled_sources & SOURCE_PGTABLE_SCAN != 0 && !f.sources.hint_faults;
        f.sources.samples =
            if h.hotmap.enabled_sources & SOURCE_HW_HINTS != 0 { "software" } else { "off" }.into();
        f.hotmap = HotMapFile {
            mode: Some(h.hotmap.mode),
            freq_threshold: Some(h.hotmap.freq_threshold),
            freq_window_ms: Some(h.hotmap.freq_window_ms),
            target_nid: h.promoter.target_nid,
            hint_capacity: Some(h.hint_capacity),
            // Recordings from before the rule ran pghot's.
            policy: Some(h.policy.unwrap_or(Policy::Pghot)),
        };
        let p = &h.promoter;
        let nonzero = |v: usize| (v > 0).then_some(v);
        f.promoter = PromoterFile {
            rate_limit: Some(p.rate_limit_mbps.map_or("unlimited".into(), |n| n.to_string())),
            sleep_ms: (p.sleep_ms > 0).then_some(p.sleep_ms),
            batch_pages: nonzero(p.batch_pages),
            max_round_pages: nonzero(p.max_round_pages),
            headroom_mib: p.headroom_mib,
            ..PromoterFile::default()
        };
        f
    }

    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigFileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| ConfigFileError::Read { path: path.to_owned(), error })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigFileError> {
        toml::from_str(text).map_err(|e| ConfigFileError::Parse {
            path: path.to_owned(),
            // toml's message spans lines (it quotes the input); keep its first line.
            message: e.message().lines().next().unwrap_or("invalid TOML").to_owned()
                + &e.span().map(|s| format!(" (at byte {})", s.start)).unwrap_or_default(),
        })
    }

    /// Applies defaults and validates, naming `path` in errors.
    pub fn resolve(&self, path: &Path) -> Result<RunConfig, ConfigFileError> {
        let invalid = |what: String| ConfigFileError::Invalid { path: path.to_owned(), what };
        let mode = self.hotmap.mode.unwrap_or(RecordMode::Default);
        let mut hotmap = HotMapConfig::defaults(mode);
        let policy = self.hotmap.policy.unwrap_or_default();
        // The latency rule lets a fault through only on several scans' worth
        // of evidence, and a page faults once per scan (seconds apart, more
        // than pghot's window): one counted access is enough.
        hotmap.freq_threshold = match (self.hotmap.freq_threshold, policy) {
            (Some(t), _) => t,
            (None, Policy::Latency) => 1,
            (None, Policy::Pghot) => hotmap.freq_threshold,
        };
        if let Some(w) = self.hotmap.freq_window_ms {
            hotmap.freq_window_ms = w;
        }
        if let Some(n) = self.hotmap.target_nid {
            hotmap.target_nid = n;
        }
        let samples =
            SamplesMode::parse(&self.sources.samples).map_err(|e| invalid(format!("sources.{e}")))?;
        hotmap.enabled_sources = if self.sources.hint_faults { SOURCE_HINT_FAULTS } else { 0 }
            | if samples == SamplesMode::Off { 0 } else { SOURCE_HW_HINTS }
            | if self.sources.damon { SOURCE_PGTABLE_SCAN } else { 0 };
        hotmap.validate().map_err(|e| ConfigFileError::HotMap(e, path.to_owned()))?;

        let p = &self.promoter;
        let mut promoter = PromoterConfig::default();
        if let Some(r) = &p.rate_limit {
            promoter.rate_limit = RateLimit::parse(r).map_err(invalid)?;
        }
        promoter.sleep_ms = p.sleep_ms.unwrap_or(promoter.sleep_ms);
        promoter.batch_pages = p.batch_pages.unwrap_or(promoter.batch_pages);
        promoter.max_round_pages = p.max_round_pages.unwrap_or(promoter.max_round_pages);
        promoter.headroom_mib = p.headroom_mib.filter(|&m| m > 0);
        promoter.move_shared = p.move_shared.unwrap_or(promoter.move_shared);
        promoter.rearm_busy = p.rearm_busy.unwrap_or(promoter.rearm_busy);
        promoter.check_lru = p.check_lru.unwrap_or(promoter.check_lru);
        promoter.validate().map_err(|e| ConfigFileError::Promoter(e, path.to_owned()))?;

        let c = &self.collector;
        if c.wakeup_every == 0 {
            return Err(invalid("collector.wakeup_every must be at least 1".into()));
        }
        if !(1..=10_000).contains(&c.drain_interval_ms) {
            return Err(invalid("collector.drain_interval_ms must be 1..=10000".into()));
        }
        if !c.ring_mib.is_power_of_two() || c.ring_mib > 1024 {
            return Err(invalid(format!(
                "collector.ring_mib {} must be a power of two up to 1024",
                c.ring_mib
            )));
        }
        if !self.sources.hint_faults && !self.sources.damon && samples == SamplesMode::Off {
            return Err(invalid(
                "no source enabled: set sources.hint_faults = true, sources.damon = true or sources.samples"
                    .into(),
            ));
        }
        if self.sources.hint_faults && self.sources.damon {
            return Err(invalid(
                "sources.damon runs with kernel.numa_balancing 0, which makes no hint faults: set sources.hint_faults = false with it (--sources damon)"
                    .into(),
            ));
        }
        let damon = self.damon;
        damon.validate().map_err(invalid)?;
        let budget = self.sources.cpu_budget_percent;
        if !(budget > 0.0 && budget <= 100.0) {
            return Err(invalid(format!("sources.cpu_budget_percent {budget} must be in (0, 100]")));
        }
        if self.sources.sample_period == Some(0) {
            return Err(invalid("sources.sample_period must be at least 1".into()));
        }
        let listen = match self.metrics.listen.as_deref().filter(|s| !s.is_empty()) {
            // A bare port means loopback: metrics are not for the network unless asked.
            Some(a) => Some(match a.parse::<u16>() {
                Ok(port) => std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                Err(_) => a
                    .parse()
                    .map_err(|_| invalid(format!("metrics.listen {a:?} is not ip:port or a port")))?,
            }),
            None => None,
        };
        if self.metrics.textfile_interval_s == 0 {
            return Err(invalid("metrics.textfile_interval_s must be at least 1".into()));
        }
        let k = &self.kernel;
        // Longer than a day is no rest but a typo (and would overflow as ms).
        for (key, v) in
            [("rest_after_s", k.rest_after_s), ("rest_probe_s", k.rest_probe_s), ("rest_max_s", k.rest_max_s)]
        {
            if v > REST_LIMIT_S {
                return Err(invalid(format!(
                    "kernel.{key} = {v} is more than a day: at most {REST_LIMIT_S} s"
                )));
            }
        }
        if k.rest_after_s > 0 && (k.rest_probe_s == 0 || k.rest_max_s == 0) {
            return Err(invalid(
                "kernel.rest_probe_s and kernel.rest_max_s must be at least 1 (or rest_after_s = 0: never rest)"
                    .into(),
            ));
        }
        Ok(RunConfig {
            hint_faults: self.sources.hint_faults,
            damon: self.sources.damon.then_some(damon),
            samples,
            sample_period: self.sources.sample_period,
            cpu_budget: budget / 100.0,
            hotmap,
            target_nid: self.hotmap.target_nid,
            hint_capacity: self.hotmap.hint_capacity.unwrap_or(DEFAULT_HINT_CAPACITY).max(64),
            policy,
            promoter,
            manage_numa_balancing: k.manage_numa_balancing,
            scan: [
                (crate::kernel::settings::SCAN_DELAY_MS, k.scan_delay_ms),
                (crate::kernel::settings::SCAN_PERIOD_MIN_MS, k.scan_period_min_ms.filter(|&v| v > 0)),
                (crate::kernel::settings::SCAN_PERIOD_MAX_MS, k.scan_period_max_ms.filter(|&v| v > 0)),
            ],
            scan_rest: RestConfig {
                after_ms: k.rest_after_s * 1000,
                probe_ms: k.rest_probe_s * 1000,
                max_rest_ms: k.rest_max_s * 1000,
            },
            load: LoadOptions {
                wakeup_every: c.wakeup_every,
                ring_bytes: c.ring_mib << 20,
                ..LoadOptions::default()
            },
            drain_interval_ms: c.drain_interval_ms,
            textfile_dir: self.metrics.textfile_dir.clone().filter(|d| !d.as_os_str().is_empty()),
            textfile_interval_s: self.metrics.textfile_interval_s,
            listen,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<FileConfig, ConfigFileError> {
        FileConfig::parse(t, Path::new("test.toml"))
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let c = parse("").unwrap().resolve(Path::new("test.toml")).unwrap();
        assert!(c.hint_faults);
        assert_eq!(c.samples, SamplesMode::Auto);
        assert_eq!(c.cpu_budget, 0.03);
        assert_eq!(c.policy, Policy::Latency);
        assert_eq!(
            c.hotmap,
            HotMapConfig {
                freq_threshold: 1,
                enabled_sources: SOURCE_HINT_FAULTS | SOURCE_HW_HINTS,
                ..HotMapConfig::default()
            },
            "both sources enabled in the hot map; one access counts under the latency rule"
        );
        let pghot = parse("[hotmap]\npolicy = \"pghot\"").unwrap().resolve(Path::new("t")).unwrap();
        assert_eq!(
            pghot.hotmap,
            HotMapConfig { enabled_sources: SOURCE_HINT_FAULTS | SOURCE_HW_HINTS, ..HotMapConfig::default() },
            "pghot's own threshold"
        );
        assert_eq!(c.scan[1].1, Some(SCAN_PERIOD_MIN_MS), "hotpage paces the scans");
        let off = parse("[kernel]\nscan_period_min_ms = 0").unwrap().resolve(Path::new("t")).unwrap();
        assert_eq!(off.scan[1].1, None, "0 leaves the kernel's value");
        assert!(!c.scan_rest.enabled(), "the scanner never rests unless asked");
        let rests = parse("[kernel]\nrest_after_s = 20").unwrap().resolve(Path::new("t")).unwrap();
        assert_eq!(rests.scan_rest, crate::kernel::scan_rest::REST_20_S);
        let bad = parse("[kernel]\nrest_after_s = 20\nrest_probe_s = 0")
            .unwrap()
            .resolve(Path::new("t"))
            .unwrap_err();
        assert!(bad.to_string().contains("rest_probe_s"), "{bad}");
        // As many seconds as overflow in milliseconds (found by the property test below).
        let huge =
            parse("[kernel]\nrest_max_s = 18446744073709552").unwrap().resolve(Path::new("t")).unwrap_err();
        assert!(
            huge.to_string().contains("kernel.rest_max_s = 18446744073709552 is more than a day"),
            "{huge}"
        );
        assert_eq!(c.promoter, PromoterConfig::default());
        assert!(c.manage_numa_balancing);
        assert_eq!(c.load.wakeup_every, 512);
        assert_eq!(c.listen, None);
    }

    #[test]
    fn every_section_parses() {
        let c = parse(
            r#"
            [sources]
            hint_faults = true
            samples = "software"
            sample_period = 4
            cpu_budget_percent = 5
            [hotmap]
            mode = "precise"
            freq_threshold = 3
            freq_window_ms = 8000
            target_nid = 0
            hint_capacity = 1000
            [promoter]
            rate_limit = "unlimited"
            sleep_ms = 200
            batch_pages = 1024
            headroom_mib = 128
            [kernel]
            manage_numa_balancing = false
            scan_period_max_ms = 2000
            [collector]
            wakeup_every = 64
            drain_interval_ms = 50
            ring_mib = 8
            [metrics]
            textfile_dir = "/var/lib/node_exporter"
            listen = "127.0.0.1:9477"
            "#,
        )
        .unwrap()
        .resolve(Path::new("x"))
        .unwrap();
        assert_eq!(c.hotmap.mode, RecordMode::Precise);
        assert_eq!(
            (c.hotmap.freq_threshold, c.hotmap.freq_window_ms, c.hotmap.enabled_sources),
            (3, 8000, 3)
        );
        assert_eq!((c.samples, c.sample_period, c.cpu_budget), (SamplesMode::Software, Some(4), 0.05));
        assert_eq!(c.promoter.rate_limit, RateLimit::Unlimited);
        assert_eq!((c.promoter.batch_pages, c.promoter.headroom_mib), (1024, Some(128)));
        assert_eq!(c.scan[2].1, Some(2000));
        assert_eq!(c.load.ring_bytes, 8 << 20);
        assert_eq!(c.listen, Some("127.0.0.1:9477".parse().unwrap()));
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let e = parse("[promoter]\nrate = 5\n").unwrap_err().to_string();
        assert!(e.starts_with("test.toml: unknown field `rate`"), "{e}");
        assert_eq!(e.lines().count(), 1);
        assert!(parse("[nonsense]\n").is_err());
    }

    #[test]
    fn out_of_range_values_name_the_file_and_limit() {
        let e = parse("[hotmap]\nfreq_window_ms = 5000\n").unwrap().resolve(Path::new("h.toml")).unwrap_err();
        assert!(e.to_string().starts_with("h.toml: frequency window 5000 ms"), "{e}");
        let e =
            parse("[promoter]\nrate_limit = \"fast\"\n").unwrap().resolve(Path::new("h.toml")).unwrap_err();
        assert!(e.to_string().contains("observe only"), "{e}");
        let e = parse("[collector]\nring_mib = 3\n").unwrap().resolve(Path::new("h.toml")).unwrap_err();
        assert!(e.to_string().contains("power of two"), "{e}");
        let e = parse("[sources]\nhint_faults = false\nsamples = \"off\"\n")
            .unwrap()
            .resolve(Path::new("h.toml"))
            .unwrap_err();
        assert!(e.to_string().contains("no source enabled"), "{e}");
        let e = parse("[sources]\nsamples = \"pebs\"\n").unwrap().resolve(Path::new("h.toml")).unwrap_err();
        assert!(e.to_string().contains("want auto, hardware, software or off"), "{e}");
        let e =
            parse("[sources]\ncpu_budget_percent = 0\n").unwrap().resolve(Path::new("h.toml")).unwrap_err();
        assert!(e.to_string().contains("cpu_budget_percent"), "{e}");
        let e =
            parse("[metrics]\nlisten = \"localhost\"\n").unwrap().resolve(Path::new("h.toml")).unwrap_err();
        assert!(e.to_string().contains("not ip:port"), "{e}");
        let c = parse("[metrics]\nlisten = \"9477\"\n").unwrap().resolve(Path::new("h.toml")).unwrap();
        assert_eq!(c.listen, Some("127.0.0.1:9477".parse().unwrap()), "a bare port binds loopback only");
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/hotpage.toml"));
        FileConfig::load(path).unwrap().resolve(path).unwrap();
    }

    /// Every (section, key) of the shipped example, which lists them all.
    fn shipped_keys() -> Vec<(String, String)> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/hotpage.toml");
        let mut section = String::new();
        let mut keys = Vec::new();
        for line in std::fs::read_to_string(path).unwrap().lines() {
            let line = line.trim_start_matches('#').trim();
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
            } else if let Some((key, _)) = line.split_once(" = ")
                && !key.contains(' ')
                && !section.is_empty()
            {
                keys.push((section.clone(), key.to_owned()));
            }
        }
        keys
    }

    /// A TOML value of any type, in and out of every key's range.
    fn toml_value() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            any::<i64>().prop_map(|v| v.to_string()),
            prop_oneof![Just(0i64), Just(1), Just(-1), Just(64), Just(1 << 20), Just(u32::MAX as i64 + 1)]
                .prop_map(|v| v.to_string()),
            any::<f64>().prop_map(|v| if v.is_finite() { format!("{v:?}") } else { "nan".into() }),
            Just("inf".to_owned()),
            any::<bool>().prop_map(|v| v.to_string()),
            "[ -~]{0,12}".prop_map(|v| format!("{:?}", v)),
            prop_oneof![
                Just("auto"),
                Just("off"),
                Just("unlimited"),
                Just("0"),
                Just("pghot"),
                Just("[::1]:80")
            ]
            .prop_map(|v| format!("{v:?}")),
            proptest::collection::vec(any::<i8>(), 0..3).prop_map(|v| format!("{v:?}")),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Any value for any key: a valid configuration or one line naming
        /// the problem, never a panic.
        #[test]
        fn every_key_with_any_value_is_a_config_or_one_line(
            picks in proptest::collection::vec((0usize..1000, toml_value()), 1..6)
        ) {
            let keys = shipped_keys();
            proptest::prop_assert!(keys.len() >= 28, "the example lists every key");
            let mut by_section: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
            for (i, value) in &picks {
                let (section, key) = &keys[i % keys.len()];
                by_section.entry(section).or_default().push(format!("{key} = {value}"));
            }
            let text: String = by_section.iter().map(|(s, lines)| format!("[{s}]\n{}\n", lines.join("\n"))).collect();
            let path = Path::new("hotpage.toml");
            match FileConfig::parse(&text, path).and_then(|c| c.resolve(path)) {
                Ok(_) => {}
                Err(e) => {
                    let msg = e.to_string();
                    proptest::prop_assert!(!msg.contains('\n'), "{text:?} → {msg:?}");
                    proptest::prop_assert!(msg.starts_with("hotpage.toml"), "{msg}");
                }
            }
        }
    }
}
