//! The per-CPU diagnostic counters every program keeps (`HOTPAGE_CNT_*`).

use aya::maps::{MapData, PerCpuArray};
use hotpage_common::counter;

use super::BpfError;

crate::counter_set! {
    /// Counters summed over CPUs, in `counter::NAMES` order.
    pub struct CounterSnapshot, ids BpfCounter {
        seen: "hook invocations",
        no_pfn: "the entry held no decodable pfn",
        filtered: "the pfn is not on a lower-tier node",
        emitted: "events written to the ring",
        dropped: "ring full: event lost",
        wakeups: "forced consumer wake-ups",
        stamp_unset: "hint faults on a folio without a scan stamp (fresh or just migrated)",
        stamp_mismatch: "hint faults whose flags word failed the stamp layout's node self-check",
    }
}

/// A handle on one object's `counters` map.
pub struct SourceCounters {
    map: PerCpuArray<MapData, u64>,
}

impl SourceCounters {
    pub(super) fn new(map: PerCpuArray<MapData, u64>) -> Self {
        Self { map }
    }

    pub fn read(&self) -> Result<CounterSnapshot, BpfError> {
        let mut sums = [0u64; counter::COUNT as usize];
        for (idx, sum) in sums.iter_mut().enumerate() {
            let per_cpu = self.map.get(&(idx as u32), 0).map_err(BpfError::Map)?;
            *sum = per_cpu.iter().sum();
        }
        Ok(CounterSnapshot::from_fn(|id| sums[id as usize]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fields_are_the_programs_counters_in_order() {
        assert_eq!(BpfCounter::NAMES, &counter::NAMES[..]);
    }

    #[test]
    fn difference_never_underflows() {
        let a = CounterSnapshot { seen: 10, emitted: 4, ..Default::default() };
        let b = CounterSnapshot { seen: 25, emitted: 9, dropped: 1, ..Default::default() };
        assert_eq!(b.since(&a), CounterSnapshot { seen: 15, emitted: 5, dropped: 1, ..Default::default() });
        assert_eq!(a.since(&b).seen, 0);
    }
}
