//! Throttle feedback: the effective limit of a dimension, lowered when the server throttles and
//! raised again by probing, and the verb that applies it to a key.
//!
//! Two policies ([`Aimd::learn`]):
//! - **AIMD** (the default, `learn: None`): multiplied by [`Aimd::decrease`] at a throttle, and
//!   recovering linearly by [`Aimd::recover_per_window`] of the limit per window;
//! - **learned** ([`Aimd::learned`]): at a throttle the crate knows what the server's window
//!   held, because its ledger is kept in the server's units: what it had charged (settled,
//!   reserved, and the debt counted in flight) less the throttled request's own reservation.
//!   The effective limit goes to that, less a margin ([`Learn::margin`]), but never lower in
//!   one step than [`Aimd::decrease`] of where it was (a throttle seen with an empty ledger,
//!   after a restart, says little) nor below [`Aimd::floor`]. It then rises by probing, at
//!   [`Learn::probe_per_window`] of the limit per window, halved each time the server
//!   throttles again at (about) the same level (a "strike", up to six), reset when the server
//!   throttles above it (the wall moved). Against a server whose window holds what the ledger
//!   holds, a quota set too high is found at the first throttle and probed ever more rarely.
//!   Not the default: against Bedrock's own accounting (and the emulator's), the ledger holds
//!   more than the server at the instant of a throttle (input estimates are conservative, and
//!   Bedrock frees unused output while it generates), so the level it learns is too high and
//!   the server keeps refusing there (BENCHMARKS.md, "Learned limits").
//!
//! Either way the effective limit is a line in time from the last throttle, so the schedule
//! still knows when a cost will fit.

use tokio::time::Instant;

use super::config::KeyConfig;
use super::error::ConfigError;
use super::key::{KeyShared, KeyState};
use super::ledger::{Dim, Dims};
use super::quota::Dimension;

/// The feedback policy: how far the effective limit falls on a throttle and how it comes back.
/// AIMD (additive increase, multiplicative decrease) by default; learned from the ledger with
/// [`learn`](Self::learn) ([`Aimd::learned`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aimd {
    /// With [`learn`](Self::learn): the most one throttle lowers the effective limit (a factor
    /// of where it was). Without: the factor applied on each throttle. In `(0, 1]`. Default 0.7.
    pub decrease: f64,
    /// Without [`learn`](Self::learn): the fraction of the configured limit regained per
    /// elapsed window, finite and `> 0`. Default 0.1 (a limit lowered to 70% is back in three
    /// windows).
    pub recover_per_window: f64,
    /// The lowest effective limit, as a fraction of the configured limit, in `(0, 1]`.
    /// Default 0.1.
    pub floor: f64,
    /// Learn the limit from what the ledger held at each throttle, and probe above it ever more
    /// rarely (see [feedback](super#feedback)). Default: off.
    pub learn: Option<Learn>,
}

/// The learned policy's settings (see [`Aimd::learn`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Learn {
    /// Kept below what the server held at a throttle, as a fraction of it, in `[0, 0.5]`.
    /// Default 0.02.
    pub margin: f64,
    /// The fraction of the configured limit a probe adds per window before any repeated
    /// throttle, in `(0, 1]`; halved at each strike. Default 0.025.
    pub probe_per_window: f64,
    /// The most the effective limit may reach, as a factor of the configured limit, finite and
    /// at least 1. Default 1: never above the configured limit. Above 1 (the applied quota may
    /// be higher than the one configured), a dimension that holds a request back starts
    /// probing above its configured limit, up to this, until the server throttles: four times
    /// [`probe_per_window`](Self::probe_per_window) of this ceiling per window while the server
    /// has never refused, then as after any throttle. A key whose limit went above its
    /// configured one stays in memory (it is never idle).
    pub max: f64,
}

impl Default for Learn {
    fn default() -> Self {
        Learn {
            margin: 0.02,
            probe_per_window: 0.025,
            max: 1.0,
        }
    }
}

/// The most strikes counted: probing slows down to 1/64 of its first pace.
const MAX_STRIKES: u8 = 6;

impl Default for Aimd {
    fn default() -> Self {
        Aimd {
            decrease: 0.7,
            recover_per_window: 0.1,
            floor: 0.1,
            learn: None,
        }
    }
}

impl Aimd {
    /// Plain AIMD, the default (see [feedback](super#feedback)).
    pub fn plain() -> Self {
        Aimd::default()
    }

    /// The learned policy with [`Learn::default`] (see [feedback](super#feedback)).
    pub fn learned() -> Self {
        Aimd {
            learn: Some(Learn::default()),
            ..Aimd::default()
        }
    }

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
        if let Some(learn) = self.learn {
            if !(0.0..=0.5).contains(&learn.margin) {
                return Err(ConfigError::InvalidFactor {
                    name: "aimd.learn.margin",
                    value: learn.margin,
                    expected: "in [0, 0.5]",
                });
            }
            unit("aimd.learn.probe_per_window", learn.probe_per_window)?;
            if !(learn.max.is_finite() && learn.max >= 1.0) {
                return Err(ConfigError::InvalidFactor {
                    name: "aimd.learn.max",
                    value: learn.max,
                    expected: "finite and at least 1",
                });
            }
        }
        Ok(())
    }

    /// The probe per window for `limit` after `strikes`, at least 1.
    fn probe_amount(learn: &Learn, limit: u64, strikes: u8) -> u64 {
        let first = learn.probe_per_window * limit as f64;
        ((first / f64::from(1u32 << strikes)).ceil() as u64).max(1)
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

/// The effective limit lowered by feedback: `base` at offset `since`, rising linearly by
/// `per_window` per window.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lowered {
    pub(super) base: u64,
    pub(super) since: u64,
    pub(super) per_window: u64,
}

/// Where the server last throttled a dimension (what the ledger held then, net of the
/// throttled request) and how many times in a row it throttled there.
#[derive(Debug, Clone, Copy)]
pub(super) struct Wall {
    pub(super) held: u64,
    pub(super) strikes: u8,
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
        if effective >= self.limit && self.ceiling(settings) == self.limit {
            self.lowered = None;
        }
        effective
    }

    /// The most the effective limit may reach: the configured limit, or above it with a
    /// learned policy's [`Learn::max`].
    pub(super) fn ceiling(&self, settings: &KeyConfig) -> u64 {
        match settings.aimd.and_then(|a| a.learn) {
            Some(learn) if learn.max > 1.0 => {
                ((self.limit as f64 * learn.max) as u64).max(self.limit)
            }
            _ => self.limit,
        }
    }

    /// Demand is held back on this dimension at its configured limit: with room above it
    /// ([`Learn::max`]), the effective limit starts rising from there, by probing.
    pub(super) fn probe_above(&mut self, settings: &KeyConfig, now: u64) {
        let Some(learn) = settings.aimd.and_then(|a| a.learn) else {
            return;
        };
        if self.lowered.is_some() || self.ceiling(settings) <= self.limit {
            return;
        }
        // Before the server has ever refused, nothing says where the quota is: probe four times
        // faster, in units of the ceiling (a quota configured at half the real one is found in
        // a few windows). After, at the pace of the strikes at the last wall.
        let per_window = match self.wall {
            None => {
                let fast = Learn {
                    probe_per_window: (learn.probe_per_window * 4.0).min(1.0),
                    ..learn
                };
                Aimd::probe_amount(&fast, self.ceiling(settings), 0)
            }
            Some(wall) => Aimd::probe_amount(&learn, self.limit, wall.strikes),
        };
        self.lowered = Some(Lowered {
            base: self.limit,
            since: now,
            per_window,
        });
    }

    pub(super) fn effective_at(&self, settings: &KeyConfig, t: u64) -> u64 {
        let (Some(lowered), Some(_)) = (self.lowered, settings.aimd) else {
            return self.limit;
        };
        let elapsed = u128::from(t.saturating_sub(lowered.since));
        let per_window = u128::from(lowered.per_window.max(1));
        let window = u128::from(settings.window_nanos[self.which.index()]);
        let recovered = per_window.saturating_mul(elapsed) / window;
        let effective = u128::from(lowered.base).saturating_add(recovered);
        effective.min(u128::from(self.ceiling(settings))) as u64
    }

    /// The first offset at which the effective limit is at least `amount`.
    pub(super) fn reach(&self, settings: &KeyConfig, amount: u128) -> Reach {
        if amount > u128::from(self.ceiling(settings)) {
            return Reach::Never;
        }
        let (Some(lowered), Some(_)) = (self.lowered, settings.aimd) else {
            // Above the configured limit only while a probe runs.
            return if amount <= u128::from(self.limit) {
                Reach::Now
            } else {
                Reach::Never
            };
        };
        if amount <= u128::from(lowered.base) {
            return Reach::Now;
        }
        let missing = amount - u128::from(lowered.base);
        let per_window = u128::from(lowered.per_window.max(1));
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
        let in_flight = state.dims.in_flight;
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
            let own = permit.map_or(0, |(_, reserved)| u128::from(dim.which.cost(reserved)));
            if let Some(aimd) = settings.aimd
                && !echo
            {
                let floor = aimd.floor_amount(dim.limit);
                let step = (before as f64 * aimd.decrease) as u64;
                let (target, per_window) = match &aimd.learn {
                    None => (step, aimd.recover_amount(dim.limit)),
                    Some(learn) => {
                        // What the server's window held: everything charged but this request.
                        let held = u64::try_from(dim.used(in_flight).saturating_sub(own))
                            .unwrap_or(u64::MAX);
                        let strikes = match dim.wall {
                            Some(wall) if held <= wall.held.saturating_add(wall.held / 20) => {
                                wall.strikes.saturating_add(1).min(MAX_STRIKES)
                            }
                            _ => 0,
                        };
                        dim.wall = Some(Wall { held, strikes });
                        let clamp = (held.min(before) as f64 * (1.0 - learn.margin)) as u64;
                        (
                            clamp.max(step),
                            Aimd::probe_amount(learn, dim.limit, strikes),
                        )
                    }
                };
                dim.lowered = Some(Lowered {
                    base: target.max(floor).min(dim.ceiling(settings)),
                    since: now,
                    per_window,
                });
            }
            let after = dim.effective(settings, now);
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
