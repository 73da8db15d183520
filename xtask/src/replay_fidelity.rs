//! The offline comparison's own check: a box run's recording, replayed with
//! the simulated promoter and as recorded, must give the run's figures back.
//!
//! Rules are compared offline on box runs' recordings before any box run
//! (docs/recording.md). That is worth something only if a replay of a run,
//! under the rule that made it, says what the run did: a replay that left
//! out the live move stalls said 67-85% of the hot set where 40 s box runs
//! had taken all of it (docs/benchmarks.md, "Simulated replays with the
//! live stalls"), and nothing failed. The short form's moves are small
//! (that replay said 99.1% precision against the run's 98.9%), so this
//! guards the replay as a whole rather than that one omission. As recorded,
//! the live workers' takes are put back and scored: a replay that put them at
//! the wrong places took nothing (0% precision) and nothing failed either.

use std::{path::Path, process::Command};

use anyhow::{Context, Result, bail};

/// How far a replay's precision and share of the hot set may lie from the
/// live run's (fractions). The replays of the box runs match to 0.001; the
/// live figures are page locations at the end, the replay's its moves.
const TOLERANCE: f64 = 0.05;

/// Replays every recorded run of hotpage at its defaults in `report` (the
/// e2e bench's JSON; recordings and ground truths in `dir`) with `hotpage`
/// and compares. Left out: a hot set that moves (the run is scored against
/// the moved set, a replay against the first); "tight" only as recorded
/// (the simulated target has no kswapd to make room; `--top-tier-mib`
/// stands in for it by hand).
pub fn check(hotpage: &Path, report: &Path, dir: &Path) -> Result<()> {
    let text = std::fs::read_to_string(report).with_context(|| format!("reading {}", report.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", report.display()))?;
    let runs = v["runs"].as_array().with_context(|| format!("{} has no runs", report.display()))?;
    let mut checked = 0;
    for run in runs.iter().filter(|r| r["system"] == "hotpage") {
        let Some(rec) = run["recording"].as_str() else { continue };
        if !run["move_at_s"].is_null() {
            continue;
        }
        let truths: Vec<&str> =
            run["truths"].as_array().into_iter().flatten().filter_map(|t| t.as_str()).collect();
        let figure =
            |v: &serde_json::Value, what: &str| v.as_f64().with_context(|| format!("{rec}: no {what}"));
        let live = Figures {
            precision: figure(&run["precision"], "live precision")?,
            hot_set: figure(&run["final_hot_on_node0"], "live hot set")?,
        };
        let modes: &[Mode] =
            if run["tight"] == false { &[Mode::Simulated, Mode::AsRecorded] } else { &[Mode::AsRecorded] };
        for &mode in modes {
            let mut cmd = Command::new(hotpage);
            cmd.arg("replay").arg(dir.join(rec)).arg("--json");
            if mode == Mode::AsRecorded {
                cmd.arg("--as-recorded");
            }
            for t in &truths {
                cmd.arg("--truth").arg(dir.join(t));
            }
            let out = cmd.output().with_context(|| format!("running {}", hotpage.display()))?;
            if !out.status.success() {
                bail!("hotpage replay {rec} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
            }
            let r: serde_json::Value =
                serde_json::from_slice(&out.stdout).with_context(|| format!("the replay of {rec}"))?;
            let replayed = Figures {
                precision: figure(&r["truth"]["precision"], "replayed precision")?,
                hot_set: figure(&r["truth"]["recall"], "replayed recall")?,
            };
            eprintln!("xtask: replay of {rec} ({}): {replayed}; the run: {live}", mode.name());
            judge(rec, mode, &live, &replayed)?;
            checked += 1;
        }
    }
    if checked == 0 {
        bail!("{} holds no recorded run of hotpage at its defaults", report.display());
    }
    Ok(())
}

/// How a recording is replayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Simulated,
    AsRecorded,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Simulated => "simulated",
            Self::AsRecorded => "as recorded",
        }
    }
}

/// A run's precision and the share of its hot set promoted.
#[derive(Debug)]
struct Figures {
    precision: f64,
    hot_set: f64,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "precision {:.1}%, hot set {:.1}%", self.precision * 100.0, self.hot_set * 100.0)
    }
}

fn judge(rec: &str, mode: Mode, live: &Figures, replayed: &Figures) -> Result<()> {
    if (live.precision - replayed.precision).abs() > TOLERANCE
        || (live.hot_set - replayed.hot_set).abs() > TOLERANCE
    {
        bail!(
            "the replay of {rec} ({}) does not give its run back ({replayed}; the run: {live}): \
             offline comparisons on recordings would mislead",
            mode.name()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_far_from_its_run_fails() {
        let live = Figures { precision: 0.997, hot_set: 0.996 };
        let sim = Mode::Simulated;
        assert!(judge("r", sim, &live, &Figures { precision: 0.99, hot_set: 0.98 }).is_ok());
        // What the replay without the live stalls said of such a run.
        let e = judge("r", sim, &live, &Figures { precision: 0.997, hot_set: 0.776 }).unwrap_err();
        assert!(e.to_string().contains("hot set 77.6%"), "{e}");
        assert!(judge("r", sim, &live, &Figures { precision: 0.90, hot_set: 0.996 }).is_err());
        // What a replay as recorded with its takes misplaced said of every run.
        let e = judge("r", Mode::AsRecorded, &live, &Figures { precision: 0.0, hot_set: 0.0 }).unwrap_err();
        assert!(e.to_string().contains("(as recorded)"), "{e}");
    }
}
