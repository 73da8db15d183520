//! The per-CPU diagnostic counters every program keeps (`HOTPAGE_CNT_*`).

use aya::maps::{MapData, PerCpuArray};
use hotpage_common::counter;
use serde::{Deserialize, Serialize};

use super::BpfError;

/// Counters summed over CPUs, in `counter::NAMES` order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterSnapshot {
    pub seen: u64,
    pub no_pfn: u64,
    pub filtered: u64,
    pub emitted: u64,
    pub dropped: u64,
    pub wakeups: u64,
}

impl CounterSnapshot {
    fn from_array(v: [u64; counter::COUNT as usize]) -> Self {
        Self { seen: v[0], no_pfn: v[1], filtered: v[2], emitted: v[3], dropped: v[4], wakeups: v[5] }
    }

    /// Field-wise difference since `earlier` (counters only grow).
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            seen: self.seen.saturating_sub(earlier.seen),
            no_pfn: self.no_pfn.saturating_sub(earlier.no_pfn),
            filtered: self.filtered.saturating_sub(earlier.filtered),
            emitted: self.emitted.saturating_sub(earlier.emitted),
            dropped: self.dropped.saturating_sub(earlier.dropped),
            wakeups: self.wakeups.saturating_sub(earlier.wakeups),
        }
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
        Ok(CounterSnapshot::from_array(sums))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn difference_never_underflows() {
        let a = CounterSnapshot { seen: 10, emitted: 4, ..Default::default() };
        let b = CounterSnapshot { seen: 25, emitted: 9, dropped: 1, ..Default::default() };
        assert_eq!(b.since(&a), CounterSnapshot { seen: 15, emitted: 5, dropped: 1, ..Default::default() });
        assert_eq!(a.since(&b).seen, 0);
    }
}
