//! Throttle feedback: the effective limit of a dimension, lowered multiplicatively when the
//! server throttles and recovering linearly (AIMD), and the verb that applies it to a key.

use tokio::time::Instant;

use super::config::KeyConfig;
use super::error::ConfigError;
use super::key::{KeyShared, KeyState};
use super::ledger::{Dim, Dims};
use super::quota::Dimension;

/// The feedback policy: how far the effective limit falls on a throttle and how fast it comes
/// back (additive increase, multiplicative decrease).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aimd {
    /// The factor applied to the effective limit on each throttle, in `(0, 1]`. Default 0.7.
    pub decrease: f64,
    /// The fraction of the configured limit regained per elapsed window, finite and `> 0`.
    /// Default 0.1 (a limit lowered to 70% is back in three windows).
    pub recover_per_window: f64,
    /// The lowest effective limit, as a fraction of the configured limit, in `(0, 1]`.
    /// Default 0.1.
    pub floor: f64,
}

impl Default for Aimd {
    fn default() -> Self {
        Aimd {
            decrease: 0.7,
            recover_per_window: 0.1,
            floor: 0.1,
        }
    }
}

impl Aimd {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let unit = |name, value: f64| {
            if value > 0.0 && value <= 1.0 {
                Ok(())
            } else {
                Err(ConfigError::InvalidFactor {
                    name,
                    value,
                    expected: "in (0, 1]",
                })
            }
        };
        unit("aimd.decrease", self.decrease)?;
        unit("aimd.floor", self.floor)?;
        if !(self.recover_per_window.is_finite() && self.recover_per_window > 0.0) {
            return Err(ConfigError::InvalidFactor {
                name: "aimd.recover_per_window",
                value: self.recover_per_window,
                expected: "finite and greater than 0",
            });
        }
        Ok(())
    }

    /// The lowest effective limit for `limit`, at least 1.
    pub(crate) fn floor_amount(&self, limit: u64) -> u64 {
        ((self.floor * limit as f64).ceil() as u64).clamp(1, limit.max(1))
    }

    /// The amount regained per window for `limit`, at least 1.
    pub(crate) fn recover_amount(&self, limit: u64) -> u64 {
        ((self.recover_per_window * limit as f64).ceil() as u64).max(1)
    }
}

/// The effective limit lowered by feedback: `base` at offset `since`, recovering linearly.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lowered {
    pub(super) base: u64,
    pub(super) since: u64,
}

/// When the effective limit reaches an amount.
pub(super) enum Reach {
    Now,
    At(u64),
    Never,
}

impl Dim {
    /// The effective limit at offset `now`, forgetting a lowering that has fully recovered.
    #[inline]
    pub(super) fn effective(&mut self, settings: &KeyConfig, now: u64) -> u64 {
        if self.lowered.is_none() {
            return self.limit;
        }
        let effective = self.effective_at(settings, now);
        if effective >= self.limit {
            self.lowered = None;
        }
        effective
    }

    pub(super) fn effective_at(&self, settings: &KeyConfig, t: u64) -> u64 {
        let (Some(lowered), Some(aimd)) = (self.lowered, settings.aimd) else {
            return self.limit;
        };
        let elapsed = u128::from(t.saturating_sub(lowered.since));
        let per_window = u128::from(aimd.recover_amount(self.limit));
        let window = u128::from(settings.window_nanos[self.which.index()]);
        let recovered = per_window.saturating_mul(elapsed) / window;
        let effective = u128::from(lowered.base).saturating_add(recovered);
        effective.min(u128::from(self.limit)) as u64
    }

    /// The first offset at which the effective limit is at least `amount`.
    pub(super) fn reach(&self, settings: &KeyConfig, amount: u128) -> Reach {
        if amount > u128::from(self.limit) {
            return Reach::Never;
        }
        let (Some(lowered), Some(aimd)) = (self.lowered, settings.aimd) else {
            return Reach::Now;
        };
        if amount <= u128::from(lowered.base) {
            return Reach::Now;
        }
        let missing = amount - u128::from(lowered.base);
        let per_window = u128::from(aimd.recover_amount(self.limit));
        let window = u128::from(settings.window_nanos[self.which.index()]);
        let nanos = (missing * window).div_ceil(per_window);
        let nanos = u64::try_from(nanos).unwrap_or(u64::MAX);
        Reach::At(lowered.since.saturating_add(nanos))
    }
}

impl KeyShared {
    /// Feedback through the permit of a request admitted at offset `admitted_at` that reserved
    /// `reserved` tokens: the state is live (a permit is outstanding, so it is not evicted).
    pub(crate) fn throttled_now(&self, dims: &[Dimension], admitted_at: u64, reserved: u64) {
        let now = Instant::now();
        let mut state = self.lock();
        self.throttled(&mut state, now, dims, Some((admitted_at, reserved)));
    }

    /// Feedback on `dims`: each one's effective limit goes down, and its window is exhausted up
    /// to it. Dimensions the key does not limit are ignored.
    ///
    /// With the throttled request's permit (`admitted_at` as an offset, `reserved` tokens):
    /// - a request admitted before the dimension's last decrease does not lower its limit again:
    ///   it was sent under the old limit, and its throttle is an echo of the one that caused the
    ///   decrease (requests in flight together are throttled together). One decrease per
    ///   congestion event, as TCP does once per round trip;
    /// - its own reservation is counted as gone when filling: the server did not book it, and
    ///   its settlement will refund it, which must not reopen the window it just exhausted.
    pub(crate) fn throttled(
        &self,
        state: &mut KeyState,
        now: Instant,
        dims: &[Dimension],
        permit: Option<(u64, u64)>,
    ) {
        let now = self.config.offset(now);
        let settings = &*self.config;
        let at = state.dims.stamp(now);
        for dim in state
            .dims
            .as_mut_slice()
            .iter_mut()
            .filter(|d| dims.contains(&d.which))
        {
            dim.ledger.expire(settings.span(dim.which), now);
            let before = dim.effective(settings, now);
            let echo = matches!(
                (permit, dim.lowered),
                (Some((admitted, _)), Some(lowered)) if admitted < lowered.since
            );
            if let Some(aimd) = settings.aimd
                && !echo
            {
                let floor = aimd.floor_amount(dim.limit);
                let lowered = ((before as f64 * aimd.decrease) as u64)
                    .max(floor)
                    .min(dim.limit);
                dim.lowered = Some(Lowered {
                    base: lowered,
                    since: now,
                });
            }
            let after = dim.effective(settings, now);
            let own = permit.map_or(0, |(_, reserved)| u128::from(dim.which.cost(reserved)));
            let fill = u128::from(after).saturating_sub(dim.ledger.used.saturating_sub(own));
            if fill > 0 {
                Dims::book(settings, dim, at, fill as u64);
            }
            tracing::debug!(
                dimension = %dim.which,
                limit = dim.limit,
                effective_before = before,
                effective_after = after,
                synthetic = %fill,
                "throttle feedback: window exhausted, effective limit lowered"
            );
        }
    }
}
