//! `hotpage stats`, `hotpage top` and `hotpage metrics`: ask the running
//! daemon over its control socket and print what it says.

use std::{
    io::{self, Write},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use clap::Args;

use crate::{
    daemon::control::{Request, Response, request},
    report::{Snapshot, render_prometheus, render_stats, render_top},
};

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// One JSON object per report.
    #[arg(long, conflicts_with = "prometheus")]
    json: bool,
    /// Prometheus text (the same as `hotpage metrics`).
    #[arg(long)]
    prometheus: bool,
    /// A live view, redrawn in place every INTERVAL seconds (2 by default)
    /// like `top`; when stdout is not a terminal, plain reports one after another.
    #[arg(short, long, conflicts_with_all = ["json", "prometheus"])]
    watch: bool,
    /// Report every INTERVAL seconds, with rates over the interval (like vmstat).
    #[arg(value_name = "INTERVAL", value_parser = positive_seconds)]
    interval: Option<f64>,
    /// Stop after COUNT reports (default: until interrupted).
    #[arg(value_name = "COUNT", requires = "interval")]
    count: Option<u64>,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Processes to list.
    #[arg(short = 'n', long, default_value_t = 10)]
    lines: usize,
    /// JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

fn snapshot(run_dir: &Path) -> Result<Snapshot> {
    match request(run_dir, &Request::Snapshot)? {
        Response::Snapshot(s) => Ok(*s),
        other => bail!("the daemon answered {other:?} to a snapshot request"),
    }
}

/// Writes, treating a closed pipe (`| head`) as the end.
fn emit(out: &mut impl Write, text: &str) -> Result<bool> {
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// `--watch` without an interval.
const WATCH_EVERY_S: f64 = 2.0;

/// One frame of the live view: on a terminal the screen is cleared and the
/// report drawn from the top, with a title line; elsewhere the plain report.
fn watch_frame(report: &str, every_s: f64, terminal: bool) -> String {
    if !terminal {
        return report.to_owned();
    }
    // SAFETY: time(NULL) and localtime_r on our own buffer.
    let clock = unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
    };
    format!("\x1b[H\x1b[2Jhotpage stats at {clock}, every {every_s} s (Ctrl-C to quit)\n\n{report}")
}

pub fn stats(run_dir: &Path, mut args: StatsArgs) -> Result<()> {
    use std::io::IsTerminal;
    let mut out = io::stdout().lock();
    let terminal = args.watch && io::stdout().is_terminal();
    if args.watch && args.interval.is_none() {
        args.interval = Some(WATCH_EVERY_S);
    }
    let mut prev: Option<(Snapshot, Instant)> = None;
    let mut printed = 0u64;
    loop {
        let snap = snapshot(run_dir)?;
        let now = Instant::now();
        let text = if args.json {
            serde_json::to_string(&snap)? + "\n"
        } else if args.prometheus {
            render_prometheus(&snap)
        } else {
            let p = prev.as_ref().map(|(s, t)| (s, now.duration_since(*t).as_secs_f64()));
            render_stats(&snap, p)
        };
        let text = if args.watch {
            watch_frame(&text, args.interval.unwrap_or(WATCH_EVERY_S), terminal)
        } else {
            text
        };
        let sep = if printed > 0 && !args.json && !terminal { "\n" } else { "" };
        if !emit(&mut out, &format!("{sep}{text}"))? {
            return Ok(());
        }
        printed += 1;
        let Some(interval) = args.interval else { return Ok(()) };
        if args.count.is_some_and(|c| printed >= c) {
            return Ok(());
        }
        prev = Some((snap, now));
        std::thread::sleep(Duration::from_secs_f64(interval));
    }
}

pub fn top(run_dir: &Path, args: TopArgs) -> Result<()> {
    let mut snap = snapshot(run_dir)?;
    snap.processes.truncate(args.lines);
    let text = if args.json { serde_json::to_string(&snap.processes)? + "\n" } else { render_top(&snap) };
    emit(&mut io::stdout().lock(), &text).map(|_| ())
}

pub fn metrics(run_dir: &Path) -> Result<()> {
    let text = match request(run_dir, &Request::Metrics)? {
        Response::Metrics(m) => m,
        other => bail!("the daemon answered {other:?} to a metrics request"),
    };
    emit(&mut io::stdout().lock(), &text).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_frame_redraws_a_terminal_and_is_plain_elsewhere() {
        let f = watch_frame("NODE ...\n", 2.0, true);
        assert!(f.starts_with("\x1b[H\x1b[2Jhotpage stats at "), "{f:?}");
        assert!(f.contains("every 2 s (Ctrl-C to quit)") && f.ends_with("NODE ...\n"), "{f:?}");
        assert_eq!(watch_frame("NODE ...\n", 2.0, false), "NODE ...\n", "no escapes in a pipe or a file");
    }
}
