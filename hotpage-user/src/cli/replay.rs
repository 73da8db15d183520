//! `hotpage replay`: a recording through the hot map and a promotion rule,
//! offline, on the recorded clock; what each page did and when.

use std::{
    io::{self, Write},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use clap::Args;

use super::run::RuleArgs;
use crate::{
    daemon::config::FileConfig,
    recording::{FormatError, Reader, ReplayOptions, ReplayReport, Truth, replay},
    report::table::{mib, table},
    rule::latency::LatencyHistogram,
};

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The recording (`hotpage record`, or `hotpage run --record`).
    file: PathBuf,
    #[command(flatten)]
    rule: RuleArgs,
    /// Put the live hot map's recorded takes back instead of simulating the
    /// promoter: the live READY decisions (recordings of `hotpage run --record`).
    #[arg(long)]
    as_recorded: bool,
    /// Exit 1 unless the replay decided READY exactly as the live daemon did
    /// (with --as-recorded).
    #[arg(long, requires = "as_recorded")]
    expect_live: bool,
    /// Free memory of each top-tier node at the start, MiB (default: as recorded).
    #[arg(long, value_name = "MIB")]
    top_tier_mib: Option<u64>,
    /// Ground truth: hot ranges per process, as the end-to-end workloads write
    /// them (`{"pid","region","hot":[[a,b]]}`); may be given once per process.
    #[arg(long, value_name = "FILE")]
    truth: Vec<PathBuf>,
    /// Timeline step, ms.
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    step_ms: u64,
    /// JSON instead of tables.
    #[arg(long)]
    json: bool,
}

/// A file that is not a readable recording: a usage error (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{path}: {error}", path = .path.display())]
pub struct BadRecording {
    path: PathBuf,
    error: FormatError,
}

pub fn run(_root: &Path, args: ReplayArgs) -> Result<()> {
    let data = std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let bad = |error| BadRecording { path: args.file.clone(), error };
    let header = Reader::new(&data).map_err(bad)?.header().clone();
    let mut file = FileConfig::of_recording(&header);
    args.rule.apply(&mut file);
    let cfg = file.resolve(&args.file)?;
    let opts = ReplayOptions {
        top_tier_free_pages: args.top_tier_mib.map(|m| m << 8),
        as_recorded: args.as_recorded,
        step_ms: args.step_ms,
        ..ReplayOptions::new(&cfg)
    };
    let mut truth = Vec::new();
    for t in &args.truth {
        truth.extend(Truth::read(t).map_err(anyhow::Error::msg)?);
    }
    let report = match replay(&data, &opts, &truth) {
        Ok(r) => r,
        Err(crate::recording::ReplayError::Format(e)) => return Err(bad(e).into()),
        Err(e) => return Err(e.into()),
    };
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        out.write_all(render(&report, &args.file).as_bytes())?;
    }
    if args.expect_live && report.matches_live != Some(true) {
        bail!(
            "the replay's READY decisions differ from the live daemon's: replayed {:?}, live {:?}",
            report.feed,
            report.live_feed
        );
    }
    Ok(())
}

/// Quartiles of each latency distribution (bucket bounds, ms).
fn latency_lines(l: &crate::recording::LatencyReport) -> String {
    let q = |h: &LatencyHistogram| {
        let b = |q| h.quantile_bound(q).map_or("-".into(), |ms| format!("≤{ms}"));
        format!(
            "{} events, p10 {} ms, p25 {}, p50 {}, p75 {}, p90 {}",
            h.count,
            b(0.1),
            b(0.25),
            b(0.5),
            b(0.75),
            b(0.9)
        )
    };
    if l.all.count == 0 {
        return format!("scan-to-fault latency: none of the events carries one ({} without)\n", l.without);
    }
    let mut s = format!("scan-to-fault latency: {}; {} events without\n", q(&l.all), l.without);
    for (name, h) in [("hot pages", &l.hot), ("cold pages", &l.cold)] {
        if let Some(h) = h {
            s += &format!("  {name}: {}\n", q(h));
        }
    }
    s
}

fn render(r: &ReplayReport, file: &Path) -> String {
    let mut s = format!(
        "replay of {} ({}, Linux {}): {} events over {:.1} s\n",
        file.display(),
        r.mode,
        r.kernel,
        r.events,
        r.duration_s
    );
    let f = &r.feed;
    s += &format!(
        "hot map: {} accesses updated a record, {} made a page READY; {} events on promoted pages dropped\n",
        f.updated, f.newly_ready, r.dropped_after_promotion
    );
    if let Some(p) = &r.promoter {
        s += &format!(
            "promoter (simulated): {} pages ({} MiB) promoted in {} calls; {} rate-limited, {} held by the headroom, {} stale\n",
            p.moved,
            mib(p.moved_bytes),
            p.move_calls,
            p.rate_limited,
            p.watermark_limited,
            p.stale
        );
    } else {
        s += &format!("recorded takes: {} READY pages taken by the live workers\n", r.promoted_pages);
    }
    if let (Some(live), Some(m)) = (&r.live_feed, r.matches_live) {
        s += &format!(
            "live daemon: {} updated, {} READY; this replay {} it field by field\n",
            live.updated,
            live.newly_ready,
            if m { "matches" } else { "DIFFERS from" }
        );
    }
    if let Some(t) = &r.truth {
        let secs = |v: Option<f64>| v.map_or("-".into(), |t| format!("{t:.1}"));
        s += &format!(
            "against the truth: precision {:.1}%, recall {:.1}% ({} of {} hot pages), t50 {} s, t90 {} s\n",
            t.precision * 100.0,
            t.recall * 100.0,
            t.hot_promoted_pages,
            t.hot_pages,
            secs(t.t50_s),
            secs(t.t90_s)
        );
    }
    s += &latency_lines(&r.latency);
    s += &r.rule.summary();
    s += "\n";
    let with_truth = r.timeline.iter().any(|t| t.hot_promoted_pages.is_some());
    let moved = if r.promoter.is_some() { "PROMOTED pages" } else { "TAKEN pages" };
    let mut header = vec!["TIME s", "EVENTS", "READY", moved];
    if with_truth {
        header.push("HOT PROMOTED pages");
    }
    let with_fast = r.timeline.iter().any(|t| !t.fast.is_empty());
    if with_fast {
        header.push("FAST (rule)");
    }
    let mut t = table(&header);
    for step in &r.timeline {
        let mut row = vec![
            format!("{:.1}", step.t_s),
            step.events.to_string(),
            step.ready.to_string(),
            step.promoted_pages.to_string(),
        ];
        if let Some(h) = step.hot_promoted_pages {
            row.push(h.to_string());
        }
        if with_fast {
            let nodes: Vec<String> = step.fast.iter().map(ToString::to_string).collect();
            row.push(nodes.join(", "));
        }
        t.add_row(row);
    }
    s += &t.to_string();
    s += "\n\n";
    let mut t = table(&["PID", "EVENTS", "READY", "PROMOTED pages"]);
    for p in &r.processes {
        t.add_row(vec![
            p.pid.to_string(),
            p.events.to_string(),
            p.ready.to_string(),
            p.promoted_pages.to_string(),
        ]);
    }
    s += &t.to_string();
    s += "\n";
    s
}
