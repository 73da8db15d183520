//! When the promoter moved each process's pages: the time a latency's window
//! spent in such a move measured hotpage's own stall, not how soon the page
//! was used, and is taken off it.
//!
//! `move_pages(2)` unmaps a whole batch of pages before it copies them, so a
//! process that touches any of them waits for the batch: a workload whose
//! hot pages move is held for most of each call (under TCG a batch of a few
//! hundred pages takes a good part of a second). Every page of it that was
//! scanned before such a call and touched after faults that much later. In
//! a 900/112 MiB box run the hot pages' median latency went from 250 ms to
//! 740-1560 ms in the two seconds after 19,000 of them moved; the slow
//! faults broke the streaks and raised the means of the hot pages still
//! waiting, which took two more passes (12 s) to qualify, while cold pages'
//! luck went on passing the split. Dropping the slow faults of a moving
//! process instead biases every page of it fast (only its fast faults would
//! count): replayed, precision fell from 99% to 77-83%. Taking the stalled
//! time off every fault of the process keeps hot and cold alike.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

/// Move calls kept per process: a latency window of a few seconds holds at
/// most a few dozen calls.
const CALLS_KEPT: usize = 32;
/// Processes kept before those idle longest are forgotten (they exited).
const PROCESSES_KEPT: usize = 4096;

/// Per process, its last move calls' (start, end), ms of CLOCK_MONOTONIC
/// (the hot map's ticks, as events' `time_ns` / 10^6).
#[derive(Debug, Default)]
pub struct MoveCalls(Mutex<HashMap<u32, VecDeque<(u64, u64)>>>);

impl MoveCalls {
    /// A move call for `pid` ran from `start_ms` to `end_ms`.
    pub fn note(&self, pid: u32, start_ms: u64, end_ms: u64) {
        if end_ms <= start_ms {
            return;
        }
        let Ok(mut m) = self.0.lock() else { return };
        let calls = m.entry(pid).or_default();
        if calls.len() == CALLS_KEPT {
            calls.pop_front();
        }
        calls.push_back((start_ms, end_ms));
        if m.len() > PROCESSES_KEPT {
            m.retain(|_, c| c.back().is_some_and(|&(_, e)| e + 60_000 >= end_ms));
        }
    }

    /// How much of `from_ms..to_ms` `pid` spent in move calls, ms.
    pub fn stalled_ms(&self, pid: u32, from_ms: u64, to_ms: u64) -> u64 {
        let Ok(m) = self.0.lock() else { return 0 };
        let Some(calls) = m.get(&pid) else { return 0 };
        calls.iter().map(|&(s, e)| e.min(to_ms).saturating_sub(s.max(from_ms))).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overlap_with_each_call_is_summed() {
        let c = MoveCalls::default();
        assert_eq!(c.stalled_ms(7, 0, u64::MAX), 0, "nothing moved yet");
        c.note(7, 10_000, 10_200);
        c.note(7, 10_900, 11_000);
        assert_eq!(c.stalled_ms(7, 9_000, 12_000), 300);
        assert_eq!(c.stalled_ms(7, 10_100, 10_950), 150, "parts of both");
        assert_eq!(c.stalled_ms(7, 10_300, 10_800), 0, "between two calls");
        assert_eq!(c.stalled_ms(8, 9_000, 12_000), 0, "another process");
        c.note(7, 12_000, 12_000);
        assert_eq!(c.stalled_ms(7, 9_000, 13_000), 300, "an instant call stalls nothing");
        for i in 0..CALLS_KEPT as u64 {
            c.note(7, 20_000 + 10 * i, 20_005 + 10 * i);
        }
        assert_eq!(c.stalled_ms(7, 9_000, 12_000), 0, "the oldest calls are forgotten");
        assert_eq!(c.stalled_ms(7, 20_000, 20_100), 50);
    }
}
