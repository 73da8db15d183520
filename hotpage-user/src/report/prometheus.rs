//! Prometheus text exposition format 0.0.4: one renderer for `hotpage
//! metrics`, `hotpage stats --prometheus`, the textfile and HTTP /metrics.
//! Names start with `hotpage_`, use base units, counters end in `_total`, the
//! NUMA label is `node` (as node_exporter's `node_memory_numa_*`), no pid or
//! address labels, no timestamps.

use std::fmt::Write;

use super::Snapshot;
use crate::{
    promoter::{Counter, stats::LATENCY_BUCKETS_MS},
    rule::{NodeRuleReport, RuleReport, latency::BUCKET_BOUNDS_MS},
};

/// One of the rule's per-node bars (ms), for the threshold gauges.
type NodeBar = fn(&NodeRuleReport) -> Option<f64>;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Builds one metric family at a time: HELP, TYPE, samples.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {}", number(value));
    }
}

impl Out {
    /// One node's samples of a histogram family: cumulative `_bucket`s at
    /// `bounds` (seconds) from non-cumulative `buckets`, then +Inf, `_sum`
    /// (from ms) and `_count`.
    fn histogram(
        &mut self,
        name: &str,
        node: &str,
        bounds: impl Iterator<Item = f64>,
        buckets: &[u64],
        count: u64,
        sum_ms: u64,
    ) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (i, bound) in bounds.enumerate() {
            cumulative += buckets.get(i).copied().unwrap_or(0);
            self.sample(&bucket, &[("node", node), ("le", &number(bound))], cumulative as f64);
        }
        self.sample(&bucket, &[("node", node), ("le", "+Inf")], count as f64);
        self.sample(&format!("{name}_sum"), &[("node", node)], sum_ms as f64 / 1e3);
        self.sample(&format!("{name}_count"), &[("node", node)], count as f64);
    }

    /// A counter family with one sample per promoter node and per `(counter,
    /// label value)` of `table`; an empty `label` adds no label but `node`.
    fn node_counters(
        &mut self,
        s: &Snapshot,
        name: &str,
        help: &str,
        label: &str,
        table: &[(Counter, &str)],
    ) {
        self.family(name, "counter", help);
        for p in &s.promoter {
            let node = p.node.to_string();
            for (c, value) in table {
                let labels: &[(&str, &str)] =
                    if label.is_empty() { &[("node", &node)] } else { &[("node", &node), (label, value)] };
                self.sample(name, labels, p.counters.get(*c) as f64);
            }
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', r"\\").replace('"', "\\\"").replace('\n', r"\n")
}

/// Integers print as integers; others with enough precision.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{}", v as i64) } else { format!("{v}") }
}

/// Candidate outcomes exported as `hotpage_candidates_total{outcome=...}`.
const OUTCOMES: &[(Counter, &str)] = &[
    (Counter::candidates, "taken"),
    (Counter::no_hint, "no_hint"),
    (Counter::process_gone, "process_gone"),
    (Counter::stale, "stale"),
    (Counter::already_on_target, "already_on_target"),
    (Counter::not_lru, "not_lru"),
    (Counter::would_promote, "would_promote"),
    (Counter::rate_limited, "rate_limited"),
    (Counter::watermark_limited, "watermark_limited"),
    (Counter::colder_deferred, "colder_deferred"),
];

/// Per-page move_pages errors, as `errno` label values.
const ERRNOS: &[(Counter, &str)] = &[
    (Counter::err_ebusy, "EBUSY"),
    (Counter::err_enomem, "ENOMEM"),
    (Counter::err_eacces, "EACCES"),
    (Counter::err_efault, "EFAULT"),
    (Counter::err_enoent, "ENOENT"),
    (Counter::err_esrch, "ESRCH"),
    (Counter::err_other, "other"),
];

/// Pages without an errno that did not move, as `reason` label values.
const UNMOVED: &[(Counter, &str)] = &[
    (Counter::left_on_node, "left_on_node"),
    (Counter::on_other_node, "on_other_node"),
    (Counter::status_unknown, "status_unknown"),
];

/// The hotness rule: its policy, its verdicts, each lower-tier node's
/// threshold and distribution of scan-to-fault latencies.
fn rule(o: &mut Out, r: &RuleReport) {
    o.family("hotpage_rule_policy", "gauge", "The hotness rule's policy (1 for the one in use).");
    for p in crate::rule::Policy::NAMES {
        o.sample("hotpage_rule_policy", &[("policy", p)], f64::from(u8::from(r.policy == p)));
    }
    o.family(
        "hotpage_rule_hint_faults_total",
        "counter",
        "Hint faults by the hotness rule's verdict (no_latency: counted as pghot would).",
    );
    let c = &r.counters;
    for (verdict, v) in [("qualified", c.qualified), ("rejected", c.rejected), ("no_latency", c.no_latency)] {
        o.sample("hotpage_rule_hint_faults_total", &[("verdict", verdict)], v as f64);
    }
    o.family(
        "hotpage_rule_stall_corrected_total",
        "counter",
        "Hint faults whose latency had the time hotpage spent moving their process's pages taken off.",
    );
    o.sample("hotpage_rule_stall_corrected_total", &[], c.stall_corrected as f64);
    o.family(
        "hotpage_rule_short_of_evidence_total",
        "counter",
        "Hint faults rejected although the page's streak and mean were fast: its faults' evidence was short of the node's bar.",
    );
    o.sample("hotpage_rule_short_of_evidence_total", &[], c.short_of_evidence as f64);
    o.family(
        "hotpage_rule_evidence_bar_nats",
        "gauge",
        "Log-likelihood ratio (nats) a page's faults must reach to qualify (absent until the node's fault model has faults of both modes).",
    );
    for n in &r.nodes {
        if let Some(b) = n.evidence_bar_nats {
            o.sample("hotpage_rule_evidence_bar_nats", &[("node", &n.nid.to_string())], b);
        }
    }
    let bars: [(&str, &str, NodeBar); 2] = [
        (
            "hotpage_rule_threshold_seconds",
            "Scan-to-fault latency under which a page's mean latency counts as fast (absent while learning, and once the fastest-tenth fallback is spent).",
            |n| n.threshold_ms,
        ),
        (
            "hotpage_rule_fault_threshold_seconds",
            "Scan-to-fault latency under which one fault continues a page's streak of fast faults (the valley while a split stands; else the threshold).",
            |n| n.fault_threshold_ms,
        ),
    ];
    for (name, help, ms) in bars {
        o.family(name, "gauge", help);
        for n in &r.nodes {
            if let Some(t) = ms(n) {
                let node = n.nid.to_string();
                o.sample(name, &[("node", &node), ("source", &n.threshold_source)], t / 1e3);
            }
        }
    }
    o.family(
        "hotpage_hint_fault_latency_seconds",
        "histogram",
        "Scan-to-fault latency of hint faults on each lower-tier node (the kernel's scan stamp), less time spent in hotpage's own moves of the process's pages.",
    );
    for n in &r.nodes {
        let h = &n.latency;
        let bounds = BUCKET_BOUNDS_MS.iter().map(|&ms| f64::from(ms) / 1e3);
        o.histogram(
            "hotpage_hint_fault_latency_seconds",
            &n.nid.to_string(),
            bounds,
            &h.buckets,
            h.count,
            h.sum_ms,
        );
    }
}

pub fn render(s: &Snapshot) -> String {
    let mut o = Out(String::with_capacity(8192));
    const PAGE: f64 = 4096.0;

    o.family("hotpage_build_info", "gauge", "hotpage's version and the kernel it runs on.");
    o.sample("hotpage_build_info", &[("version", &s.version), ("kernel", &s.kernel), ("mode", &s.mode)], 1.0);
    o.family("hotpage_uptime_seconds", "gauge", "Seconds since hotpage run started.");
    o.sample("hotpage_uptime_seconds", &[], s.uptime_s);
    o.family("hotpage_observe_only", "gauge", "1 when hotpage only observes and moves nothing.");
    o.sample("hotpage_observe_only", &[], if s.observe_only { 1.0 } else { 0.0 });
    if let Some(r) = s.rate_limit_bytes_per_s {
        o.family(
            "hotpage_rate_limit_bytes_per_second",
            "gauge",
            "Promotion rate limit per target node (absent when unlimited).",
        );
        o.sample("hotpage_rate_limit_bytes_per_second", &[], r as f64);
    }

    o.family("hotpage_node_memory_bytes", "gauge", "Memory of each online NUMA node (MemTotal).");
    for n in &s.nodes {
        let tier = n.tier.map(|t| t.to_string()).unwrap_or_default();
        let node = n.node.to_string();
        let top = if n.top_tier { "true" } else { "false" };
        o.sample(
            "hotpage_node_memory_bytes",
            &[("node", &node), ("tier", &tier), ("top_tier", top)],
            n.total_bytes as f64,
        );
    }
    o.family("hotpage_node_free_bytes", "gauge", "Free memory of each online NUMA node (MemFree).");
    for n in &s.nodes {
        o.sample("hotpage_node_free_bytes", &[("node", &n.node.to_string())], n.free_bytes as f64);
    }
    let lower: Vec<_> = s.nodes.iter().filter(|n| !n.top_tier).collect();
    o.family("hotpage_node_tracked_bytes", "gauge", "Lower-tier memory with a hot-map record.");
    for n in &lower {
        o.sample(
            "hotpage_node_tracked_bytes",
            &[("node", &n.node.to_string())],
            n.tracked_pages as f64 * PAGE,
        );
    }
    o.family(
        "hotpage_node_ready_bytes",
        "gauge",
        "Lower-tier memory marked ready for promotion, not yet taken.",
    );
    for n in &lower {
        o.sample("hotpage_node_ready_bytes", &[("node", &n.node.to_string())], n.ready_pages as f64 * PAGE);
    }

    o.family(
        "hotpage_promoted_bytes_total",
        "counter",
        "Bytes promoted, by lower-tier node and target node.",
    );
    for p in &s.promoter {
        let target = p.target.map(|t| t.to_string()).unwrap_or_default();
        o.sample(
            "hotpage_promoted_bytes_total",
            &[("node", &p.node.to_string()), ("target", &target)],
            p.counters.moved_bytes as f64,
        );
    }
    o.family(
        "hotpage_kernel_promoted_bytes_total",
        "counter",
        "Bytes the kernel's own NUMA balancing promoted into each top-tier node since hotpage started (its pgpromote_success).",
    );
    for n in s.nodes.iter().filter(|n| n.top_tier) {
        o.sample(
            "hotpage_kernel_promoted_bytes_total",
            &[("target", &n.node.to_string())],
            n.kernel_promoted_in_pages as f64 * PAGE,
        );
    }
    o.family(
        "hotpage_kernel_vmstat_total",
        "counter",
        "The kernel's own NUMA-balancing and tiering counters (/proc/vmstat); numa_hint_faults is what the scans cost the workloads.",
    );
    for (k, v) in &s.kernel_counters {
        o.sample("hotpage_kernel_vmstat_total", &[("counter", k)], *v as f64);
    }
    o.node_counters(
        s,
        "hotpage_promotion_failures_total",
        "Pages move_pages did not move, by errno.",
        "errno",
        ERRNOS,
    );
    o.node_counters(
        s,
        "hotpage_candidates_total",
        "Ready pages taken from the hot map that did not reach move_pages, by reason; \"taken\" counts all.",
        "outcome",
        OUTCOMES,
    );
    o.node_counters(
        s,
        "hotpage_promotion_unmoved_total",
        "Pages move_pages left without an errno: still on their node (left_on_node), on another node \
         (on_other_node), or with no status from the call or the follow-up query (status_unknown).",
        "reason",
        UNMOVED,
    );
    o.node_counters(
        s,
        "hotpage_promoter_limited_rounds_total",
        "Promoter rounds that walked nothing because every target was full or out of rate.",
        "",
        &[(Counter::limited_rounds, "")],
    );
    o.node_counters(
        s,
        "hotpage_promoter_kswapd_wakes_total",
        "Small batches sent to a demoting target under its floor, whose allocation wakes kswapd to demote.",
        "",
        &[(Counter::kswapd_wakes, "")],
    );
    o.node_counters(
        s,
        "hotpage_promoter_idle_rounds_total",
        "Promoter rounds that found nothing READY on the node (no room check, no walk).",
        "",
        &[(Counter::idle_rounds, "")],
    );
    o.node_counters(
        s,
        "hotpage_move_pages_calls_total",
        "move_pages calls.",
        "",
        &[(Counter::move_calls, "")],
    );
    o.node_counters(
        s,
        "hotpage_move_pages_call_errors_total",
        "move_pages calls that failed as a whole.",
        "",
        &[(Counter::call_errors, "")],
    );
    o.family(
        "hotpage_promotion_latency_seconds",
        "histogram",
        "Time from a page becoming ready to its promotion.",
    );
    for p in &s.promoter {
        let l = &p.latency;
        let bounds = LATENCY_BUCKETS_MS.iter().map(|&ms| ms as f64 / 1e3);
        o.histogram(
            "hotpage_promotion_latency_seconds",
            &p.node.to_string(),
            bounds,
            &l.buckets,
            l.count,
            l.sum_ms,
        );
    }

    o.family(
        "hotpage_source_events_total",
        "counter",
        "Events of each source's BPF program, by stage: seen, no_pfn, filtered (not lower tier), emitted, dropped (ring full); \
         hint faults emitted without a latency: stamp_unset (fresh or just migrated folio), stamp_mismatch (the stamp layout's node check failed).",
    );
    for src in &s.sources {
        let b = &src.bpf;
        for (stage, v) in [
            ("seen", b.seen),
            ("no_pfn", b.no_pfn),
            ("filtered", b.filtered),
            ("emitted", b.emitted),
            ("dropped", b.dropped),
            ("stamp_unset", b.stamp_unset),
            ("stamp_mismatch", b.stamp_mismatch),
        ] {
            o.sample("hotpage_source_events_total", &[("source", &src.name), ("stage", stage)], v as f64);
        }
    }
    if let Some(c) = s.hint_fault_hook.as_ref().and_then(|h| h.coverage) {
        o.family(
            "hotpage_hint_fault_hook_coverage_ratio",
            "gauge",
            "Share of the kernel's hint faults (numa_hint_faults) the hint-fault hook saw in the last window; \
             under 0.5 the hook is probably not on the fault path.",
        );
        o.sample("hotpage_hint_fault_hook_coverage_ratio", &[], c);
    }
    if let Some(r) = &s.scan_rest {
        o.family(
            "hotpage_numa_scan_resting",
            "gauge",
            "1 while hotpage rests NUMA balancing's scanner (nothing has qualified lately on any lower-tier node).",
        );
        o.sample("hotpage_numa_scan_resting", &[], f64::from(u8::from(r.phase == "resting")));
        o.family("hotpage_numa_scan_rests_total", "counter", "Rests of NUMA balancing's scanner begun.");
        o.sample("hotpage_numa_scan_rests_total", &[], r.rests as f64);
        o.family(
            "hotpage_numa_scan_rested_seconds_total",
            "counter",
            "Time NUMA balancing's scanner has rested (kernel.numa_balancing 0).",
        );
        o.sample("hotpage_numa_scan_rested_seconds_total", &[], r.rested_s);
    }
    o.family("hotpage_source_wakeups_total", "counter", "Forced ring-buffer wake-ups of the consumer.");
    for src in &s.sources {
        o.sample("hotpage_source_wakeups_total", &[("source", &src.name)], src.bpf.wakeups as f64);
    }
    o.family(
        "hotpage_hotmap_source_accesses_total",
        "counter",
        "Accesses each enabled source reported to the hot map, before filtering (pghot_recorded_<source>).",
    );
    for src in &s.sources {
        o.sample("hotpage_hotmap_source_accesses_total", &[("source", &src.name)], src.recorded as f64);
    }
    o.family(
        "hotpage_hotmap_recorded_accesses_total",
        "counter",
        "Accesses that updated a hot-map record (pghot_recorded_accesses).",
    );
    o.sample("hotpage_hotmap_recorded_accesses_total", &[], s.hotmap.recorded_accesses as f64);
    o.family("hotpage_hotmap_ready_pages_total", "counter", "Accesses that made a page ready for promotion.");
    o.sample("hotpage_hotmap_ready_pages_total", &[], s.hotmap.feed.newly_ready as f64);
    rule(&mut o, &s.rule);
    o.family("hotpage_hotmap_record_bytes", "gauge", "Memory held by hot-map records.");
    o.sample("hotpage_hotmap_record_bytes", &[], s.hotmap.record_bytes as f64);
    o.family("hotpage_hints", "gauge", "(pid, vaddr) hints held for ready pages.");
    o.sample("hotpage_hints", &[], s.hotmap.hints as f64);
    o.family("hotpage_hint_capacity", "gauge", "Most hints the table holds.");
    o.sample("hotpage_hint_capacity", &[], s.hotmap.hint_capacity as f64);
    o.family("hotpage_hint_evictions_total", "counter", "Hints dropped because the table was full.");
    o.sample("hotpage_hint_evictions_total", &[], s.hotmap.hint_evictions as f64);
    if let Some(d) = &s.damon {
        damon(&mut o, d);
    }
    if let Some(sm) = &s.sampler {
        let kind = match sm.kind {
            Some(crate::sources::samples::SamplerKind::IbsOp) => "ibs_op",
            Some(crate::sources::samples::SamplerKind::PebsLoadLatency) => "pebs_load_latency",
            Some(crate::sources::samples::SamplerKind::SoftwarePageFaults) => "software_page_faults",
            None => "",
        };
        o.family("hotpage_sample_period", "gauge", "Events between samples now, set by the CPU budget.");
        o.sample("hotpage_sample_period", &[("sampler", kind)], sm.period as f64);
        o.family("hotpage_sample_cpus", "gauge", "CPUs with a sampling event open.");
        o.sample("hotpage_sample_cpus", &[("sampler", kind)], sm.cpus as f64);
        o.family(
            "hotpage_sample_cpu_share_ratio",
            "gauge",
            "Share of one core the sample source cost in the last second (BPF run time plus consumer).",
        );
        o.sample("hotpage_sample_cpu_share_ratio", &[("sampler", kind)], sm.cpu_share);
        o.family(
            "hotpage_sample_cpu_budget_ratio",
            "gauge",
            "Most the sample source may cost, share of one core.",
        );
        o.sample("hotpage_sample_cpu_budget_ratio", &[("sampler", kind)], sm.cpu_budget);
        o.family(
            "hotpage_sample_pfn_lookups_total",
            "counter",
            "Samples without a physical address looked up in pagemap, by outcome.",
        );
        let l = &s.sample_pfn_lookups;
        for (outcome, v) in [
            ("resolved", l.resolved),
            ("not_lower_tier", l.not_lower_tier),
            ("not_present", l.not_present),
            ("process_gone", l.process_gone),
        ] {
            o.sample("hotpage_sample_pfn_lookups_total", &[("outcome", outcome)], v as f64);
        }
        o.family(
            "hotpage_sample_large_folios_total",
            "counter",
            "Samples on a page of a large folio (THP, mTHP), recorded at the folio's first page.",
        );
        o.sample("hotpage_sample_large_folios_total", &[], l.large_folio as f64);
    }
    o.0
}

/// The DAMON source: its kdamond's cost, its targets and its regions.
fn damon(o: &mut Out, d: &super::DamonSnapshot) {
    let st = &d.status;
    o.family("hotpage_damon_kdamond_cpu_seconds_total", "counter", "CPU time of the kdamond hotpage runs.");
    o.sample("hotpage_damon_kdamond_cpu_seconds_total", &[], st.kdamond_cpu_ns as f64 / 1e9);
    o.family(
        "hotpage_damon_expansion_cpu_seconds_total",
        "counter",
        "CPU time hotpage spent turning DAMON's regions into pages.",
    );
    o.sample("hotpage_damon_expansion_cpu_seconds_total", &[], d.regions.cpu_ns as f64 / 1e9);
    o.family(
        "hotpage_damon_cpu_share_ratio",
        "gauge",
        "The DAMON source's cost over the CPU budget's last interval (kdamond plus region expansion), share of one core.",
    );
    o.sample("hotpage_damon_cpu_share_ratio", &[], st.cpu_share_ppm as f64 / 1e6);
    o.family(
        "hotpage_damon_cpu_budget_ratio",
        "gauge",
        "Most the DAMON source may cost (kdamond plus region expansion), share of one core (0: no budget).",
    );
    o.sample("hotpage_damon_cpu_budget_ratio", &[], st.cpu_budget_ppm as f64 / 1e6);
    o.family(
        "hotpage_damon_sample_interval_seconds",
        "gauge",
        "DAMON's sampling interval now, set by the CPU budget.",
    );
    o.sample("hotpage_damon_sample_interval_seconds", &[], st.sample_us as f64 / 1e6);
    o.family(
        "hotpage_damon_aggregation_interval_seconds",
        "gauge",
        "DAMON's aggregation interval now (the same samples per aggregation).",
    );
    o.sample("hotpage_damon_aggregation_interval_seconds", &[], st.aggr_us as f64 / 1e6);
    o.family(
        "hotpage_damon_interval_changes_total",
        "counter",
        "Times the CPU budget changed DAMON's intervals.",
    );
    o.sample("hotpage_damon_interval_changes_total", &[], st.interval_changes as f64);
    o.family(
        "hotpage_damon_targets",
        "gauge",
        "Processes the kdamond monitors (those holding lower-tier memory).",
    );
    o.sample("hotpage_damon_targets", &[], st.targets as f64);
    o.family("hotpage_damon_target_bytes", "gauge", "Lower-tier memory the monitored processes hold.");
    o.sample("hotpage_damon_target_bytes", &[], (st.target_pages << 12) as f64);
    o.family(
        "hotpage_damon_regions_total",
        "counter",
        "Accessed regions DAMON reported, and how they were expanded.",
    );
    o.sample("hotpage_damon_regions_total", &[("outcome", "reported")], d.regions.regions as f64);
    o.sample("hotpage_damon_regions_total", &[("outcome", "windowed")], d.regions.windowed as f64);
    o.sample("hotpage_damon_regions_total", &[("outcome", "over_budget")], d.regions.over_budget as f64);
    o.family("hotpage_damon_pages_total", "counter", "Pages of DAMON regions looked up in pagemap.");
    o.sample("hotpage_damon_pages_total", &[], d.regions.pages as f64);
    o.family("hotpage_damon_pages_per_second_budget", "gauge", "Most pages of regions looked up per second.");
    o.sample("hotpage_damon_pages_per_second_budget", &[], st.pages_per_second as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Metric name → label keys, from the golden text.
    fn golden_families() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
        let golden = include_str!("../../../tests/golden/metrics.prom");
        let mut out: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
            Default::default();
        for line in golden.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let labels = out.entry(line[..name_end].to_owned()).or_default();
            if let Some(inner) =
                line[name_end..].strip_prefix('{').and_then(|r| r.split_once('}')).map(|p| p.0)
            {
                for kv in inner.split("\",") {
                    if let Some((k, _)) = kv.split_once('=') {
                        labels.insert(k.trim_start_matches(',').to_owned());
                    }
                }
            }
        }
        out
    }

    /// Every PromQL expression of a Grafana dashboard.
    fn dashboard_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                        _ => dashboard_exprs(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| dashboard_exprs(v, out)),
            _ => {}
        }
    }

    /// The dashboard in packaging/ queries only what the daemon exports, by
    /// the labels it has: the two cannot drift apart unnoticed.
    #[test]
    fn the_grafana_dashboard_queries_only_exported_metrics_and_labels() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/grafana/hotpage.json");
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut exprs = Vec::new();
        dashboard_exprs(&dashboard, &mut exprs);
        assert!(exprs.len() >= 10, "{exprs:?}");
        let families = golden_families();
        let mut queried = std::collections::BTreeSet::new();
        for e in &exprs {
            let mut rest = e.as_str();
            while let Some(i) = rest.find("hotpage_") {
                let tail = &rest[i..];
                let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
                let name = &tail[..end];
                let labels = families.get(name).unwrap_or_else(|| panic!("{name} (in {e}) is not exported"));
                // Label matchers right after the name: {key="…", key=~"…"}.
                if let Some(m) = tail[end..].strip_prefix('{').and_then(|r| r.split_once('}')).map(|p| p.0) {
                    for key in m.split(',').filter_map(|kv| kv.split(['=', '!']).next()).map(str::trim) {
                        assert!(
                            labels.contains(key),
                            "{name} has no label {key:?} (in {e}); it has {labels:?}"
                        );
                    }
                }
                queried.insert(name.to_owned());
                rest = &tail[end..];
            }
        }
        // What the issue asks the dashboard to show.
        for must in [
            "hotpage_promoted_bytes_total",
            "hotpage_node_ready_bytes",
            "hotpage_node_tracked_bytes",
            "hotpage_source_events_total",
            "hotpage_promotion_latency_seconds_bucket",
            "hotpage_promotion_failures_total",
            "hotpage_kernel_promoted_bytes_total",
        ] {
            assert!(queried.contains(must), "the dashboard shows no {must}");
        }
    }

    #[test]
    fn matches_the_golden_file() {
        let golden = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/golden/metrics.prom");
        let text = render(&crate::report::fixture::snapshot());
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(golden, &text).unwrap();
        }
        let want = std::fs::read_to_string(golden).expect("golden file (UPDATE_GOLDEN=1 to write it)");
        assert_eq!(text, want, "rendered text differs from tests/golden/metrics.prom");
    }

    #[test]
    fn every_family_is_declared_once_and_counters_end_in_total() {
        let text = render(&crate::report::fixture::snapshot());
        let mut seen = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(seen.insert(name.to_owned()), "{name} declared twice");
                assert!(name.starts_with("hotpage_"));
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "{name}");
                }
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let family =
                    name.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
                assert!(seen.contains(family) || seen.contains(name), "{name} before its TYPE");
                assert!(!line.contains("pid"), "no pid labels: {line}");
            }
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_at_count() {
        let text = render(&crate::report::fixture::snapshot());
        let at = |le: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("hotpage_promotion_latency_seconds_bucket")
                        && l.contains(&format!("le=\"{le}\""))
                })
                .and_then(|l| l.rsplit(' ').next())
                .unwrap()
                .to_owned()
        };
        assert_eq!(at("0.02"), "0");
        assert_eq!(at("0.05"), "30");
        assert_eq!(at("0.2"), "40");
        assert_eq!(at("+Inf"), "40");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
