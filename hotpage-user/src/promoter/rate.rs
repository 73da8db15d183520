//! Promotion rate limit per target node: a token bucket in bytes, refilled at
//! the limit and holding at most one second's worth (the kernel's limit is
//! also per second). 0 MB/s means observe only. Time is the promoter's ms
//! ticks (`PromoterSystem::now_tick`), so tests drive it.

use serde::{Deserialize, Serialize};

/// `promote_rate_limit` as the operator gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RateLimit {
    /// Move nothing; count what would move.
    ObserveOnly,
    MbPerSec(u64),
    Unlimited,
}

impl RateLimit {
    /// Parses `0`, a number of MB/s, or `unlimited`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "unlimited" => Ok(Self::Unlimited),
            "0" => Ok(Self::ObserveOnly),
            n => n
                .parse::<u64>()
                .map(Self::MbPerSec)
                .map_err(|_| format!("rate limit {n:?}: want MB/s (0 = observe only) or \"unlimited\"")),
        }
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ObserveOnly => write!(f, "0 (observe only)"),
            Self::MbPerSec(n) => write!(f, "{n} MB/s"),
            Self::Unlimited => write!(f, "unlimited"),
        }
    }
}

pub struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    /// ms tick of the last refill; None until the first use.
    last: Option<u64>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(limit: RateLimit) -> Self {
        let mut b = Self { limit, tokens: 0.0, last: None };
        b.tokens = b.capacity();
        b
    }

    fn refill(&mut self, now: u64) {
        let dt = self.last.map_or(0, |l| now.saturating_sub(l)) as f64 / 1000.0;
        self.last = Some(self.last.map_or(now, |l| l.max(now)));
        self.tokens = (self.tokens + dt * self.bytes_per_sec()).min(self.capacity());
    }

    fn bytes_per_sec(&self) -> f64 {
        match self.limit {
            RateLimit::MbPerSec(n) => n as f64 * 1_000_000.0,
            _ => 0.0,
        }
    }

    fn capacity(&self) -> f64 {
        self.bytes_per_sec()
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// How many of `want` bytes may move at `now` (ms tick), in whole units
    /// of `unit` bytes, without taking them.
    pub fn available(&mut self, want: u64, unit: u64, now: u64) -> u64 {
        match self.limit {
            RateLimit::Unlimited => want,
            RateLimit::ObserveOnly => 0,
            RateLimit::MbPerSec(_) => {
                self.refill(now);
                let units = (self.tokens / unit.max(1) as f64).floor() as u64;
                (want / unit.max(1)).min(units) * unit.max(1)
            }
        }
    }

    /// `available()`, and takes what it grants.
    pub fn take(&mut self, want: u64, unit: u64, now: u64) -> u64 {
        let granted = self.available(want, unit, now);
        if let RateLimit::MbPerSec(_) = self.limit {
            self.tokens -= granted as f64;
        }
        granted
    }

    /// Gives back bytes granted but not used.
    pub fn refund(&mut self, bytes: u64) {
        if let RateLimit::MbPerSec(_) = self.limit {
            self.tokens = (self.tokens + bytes as f64).min(self.capacity());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(RateLimit::parse("0"), Ok(RateLimit::ObserveOnly));
        assert_eq!(RateLimit::parse("512"), Ok(RateLimit::MbPerSec(512)));
        assert_eq!(RateLimit::parse("unlimited"), Ok(RateLimit::Unlimited));
        assert!(RateLimit::parse("fast").unwrap_err().contains("observe only"));
    }

    #[test]
    fn one_second_of_burst_then_the_rate() {
        let t0 = 10_000;
        let mut b = TokenBucket::new(RateLimit::MbPerSec(4)); // 4 MB/s ~ 976 pages
        assert_eq!(b.available(8_000_000, 4096, t0), 976 * 4096, "peeking takes nothing");
        assert_eq!(b.take(8_000_000, 4096, t0), 976 * 4096, "a full bucket holds one second");
        assert_eq!(b.take(4096, 4096, t0), 0, "empty now");
        let half = b.take(8_000_000, 4096, t0 + 500);
        assert_eq!(half / 4096, 488, "half a second refills half");
        b.refund(4096);
        assert_eq!(b.take(4096, 4096, t0 + 500), 4096);
        assert_eq!(b.take(4096, 4096, t0 + 400), 0, "a clock going back refills nothing");
    }

    #[test]
    fn observe_only_and_unlimited() {
        let now = 5;
        assert_eq!(TokenBucket::new(RateLimit::ObserveOnly).take(1 << 30, 4096, now), 0);
        assert_eq!(TokenBucket::new(RateLimit::Unlimited).take(1 << 30, 4096, now), 1 << 30);
    }
}
