//! Before a run changes anything: the checks in the order an operator fixes
//! them, and the settings a crashed run left behind put back.

use std::path::Path;

use anyhow::{Context, Result, bail};
use btf_rs::Btf;
use hotpage_common::PfnRange;

use crate::{
    kernel,
    kernel::settings::{self, SavedSetting, SettingsGuard},
    sys::{sysfs::read_u64, topology::TierTopology},
};

/// What `run` and `trace` need before they change anything.
pub struct Preflight {
    pub topo: TierTopology,
    pub ranges: Vec<PfnRange>,
    pub release: String,
    /// The hint-fault hook, when hint faults are wanted.
    pub hook: Option<kernel::HintFaultHook>,
    /// The kernel's BTF (mapped, `kernel::kernel_btf`), kept for the sources
    /// that read more of it (the DAMON tracepoint's prototype) rather than
    /// read again. Drop it once they have started.
    pub btf: Btf,
}

/// Checks in the order an operator fixes them: what the machine lacks is
/// reported before what the user lacks.
pub fn preflight(root: &Path, what: &str, hint_faults: bool) -> Result<Preflight> {
    let topo = TierTopology::read(root).context("reading the NUMA topology")?;
    topo.require_lower_tier(root)?;
    let ranges = topo.lower_tier_ranges()?;
    let release = kernel::release(root);
    // Both programs are CO-RE: BTF is needed even without the hint-fault hook.
    let btf = kernel::kernel_btf(root)?;
    let hook = if hint_faults { Some(kernel::HintFaultHook::probe(&btf, root, &release)?) } else { None };
    require_root(what)?;
    if let Some(Err(e)) = hook.as_ref().map(|h| &h.stamp) {
        tracing::warn!(
            "hint faults carry no scan-to-fault latency: {e}; the latency rule falls back to pghot's"
        );
    }
    Ok(Preflight { topo, ranges, release, hook, btf })
}

/// Takes the kernel settings (after putting back what a crashed run left)
/// and switches to hint faults without the kernel's own promotion; restored
/// when the guard drops.
pub fn hold_kernel_promotion(root: &Path, run_dir: &Path) -> Result<SettingsGuard> {
    let (mut guard, recovered) = SettingsGuard::acquire(root, run_dir)?;
    report_recovered(&recovered);
    guard.hint_faults_without_kernel_promotion()?;
    Ok(guard)
}

/// `hold_kernel_promotion()` when `hold`, else only the recovery of a
/// crashed run's settings.
pub fn kernel_settings(root: &Path, run_dir: &Path, hold: bool) -> Result<Option<SettingsGuard>> {
    if hold {
        return hold_kernel_promotion(root, run_dir).map(Some);
    }
    recover_only(root, run_dir);
    Ok(None)
}

/// Without changing settings: still put back what a crashed run left behind.
pub fn recover_only(root: &Path, run_dir: &Path) {
    match settings::recover(root, run_dir) {
        Ok(recovered) => report_recovered(&recovered),
        Err(e) => tracing::warn!("{e}"),
    }
    warn_if_no_hint_faults(root);
}

pub fn report_recovered(recovered: &[SavedSetting]) {
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

pub fn tokio_runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}
