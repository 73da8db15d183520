//! A fixed snapshot for tests, as the box would report it mid-run.

use std::collections::BTreeMap;

use super::{HotMapRow, NodeRow, PromoterRow, Snapshot, SourceRow};
use crate::{
    collector::FeedStats,
    promoter::{CounterSnapshot, LatencySnapshot, stats::LATENCY_BUCKETS_MS},
    rule::{LatencyHistogram, NodeRuleReport, RuleReport, RuleStats},
    sources::{
        CounterSnapshot as Bpf, HookReport, HookVerdict, ResolveStats,
        samples::{SamplerKind, SamplerSnapshot},
    },
};

pub fn snapshot() -> Snapshot {
    let mut latency = LatencySnapshot { buckets: vec![0; LATENCY_BUCKETS_MS.len() + 1], count: 0, sum_ms: 0 };
    latency.buckets[5] = 30; // ≤ 50 ms
    latency.buckets[7] = 10; // ≤ 200 ms
    latency.count = 40;
    latency.sum_ms = 2600;
    Snapshot {
        version: "0.1.0".into(),
        kernel: "6.12.117+deb12-cloud-amd64".into(),
        uptime_s: 42.5,
        mode: "default".into(),
        observe_only: false,
        rate_limit: "1024 MB/s".into(),
        rate_limit_bytes_per_s: Some(1_024_000_000),
        nodes: vec![
            NodeRow {
                node: 0,
                tier: Some(4),
                top_tier: true,
                cpus: "0-1".into(),
                total_bytes: 1_055_285_248,
                free_bytes: 700_000_256,
                promoted_in_pages: 8192,
                kernel_promoted_in_pages: 256,
                ..NodeRow::default()
            },
            NodeRow {
                node: 1,
                tier: Some(56),
                top_tier: false,
                cpus: String::new(),
                total_bytes: 1_055_571_968,
                free_bytes: 900_001_792,
                tracked_pages: 262_111,
                ready_pages: 12,
                promoted_out_pages: 8192,
                promoted_in_pages: 0,
                failures: BTreeMap::from([("EBUSY".into(), 3)]),
                ..NodeRow::default()
            },
        ],
        sources: vec![
            SourceRow {
                name: "hint_faults".into(),
                attached_to: "fentry/numa_migrate_check".into(),
                bpf: Bpf {
                    seen: 70_000,
                    no_pfn: 2,
                    filtered: 100,
                    emitted: 69_898,
                    dropped: 0,
                    wakeups: 136,
                    stamp_unset: 310,
                    stamp_mismatch: 0,
                },
                recorded: 69_898,
            },
            SourceRow {
                name: "samples".into(),
                attached_to: "perf_event/software on 2 CPUs".into(),
                bpf: Bpf {
                    seen: 1_000,
                    no_pfn: 52,
                    filtered: 0,
                    emitted: 948,
                    dropped: 0,
                    wakeups: 1,
                    ..Bpf::default()
                },
                recorded: 900,
            },
        ],
        hotmap: HotMapRow {
            recorded_accesses: 69_800,
            feed: FeedStats { events: 69_898, updated: 69_800, newly_ready: 8210, ..FeedStats::default() },
            hints: 12,
            hint_capacity: 262_144,
            hint_evictions: 0,
            record_bytes: 262_144,
        },
        promoter: vec![PromoterRow {
            node: 1,
            target: Some(0),
            counters: CounterSnapshot {
                rounds: 400,
                wakeups: 35,
                candidates: 8198,
                stale: 3,
                moved: 8192,
                moved_bytes: 8192 * 4096,
                move_calls: 17,
                err_ebusy: 3,
                left_on_node: 2,
                limited_rounds: 5,
                kswapd_wakes: 2,
                idle_rounds: 310,
                rearmed: 3,
                ..CounterSnapshot::default()
            },
            latency,
        }],
        kernel_counters: BTreeMap::from([
            ("pgpromote_success".into(), 0),
            ("numa_hint_faults".into(), 70_000),
        ]),
        processes: Vec::new(),
        sampler: Some(SamplerSnapshot {
            description: "software page faults (no PMU) (software, type 1)".into(),
            kind: Some(SamplerKind::SoftwarePageFaults),
            period: 4,
            cpus: 2,
            cpu_share: 0.0125,
            cpu_budget: 0.03,
        }),
        sample_pfn_lookups: ResolveStats {
            resolved: 900,
            not_lower_tier: 40,
            not_present: 7,
            process_gone: 1,
            large_folio: 12,
        },
        rule: RuleReport {
            policy: "latency".into(),
            counters: RuleStats {
                latencies: 52_000,
                qualified: 6_100,
                rejected: 45_900,
                short_of_evidence: 300,
                stall_corrected: 700,
                no_latency: 900,
            },
            nodes: vec![NodeRuleReport {
                nid: 1,
                threshold_ms: Some(180.0),
                fault_threshold_ms: Some(361.0),
                threshold_source: "split".into(),
                evidence_bar_nats: Some(4.25),
                latency: {
                    let mut h = LatencyHistogram::new();
                    for (ms, n) in [(20, 2_000), (60, 4_000), (100, 3_000), (400, 25_000), (1_500, 18_000)] {
                        for _ in 0..n {
                            h.add(ms);
                        }
                    }
                    h
                },
            }],
        },
        hint_fault_hook: Some(HookReport {
            verdict: HookVerdict::Sees,
            // 0.984375 is exact in binary, so JSON gives it back bit for bit.
            kernel_faults: 64_000,
            seen: 63_000,
            coverage: Some(0.984375),
        }),
        scan_rest: Some(crate::kernel::scan_rest::ScanRestReport {
            phase: "resting".into(),
            rests: 3,
            rested_s: 52.5,
            rest_s: 40.0,
        }),
        // Rendered beside the hint faults here only to cover its lines; a
        // daemon runs DAMON without hint faults.
        damon: Some(super::DamonSnapshot {
            status: crate::sources::damon::source::DamonReport {
                kdamond_pid: 159,
                targets: 1,
                target_pages: 15_541,
                kdamond_cpu_ns: 2_060_000_000,
                starts: 1,
                sample_us: 8_000,
                aggr_us: 160_000,
                pages_per_second: 20_000,
                cpu_budget_ppm: 30_000,
                cpu_share_ppm: 24_500,
                interval_changes: 1,
            },
            regions: crate::sources::damon::RegionStats {
                regions: 282,
                windowed: 107,
                over_budget: 0,
                pages: 64_850,
                cpu_ns: 310_000_000,
            },
            running_s: 27.5,
        }),
    }
}
