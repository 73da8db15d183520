//! Human-readable tables of a snapshot: `hotpage stats` and `hotpage top`.

use comfy_table::{Cell, CellAlignment, ContentArrangement, Table, presets::NOTHING};

use super::Snapshot;

pub(crate) fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(NOTHING).set_content_arrangement(ContentArrangement::Disabled);
    t.set_header(header.iter().map(Cell::new));
    for i in 1..header.len() {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

pub(crate) fn mib(bytes: u64) -> String {
    format!("{:.0}", bytes as f64 / (1 << 20) as f64)
}

fn dash(v: u64) -> String {
    if v == 0 { "-".into() } else { v.to_string() }
}

fn duration(s: f64) -> String {
    let s = s.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The `hotpage stats` table. With `prev` (the snapshot `secs` earlier),
/// rates are per interval; otherwise averages since start.
pub fn render_stats(s: &Snapshot, prev: Option<(&Snapshot, f64)>) -> String {
    let mut out = format!(
        "hotpage {} on Linux {}, up {}, {} records, rate limit {}{}\n\n",
        s.version,
        s.kernel,
        duration(s.uptime_s),
        s.mode,
        s.rate_limit,
        if s.observe_only { " (observe only: nothing moves)" } else { "" }
    );

    let mut t = table(&[
        "NODE",
        "TIER",
        "ROLE",
        "SIZE MiB",
        "FREE MiB",
        "TRACKED pages",
        "READY pages",
        "PROMOTED OUT pages",
        "PROMOTED IN pages",
        "KERNEL IN pages",
        "FAILED pages",
    ]);
    for n in &s.nodes {
        let failed = if n.failures.values().all(|&v| v == 0) {
            "-".to_owned()
        } else {
            n.failures
                .iter()
                .filter(|(_, v)| **v > 0)
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        t.add_row(vec![
            n.node.to_string(),
            n.tier.map(|t| t.to_string()).unwrap_or_else(|| "-".into()),
            if n.top_tier { "top".into() } else { "lower".into() },
            mib(n.total_bytes),
            mib(n.free_bytes),
            if n.top_tier { "-".into() } else { n.tracked_pages.to_string() },
            if n.top_tier { "-".into() } else { n.ready_pages.to_string() },
            if n.top_tier { "-".into() } else { n.promoted_out_pages.to_string() },
            if n.top_tier { n.promoted_in_pages.to_string() } else { "-".into() },
            if n.top_tier { n.kernel_promoted_in_pages.to_string() } else { "-".into() },
            failed,
        ]);
    }
    out += &t.to_string();
    out += "\n\n";

    let mut t =
        table(&["SOURCE", "ATTACHED TO", "SEEN", "FILTERED", "NO PFN", "EMITTED", "DROPPED", "RECORDED"]);
    for src in &s.sources {
        let b = &src.bpf;
        t.add_row(vec![
            src.name.clone(),
            src.attached_to.clone(),
            b.seen.to_string(),
            b.filtered.to_string(),
            b.no_pfn.to_string(),
            b.emitted.to_string(),
            b.dropped.to_string(),
            src.recorded.to_string(),
        ]);
    }
    out += &t.to_string();
    if let Some(h) = &s.hint_fault_hook {
        out += &format!("\n{}", h.summary());
    }
    if let Some(r) = &s.scan_rest {
        out += &format!(
            "\nNUMA scan: {} ({} rest(s), {:.0} s at rest; rests of {:.0} s while nothing is left to find)",
            r.phase, r.rests, r.rested_s, r.rest_s
        );
    }
    if let Some(d) = &s.damon {
        let st = &d.status;
        let r = &d.regions;
        let cpu_s = st.kdamond_cpu_ns as f64 / 1e9;
        out += &format!(
            "\ndamon: kdamond {} on {} process(es) holding {} MiB of lower-tier memory ({} start(s)), sampling \
             every {} µs, aggregating every {} ms ({}); kdamond CPU {:.1} s ({:.2}% of a core), region expansion \
             {:.1} s, both {:.2}% of a core lately; regions: {} reported, {} windowed, {} over budget; {} pages \
             looked up (budget {}/s)\n",
            if st.kdamond_pid == 0 { "-".to_owned() } else { st.kdamond_pid.to_string() },
            st.targets,
            st.target_pages >> 8,
            st.starts,
            st.sample_us,
            st.aggr_us / 1000,
            if st.cpu_budget_ppm == 0 {
                "no CPU budget".to_owned()
            } else {
                format!(
                    "CPU budget {:.1}%, {} change(s)",
                    st.cpu_budget_ppm as f64 / 1e4,
                    st.interval_changes
                )
            },
            cpu_s,
            100.0 * cpu_s / d.running_s.max(1e-9),
            r.cpu_ns as f64 / 1e9,
            st.cpu_share_ppm as f64 / 1e4,
            r.regions,
            r.windowed,
            r.over_budget,
            r.pages,
            st.pages_per_second
        );
    }
    if let Some(sm) = &s.sampler {
        let l = &s.sample_pfn_lookups;
        out += &format!(
            "\nsamples: {}, period {} on {} CPUs, {:.2}% of a core (budget {:.1}%); pfn lookups: {} resolved, {} not \
             lower tier, {} not present, {} process gone; {} on large folios\n",
            sm.description,
            sm.period,
            sm.cpus,
            sm.cpu_share * 100.0,
            sm.cpu_budget * 100.0,
            l.resolved,
            l.not_lower_tier,
            l.not_present,
            l.process_gone,
            l.large_folio
        );
    }
    let f = &s.hotmap.feed;
    out += &format!(
        "\nhot map: {} accesses recorded, {} pages became ready; {} hints held (of {}), {} evicted\n",
        s.hotmap.recorded_accesses,
        f.newly_ready,
        s.hotmap.hints,
        s.hotmap.hint_capacity,
        s.hotmap.hint_evictions
    );
    if !s.rule.policy.is_empty() {
        out += &s.rule.summary();
        for n in s.rule.nodes.iter().filter(|n| n.latency.count > 0) {
            let q = |q| n.latency.quantile_bound(q).map_or("-".into(), |ms| format!("≤{ms}"));
            out += &format!(
                "  node {} scan-to-fault latency: {} faults, p10 {} ms, p50 {}, p90 {}\n",
                n.nid,
                n.latency.count,
                q(0.1),
                q(0.5),
                q(0.9)
            );
        }
    }
    out += "\n";

    let mut t = table(&[
        "PROMOTER",
        "CALLS",
        "MOVED pages",
        "MOVED MiB",
        "pages/s",
        "LATENCY p50",
        "p99",
        "STALE",
        "GONE",
        "NO HINT",
        "RATE-LIMITED",
        "WATERMARK",
        "WOULD MOVE",
    ]);
    for p in &s.promoter {
        let c = &p.counters;
        let rate = match prev
            .and_then(|(ps, secs)| ps.promoter.iter().find(|q| q.node == p.node).map(|q| (q, secs)))
        {
            Some((q, secs)) if secs > 0.0 => c.moved.saturating_sub(q.counters.moved) as f64 / secs,
            _ if s.uptime_s > 0.0 => c.moved as f64 / s.uptime_s,
            _ => 0.0,
        };
        let ms = |q: f64| match p.latency.quantile_ms(q) {
            Some(u64::MAX) => "> 60s".to_owned(),
            Some(v) => format!("≤ {v} ms"),
            None => "-".to_owned(),
        };
        t.add_row(vec![
            format!("node {} → {}", p.node, p.target.map(|t| t.to_string()).unwrap_or_else(|| "?".into())),
            c.move_calls.to_string(),
            c.moved.to_string(),
            mib(c.moved_bytes),
            format!("{rate:.0}"),
            ms(0.5),
            ms(0.99),
            dash(c.stale),
            dash(c.process_gone + c.err_esrch),
            dash(c.no_hint),
            dash(c.rate_limited),
            dash(c.watermark_limited),
            dash(c.would_promote),
        ]);
    }
    out += &t.to_string();
    out += "\n\nkernel: ";
    out += &kernel_line(s, prev);
    out.push('\n');
    out
}

/// The kernel's counters, each with its rate over the interval when there is
/// one: `numa_hint_faults` a second is what the scans cost the workloads.
/// (Without an interval there is no rate: the counters run since boot.)
fn kernel_line(s: &Snapshot, prev: Option<(&Snapshot, f64)>) -> String {
    let rate = |k: &str, v: u64| {
        let (p, secs) = prev.filter(|&(_, secs)| secs > 0.0)?;
        let before = *p.kernel_counters.get(k)?;
        Some(v.saturating_sub(before) as f64 / secs)
    };
    s.kernel_counters
        .iter()
        .map(|(k, &v)| match rate(k, v) {
            Some(r) => format!("{k} {v} ({r:.0}/s)"),
            None => format!("{k} {v}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `hotpage top` table: processes by promoted and ready memory.
pub fn render_top(s: &Snapshot) -> String {
    let mut t = table(&["PID", "COMMAND", "PROMOTED MiB", "PROMOTED pages", "READY pages"]);
    for p in &s.processes {
        t.add_row(vec![
            p.pid.to_string(),
            p.comm.clone(),
            mib(p.promoted_pages * 4096),
            p.promoted_pages.to_string(),
            p.hot_pages.to_string(),
        ]);
    }
    if s.processes.is_empty() {
        return "no process has promoted or ready pages yet\n".into();
    }
    t.to_string() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::ProcessRow;

    #[test]
    fn the_stats_table_has_every_section() {
        let s = crate::report::fixture::snapshot();
        let text = render_stats(&s, None);
        for needle in [
            "hotpage 0.1.0 on Linux 6.12.117+deb12-cloud-amd64, up 42s, default records, rate limit 1024 MB/s",
            "PROMOTED OUT pages",
            "EBUSY 3",
            "hint_faults",
            "fentry/numa_migrate_check",
            "node 1 → 0",
            "≤ 50 ms",
            "≤ 200 ms",
            "kernel: numa_hint_faults 70000, pgpromote_success 0",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from\n{text}");
        }
        // Average since start without a previous snapshot: 8192 pages in 42.5 s.
        assert!(text.contains(" 193 "), "{text}");
    }

    #[test]
    fn rates_come_from_the_interval_when_given() {
        let now = crate::report::fixture::snapshot();
        let mut before = now.clone();
        before.promoter[0].counters.moved = 8192 - 1000;
        before.kernel_counters.insert("numa_hint_faults".into(), 70_000 - 3_000);
        let text = render_stats(&now, Some((&before, 2.0)));
        assert!(text.contains(" 500 "), "{text}");
        assert!(text.contains("numa_hint_faults 70000 (1500/s), pgpromote_success 0 (0/s)"), "{text}");
    }

    #[test]
    fn top_lists_processes() {
        let mut s = crate::report::fixture::snapshot();
        assert!(render_top(&s).contains("no process"));
        s.processes.push(ProcessRow { pid: 42, comm: "gups".into(), promoted_pages: 2560, hot_pages: 7 });
        let text = render_top(&s);
        assert!(text.contains("42") && text.contains("gups") && text.contains("10"), "{text}");
    }
}
