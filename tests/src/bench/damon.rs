//! DAMON's own tiering for the e2e comparison: one kdamond with a `paddr`
//! context over the lower tier's physical memory and a DAMOS `migrate_hot`
//! scheme to node 0, configured through its sysfs interface
//! (Documentation/admin-guide/mm/damon/usage.rst). Stopped and removed when
//! dropped.

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use hotpage::sys::topology::TierTopology;

const KDAMONDS: &str = "/sys/kernel/mm/damon/admin/kdamonds";

/// The scheme's access pattern and intervals.
#[derive(Clone, Copy, Debug)]
pub struct MigrateHot {
    pub sample_us: u64,
    pub aggr_us: u64,
    pub min_regions: u64,
    pub max_regions: u64,
    /// Accesses per aggregation interval (out of `aggr_us / sample_us`) that make a region hot.
    pub min_nr_accesses: u64,
    pub target_nid: u32,
}

impl Default for MigrateHot {
    /// DAMON's default intervals (5 ms sampling, 100 ms aggregation, 10-1000
    /// regions); hot = seen accessed in at least 3 of the 20 samples of an interval.
    fn default() -> Self {
        Self {
            sample_us: 5000,
            aggr_us: 100_000,
            min_regions: 10,
            max_regions: 1000,
            min_nr_accesses: 3,
            target_nid: 0,
        }
    }
}

/// A running kdamond; stopped and removed on drop.
pub struct Kdamond {
    dir: PathBuf,
}

fn write(path: &Path, value: impl ToString) -> Result<()> {
    fs::write(path, value.to_string()).with_context(|| format!("writing {}", path.display()))
}

impl Kdamond {
    /// Starts `scheme` over every lower-tier node's physical memory.
    pub fn start(topo: &TierTopology, scheme: MigrateHot) -> Result<Self> {
        let root = Path::new(KDAMONDS);
        if !root.exists() {
            bail!("{KDAMONDS} is missing: this kernel lacks CONFIG_DAMON_SYSFS");
        }
        let nr = fs::read_to_string(root.join("nr_kdamonds"))?.trim().parse::<u32>()?;
        if nr != 0 {
            bail!("DAMON already has {nr} kdamond(s) configured; the bench wants the machine to itself");
        }
        // Lower-tier memory as byte ranges, merged where they touch.
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for r in topo.lower_tier_ranges()? {
            let (s, e) = (r.start_pfn << 12, r.end_pfn << 12);
            match ranges.last_mut() {
                Some(last) if last.1 == s => last.1 = e,
                _ => ranges.push((s, e)),
            }
        }
        write(&root.join("nr_kdamonds"), 1)?;
        let k = Self { dir: root.join("0") };
        let c = k.dir.join("contexts/0");
        write(&k.dir.join("contexts/nr_contexts"), 1)?;
        write(&c.join("operations"), "paddr")?;
        let attrs = c.join("monitoring_attrs");
        write(&attrs.join("intervals/sample_us"), scheme.sample_us)?;
        write(&attrs.join("intervals/aggr_us"), scheme.aggr_us)?;
        write(&attrs.join("intervals/update_us"), 1_000_000)?;
        write(&attrs.join("nr_regions/min"), scheme.min_regions)?;
        write(&attrs.join("nr_regions/max"), scheme.max_regions)?;
        write(&c.join("targets/nr_targets"), 1)?;
        let regions = c.join("targets/0/regions");
        write(&regions.join("nr_regions"), ranges.len())?;
        for (i, (s, e)) in ranges.iter().enumerate() {
            write(&regions.join(format!("{i}/start")), s)?;
            write(&regions.join(format!("{i}/end")), e)?;
        }
        write(&c.join("schemes/nr_schemes"), 1)?;
        let s = c.join("schemes/0");
        write(&s.join("action"), "migrate_hot")?;
        write(&s.join("target_nid"), scheme.target_nid)?;
        // Every bound defaults to 0 and matches nothing: set all six.
        let pattern = s.join("access_pattern");
        write(&pattern.join("sz/min"), 4096)?;
        write(&pattern.join("sz/max"), u64::MAX)?;
        write(&pattern.join("nr_accesses/min"), scheme.min_nr_accesses)?;
        write(&pattern.join("nr_accesses/max"), u32::MAX)?;
        write(&pattern.join("age/min"), 0)?;
        write(&pattern.join("age/max"), u32::MAX)?;
        write(&k.dir.join("state"), "on")?;
        Ok(k)
    }

    /// The kdamond thread's pid (its CPU time is DAMON's cost).
    pub fn pid(&self) -> Option<u32> {
        fs::read_to_string(self.dir.join("pid"))
            .ok()?
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|p| *p > 0)
            .map(|p| p as u32)
    }

    /// Bytes the scheme has migrated so far (`sz_applied`).
    pub fn applied_bytes(&self) -> Option<u64> {
        write(&self.dir.join("state"), "update_schemes_stats").ok()?;
        let p = self.dir.join("contexts/0/schemes/0/stats/sz_applied");
        fs::read_to_string(p).ok()?.trim().parse().ok()
    }
}

impl Drop for Kdamond {
    fn drop(&mut self) {
        let _ = write(&self.dir.join("state"), "off");
        let t = Instant::now();
        while self.pid().is_some() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = write(&Path::new(KDAMONDS).join("nr_kdamonds"), 0);
    }
}
