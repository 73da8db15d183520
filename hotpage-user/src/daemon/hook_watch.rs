//! The daemon's side of the hook check (`sources::hook_check`): every window,
//! the hint-fault program's `seen` against the kernel's `numa_hint_faults`;
//! a hook that misses most faults is logged (and shown by `stats`, `check`
//! and the metrics), as is its recovery.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use crate::{
    sources::{HookCheck, HookReport, HookVerdict, SourceCounters},
    sys::vmstat::read_vmstat,
};

/// Long enough for a few scans of a task's memory at hotpage's pace.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Compares window after window until aborted.
pub async fn watch(root: PathBuf, counters: Arc<SourceCounters>, out: Arc<Mutex<Option<HookReport>>>) {
    let mut check = HookCheck::default();
    let mut tick = tokio::time::interval(WINDOW);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok(seen) = counters.read().map(|c| c.seen) else { continue };
        let Some(kernel) = read_vmstat(&root).ok().and_then(|v| v.get("numa_hint_faults").copied()) else {
            continue;
        };
        match check.observe(seen, kernel) {
            Some(HookVerdict::Misses) => tracing::warn!("{}", check.report().summary()),
            Some(HookVerdict::Sees) => tracing::info!("{}", check.report().summary()),
            _ => {}
        }
        *out.lock().unwrap_or_else(PoisonError::into_inner) = Some(check.report());
    }
}
