//! A source's CPU budget: each interval the source's cost is measured as a
//! share of one core and its period moved so the share stays under the
//! budget: sampling less when over, more again when well under, never more
//! often than its configured period. The sample source prices its BPF
//! program's run time plus the consumer's CPU time and moves the PMU's
//! sample period; the DAMON source prices its kdamond and moves DAMON's
//! sampling interval.

/// Default budget: 3% of one core.
pub const DEFAULT_BUDGET: f64 = 0.03;

/// Costs measured over one interval, in ns.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct IntervalCost {
    pub wall_ns: u64,
    pub bpf_ns: u64,
    pub consumer_ns: u64,
}

impl IntervalCost {
    /// Share of one core spent on sampling in the interval.
    pub fn share(&self) -> f64 {
        if self.wall_ns == 0 {
            return 0.0;
        }
        (self.bpf_ns + self.consumer_ns) as f64 / self.wall_ns as f64
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuBudget {
    /// Share of one core (0.03 = 3%).
    pub budget: f64,
    /// The fastest period allowed (the sampler's default).
    pub min_period: u64,
    /// The slowest period it may back off to.
    pub max_period: u64,
}

impl CpuBudget {
    pub fn new(budget: f64, min_period: u64) -> Self {
        Self { budget, min_period, max_period: min_period.saturating_mul(1 << 16).max(min_period) }
    }

    /// The period for the next interval, given this one's period and cost.
    /// Over budget: longer in proportion (up to ×16 at once), aiming 20%
    /// under. Under 40% of budget: halved, down to the minimum. Otherwise kept.
    pub fn next_period(&self, period: u64, cost: &IntervalCost) -> u64 {
        self.next_period_at(period, cost.share())
    }

    /// [`Self::next_period`] for a cost already measured as a share of one core.
    pub fn next_period_at(&self, period: u64, share: f64) -> u64 {
        let next = if share > self.budget {
            let factor = (share / (self.budget * 0.8)).min(16.0);
            (period as f64 * factor).ceil() as u64
        } else if share < self.budget * 0.4 {
            period / 2
        } else {
            period
        };
        next.clamp(self.min_period, self.max_period)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(share: f64) -> IntervalCost {
        IntervalCost {
            wall_ns: 1_000_000_000,
            bpf_ns: (share * 1e9 / 2.0) as u64,
            consumer_ns: (share * 1e9 / 2.0) as u64,
        }
    }

    #[test]
    fn over_budget_lengthens_the_period_in_proportion() {
        let b = CpuBudget::new(0.03, 10_000);
        // 6% against 3%: ×2.5 (aiming 20% under the budget).
        assert_eq!(b.next_period(10_000, &cost(0.06)), 25_000);
        // Far over: at most ×16 in one step.
        assert_eq!(b.next_period(10_000, &cost(0.9)), 160_000);
    }

    #[test]
    fn well_under_budget_samples_more_but_never_past_the_default() {
        let b = CpuBudget::new(0.03, 10_000);
        assert_eq!(b.next_period(80_000, &cost(0.001)), 40_000);
        assert_eq!(b.next_period(10_000, &cost(0.0)), 10_000);
        // Near the budget: kept.
        assert_eq!(b.next_period(40_000, &cost(0.02)), 40_000);
    }

    #[test]
    fn the_period_has_a_ceiling_and_an_idle_interval_costs_nothing() {
        let b = CpuBudget::new(0.03, 1);
        assert_eq!(b.next_period(1 << 16, &cost(1.0)), 1 << 16);
        assert_eq!(IntervalCost::default().share(), 0.0);
    }

    #[test]
    fn a_steady_overload_converges_under_the_budget() {
        // Cost proportional to the sample rate: 1/period of a core per unit.
        let b = CpuBudget::new(0.03, 1);
        let mut period = 1;
        for _ in 0..10 {
            let share = 1.0 / period as f64;
            period = b.next_period(period, &cost(share));
        }
        assert!(1.0 / (period as f64) <= 0.03, "period {period}");
        assert!(1.0 / (period as f64) >= 0.03 * 0.4, "not far below either: {period}");
    }
}
