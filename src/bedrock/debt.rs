//! Debt in flight: how much of its reserved output a model's calls really produce, learned per
//! model from their settlements, and the debt a call in flight will most likely add.
//!
//! Why: Bedrock reserves `input + max_tokens` when a call starts and books
//! `input + output × burndown` when it ends. With a burndown above 1 (5x, 10x, 15x on Claude,
//! see the [model table](super::ModelTable)) a call that produces more than `1 / burndown` of its
//! `max_tokens` settles above its reservation, and the server is short of that debt from the
//! moment the call ends, before this crate has read the end of the body. Admissions in between
//! use room that is already gone and are throttled. The plan therefore counts, while the call
//! is in flight, the debt it will most likely settle: `q × max_tokens × burndown − max_tokens`
//! when positive, where `q` is a high quantile ([`QUANTILE`]) of `output / max_tokens` among the
//! model's recent calls ([`Permit::expect_debt`](crate::budget::Permit::expect_debt)). Its
//! settlement takes the estimate back and books the real debt.
//!
//! Until a model has [`MIN_SAMPLES`] settlements, `q` is 1: the whole output at its burndown,
//! the most a call can settle, so the first burst of a cold start is not throttled either.
//!
//! The estimate is a histogram of 64 bins of `output / max_tokens` whose counts are halved every
//! [`DECAY_EVERY`] samples: a bounded, O(1) record that follows a workload whose outputs change,
//! no sort and no allocation per call. Written here rather than taken from a crate: the
//! quantile crates keep every sample or a sketch larger than the whole need (64 counters).

// Numbers here come from requests and responses: no arithmetic may panic or wrap on them
// (issue 21).
#![warn(clippy::arithmetic_side_effects)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

/// The quantile of `output / max_tokens` the expected debt is computed from.
pub(crate) const QUANTILE: f64 = 0.95;
/// Settlements a model needs before its learned quantile replaces the worst case.
pub(crate) const MIN_SAMPLES: u32 = 20;
/// Every this many samples the counts are halved, so the estimate follows recent calls.
pub(crate) const DECAY_EVERY: u32 = 1024;

const BINS: usize = 64;
/// The published quantile is in 1/`SCALE` units; `UNKNOWN` means "not learned yet".
const SCALE: u64 = 1 << 16;
const UNKNOWN: u32 = u32::MAX;

/// The learned share of `max_tokens` a model's calls produce (see the [module docs](self)).
#[derive(Debug)]
pub(crate) struct OutputShare {
    histogram: Mutex<Histogram>,
    /// The quantile in 1/SCALE units, read lock-free by every plan.
    quantile: AtomicU32,
}

#[derive(Debug)]
struct Histogram {
    counts: [u32; BINS],
    total: u32,
    since_decay: u32,
    samples: u32,
}

impl OutputShare {
    pub(crate) fn new() -> Self {
        OutputShare {
            histogram: Mutex::new(Histogram {
                counts: [0; BINS],
                total: 0,
                since_decay: 0,
                samples: 0,
            }),
            quantile: AtomicU32::new(UNKNOWN),
        }
    }

    /// The learned quantile of `output / max_tokens`, if enough calls have settled.
    pub(crate) fn quantile(&self) -> Option<f64> {
        match self.quantile.load(Ordering::Relaxed) {
            UNKNOWN => None,
            q => Some(f64::from(q) / SCALE as f64),
        }
    }

    /// The debt a call reserving `max_output` on a model of `burndown` will most likely settle
    /// above its reservation: `q × max_output × burndown − max_output`, rounded up, when
    /// positive (`q` = 1 until the model has [`MIN_SAMPLES`] settlements).
    pub(crate) fn expected_debt(&self, max_output: u64, burndown: u64) -> u64 {
        if burndown <= 1 || max_output == 0 {
            return 0;
        }
        let q = match self.quantile.load(Ordering::Relaxed) {
            UNKNOWN => SCALE,
            q => u64::from(q),
        };
        let likely = u128::from(max_output)
            .saturating_mul(u128::from(burndown))
            .saturating_mul(u128::from(q))
            .div_ceil(u128::from(SCALE));
        u64::try_from(likely.saturating_sub(u128::from(max_output))).unwrap_or(u64::MAX)
    }

    /// Learns from a settled call that produced `output` of the `max_output` it reserved.
    pub(crate) fn observe(&self, output: u64, max_output: u64) {
        if max_output == 0 {
            return;
        }
        // output ≤ max_output < 2^64, so output × 64 fits in u128 and the bin is at most 64.
        #[allow(clippy::arithmetic_side_effects)]
        let bin = (u128::from(output.min(max_output)) * BINS as u128 / u128::from(max_output))
            .min(BINS as u128 - 1) as usize;
        let mut h = self
            .histogram
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        h.counts[bin] = h.counts[bin].saturating_add(1);
        h.total = h.total.saturating_add(1);
        h.samples = h.samples.saturating_add(1);
        h.since_decay = h.since_decay.saturating_add(1);
        if h.since_decay >= DECAY_EVERY {
            h.since_decay = 0;
            h.counts.iter_mut().for_each(|c| *c /= 2);
            h.total = h.counts.iter().fold(0u32, |sum, c| sum.saturating_add(*c));
        }
        if h.samples >= MIN_SAMPLES {
            self.quantile.store(h.quantile(), Ordering::Relaxed);
        }
    }
}

impl Histogram {
    /// The upper edge of the bin where the cumulative count reaches [`QUANTILE`], in 1/SCALE
    /// units (the upper edge: the estimate errs high, towards the worst case).
    fn quantile(&self) -> u32 {
        let needed = (f64::from(self.total) * QUANTILE).ceil() as u64;
        let mut seen = 0u64;
        for (i, &count) in (1u64..).zip(self.counts.iter()) {
            seen = seen.saturating_add(u64::from(count));
            if seen >= needed.max(1) {
                // i ≤ 64: at most SCALE.
                #[allow(clippy::arithmetic_side_effects)]
                return (i * SCALE / BINS as u64) as u32;
            }
        }
        SCALE as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_case_until_enough_calls_settled() {
        let share = OutputShare::new();
        // 1,000 max tokens at 5x: at most 5,000 settled, 4,000 above the reservation.
        assert_eq!(share.expected_debt(1_000, 5), 4_000);
        for _ in 0..MIN_SAMPLES - 1 {
            share.observe(100, 1_000);
        }
        assert_eq!(share.quantile(), None);
        assert_eq!(share.expected_debt(1_000, 5), 4_000);
        share.observe(100, 1_000);
        // Every call produced 10%: the quantile is the upper edge of its bin (7/64).
        let q = share.quantile().unwrap();
        assert!((0.1..=0.11).contains(&q), "{q}");
        // 0.109 × 1,000 × 5 = 547 settled: below the reservation, no debt.
        assert_eq!(share.expected_debt(1_000, 5), 0);
        // At 15x: 1,641 settled, 641 above.
        assert_eq!(share.expected_debt(1_000, 15), 641);
    }

    #[test]
    fn a_high_quantile_not_the_mean() {
        let share = OutputShare::new();
        // 90 calls at 10%, 10 at 100%: the 95th percentile is the long calls.
        for i in 0..100 {
            share.observe(if i % 10 == 0 { 1_000 } else { 100 }, 1_000);
        }
        assert_eq!(share.quantile(), Some(1.0));
        assert_eq!(share.expected_debt(1_000, 5), 4_000);
    }

    #[test]
    fn it_follows_a_workload_that_changes() {
        let share = OutputShare::new();
        for _ in 0..2_000 {
            share.observe(1_000, 1_000);
        }
        assert_eq!(share.quantile(), Some(1.0));
        for _ in 0..6 * DECAY_EVERY {
            share.observe(50, 1_000);
        }
        assert!(share.quantile().unwrap() <= 0.07, "{:?}", share.quantile());
    }

    #[test]
    fn no_debt_at_1x_or_without_output_and_no_overflow() {
        let share = OutputShare::new();
        assert_eq!(share.expected_debt(1_000, 1), 0);
        assert_eq!(share.expected_debt(0, 15), 0);
        assert_eq!(share.expected_debt(u64::MAX, u64::MAX), u64::MAX);
        share.observe(u64::MAX, u64::MAX);
        share.observe(5, 0);
        share.observe(u64::MAX, 1);
    }
}
