//! The kdamond hotpage starts and owns, driven through DAMON's sysfs
//! interface (Documentation/admin-guide/mm/damon/usage.rst): one context
//! with virtual-address operations over the target processes. hotpage only
//! ever touches a kdamond it created: it refuses to start when DAMON has
//! kdamonds already, and its `nr_kdamonds` and `state` writes go through the
//! settings guard, so the kdamond is stopped and removed on exit and, after
//! a crash, on the next start.

use std::path::{Path, PathBuf};

use thiserror::Error;

use super::{DamonAttrs, DamonConfig};
use crate::kernel::settings::{SettingsError, SettingsGuard, read_value};

pub use crate::kernel::movers::DAMON_KDAMONDS as KDAMONDS;

#[derive(Debug, Error)]
pub enum DamonError {
    #[error(
        "DAMON's sysfs interface ({0}) is missing: this kernel lacks CONFIG_DAMON_SYSFS \
         (use the hint-fault or sample source instead)"
    )]
    Missing(PathBuf),
    #[error(
        "DAMON has {0} kdamond(s) that hotpage did not start: hotpage only runs its own; stop them \
         (echo off > .../kdamonds/N/state; echo 0 > .../kdamonds/nr_kdamonds) or use another source"
    )]
    NotFree(u64),
    #[error(
        "this kernel's DAMON cannot monitor virtual addresses (CONFIG_DAMON_VADDR unset): use another source"
    )]
    NoVaddr,
    #[error("damon:damon_aggregated tracepoint: {0}")]
    Tracepoint(String),
    #[error("DAMON: {path}: {error}", path = .path.display())]
    Io { path: PathBuf, error: std::io::Error },
    #[error(transparent)]
    Settings(#[from] SettingsError),
}

/// Whether DAMON is there and free, for `hotpage check`: Ok(()) when hotpage
/// can start its kdamond.
pub fn damon_status(root: &Path) -> Result<(), DamonError> {
    let dir = root.join(KDAMONDS);
    if !dir.is_dir() {
        return Err(DamonError::Missing(dir));
    }
    match read_value(&dir.join("nr_kdamonds"))?.parse::<u64>() {
        Ok(0) => Ok(()),
        Ok(n) => Err(DamonError::NotFree(n)),
        Err(_) => Err(DamonError::Io {
            path: dir.join("nr_kdamonds"),
            error: std::io::Error::other("not a number"),
        }),
    }
}

/// hotpage's kdamond (`kdamonds/0`).
#[derive(Debug)]
pub struct Kdamond {
    root: PathBuf,
    cfg: DamonConfig,
}

fn write(path: &Path, value: impl ToString) -> Result<(), DamonError> {
    std::fs::write(path, value.to_string()).map_err(|error| DamonError::Io { path: path.to_owned(), error })
}

impl Kdamond {
    fn rel(name: &str) -> String {
        format!("{KDAMONDS}/{name}")
    }

    fn dir(&self) -> PathBuf {
        self.root.join(KDAMONDS).join("0")
    }

    /// Creates the kdamond's directory (`nr_kdamonds` 0 → 1, through the
    /// guard) and its context, without starting it.
    pub fn create(root: &Path, guard: &mut SettingsGuard, cfg: DamonConfig) -> Result<Self, DamonError> {
        damon_status(root)?;
        guard.set(&Self::rel("nr_kdamonds"), "1")?;
        let k = Self { root: root.to_owned(), cfg };
        let dir = k.dir();
        write(&dir.join("contexts/nr_contexts"), 1)?;
        let ctx = dir.join("contexts/0");
        if let Err(e) = write(&ctx.join("operations"), "vaddr") {
            return Err(match e {
                DamonError::Io { error, .. } if error.raw_os_error() == Some(libc::EINVAL) => {
                    DamonError::NoVaddr
                }
                e => e,
            });
        }
        let attrs = ctx.join("monitoring_attrs");
        write(&attrs.join("intervals/sample_us"), cfg.sample_us)?;
        write(&attrs.join("intervals/aggr_us"), cfg.aggr_us)?;
        // Regions adapt every second; the target list is hotpage's to change.
        write(&attrs.join("intervals/update_us"), 1_000_000)?;
        write(&attrs.join("nr_regions/min"), cfg.min_regions)?;
        write(&attrs.join("nr_regions/max"), cfg.max_regions)?;
        // Monitoring only: no schemes.
        write(&ctx.join("schemes/nr_schemes"), 0)?;
        // hotpage turns it on and off as targets come and go; whatever it
        // is at exit (or after a crash), the guard stops it before removing it.
        guard.track(&Self::rel("0/state"), "on")?;
        Ok(k)
    }

    pub fn config(&self) -> &DamonConfig {
        &self.cfg
    }

    /// Monitors `pids` from now on: stops the kdamond if it runs, writes the
    /// targets and starts it. A pid that exited meanwhile is dropped and the
    /// start retried. Returns the pids monitored (empty: not started).
    pub fn monitor(&self, pids: &[u32]) -> Result<Vec<u32>, DamonError> {
        self.stop();
        let mut pids: Vec<u32> = pids.iter().copied().take(hotpage_ebpf::DAMON_MAX_TARGETS).collect();
        while !pids.is_empty() {
            let targets = self.dir().join("contexts/0/targets");
            write(&targets.join("nr_targets"), pids.len())?;
            for (i, pid) in pids.iter().enumerate() {
                write(&targets.join(format!("{i}/pid_target")), pid)?;
                // Each target's regions start empty: DAMON sets them from the address space.
                write(&targets.join(format!("{i}/regions/nr_regions")), 0)?;
            }
            match write(&self.dir().join("state"), "on") {
                Ok(()) => return Ok(pids),
                Err(e) => {
                    let alive: Vec<u32> = pids
                        .iter()
                        .copied()
                        .filter(|p| self.root.join(format!("proc/{p}")).exists())
                        .collect();
                    if alive.len() == pids.len() {
                        return Err(e);
                    }
                    pids = alive;
                }
            }
        }
        Ok(pids)
    }

    /// Sets the sampling and aggregation intervals; a running kdamond takes
    /// them online (`commit`: its regions and their counts are kept, DAMON
    /// rescales the counts to the new interval). A kdamond that refuses them
    /// keeps the files' previous values too, so a restart runs as before.
    pub fn set_attrs(&self, attrs: &DamonAttrs) -> Result<(), DamonError> {
        let i = self.dir().join("contexts/0/monitoring_attrs/intervals");
        let files = [i.join("sample_us"), i.join("aggr_us")];
        let before = files.iter().map(|f| read_value(f)).collect::<Result<Vec<_>, _>>()?;
        let set = |values: &[String]| files.iter().zip(values).try_for_each(|(f, v)| write(f, v));
        let new = [attrs.sample_us, attrs.aggr_us].map(|v| v.to_string());
        let applied = set(&new)
            .and_then(|()| if self.running() { write(&self.dir().join("state"), "commit") } else { Ok(()) });
        if applied.is_err() {
            let _ = set(&before);
        }
        applied
    }

    /// Stops the kdamond (it stays configured).
    pub fn stop(&self) {
        if self.running() {
            let _ = write(&self.dir().join("state"), "off");
        }
    }

    /// Whether the kdamond runs (it stops by itself when all its targets exit).
    pub fn running(&self) -> bool {
        read_value(&self.dir().join("state")).is_ok_and(|s| s == "on")
    }

    /// The kdamond thread's pid once it runs: the thread starts after the
    /// `state` write returns, so this waits for it (up to `limit`).
    pub fn wait_pid(&self, limit: std::time::Duration) -> Option<u32> {
        let t = std::time::Instant::now();
        loop {
            if let Some(p) = self.pid() {
                return Some(p);
            }
            if t.elapsed() >= limit || !self.running() {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// The kdamond thread's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        read_value(&self.dir().join("pid")).ok()?.parse::<i64>().ok().filter(|p| *p > 0).map(|p| p as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake sysfs: DAMON's directory with nr_kdamonds, a kdamond 0 and
    /// the files hotpage writes, plus /proc for the numa_balancing sysctl.
    fn fake_root(nr: u32) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join(KDAMONDS);
        std::fs::create_dir_all(&k).unwrap();
        std::fs::write(k.join("nr_kdamonds"), format!("{nr}\n")).unwrap();
        let ctx = k.join("0/contexts/0");
        for d in [
            "monitoring_attrs/intervals",
            "monitoring_attrs/nr_regions",
            "schemes",
            "targets/0/regions",
            "targets/1/regions",
        ] {
            std::fs::create_dir_all(ctx.join(d)).unwrap();
        }
        std::fs::write(k.join("0/state"), "off\n").unwrap();
        dir
    }

    #[test]
    fn damon_is_free_only_without_kdamonds() {
        let free = fake_root(0);
        assert!(damon_status(free.path()).is_ok());
        let busy = fake_root(2);
        let e = damon_status(busy.path()).unwrap_err().to_string();
        assert!(e.contains("2 kdamond(s) that hotpage did not start"), "{e}");
        let none = tempfile::tempdir().unwrap();
        assert!(damon_status(none.path()).unwrap_err().to_string().contains("CONFIG_DAMON_SYSFS"));
    }

    #[test]
    fn the_kdamond_is_configured_started_and_restored_through_the_guard() {
        let root = fake_root(0);
        let run = tempfile::tempdir().unwrap();
        let (mut guard, _) = SettingsGuard::acquire(root.path(), run.path()).unwrap();
        let cfg = DamonConfig::default();
        let k = Kdamond::create(root.path(), &mut guard, cfg).unwrap();
        let dir = root.path().join(KDAMONDS);
        let read = |p: &str| std::fs::read_to_string(dir.join(p)).unwrap().trim().to_owned();
        assert_eq!(read("nr_kdamonds"), "1");
        assert_eq!(read("0/contexts/0/operations"), "vaddr");
        assert_eq!(read("0/contexts/0/monitoring_attrs/intervals/sample_us"), "5000");
        assert_eq!(read("0/contexts/0/monitoring_attrs/nr_regions/max"), "1000");
        let monitored = k.monitor(&[100, 200]).unwrap();
        assert_eq!(monitored, vec![100, 200]);
        assert_eq!(read("0/contexts/0/targets/nr_targets"), "2");
        assert_eq!(read("0/contexts/0/targets/1/pid_target"), "200");
        assert_eq!(read("0/state"), "on");
        // Stopped by the kernel (its targets exited), restored quietly; then removed.
        std::fs::write(dir.join("0/state"), "off\n").unwrap();
        guard.restore().unwrap();
        assert_eq!(read("nr_kdamonds"), "0");
    }

    #[test]
    fn new_attributes_reach_a_running_kdamond_through_commit() {
        let root = fake_root(0);
        let run = tempfile::tempdir().unwrap();
        let (mut guard, _) = SettingsGuard::acquire(root.path(), run.path()).unwrap();
        let k = Kdamond::create(root.path(), &mut guard, DamonConfig::default()).unwrap();
        let dir = root.path().join(KDAMONDS).join("0");
        let read = |p: &str| std::fs::read_to_string(dir.join(p)).unwrap().trim().to_owned();
        // Stopped: the files change, the state is left alone.
        k.set_attrs(&DamonAttrs { sample_us: 20_000, aggr_us: 400_000 }).unwrap();
        assert_eq!(read("contexts/0/monitoring_attrs/intervals/sample_us"), "20000");
        assert_eq!(read("contexts/0/monitoring_attrs/intervals/aggr_us"), "400000");
        assert_eq!(read("state"), "off");
        // Running: committed online (the kernel reads the files again; no restart).
        k.monitor(&[100]).unwrap();
        k.set_attrs(&DamonAttrs { sample_us: 80_000, aggr_us: 1_600_000 }).unwrap();
        assert_eq!(read("contexts/0/monitoring_attrs/intervals/sample_us"), "80000");
        assert_eq!(read("state"), "commit");
        // Refused (here: a file that reads but cannot be written, after the
        // sampling interval was): the value written is put back.
        let aggr = dir.join("contexts/0/monitoring_attrs/intervals/aggr_us");
        std::fs::remove_file(&aggr).unwrap();
        std::os::unix::fs::symlink("/proc/version", &aggr).unwrap();
        assert!(k.set_attrs(&DamonAttrs { sample_us: 5_000, aggr_us: 100_000 }).is_err());
        assert_eq!(read("contexts/0/monitoring_attrs/intervals/sample_us"), "80000");
    }

    #[test]
    fn a_crash_leaves_nothing_running_after_the_next_start() {
        let root = fake_root(0);
        let run = tempfile::tempdir().unwrap();
        {
            let (mut guard, _) = SettingsGuard::acquire(root.path(), run.path()).unwrap();
            let k = Kdamond::create(root.path(), &mut guard, DamonConfig::default()).unwrap();
            k.monitor(&[100]).unwrap();
            guard.simulate_crash();
        }
        let (_guard, recovered) = SettingsGuard::acquire(root.path(), run.path()).unwrap();
        let dir = root.path().join(KDAMONDS);
        assert_eq!(std::fs::read_to_string(dir.join("0/state")).unwrap().trim(), "off");
        assert_eq!(std::fs::read_to_string(dir.join("nr_kdamonds")).unwrap().trim(), "0");
        assert_eq!(recovered.len(), 2, "{recovered:?}");
    }
}
