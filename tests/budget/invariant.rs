//! Checks the sliding-window invariant on recorded charges.

use std::time::Duration;

use tokio::time::Instant;

/// `admissions`: (admission instant, final amount after refunds); `debts`: (settle instant,
/// overshoot). For every admission instant `t`, the admissions at `t` plus every charge in
/// `(t - W, t)` must fit in `limit`: the window ending at an admission holds at most the limit.
/// (Debt booked after the last admission of a window is the one charge that can exceed it: it
/// was spent before anyone could refuse it.)
pub(crate) fn check_windows(
    admissions: &[(Instant, u64)],
    debts: &[(Instant, u64)],
    window: Duration,
    limit: u64,
) -> Result<(), String> {
    let mut all: Vec<(Instant, u64, bool)> = admissions
        .iter()
        .map(|&(t, a)| (t, a, true))
        .chain(debts.iter().map(|&(t, a)| (t, a, false)))
        .collect();
    all.sort_by_key(|&(t, _, _)| t);
    let mut instants: Vec<Instant> = admissions.iter().map(|&(t, _)| t).collect();
    instants.sort();
    instants.dedup();
    let mut lo = 0;
    let mut hi = 0;
    let mut sum: u128 = 0; // sum of all[lo..hi]: charges with t - W < at < t
    for &t in &instants {
        while hi < all.len() && all[hi].0 < t {
            sum += u128::from(all[hi].1);
            hi += 1;
        }
        while lo < hi && all[lo].0 + window <= t {
            sum -= u128::from(all[lo].1);
            lo += 1;
        }
        let at_t: u128 = all[hi..]
            .iter()
            .take_while(|c| c.0 == t)
            .filter(|c| c.2)
            .map(|c| u128::from(c.1))
            .sum();
        if sum + at_t > u128::from(limit) {
            return Err(format!(
                "window ending at {t:?} holds {} > limit {limit}",
                sum + at_t
            ));
        }
    }
    Ok(())
}
