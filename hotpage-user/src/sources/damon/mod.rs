//! The DAMON source: pghot's page-table-scan source on a stock kernel.
//! hotpage starts (and owns) one kdamond that monitors the virtual address
//! spaces of the processes holding lower-tier memory ([`targets`]), through
//! DAMON's sysfs interface ([`kdamond`]). A `tp_btf` program on
//! `damon:damon_aggregated` reports each accessed region of that kdamond
//! ([`tracepoint`] finds the tracepoint's arguments in BTF); the resolver
//! expands a region into its lower-tier pages within a budget ([`regions`]),
//! each with the access rate DAMON measured turned into a latency-like figure
//! (ms between accesses), which the hotness rule ranks as it ranks hint
//! faults' scan-to-fault latencies.

pub mod kdamond;
pub mod regions;
pub mod source;
pub mod targets;
pub mod tracepoint;

pub use kdamond::{DamonError, Kdamond, damon_status};
pub use regions::{RegionPlanner, RegionStats};
pub use source::{DamonSource, DamonStatus};

/// The DAMON source's knobs (`[damon]` in the configuration file, every key
/// optional, unknown keys refused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DamonConfig {
    /// DAMON's sampling interval, µs: each region's access bit is checked once per sample.
    pub sample_us: u64,
    /// Aggregation interval, µs: regions are reported (and counts reset) once per interval.
    pub aggr_us: u64,
    /// Region-split/merge bounds per target.
    pub min_regions: u64,
    pub max_regions: u64,
    /// Regions accessed fewer times than this per aggregation are not reported.
    pub min_nr_accesses: u32,
    /// Most pages one region is expanded to per aggregation (a bigger region
    /// is covered a window at a time, over successive aggregations).
    pub region_max_pages: u64,
    /// Most pages expanded per second over all regions (hottest regions first).
    pub pages_per_second: u64,
    /// Processes with less lower-tier memory than this are not monitored.
    pub target_min_mib: u64,
    /// Most processes monitored (the ones with the most lower-tier memory).
    pub max_targets: usize,
    /// Seconds between looks for processes that came or went.
    pub retarget_s: u64,
}

impl Default for DamonConfig {
    /// DAMON's own default intervals (5 ms sampling, 100 ms aggregation);
    /// the expansion budget keeps hotpage's share of a core small.
    fn default() -> Self {
        Self {
            sample_us: 5_000,
            aggr_us: 100_000,
            min_regions: 10,
            max_regions: 1000,
            min_nr_accesses: 1,
            region_max_pages: 512,
            pages_per_second: 20_000,
            target_min_mib: 4,
            max_targets: 16,
            retarget_s: 10,
        }
    }
}

impl DamonConfig {
    /// Samples per aggregation interval: the most `nr_accesses` can be.
    pub fn samples_per_aggregation(&self) -> u64 {
        (self.aggr_us / self.sample_us.max(1)).max(1)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.sample_us == 0 || self.aggr_us < self.sample_us {
            return Err(format!(
                "damon.sample_us ({}) must be at least 1 and at most damon.aggr_us ({})",
                self.sample_us, self.aggr_us
            ));
        }
        if self.min_regions < 3 || self.max_regions < self.min_regions {
            return Err(format!(
                "damon.min_regions ({}) must be at least 3 and at most damon.max_regions ({})",
                self.min_regions, self.max_regions
            ));
        }
        if self.region_max_pages == 0 || self.pages_per_second == 0 {
            return Err("damon.region_max_pages and damon.pages_per_second must be at least 1".into());
        }
        if self.max_targets == 0 || self.retarget_s == 0 {
            return Err("damon.max_targets and damon.retarget_s must be at least 1".into());
        }
        Ok(())
    }
}
