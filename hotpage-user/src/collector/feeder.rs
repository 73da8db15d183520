//! Feeds collector events into the hot map: the consumer the collector hands
//! every event to in `hotpage run` and `hotpage trace`.

use std::sync::Arc;

use hotpage_common::{HotpageEvent, event_flags};

use super::EventConsumer;
use crate::{
    hotmap::{Access, HotMap, RecordError, Recorded},
    rule::{HotnessRule, Verdict},
    sys::clock::ns_to_tick,
};

crate::counter_set! {
    /// How the events fed so far fared, by `record_access()` outcome.
    pub struct FeedStats, ids FeedCounter, shared FeedCounters {
        events: "events handed to the hot map",
        not_started: "ignored: the promoter had not started",
        source_disabled: "ignored: their source is disabled",
        same_node: "ignored: the page is on the accessing node",
        top_tier: "ignored: the page is on a top-tier node",
        not_online: "ignored: the pfn is not online memory",
        no_record_array: "ignored: the page's section has no record array",
        updated: "accesses that updated a record",
        newly_ready: "accesses that made a page ready (it becomes a promotion candidate)",
        invalid_node: "refused: the accessing node is not valid",
        unknown_source: "refused: not a source pghot knows",
        unresolved: "events still without a pfn (a resolver should have handled them)",
        not_hot: "ignored: the hotness rule found the page's latencies slow",
    }
}

pub struct HotMapFeeder {
    map: Arc<HotMap>,
    /// Which events count as accesses; None records every event (pghot).
    rule: Option<HotnessRule>,
    stats: FeedStats,
    published: Arc<FeedCounters>,
    /// Reused per batch: the accesses and the events they came from.
    accesses: Vec<Access>,
    origins: Vec<u32>,
}

impl HotMapFeeder {
    /// A feeder that records every event, as pghot does.
    pub fn new(map: Arc<HotMap>) -> Self {
        Self::with_rule(map, None)
    }

    /// A feeder that records the events `rule` lets through.
    pub fn with_rule(map: Arc<HotMap>, rule: Option<HotnessRule>) -> Self {
        Self {
            map,
            rule,
            stats: FeedStats::default(),
            published: Arc::default(),
            accesses: Vec::new(),
            origins: Vec::new(),
        }
    }

    pub fn stats(&self) -> FeedStats {
        self.stats
    }

    pub fn counters(&self) -> Arc<FeedCounters> {
        self.published.clone()
    }

    pub fn map(&self) -> &Arc<HotMap> {
        &self.map
    }

    pub fn rule(&self) -> Option<&HotnessRule> {
        self.rule.as_ref()
    }

    pub fn rule_mut(&mut self) -> Option<&mut HotnessRule> {
        self.rule.as_mut()
    }

    /// Whether the rule lets the event through to the hot map.
    fn counts(&mut self, ev: &HotpageEvent) -> bool {
        let Some(rule) = &mut self.rule else { return true };
        if rule.judge(ev) == Verdict::Rejected {
            self.stats.not_hot += 1;
            return false;
        }
        true
    }
}

impl HotMapFeeder {
    /// Records `events` in the hot map, as `consume_batch()` does, and hands
    /// each recorded event with its outcome to `seen` (a replay watches for
    /// pages turning READY).
    pub fn feed(
        &mut self,
        events: &[HotpageEvent],
        mut seen: impl FnMut(&HotpageEvent, &Result<Recorded, RecordError>),
    ) {
        self.accesses.clear();
        self.origins.clear();
        for (i, ev) in events.iter().enumerate() {
            self.stats.events += 1;
            if ev.flags & event_flags::NEED_PFN != 0 {
                self.stats.unresolved += 1;
                continue;
            }
            if !self.counts(ev) {
                continue;
            }
            self.accesses.push(access_of(ev));
            self.origins.push(i as u32);
        }
        let map = self.map.clone();
        let (accesses, origins) = (std::mem::take(&mut self.accesses), std::mem::take(&mut self.origins));
        map.record_batch(&accesses, |k, result| {
            seen(&events[origins[k] as usize], &result);
            self.outcome(result);
        });
        self.accesses = accesses;
        self.origins = origins;
        self.take_moves();
    }

    /// The rule takes the promoter's move calls after a batch, never
    /// within one (a recording logs them there).
    fn take_moves(&mut self) {
        if let Some(rule) = &mut self.rule {
            rule.take_moves();
        }
    }

    fn outcome(&mut self, result: Result<Recorded, RecordError>) {
        let s = &mut self.stats;
        match result {
            Ok(Recorded::Updated { newly_ready, .. }) => {
                s.updated += 1;
                if newly_ready {
                    s.newly_ready += 1;
                }
            }
            Ok(Recorded::NotStarted) => s.not_started += 1,
            Ok(Recorded::SourceDisabled) => s.source_disabled += 1,
            Ok(Recorded::SameNode) => s.same_node += 1,
            Ok(Recorded::TopTier) => s.top_tier += 1,
            Ok(Recorded::NotOnline) => s.not_online += 1,
            Ok(Recorded::NoRecordArray) => s.no_record_array += 1,
            Err(RecordError::InvalidNode(_)) => s.invalid_node += 1,
            Err(RecordError::UnknownSource(_)) => s.unknown_source += 1,
        }
    }
}

/// The access an event reports; the hot map keeps its `(pid, vaddr)` as the
/// hint of a READY page (the event's vaddr is the folio's first page's).
fn access_of(ev: &HotpageEvent) -> Access {
    Access::new(ev.pfn, ev.order, ev.nid, ev.source, ns_to_tick(ev.time_ns)).mapped(ev.pid, ev.vaddr)
}

impl EventConsumer for HotMapFeeder {
    fn consume(&mut self, ev: &HotpageEvent) {
        self.stats.events += 1;
        if ev.flags & event_flags::NEED_PFN != 0 {
            self.stats.unresolved += 1;
            return;
        }
        if !self.counts(ev) {
            return;
        }
        let result = self.map.record(&access_of(ev));
        self.outcome(result);
        self.take_moves();
    }

    fn consume_batch(&mut self, events: &[HotpageEvent]) {
        self.feed(events, |_, _| {});
    }

    fn drained(&mut self) {
        self.published.publish(&self.stats);
        if let Some(rule) = &self.rule {
            rule.publish();
        }
    }
}

#[cfg(test)]
mod tests {
    use hotpage_common::{PAGES_PER_SECTION as S, source};

    use super::*;
    use crate::hotmap::{HotMapConfig, LayoutNode, MemoryLayout};

    fn ev(pfn: u64, order: u8, ms: u64) -> HotpageEvent {
        HotpageEvent {
            pfn,
            vaddr: 0x7000_0000 + (pfn << 12),
            time_ns: ms * 1_000_000,
            pid: 42,
            nid: 0,
            page_nid: 1,
            source: source::HINT_FAULT,
            order,
            ..HotpageEvent::default()
        }
    }

    fn feeder() -> HotMapFeeder {
        let layout = MemoryLayout {
            nodes: vec![
                LayoutNode { id: 0, top_tier: true, ranges: vec![(0, S)] },
                LayoutNode { id: 1, top_tier: false, ranges: vec![(S, 2 * S)] },
            ],
        };
        let map = Arc::new(HotMap::new(&layout, HotMapConfig::default(), 1024).unwrap());
        map.start();
        HotMapFeeder::new(map)
    }

    #[test]
    fn ready_pages_get_a_hint_and_stats_are_published() {
        let mut f = feeder();
        f.consume(&ev(S + 5, 0, 1000));
        assert!(f.map().hints().get(S + 5).is_none(), "not ready yet");
        f.consume(&ev(S + 5, 0, 1100));
        let h = f.map().hints().get(S + 5).unwrap();
        assert_eq!((h.pid, h.vaddr, h.tick), (42, 0x7000_0000 + ((S + 5) << 12), 1100));
        f.consume(&ev(10, 0, 1200));
        let mut need = ev(0, 0, 1300);
        need.flags = event_flags::NEED_PFN;
        f.consume(&need);
        assert_eq!(f.counters().snapshot(), FeedStats::default(), "published on drain");
        f.drained();
        let s = f.counters().snapshot();
        // pfn 10 is node 0's, the accessing node: the same-node check comes first.
        assert_eq!((s.events, s.updated, s.newly_ready, s.same_node, s.unresolved), (4, 2, 1, 1, 1));
    }

    #[test]
    fn a_batch_counts_like_single_events() {
        let evs: Vec<HotpageEvent> = (0..600).map(|i| ev(S + (i % 200), 0, 1000 + i / 100)).collect();
        let mut one = feeder();
        for e in &evs {
            one.consume(e);
        }
        let mut batch = feeder();
        for chunk in evs.chunks(256) {
            batch.consume_batch(chunk);
        }
        assert_eq!(one.stats(), batch.stats());
        assert_eq!(batch.stats().newly_ready, 200);
        assert_eq!(batch.map().hints().len(), 200);
    }

    /// A worker that walks the node the moment the map wakes it (as one
    /// already walking would) finds the hint of every page it takes.
    #[test]
    fn a_worker_woken_by_a_ready_page_finds_its_hint() {
        use std::sync::Mutex;

        use crate::hotmap::WalkControl;

        let f = feeder();
        let map = f.map().clone();
        let taken = Arc::new(Mutex::new(Vec::new()));
        let (m, t) = (Arc::downgrade(&map), taken.clone());
        map.set_waker(
            1,
            Arc::new(move || {
                let Some(m) = m.upgrade() else { return };
                m.walk_node(1, |p| {
                    t.lock().unwrap().push((p.pfn, m.hints().take(p.pfn)));
                    WalkControl::Continue
                });
            }),
        );
        let mut f = f;
        f.consume_batch(&[ev(S + 5, 0, 1000), ev(S + 5, 0, 1100)]);
        let taken = taken.lock().unwrap();
        assert_eq!(taken.len(), 1, "the wake-up walked and took the page");
        let (pfn, hint) = taken[0];
        assert_eq!(pfn, S + 5);
        let hint = hint.expect("the hint is in the table before the record turns READY");
        assert_eq!((hint.pid, hint.vaddr), (42, 0x7000_0000 + ((S + 5) << 12)));
    }

    /// With the latency rule, slow hint faults never reach the hot map; fast
    /// ones, once the node's threshold is drawn, make the page READY.
    #[test]
    fn the_rule_keeps_slow_faults_from_the_hot_map() {
        use crate::rule::{HotnessRule, Policy};

        let f = feeder();
        let layout = MemoryLayout {
            nodes: vec![
                LayoutNode { id: 0, top_tier: true, ranges: vec![(0, S)] },
                LayoutNode { id: 1, top_tier: false, ranges: vec![(S, 2 * S)] },
            ],
        };
        let map = f.map().clone();
        let mut f = HotMapFeeder::with_rule(map, Some(HotnessRule::new(Policy::Latency, &layout)));
        let fault = |pfn: u64, ms: u64, latency_ms: u32| HotpageEvent {
            flags: event_flags::LATENCY,
            latency_ms,
            ..ev(pfn, 0, ms)
        };
        // Scans a second apart: 200 pages fault after 20 ms, 1800 after 800 ms.
        for scan in 0..6u64 {
            let batch: Vec<HotpageEvent> = (0..2000u64)
                .map(|p| fault(S + p, 1000 * scan + p / 100, if p < 200 { 20 } else { 800 }))
                .collect();
            f.consume_batch(&batch);
        }
        let s = f.stats();
        assert!(s.not_hot > 0 && s.newly_ready > 0, "{s:?}");
        assert_eq!(s.newly_ready, 200, "exactly the fast pages became READY");
        assert!(f.map().hints().get(S + 10).is_some() && f.map().hints().get(S + 500).is_none());
        assert_eq!(s.events, s.not_hot + s.updated + s.same_node + s.top_tier);
    }

    #[test]
    fn a_thp_hint_is_kept_at_the_head() {
        let mut f = feeder();
        let head = S + 512;
        f.consume(&ev(head, 9, 10));
        f.consume(&ev(head, 9, 20));
        assert!(f.map().hints().get(head).is_some());
    }
}
