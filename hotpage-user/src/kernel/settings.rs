//! Kernel settings hotpage changes (sysctls, debugfs knobs), saved before the
//! change and restored afterwards, even across a crash.
//!
//! Before writing a setting, its original value goes into a state file under
//! the run directory (`/run/hotpage/kernel-settings.json`). A normal stop
//! restores every original in reverse order and removes the file. If hotpage
//! dies (`kill -9`), the file stays; the next start finds it while nobody holds
//! the lock, restores it first, and says so. An exclusive `flock` on
//! `hotpage.lock` keeps two instances from changing settings at once.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub const DEFAULT_RUN_DIR: &str = "/run/hotpage";
const STATE_FILE: &str = "kernel-settings.json";
const LOCK_FILE: &str = "hotpage.lock";

/// `kernel.numa_balancing`.
pub const NUMA_BALANCING: &str = "proc/sys/kernel/numa_balancing";
/// `kernel.numa_balancing_promote_rate_limit_MBps`.
pub const PROMOTE_RATE_LIMIT: &str = "proc/sys/kernel/numa_balancing_promote_rate_limit_MBps";
/// NUMA-balancing scan knobs (debugfs), which tests lower to get faults sooner.
pub const SCAN_DELAY_MS: &str = "sys/kernel/debug/sched/numa_balancing/scan_delay_ms";
pub const SCAN_PERIOD_MIN_MS: &str = "sys/kernel/debug/sched/numa_balancing/scan_period_min_ms";
pub const SCAN_PERIOD_MAX_MS: &str = "sys/kernel/debug/sched/numa_balancing/scan_period_max_ms";
pub const SCAN_SIZE_MB: &str = "sys/kernel/debug/sched/numa_balancing/scan_size_mb";
/// NUMA balancing's promotion threshold in tiering mode (debugfs).
pub const HOT_THRESHOLD_MS: &str = "sys/kernel/debug/sched/numa_balancing/hot_threshold_ms";
/// Reclaim demotes to a lower tier instead of discarding (`true`/`false`).
pub const DEMOTION_ENABLED: &str = "sys/kernel/mm/numa/demotion_enabled";

/// `numa_balancing` mode bits.
pub const NUMA_BALANCING_NORMAL: u64 = 1;
pub const NUMA_BALANCING_MEMORY_TIERING: u64 = 2;

#[derive(Debug, Error)]
pub enum SettingsError {
    #[error("{action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: io::Error },
    #[error(
        "another hotpage is managing kernel settings (lock {0} is held): stop it first, or run this one \
         without changing settings"
    )]
    Locked(PathBuf),
    #[error("state file {path} is damaged ({detail}); check the values it lists by hand, then remove it")]
    BadState { path: PathBuf, detail: String },
    #[error("{path} holds {value:?}, not a number")]
    NotANumber { path: PathBuf, value: String },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SettingsError + 'a {
    move |source| SettingsError::Io { action, path: path.to_owned(), source }
}

/// One changed setting: where, what it was, what hotpage wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSetting {
    /// Path relative to the root (`proc/sys/kernel/numa_balancing`).
    pub path: String,
    pub original: String,
    pub applied: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    pid: u32,
    settings: Vec<SavedSetting>,
}

/// Holds the lock and restores every change on [`SettingsGuard::restore`] or drop.
#[derive(Debug)]
pub struct SettingsGuard {
    root: PathBuf,
    state_path: PathBuf,
    _lock: File,
    saved: Vec<SavedSetting>,
}

/// Returns settings a crashed run left behind to their originals, if the
/// lock is free. Returns what it restored.
pub fn recover(root: &Path, run_dir: &Path) -> Result<Vec<SavedSetting>, SettingsError> {
    let state_path = run_dir.join(STATE_FILE);
    if !state_path.exists() {
        return Ok(Vec::new());
    }
    // Holding the lock proves the file's writer is gone.
    match take_lock(run_dir) {
        Ok(_lock) => restore_state_file(root, &state_path),
        Err(SettingsError::Locked(_)) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

fn take_lock(run_dir: &Path) -> Result<File, SettingsError> {
    fs::create_dir_all(run_dir).map_err(io_err("creating", run_dir))?;
    let lock_path = run_dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err("opening", &lock_path))?;
    // SAFETY: flock on a descriptor we own; non-blocking.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(SettingsError::Locked(lock_path));
        }
        return Err(SettingsError::Io { action: "locking", path: lock_path, source: e });
    }
    Ok(lock)
}

fn restore_state_file(root: &Path, state_path: &Path) -> Result<Vec<SavedSetting>, SettingsError> {
    let text = fs::read_to_string(state_path).map_err(io_err("reading", state_path))?;
    let state: StateFile = serde_json::from_str(&text)
        .map_err(|e| SettingsError::BadState { path: state_path.to_owned(), detail: e.to_string() })?;
    restore_all(root, &state.settings)?;
    fs::remove_file(state_path).map_err(io_err("removing", state_path))?;
    Ok(state.settings)
}

/// Puts each original back, newest change first, unless the value is no
/// longer what hotpage applied: then an operator (or another tool) changed it
/// since, and their value stays.
fn restore_all(root: &Path, settings: &[SavedSetting]) -> Result<(), SettingsError> {
    let mut first_err = None;
    for s in settings.iter().rev() {
        let path = root.join(&s.path);
        match read_value(&path) {
            // Back already (a kdamond whose targets all exited stops itself).
            Ok(now) if now == s.original => continue,
            Ok(now) if now != s.applied => {
                tracing::warn!(
                    "left {} at {now}: it was changed after hotpage set it to {} (hotpage found {})",
                    s.path,
                    s.applied,
                    s.original
                );
                continue;
            }
            // Unreadable: try the write, which reports the problem.
            _ => {}
        }
        if let Err(e) = write_value(&path, &s.original) {
            tracing::error!("restoring {}: {e}", s.path);
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

pub fn read_value(path: &Path) -> Result<String, SettingsError> {
    Ok(fs::read_to_string(path).map_err(io_err("reading", path))?.trim().to_owned())
}

fn write_value(path: &Path, value: &str) -> Result<(), SettingsError> {
    // O_TRUNC is ignored by procfs/debugfs and keeps plain files (fixtures) exact.
    let mut f = OpenOptions::new().write(true).truncate(true).open(path).map_err(io_err("opening", path))?;
    f.write_all(format!("{value}\n").as_bytes()).map_err(io_err("writing", path))
}

impl SettingsGuard {
    /// Takes the lock (failing if another hotpage holds it) after restoring
    /// anything a crashed run left. Returns the guard and what was recovered.
    pub fn acquire(root: &Path, run_dir: &Path) -> Result<(Self, Vec<SavedSetting>), SettingsError> {
        let lock = take_lock(run_dir)?;
        let state_path = run_dir.join(STATE_FILE);
        let recovered = if state_path.exists() { restore_state_file(root, &state_path)? } else { Vec::new() };
        let guard = Self { root: root.to_owned(), state_path, _lock: lock, saved: Vec::new() };
        Ok((guard, recovered))
    }

    /// Sets `path` (relative to the root) to `value`, saving the original
    /// first. Setting the same path twice keeps the first original.
    pub fn set(&mut self, path: &str, value: &str) -> Result<(), SettingsError> {
        let full = self.root.join(path);
        let current = read_value(&full)?;
        if let Some(s) = self.saved.iter_mut().find(|s| s.path == path) {
            s.applied = value.to_owned();
        } else {
            if current == value {
                return Ok(());
            }
            self.saved.push(SavedSetting {
                path: path.to_owned(),
                original: current,
                applied: value.to_owned(),
            });
        }
        self.write_state()?;
        write_value(&full, value)
    }

    /// Records that hotpage will set `path` to `applied` by other means (a
    /// kdamond's `state`, which it turns on and off as its targets change):
    /// the value now is the original to put back. Writes nothing but the
    /// state file.
    pub fn track(&mut self, path: &str, applied: &str) -> Result<(), SettingsError> {
        let current = read_value(&self.root.join(path))?;
        if !self.saved.iter().any(|s| s.path == path) {
            self.saved.push(SavedSetting {
                path: path.to_owned(),
                original: current,
                applied: applied.to_owned(),
            });
        }
        self.write_state()
    }

    /// Reads a numeric setting.
    pub fn read_u64(&self, path: &str) -> Result<u64, SettingsError> {
        let full = self.root.join(path);
        let v = read_value(&full)?;
        v.parse().map_err(|_| SettingsError::NotANumber { path: full, value: v })
    }

    /// Hint faults on lower-tier pages without the kernel's own promotion:
    /// NUMA balancing's memory-tiering bit on (keeping the normal bit if the
    /// operator had it) and a promotion rate limit of 0 MB/s.
    pub fn hint_faults_without_kernel_promotion(&mut self) -> Result<(), SettingsError> {
        let mode = self.read_u64(NUMA_BALANCING)?;
        let wanted = (mode & NUMA_BALANCING_NORMAL) | NUMA_BALANCING_MEMORY_TIERING;
        self.set(NUMA_BALANCING, &wanted.to_string())?;
        self.set(PROMOTE_RATE_LIMIT, "0")
    }

    pub fn saved(&self) -> &[SavedSetting] {
        &self.saved
    }

    fn write_state(&self) -> Result<(), SettingsError> {
        let state = StateFile { pid: std::process::id(), settings: self.saved.clone() };
        let tmp = self.state_path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(&state)
            .map_err(|e| SettingsError::BadState { path: tmp.clone(), detail: e.to_string() })?;
        let mut f = File::create(&tmp).map_err(io_err("creating", &tmp))?;
        f.write_all(&body).map_err(io_err("writing", &tmp))?;
        f.sync_all().map_err(io_err("syncing", &tmp))?;
        fs::rename(&tmp, &self.state_path).map_err(io_err("renaming", &tmp))
    }

    /// Test-only: what a crash leaves behind: the state file, nothing
    /// restored, and the lock gone with the process.
    #[cfg(test)]
    pub(crate) fn simulate_crash(mut self) {
        let lock = std::mem::replace(&mut self._lock, File::open("/dev/null").expect("/dev/null opens"));
        std::mem::forget(self);
        drop(lock);
    }

    /// Puts every original back and removes the state file.
    pub fn restore(&mut self) -> Result<(), SettingsError> {
        if self.saved.is_empty() {
            return Ok(());
        }
        restore_all(&self.root, &self.saved)?;
        self.saved.clear();
        match fs::remove_file(&self.state_path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(SettingsError::Io { action: "removing", path: self.state_path.clone(), source: e })
            }
            _ => Ok(()),
        }
    }
}

impl Drop for SettingsGuard {
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            tracing::error!("restoring kernel settings: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writable root with the two sysctls, and a run directory.
    fn sandbox(mode: &str) -> (tempdir::Dir, PathBuf, PathBuf) {
        let dir = tempdir::Dir::new();
        let root = dir.path().join("root");
        let run = dir.path().join("run");
        fs::create_dir_all(root.join("proc/sys/kernel")).unwrap();
        fs::write(root.join(NUMA_BALANCING), format!("{mode}\n")).unwrap();
        fs::write(root.join(PROMOTE_RATE_LIMIT), "65536\n").unwrap();
        (dir, root, run)
    }

    mod tempdir {
        use std::path::{Path, PathBuf};

        pub struct Dir(PathBuf);

        impl Dir {
            pub fn new() -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "hotpage-settings-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                let _ = std::fs::remove_dir_all(&p);
                std::fs::create_dir_all(&p).unwrap();
                Self(p)
            }
            pub fn path(&self) -> &Path {
                &self.0
            }
        }

        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn value(root: &Path, path: &str) -> String {
        read_value(&root.join(path)).unwrap()
    }

    #[test]
    fn saves_before_changing_and_restores_on_drop() {
        let (_d, root, run) = sandbox("1");
        {
            let (mut g, recovered) = SettingsGuard::acquire(&root, &run).unwrap();
            assert!(recovered.is_empty());
            g.hint_faults_without_kernel_promotion().unwrap();
            // Normal balancing kept, tiering added.
            assert_eq!(value(&root, NUMA_BALANCING), "3");
            assert_eq!(value(&root, PROMOTE_RATE_LIMIT), "0");
            let state = fs::read_to_string(run.join(STATE_FILE)).unwrap();
            assert!(state.contains("\"original\": \"65536\""), "{state}");
        }
        assert_eq!(value(&root, NUMA_BALANCING), "1");
        assert_eq!(value(&root, PROMOTE_RATE_LIMIT), "65536");
        assert!(!run.join(STATE_FILE).exists());
    }

    #[test]
    fn mode_zero_becomes_two() {
        let (_d, root, run) = sandbox("0");
        let (mut g, _) = SettingsGuard::acquire(&root, &run).unwrap();
        g.hint_faults_without_kernel_promotion().unwrap();
        assert_eq!(value(&root, NUMA_BALANCING), "2");
    }

    #[test]
    fn a_crash_is_repaired_by_the_next_start() {
        let (_d, root, run) = sandbox("1");
        let (mut g, _) = SettingsGuard::acquire(&root, &run).unwrap();
        g.hint_faults_without_kernel_promotion().unwrap();
        // A crash: no destructor runs, the lock dies with the process.
        let lock = std::mem::replace(&mut g._lock, File::open("/dev/null").unwrap());
        std::mem::forget(g);
        drop(lock);
        assert_eq!(value(&root, NUMA_BALANCING), "3");

        let (_g2, recovered) = SettingsGuard::acquire(&root, &run).unwrap();
        assert_eq!(recovered.len(), 2);
        assert_eq!(value(&root, NUMA_BALANCING), "1");
        assert_eq!(value(&root, PROMOTE_RATE_LIMIT), "65536");
    }

    #[test]
    fn a_second_instance_is_refused_and_recover_leaves_a_live_owner_alone() {
        let (_d, root, run) = sandbox("2");
        let (mut g, _) = SettingsGuard::acquire(&root, &run).unwrap();
        g.set(PROMOTE_RATE_LIMIT, "0").unwrap();
        let err = SettingsGuard::acquire(&root, &run).unwrap_err();
        assert!(matches!(err, SettingsError::Locked(_)), "{err}");
        assert!(err.to_string().contains("another hotpage"));
        assert!(recover(&root, &run).unwrap().is_empty());
        assert_eq!(value(&root, PROMOTE_RATE_LIMIT), "0");
    }

    #[test]
    fn an_operators_later_change_is_left_alone_at_stop_and_after_a_crash() {
        let (_dir, root, run) = sandbox("0");
        let (mut g, _) = SettingsGuard::acquire(&root, &run).unwrap();
        g.hint_faults_without_kernel_promotion().unwrap();
        // The operator turns NUMA balancing off while hotpage runs.
        fs::write(root.join(NUMA_BALANCING), "0\n").unwrap();
        g.restore().unwrap();
        drop(g);
        assert_eq!(value(&root, NUMA_BALANCING), "0", "the operator's value stays");
        assert_eq!(value(&root, PROMOTE_RATE_LIMIT), "65536", "the untouched one comes back");

        // The same after a crash: the next start compares with what the dead one applied.
        let (mut g, _) = SettingsGuard::acquire(&root, &run).unwrap();
        g.set(PROMOTE_RATE_LIMIT, "0").unwrap();
        let lock = std::mem::replace(&mut g._lock, File::open("/dev/null").unwrap());
        std::mem::forget(g);
        drop(lock);
        fs::write(root.join(PROMOTE_RATE_LIMIT), "100\n").unwrap();
        let recovered = recover(&root, &run).unwrap();
        assert_eq!(recovered.len(), 1);
        assert_eq!(value(&root, PROMOTE_RATE_LIMIT), "100");
        assert!(!run.join(STATE_FILE).exists(), "the state file is gone either way");
    }

    #[test]
    fn unchanged_values_are_not_recorded() {
        let (_d, root, run) = sandbox("2");
        let (mut g, _) = SettingsGuard::acquire(&root, &run).unwrap();
        g.set(NUMA_BALANCING, "2").unwrap();
        assert!(g.saved().is_empty());
        assert!(!run.join(STATE_FILE).exists());
    }

    #[test]
    fn a_damaged_state_file_is_reported() {
        let (_d, root, run) = sandbox("2");
        fs::create_dir_all(&run).unwrap();
        fs::write(run.join(STATE_FILE), "{not json").unwrap();
        let err = SettingsGuard::acquire(&root, &run).unwrap_err().to_string();
        assert!(err.contains("damaged"), "{err}");
    }
}
