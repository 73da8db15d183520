//! Does the hint-fault hook see the kernel's hint faults?
//!
//! `numa_migrate_check()` is a static function: a kernel build may inline its
//! call in `do_numa_page()` while an out-of-line copy stays in BTF, so the
//! fentry program loads, attaches, and never runs. The kernel counts every
//! hint fault in that same function (`numa_hint_faults` in /proc/vmstat), so
//! the program's `seen` counter must grow with it. Each window compares the
//! two; a hook that saw under half of the kernel's faults is reported.

use serde::{Deserialize, Serialize};

/// Fewer kernel hint faults than this in a window say nothing either way.
pub const MIN_KERNEL_FAULTS: u64 = 256;
/// Under this share of the kernel's faults the hook misses most of them.
pub const MIN_COVERAGE: f64 = 0.5;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookVerdict {
    /// Too few hint faults yet (no lower-tier memory in use, or no scans).
    #[default]
    Idle,
    /// The hook saw (about) every hint fault the kernel counted.
    Sees,
    /// The hook saw under half of them: it is probably not on the path.
    Misses,
}

impl HookVerdict {
    pub fn name(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Sees => "sees",
            Self::Misses => "misses",
        }
    }
}

/// The last judged window, as `stats`, `check` and the metrics show it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HookReport {
    pub verdict: HookVerdict,
    /// The kernel's `numa_hint_faults` growth in the last judged window.
    pub kernel_faults: u64,
    /// The program's `seen` growth in the same window.
    pub seen: u64,
    /// seen ÷ kernel faults (None until a window was judged).
    pub coverage: Option<f64>,
}

impl HookReport {
    /// One line for `stats` and `check`.
    pub fn summary(&self) -> String {
        match (self.verdict, self.coverage) {
            (HookVerdict::Idle, _) | (_, None) => {
                "hint-fault hook: too few hint faults yet to compare with the kernel's count".into()
            }
            (v, Some(c)) => format!(
                "hint-fault hook: saw {} of the kernel's {} hint faults in the last window ({:.0}%): {}",
                self.seen,
                self.kernel_faults,
                c * 100.0,
                if v == HookVerdict::Misses {
                    "MISSES most of them (numa_migrate_check may be inlined in this kernel: use --samples)"
                } else {
                    "ok"
                }
            ),
        }
    }
}

/// Compares window after window; keeps the last judged one.
#[derive(Debug, Default)]
pub struct HookCheck {
    last: Option<(u64, u64)>,
    report: HookReport,
}

impl HookCheck {
    /// Takes the totals now (the program's `seen`, the kernel's
    /// `numa_hint_faults`); returns the new verdict when it changed.
    pub fn observe(&mut self, seen: u64, kernel: u64) -> Option<HookVerdict> {
        let (seen0, kernel0) = self.last.replace((seen, kernel))?;
        let (ds, dk) = (seen.saturating_sub(seen0), kernel.saturating_sub(kernel0));
        if dk < MIN_KERNEL_FAULTS {
            // Not enough to judge: keep collecting from the same start.
            self.last = Some((seen0, kernel0));
            return None;
        }
        let coverage = (ds as f64 / dk as f64).min(1.0);
        let verdict = if coverage < MIN_COVERAGE { HookVerdict::Misses } else { HookVerdict::Sees };
        let changed = verdict != self.report.verdict;
        self.report = HookReport { verdict, kernel_faults: dk, seen: ds, coverage: Some(coverage) };
        changed.then_some(verdict)
    }

    pub fn report(&self) -> HookReport {
        self.report.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hook_that_sees_every_fault_is_ok_and_a_silent_one_is_reported() {
        let mut c = HookCheck::default();
        assert_eq!(c.observe(0, 1_000), None, "the first reading only starts a window");
        assert_eq!(c.observe(5_000, 6_000), Some(HookVerdict::Sees));
        assert_eq!(c.report().coverage, Some(1.0));
        // The same verdict again is no news.
        assert_eq!(c.observe(9_900, 10_000), None);
        // Inlined call: the kernel counts on, the program sees nothing.
        assert_eq!(c.observe(9_900, 60_000), Some(HookVerdict::Misses));
        let r = c.report();
        assert_eq!((r.seen, r.kernel_faults, r.coverage), (0, 50_000, Some(0.0)));
        assert!(r.summary().contains("MISSES"), "{}", r.summary());
        assert!(r.summary().contains("--samples"));
    }

    #[test]
    fn too_few_faults_are_carried_into_the_next_window() {
        let mut c = HookCheck::default();
        c.observe(0, 0);
        // 100 faults: no judgement, and the window keeps its start...
        assert_eq!(c.observe(100, 100), None);
        assert_eq!(c.report().verdict, HookVerdict::Idle);
        assert!(c.report().summary().contains("too few"));
        // ...so 200 more make 300 from the start, enough.
        assert_eq!(c.observe(300, 300), Some(HookVerdict::Sees));
        assert_eq!(c.report().kernel_faults, 300);
        // A partial view (inlined in one caller, say): 40% is reported.
        assert_eq!(c.observe(700, 1_300), Some(HookVerdict::Misses));
    }
}
