//! What each target node can take, shared by every lower-tier node's worker:
//! the rate limit's token bucket and the target's free memory as last read,
//! less what the workers reserved since. Shared so that workers of several
//! lower-tier nodes promoting into one target together stay within its rate
//! limit and its headroom, as the kernel's limits are per target node.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use hotpage_common::PAGE_SIZE;

use super::{
    PromoterConfig,
    rate::{RateLimit, TokenBucket},
    stats::Counter,
    system::NodeMemory,
};

/// How long a reading of a target's free memory stays good, in ms ticks: the
/// workers subtract their own reservations, and others' allocations in this
/// time are small next to the headroom.
pub const FREE_MEMORY_TTL_MS: u64 = 50;
/// Pages moved to a demoting target that sits under its floor with kswapd
/// asleep, at most once per [`WAKE_EVERY_MS`]: their allocation wakes it.
pub const WAKE_PAGES: u64 = 16;
/// A second: kswapd, once woken, works until the node is balanced, so one
/// small allocation now and then is all it takes; 64 KiB a second is nothing
/// next to what a demoting node frees.
pub const WAKE_EVERY_MS: u64 = 1000;

/// A target's account: its bucket and its memory as last read.
struct Account {
    bucket: TokenBucket,
    /// Pages free above the low watermark plus the headroom, at `read_at`,
    /// less reservations since; None when the target's memory is unknown.
    room: Option<u64>,
    read_at: Option<u64>,
    /// When a reading last granted the [`WAKE_PAGES`].
    woke_at: Option<u64>,
}

impl Account {
    /// Whether the room is the [`WAKE_PAGES`] of the last reading.
    fn waking(&self) -> bool {
        self.woke_at.is_some() && self.woke_at == self.read_at
    }
}

/// Pages granted by [`TargetLedger::reserve`], and what cut the grant short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub pages: u64,
    /// `rate_limited` or `watermark_limited` when fewer than wanted.
    pub limit: Option<Counter>,
    /// The pages are the few that wake kswapd on a target under its floor.
    pub wakes_kswapd: bool,
}

/// The accounts of every target node, shared by the workers (cheap to clone).
#[derive(Clone)]
pub struct TargetLedger {
    accounts: Arc<Mutex<HashMap<u32, Account>>>,
    /// The rate limit and the headroom.
    config: PromoterConfig,
}

impl TargetLedger {
    pub fn new(config: &PromoterConfig) -> Self {
        Self { accounts: Arc::default(), config: *config }
    }

    /// Runs `f` on the target's account with its memory fresh: read through
    /// `read` when older than [`FREE_MEMORY_TTL_MS`].
    fn with_account<T>(
        &self,
        target: u32,
        now: u64,
        read: impl FnOnce() -> Option<NodeMemory>,
        f: impl FnOnce(&mut Account) -> T,
    ) -> Option<T> {
        let mut accounts = self.accounts.lock().ok()?;
        let account = accounts.entry(target).or_insert_with(|| Account {
            bucket: TokenBucket::new(self.config.rate_limit),
            room: None,
            read_at: None,
            woke_at: None,
        });
        let after = |t: Option<u64>, ms: u64| t.is_none_or(|t| now.saturating_sub(t) >= ms || now < t);
        if after(account.read_at, FREE_MEMORY_TTL_MS) {
            account.room = read().map(|m| {
                let room = m.free.saturating_sub(self.config.floor_pages(&m));
                // The kernel's own promotion wakes kswapd itself when the
                // target is short (numamigrate_isolate_folio); from user space
                // only an allocation there does. Without one, a "tight" run's
                // target sat under the floor with kswapd asleep and READY
                // pages waiting for the whole run.
                if room == 0 && self.config.wakes_kswapd(&m) && after(account.woke_at, WAKE_EVERY_MS) {
                    account.woke_at = Some(now);
                    return WAKE_PAGES;
                }
                room
            });
            account.read_at = Some(now);
        }
        Some(f(account))
    }

    /// Whether the target could take a page now, without reserving it.
    pub fn has_room(&self, target: u32, now: u64, read: impl FnOnce() -> Option<NodeMemory>) -> bool {
        self.available(target, now, read).is_none_or(|pages| pages > 0)
    }

    /// Base pages the target could take now (rate limit and headroom),
    /// without reserving them; None when its memory is unknown and the rate
    /// is unlimited.
    pub fn available(&self, target: u32, now: u64, read: impl FnOnce() -> Option<NodeMemory>) -> Option<u64> {
        self.with_account(target, now, read, |a| {
            let by_rate = match self.config.rate_limit {
                RateLimit::Unlimited => None,
                _ => Some(a.bucket.available(u64::MAX / 2, PAGE_SIZE, now) / PAGE_SIZE),
            };
            match (a.room, by_rate) {
                (Some(r), Some(b)) => Some(r.min(b)),
                (r, b) => r.or(b),
            }
        })
        .unwrap_or(Some(0))
    }

    /// Reserves up to `want` base pages on the target: what its rate limit and
    /// its headroom above the low watermark allow now. Unknown free memory
    /// leaves the kernel's ENOMEM as the only guard.
    pub fn reserve(
        &self,
        target: u32,
        want: u64,
        now: u64,
        read: impl FnOnce() -> Option<NodeMemory>,
    ) -> Grant {
        self.with_account(target, now, read, |a| {
            let headroom = a.room.unwrap_or(u64::MAX);
            let by_rate = a.bucket.take(want.min(headroom) * PAGE_SIZE, PAGE_SIZE, now) / PAGE_SIZE;
            let pages = by_rate.min(headroom);
            if let Some(r) = &mut a.room {
                *r -= pages;
            }
            let limit = if pages >= want {
                None
            } else if headroom < want && headroom <= by_rate {
                Some(Counter::watermark_limited)
            } else {
                Some(Counter::rate_limited)
            };
            Grant { pages, limit, wakes_kswapd: a.waking() && pages > 0 }
        })
        .unwrap_or(Grant { pages: 0, limit: Some(Counter::rate_limited), wakes_kswapd: false })
    }

    /// Settles a reservation of `reserved` pages of which `sent` went to
    /// `move_pages` and `moved` arrived: tokens come back for the pages not
    /// sent, memory for the pages that did not arrive.
    pub fn settle(&self, target: u32, reserved: u64, sent: u64, moved: u64) {
        let Ok(mut accounts) = self.accounts.lock() else { return };
        let Some(a) = accounts.get_mut(&target) else { return };
        a.bucket.refund(reserved.saturating_sub(sent) * PAGE_SIZE);
        if let Some(r) = &mut a.room {
            *r += reserved.saturating_sub(moved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promoter::RateLimit;

    fn memory(free_above: u64) -> impl Fn() -> Option<NodeMemory> {
        // 1 GiB node: headroom 64 MiB = 16384 pages, low 1000.
        move || {
            Some(NodeMemory {
                total: 262_144,
                free: 1000 + 16_384 + free_above,
                low: 1000,
                demotes: false,
                kswapd_hopeless: false,
            })
        }
    }

    fn unlimited() -> TargetLedger {
        TargetLedger::new(&PromoterConfig { rate_limit: RateLimit::Unlimited, ..PromoterConfig::default() })
    }

    #[test]
    fn reservations_count_against_the_room_until_the_next_reading() {
        let l = unlimited();
        assert_eq!(l.reserve(0, 60, 100, memory(100)), Grant { pages: 60, limit: None, wakes_kswapd: false });
        // Within the reading's lifetime the next worker sees what is left.
        let g = l.reserve(0, 60, 120, memory(100));
        assert_eq!(g, Grant { pages: 40, limit: Some(Counter::watermark_limited), wakes_kswapd: false });
        assert!(!l.has_room(0, 130, memory(100)));
        // Moved pages used the memory; a fresh reading says so itself.
        l.settle(0, 60, 60, 60);
        assert!(!l.has_room(0, 140, memory(100)));
        assert!(l.has_room(0, 100 + FREE_MEMORY_TTL_MS, memory(5)), "a new reading");
    }

    #[test]
    fn pages_that_did_not_move_give_their_memory_and_tokens_back() {
        let l = TargetLedger::new(&PromoterConfig {
            rate_limit: RateLimit::MbPerSec(1),
            ..PromoterConfig::default()
        });
        // 1 MB/s: 244 pages of burst.
        assert_eq!(l.reserve(0, 200, 0, memory(1000)).pages, 200);
        l.settle(0, 200, 150, 100);
        // 44 + 50 tokens; 1000 - 200 + 100 pages of room.
        assert_eq!(
            l.reserve(0, 1000, 0, memory(1000)),
            Grant { pages: 94, limit: Some(Counter::rate_limited), wakes_kswapd: false }
        );
    }

    #[test]
    fn a_demoting_target_under_its_floor_still_takes_a_few_pages_a_second() {
        let l = unlimited();
        // Low watermark 1000, floor 875; 800 free: no room.
        let short = |demotes, kswapd_hopeless| {
            move || Some(NodeMemory { total: 262_144, free: 800, low: 1000, demotes, kswapd_hopeless })
        };
        let g = l.reserve(0, 500, 0, short(true, false));
        assert_eq!((g.pages, g.wakes_kswapd), (WAKE_PAGES, true), "a few, whose allocation wakes kswapd");
        assert_eq!(l.reserve(0, 500, 10, short(true, false)).pages, 0, "within the reading");
        assert_eq!(l.reserve(0, 500, 100, short(true, false)).pages, 0, "a new reading, within the second");
        assert_eq!(l.reserve(0, 500, 1000, short(true, false)).pages, WAKE_PAGES, "a second later");
        // Not for a node that does not demote (nothing would make room), and
        // not under an operator's headroom.
        assert_eq!(l.reserve(1, 500, 0, short(false, false)).pages, 0);
        let asked = TargetLedger::new(&PromoterConfig {
            rate_limit: RateLimit::Unlimited,
            headroom_mib: Some(1),
            ..PromoterConfig::default()
        });
        assert_eq!(asked.reserve(0, 500, 0, short(true, false)).pages, 0);
        // Once the kernel gave up on kswapd there is no floor at all.
        assert_eq!(l.reserve(2, 500, 0, short(true, true)).pages, 500);
    }

    #[test]
    fn unknown_memory_leaves_only_the_rate_limit() {
        let l = unlimited();
        assert_eq!(
            l.reserve(3, 1 << 20, 0, || None),
            Grant { pages: 1 << 20, limit: None, wakes_kswapd: false }
        );
        assert!(l.has_room(3, 1, || None));
    }
}
