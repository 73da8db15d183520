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

use std::{collections::VecDeque, sync::Mutex};

use crate::hotmap::PfnMap;

/// Move calls kept per process: a latency window of a few seconds holds at
/// most a few dozen calls.
const CALLS_KEPT: usize = 32;
/// Processes kept before those idle longest are forgotten (they exited).
const PROCESSES_KEPT: usize = 4096;

/// One `move_pages` call: whose pages, from when to when (ms of
/// CLOCK_MONOTONIC, the hot map's ticks, as events' `time_ns` / 10^6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MoveSpan {
    pub pid: u32,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// Calls the workers made and the rule has not taken yet. The rule takes
/// them between batches of events only, so that a recording, which logs
/// them where they were taken, replays the rule's decisions exactly.
#[derive(Debug, Default)]
pub struct PendingMoves(Mutex<Vec<MoveSpan>>);

impl PendingMoves {
    /// An instant call (under a tick) stalled nothing and is not kept.
    pub fn push(&self, span: MoveSpan) {
        if span.end_ms > span.start_ms
            && let Ok(mut v) = self.0.lock()
        {
            v.push(span);
        }
    }

    pub fn take(&self) -> Vec<MoveSpan> {
        self.0.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default()
    }
}

/// Per process, the time its last move calls took, as disjoint spans in
/// order. Two workers (one per lower-tier node) can move one process's pages
/// at the same time; the process is held once, so overlapping calls are
/// merged, or their common time would be taken off its latencies twice.
/// Keyed by pid; every hint fault looks its process up, so the key is
/// hashed with one multiply rather than SipHash.
#[derive(Debug, Default)]
pub struct MoveCalls(PfnMap<VecDeque<(u64, u64)>>);

impl MoveCalls {
    pub fn note(&mut self, span: MoveSpan) {
        let MoveSpan { pid, start_ms, end_ms } = span;
        let spans = self.0.entry(u64::from(pid)).or_default();
        // Calls end in about the order they start: the new one goes near the
        // back, and merges with the spans it touches.
        let at = spans.iter().rposition(|&(s, _)| s <= start_ms).map_or(0, |i| i + 1);
        spans.insert(at, (start_ms, end_ms));
        let mut i = at.saturating_sub(1);
        while i + 1 < spans.len() {
            let (s0, e0) = spans[i];
            let (s1, e1) = spans[i + 1];
            if s1 <= e0 {
                spans[i] = (s0, e0.max(e1));
                spans.remove(i + 1);
            } else if i + 1 > at {
                break;
            } else {
                i += 1;
            }
        }
        while spans.len() > CALLS_KEPT {
            spans.pop_front();
        }
        if self.0.len() > PROCESSES_KEPT {
            self.0.retain(|_, c| c.back().is_some_and(|&(_, e)| e + 60_000 >= end_ms));
        }
    }

    /// How much of `from_ms..to_ms` `pid` spent in move calls, ms.
    pub fn stalled_ms(&self, pid: u32, from_ms: u64, to_ms: u64) -> u64 {
        if self.0.is_empty() {
            return 0;
        }
        let Some(spans) = self.0.get(&u64::from(pid)) else { return 0 };
        if spans.back().is_none_or(|&(_, e)| e <= from_ms) {
            // The usual case: no call since the page was scanned.
            return 0;
        }
        // Disjoint and in order, so their ends are too: skip the spans that
        // ended before the window, stop at the first that starts after it.
        let first = spans.partition_point(|&(_, e)| e <= from_ms);
        spans
            .range(first..)
            .take_while(|&&(s, _)| s < to_ms)
            .map(|&(s, e)| e.min(to_ms).saturating_sub(s.max(from_ms)))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(pid: u32, start_ms: u64, end_ms: u64) -> MoveSpan {
        MoveSpan { pid, start_ms, end_ms }
    }

    #[test]
    fn the_overlap_with_each_call_is_summed() {
        let mut c = MoveCalls::default();
        assert_eq!(c.stalled_ms(7, 0, u64::MAX), 0, "nothing moved yet");
        c.note(span(7, 10_000, 10_200));
        c.note(span(7, 10_900, 11_000));
        assert_eq!(c.stalled_ms(7, 9_000, 12_000), 300);
        assert_eq!(c.stalled_ms(7, 10_100, 10_950), 150, "parts of both");
        assert_eq!(c.stalled_ms(7, 10_300, 10_800), 0, "between two calls");
        assert_eq!(c.stalled_ms(8, 9_000, 12_000), 0, "another process");
        for i in 0..CALLS_KEPT as u64 {
            c.note(span(7, 20_000 + 10 * i, 20_005 + 10 * i));
        }
        assert_eq!(c.stalled_ms(7, 9_000, 12_000), 0, "the oldest calls are forgotten");
        assert_eq!(c.stalled_ms(7, 20_000, 20_100), 50);
    }

    #[test]
    fn calls_that_overlap_hold_the_process_once() {
        // Two node workers moving one process's pages at once, their calls
        // taken in the order they ended.
        let mut c = MoveCalls::default();
        c.note(span(7, 1_000, 1_400));
        c.note(span(7, 1_200, 1_300));
        c.note(span(7, 900, 1_100));
        assert_eq!(c.stalled_ms(7, 0, 5_000), 500, "900..1400 once");
        c.note(span(7, 2_000, 2_100));
        c.note(span(7, 1_800, 2_050));
        c.note(span(7, 1_400, 1_500));
        assert_eq!(c.stalled_ms(7, 0, 5_000), 600 + 300, "900..1500 and 1800..2100");
        assert_eq!(c.stalled_ms(7, 1_450, 1_900), 50 + 100);
        c.note(span(7, 500, 3_000));
        assert_eq!(c.stalled_ms(7, 0, 5_000), 2_500, "one call over all of them");
        assert_eq!(c.0[&7].len(), 1);
    }

    #[test]
    fn the_window_lookup_sums_what_every_span_overlaps() {
        // Random calls, some overlapping, and random windows: the lookup that
        // skips spans outside the window gives what summing every span does.
        let mut c = MoveCalls::default();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        for i in 0..200u64 {
            let start = i * 50 + next(80);
            c.note(span(7, start, start + 1 + next(120)));
            let spans = &c.0[&7];
            for _ in 0..20 {
                let from = next(i * 50 + 300);
                let to = from + next(2_000);
                let all: u64 = spans.iter().map(|&(s, e)| e.min(to).saturating_sub(s.max(from))).sum();
                assert_eq!(c.stalled_ms(7, from, to), all, "{from}..{to} over {spans:?}");
            }
        }
    }

    #[test]
    fn pending_calls_are_taken_once() {
        let p = PendingMoves::default();
        p.push(span(7, 1, 5));
        p.push(span(7, 6, 6));
        assert_eq!(p.take(), vec![span(7, 1, 5)], "an instant call is no stall");
        assert_eq!(p.take(), vec![]);
    }
}
