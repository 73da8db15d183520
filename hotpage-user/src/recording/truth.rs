//! A workload's ground truth (which of its addresses are hot), as the
//! end-to-end workloads write it, and how well a replay's promotions match it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use hotpage_common::PAGE_SIZE;

/// One process's hot ranges: `{"pid":…,"region":[a,b],"hot":[[a,b],…]}`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Truth {
    pub pid: u32,
    pub region: (u64, u64),
    pub hot: Vec<(u64, u64)>,
}

impl Truth {
    /// Reads a truth file: one object, or an array of them (several processes).
    pub fn read(path: &Path) -> Result<Vec<Self>, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Vec<Self>, String> {
        let first = text.trim_start().chars().next();
        let parsed = if first == Some('[') {
            serde_json::from_str::<Vec<Self>>(text)
        } else {
            serde_json::from_str::<Self>(text).map(|t| vec![t])
        };
        parsed.map_err(|e| format!("not a ground truth (want {{\"pid\",\"region\",\"hot\"}}): {e}"))
    }

    fn hot_pages(&self) -> u64 {
        self.hot.iter().map(|(a, b)| b.saturating_sub(*a) / PAGE_SIZE).sum()
    }

    /// Hot base pages among `pages` pages from `vaddr` of `pid`.
    pub fn hot_pages_of(truth: &[Self], pid: u32, vaddr: u64, pages: u64) -> u64 {
        let (start, end) = (vaddr & !(PAGE_SIZE - 1), (vaddr & !(PAGE_SIZE - 1)) + pages * PAGE_SIZE);
        truth
            .iter()
            .filter(|t| t.pid == pid)
            .flat_map(|t| t.hot.iter())
            .map(|&(a, b)| end.min(b).saturating_sub(start.max(a)) / PAGE_SIZE)
            .sum()
    }
}

/// How a replay's promotions compare with the truth.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TruthScore {
    pub hot_pages: u64,
    pub promoted_pages: u64,
    pub hot_promoted_pages: u64,
    /// Hot share of the promoted pages of the truth's processes.
    pub precision: f64,
    /// Share of the hot pages promoted.
    pub recall: f64,
    /// Seconds from the start of the recording until half, and 90%, of the
    /// hot pages were promoted.
    pub t50_s: Option<f64>,
    pub t90_s: Option<f64>,
}

impl TruthScore {
    /// `moves`: (ms, pid, vaddr, base pages) of each promotion, in time order.
    pub fn score(truth: &[Truth], moves: &[(u64, u32, u64, u64)], start_ms: u64) -> Self {
        let hot_pages: u64 = truth.iter().map(Truth::hot_pages).sum();
        let (mut promoted, mut hot, mut t50, mut t90) = (0, 0, None, None);
        for &(ms, pid, vaddr, pages) in moves {
            if !truth.iter().any(|t| t.pid == pid) {
                continue;
            }
            promoted += pages;
            hot += Truth::hot_pages_of(truth, pid, vaddr, pages);
            let t = ms.saturating_sub(start_ms) as f64 / 1000.0;
            if t50.is_none() && hot * 2 >= hot_pages && hot_pages > 0 {
                t50 = Some(t);
            }
            if t90.is_none() && hot * 10 >= hot_pages * 9 && hot_pages > 0 {
                t90 = Some(t);
            }
        }
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        Self {
            hot_pages,
            promoted_pages: promoted,
            hot_promoted_pages: hot,
            precision: ratio(hot, promoted),
            recall: ratio(hot, hot_pages),
            t50_s: t50,
            t90_s: t90,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_workload_writes() {
        let t = Truth::parse("{\"pid\":7,\"region\":[4096,40960],\"hot\":[[8192,16384]],\"move_at_s\":3}\n")
            .unwrap();
        assert_eq!(t, vec![Truth { pid: 7, region: (4096, 40960), hot: vec![(8192, 16384)] }]);
        assert!(Truth::parse("[]").unwrap().is_empty());
        assert!(Truth::parse("{\"pid\":1}").unwrap_err().contains("ground truth"));
    }

    #[test]
    fn precision_recall_and_times() {
        let truth = vec![Truth { pid: 7, region: (0, 40 * 4096), hot: vec![(0, 10 * 4096)] }];
        // 4 hot pages at 1 s, a 16-page folio half hot at 2 s, 4 cold at 3 s, another process's.
        let moves =
            [(11_000, 7, 0, 4), (12_000, 7, 6 * 4096, 16), (13_000, 7, 30 * 4096, 4), (13_500, 8, 0, 100)];
        let s = TruthScore::score(&truth, &moves, 10_000);
        assert_eq!((s.hot_pages, s.promoted_pages, s.hot_promoted_pages), (10, 24, 8));
        assert_eq!((s.t50_s, s.t90_s), (Some(2.0), None));
        assert!((s.precision - 8.0 / 24.0).abs() < 1e-9 && (s.recall - 0.8).abs() < 1e-9);
    }
}
