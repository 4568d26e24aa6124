//! Snapshots of a key: what each dimension holds, who waits, what is outstanding.

use std::sync::Arc;

use tokio::time::Instant;

use super::key::{KeyShared, KeyState};
use super::queue::{Verdict, Waiting};
use super::quota::Dimension;

/// A snapshot of one dimension of a key, from [`Budget::stats`](super::Budget::stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DimensionStats {
    /// The amount charged in the current window (debt included).
    pub used: u64,
    /// The configured limit per window.
    pub limit: u64,
    /// The limit in force now: the configured one, or lower after throttle feedback.
    pub effective_limit: u64,
}

/// A snapshot of one key, from [`Budget::stats`](super::Budget::stats): each limited dimension, and the waiting side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct KeyStats {
    /// The requests dimension, if the key limits it.
    pub requests: Option<DimensionStats>,
    /// The tokens dimension, if the key limits it.
    pub tokens: Option<DimensionStats>,
    /// The tokens-per-day dimension, if the key limits it.
    pub tokens_per_day: Option<DimensionStats>,
    /// Requests waiting on the key.
    pub waiters: usize,
    /// Permits handed out and not yet settled or dropped.
    pub outstanding: usize,
    /// The debt the calls in flight will most likely settle above their reservations, in
    /// tokens ([`Permit::expect_debt`](super::Permit::expect_debt)): it counts against the
    /// token dimensions beside their `used`, until those calls settle.
    pub expected_debt: u64,
    /// With fairness: the tenants the key tracks now (those with waiters, or whose account is
    /// ahead of their lane's virtual time).
    pub tenants: usize,
    /// The bytes the key's state holds: its fixed size, its ledgers and queues by their
    /// capacities (exact), and with fairness its tenants' maps (an estimate). A ledger holds at
    /// most `window / resolution + 1` entries of 16 bytes (see
    /// [`BudgetBuilder::resolution`](super::BudgetBuilder::resolution)).
    pub memory: usize,
}

impl KeyStats {
    /// The snapshot of `dimension`, if the key limits it.
    pub fn dimension(&self, dimension: Dimension) -> Option<DimensionStats> {
        match dimension {
            Dimension::Requests => self.requests,
            Dimension::Tokens => self.tokens,
            Dimension::TokensPerDay => self.tokens_per_day,
        }
    }
}

impl KeyShared {
    /// A snapshot of the key. `this` must be a reference of the caller's own (a clone taken from
    /// the map), and the state must be live: the map and the caller account for two references.
    pub(crate) fn stats(this: &Arc<Self>, state: &mut KeyState, now: Instant) -> KeyStats {
        let now = this.config.offset(now);
        state.dims.expire(&this.config, now);
        let mut stats = KeyStats::default();
        for dim in state.dims.as_mut_slice() {
            let effective_limit = dim.effective(&this.config, now);
            let dimension = DimensionStats {
                used: u64::try_from(dim.ledger.used).unwrap_or(u64::MAX),
                limit: dim.limit,
                effective_limit,
            };
            match dim.which {
                Dimension::Requests => stats.requests = Some(dimension),
                Dimension::Tokens => stats.tokens = Some(dimension),
                Dimension::TokensPerDay => stats.tokens_per_day = Some(dimension),
            }
        }
        // A waiter granted but not yet polled holds its permit-to-be: it counts as outstanding.
        let (waiters, holding) = state.waiting.as_ref().map_or((0, 0), |w| {
            let failed = w
                .outcomes
                .values()
                .filter(|o| matches!(o, Verdict::Failed(_)))
                .count();
            let live = w.live_waiters();
            (live, live + failed)
        });
        stats.waiters = waiters;
        stats.expected_debt = u64::try_from(state.dims.in_flight).unwrap_or(u64::MAX);
        stats.memory = std::mem::size_of::<KeyShared>()
            + state.dims.memory()
            + state.waiting.as_deref().map_or(0, Waiting::memory);
        stats.tenants = state.waiting.as_ref().map_or(0, |w| w.discipline.tracked());
        // Every reference but the map's, the caller's and the waiting futures' is a permit.
        stats.outstanding = Arc::strong_count(this).saturating_sub(2 + holding);
        stats
    }
}
