//! The ledger of one dimension of a key, the dimensions of a key, and the simulation that says
//! when a cost will fit.
//!
//! Time inside a key is a `u64` count of nanoseconds since the budget's epoch (see
//! [`KeyConfig::offset`]): ledger entries are 16 bytes, expiry is one integer comparison, and
//! the conversion back to [`Instant`](tokio::time::Instant) is exact, so nothing is rounded.
//!
//! Every dimension of a key is admitted at the same instant: an admission books one entry on
//! each limited dimension, all dated at one offset (the latest of the clock and every ledger's
//! last entry), so no charge is older than the request.

use std::collections::VecDeque;

use super::config::KeyConfig;
use super::error::AdmissionError;
use super::feedback::{Lowered, Reach, Wall};
use super::quota::{Dimension, Quota};

/// One charge in the window: an offset (see [`KeyConfig::offset`]) and an amount. Charges at the
/// same instant share one entry.
#[derive(Debug, Clone, Copy)]
pub(super) struct Entry {
    pub(super) at: u64,
    pub(super) amount: u64,
}

/// The charges of one dimension's window, in time order.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    pub(super) entries: VecDeque<Entry>,
    /// The sum of the entries' amounts (u128: debt is not bounded by the limit).
    pub(super) used: u128,
}

/// One limited dimension of a key: its configured limit, its feedback state, its ledger.
#[derive(Debug)]
pub(super) struct Dim {
    pub(super) which: Dimension,
    pub(super) limit: u64,
    pub(super) lowered: Option<Lowered>,
    /// Where the server last throttled it (learned feedback).
    pub(super) wall: Option<Wall>,
    pub(super) ledger: Ledger,
}

impl Dim {
    /// What counts against this dimension's limit: its ledger, and on a dimension that settles
    /// the expected debt of the calls in flight.
    #[inline]
    pub(super) fn used(&self, in_flight: u128) -> u128 {
        if self.which.settles() {
            self.ledger.used + in_flight
        } else {
            self.ledger.used
        }
    }

    pub(super) fn new(which: Dimension, limit: u64) -> Self {
        Dim {
            which,
            limit,
            lowered: None,
            wall: None,
            ledger: Ledger::default(),
        }
    }
}

/// The limited dimensions of a key, in [`Dimension::ALL`] order, and the latest offset
/// anything was booked at on them.
///
/// Every booking (an admission, debt, a throttle's fill) is dated `at = max(now, latest)`, so
/// the bookings of a key never go back in time, and each dimension's entry is the bucket that
/// ends at `at` rounded UP to that dimension's resolution ([`KeyConfig::grid`]): entries only
/// ever join the last one or come after it, and a permit finds its entry on every dimension
/// from its one admission offset.
///
/// Beside the ledgers, the debt the calls in flight will most likely settle above their
/// reservations ([`in_flight`](Self::in_flight), see [`Permit::expect_debt`]): it counts on every
/// dimension that settles, as if charged now, until those calls settle and book their real debt.
///
/// [`Permit::expect_debt`]: super::Permit::expect_debt
#[derive(Debug)]
pub(super) struct Dims {
    list: DimList,
    latest: u64,
    /// The expected debt of the calls in flight, in tokens.
    pub(super) in_flight: u128,
}

/// A key with one dimension (the common case: tokens, or requests) keeps it inline, so its
/// admissions chase no pointer.
#[derive(Debug)]
enum DimList {
    One(Dim),
    Many(Box<[Dim]>),
}

impl Dims {
    /// The dimensions of `quota`; `None` for an unlimited quota.
    pub(super) fn of(quota: &Quota) -> Option<Self> {
        let dims: Vec<Dim> = quota.limits().map(|(d, l)| Dim::new(d, l)).collect();
        (!dims.is_empty()).then(|| Dims::from_vec(dims, 0))
    }

    #[inline]
    pub(super) fn as_slice(&self) -> &[Dim] {
        match &self.list {
            DimList::One(d) => std::slice::from_ref(d),
            DimList::Many(ds) => ds,
        }
    }

    #[inline]
    pub(super) fn as_mut_slice(&mut self) -> &mut [Dim] {
        match &mut self.list {
            DimList::One(d) => std::slice::from_mut(d),
            DimList::Many(ds) => ds,
        }
    }

    /// The dimensions of `dims` (in [`Dimension::ALL`] order), with the latest booking offset.
    pub(super) fn from_vec(mut dims: Vec<Dim>, latest: u64) -> Self {
        let list = match (dims.len(), dims.pop()) {
            (1, Some(d)) => DimList::One(d),
            (_, last) => {
                dims.extend(last);
                DimList::Many(dims.into_boxed_slice())
            }
        };
        Dims {
            list,
            latest,
            in_flight: 0,
        }
    }

    /// Takes the dimensions out (for a quota change), leaving none.
    pub(super) fn take(&mut self) -> (Vec<Dim>, u64) {
        let list = std::mem::replace(&mut self.list, DimList::Many(Box::new([])));
        let dims = match list {
            DimList::One(d) => vec![d],
            DimList::Many(ds) => ds.into_vec(),
        };
        (dims, self.latest)
    }

    /// The bytes the dimensions hold beyond the key's fixed size: the boxed list of several,
    /// and every ledger's entries by capacity.
    pub(super) fn memory(&self) -> usize {
        let list = match &self.list {
            DimList::One(_) => 0,
            DimList::Many(ds) => std::mem::size_of_val::<[Dim]>(ds),
        };
        list + self
            .as_slice()
            .iter()
            .map(|d| d.ledger.entries.capacity() * std::mem::size_of::<Entry>())
            .sum::<usize>()
    }

    /// The offset of the latest booking.
    #[inline]
    pub(super) fn latest(&self) -> u64 {
        self.latest
    }

    /// The offset of a booking read at `now`: never before an earlier booking.
    #[inline]
    pub(super) fn stamp(&mut self, now: u64) -> u64 {
        self.latest = self.latest.max(now);
        self.latest
    }

    /// Books `amount` on `dim` at offset `at` (a [`stamp`](Self::stamp)), in its bucket.
    #[inline]
    pub(super) fn book(config: &KeyConfig, dim: &mut Dim, at: u64, amount: u64) {
        dim.ledger.push(config.grid(dim.which, at), amount);
    }

    /// Gives back `amount` on `dim` of the booking at offset `at`.
    #[inline]
    pub(super) fn unbook(config: &KeyConfig, dim: &mut Dim, at: u64, amount: u64) {
        dim.ledger.refund(config.grid(dim.which, at), amount);
    }

    /// The dimension fair shares count in (see [`share`](Self::share)).
    pub(super) fn share_unit(&self) -> Dimension {
        let dims = self.as_slice();
        [
            Dimension::Tokens,
            Dimension::Requests,
            Dimension::TokensPerDay,
        ]
        .into_iter()
        .find(|&which| dims.iter().any(|d| d.which == which))
        .unwrap_or(Dimension::Tokens)
    }

    pub(super) fn has(&self, which: Dimension) -> bool {
        self.as_slice().iter().any(|d| d.which == which)
    }
}

impl Dims {
    /// Whether `tokens` fits on every dimension at `now` (the ledgers expired at `now`).
    #[inline]
    pub(super) fn fits(&mut self, settings: &KeyConfig, now: u64, tokens: u64) -> bool {
        let in_flight = self.in_flight;
        self.as_mut_slice().iter_mut().all(|d| {
            let cost = d.which.cost(tokens);
            cost == 0
                || d.used(in_flight) + u128::from(cost) <= u128::from(d.effective(settings, now))
        })
    }

    /// Books an admission of `tokens` on every dimension, all at one offset: the latest of `now`
    /// and every earlier booking ([`stamp`](Self::stamp)). Returns that offset.
    #[inline]
    pub(super) fn charge(&mut self, config: &KeyConfig, now: u64, tokens: u64) -> u64 {
        let at = self.stamp(now);
        for dim in self.as_mut_slice() {
            let cost = dim.which.cost(tokens);
            if cost > 0 {
                Dims::book(config, dim, at, cost);
            }
        }
        at
    }
}

impl Ledger {
    /// Books a charge at offset `at`. Entries stay in time order even if two callers read the
    /// clock in the other order: a charge never goes before the last entry, it joins it (a later
    /// instant: it counts longer, never shorter).
    #[inline]
    pub(super) fn push(&mut self, at: u64, amount: u64) {
        self.used += u128::from(amount);
        if let Some(last) = self.entries.back_mut()
            && last.at >= at
            && let Some(sum) = last.amount.checked_add(amount)
        {
            last.amount = sum;
            return;
        }
        let at = self.entries.back().map_or(at, |last| at.max(last.at));
        if self.entries.capacity() == 0 {
            // A key used once (most keys, before they go idle) holds one 16-byte entry, not the
            // four a first push would allocate.
            self.entries.reserve_exact(1);
        }
        self.entries.push_back(Entry { at, amount });
    }

    /// The offset of the last entry, if any.
    #[cfg(test)]
    pub(super) fn last_at(&self) -> Option<u64> {
        self.entries.back().map(|e| e.at)
    }

    /// Drops the entries that no longer count at `now`: those with `at + span <= now`.
    #[inline]
    pub(super) fn expire(&mut self, span: u64, now: u64) {
        let Some(cutoff) = now.checked_sub(span) else {
            return;
        };
        while let Some(front) = self.entries.front() {
            if front.at > cutoff {
                break;
            }
            self.used -= u128::from(front.amount);
            self.entries.pop_front();
        }
    }

    /// Gives back `amount` of the entry at offset `at`. Several permits may share an entry
    /// (charges at one instant are merged), but each refunds at most its own reservation, so the
    /// entry never goes below the charges that remain. An entry that has expired is not found:
    /// its charge no longer counts anyway.
    #[inline]
    pub(super) fn refund(&mut self, at: u64, amount: u64) {
        if amount == 0 {
            return;
        }
        // The most recent entry is the likeliest (a short call settles before later charges).
        let idx = match self.entries.back() {
            Some(last) if last.at == at => self.entries.len() - 1,
            _ => match self.entries.binary_search_by_key(&at, |e| e.at) {
                Ok(idx) => idx,
                Err(_) => return,
            },
        };
        let entry = &mut self.entries[idx];
        let amount = amount.min(entry.amount);
        entry.amount -= amount;
        self.used -= u128::from(amount);
    }
}

/// The first dimension of `dims` on which `tokens` costs more than the whole limit.
pub(super) fn above_limit(dims: &[Dim], tokens: u64) -> Option<AdmissionError> {
    dims.iter().find_map(|d| {
        let cost = d.which.cost(tokens);
        (cost > d.limit).then_some(AdmissionError::CostAboveLimit {
            dimension: d.which,
            cost,
            limit: d.limit,
        })
    })
}

/// One dimension's ledger as the schedule simulates it: the real entries not yet expired, and
/// the admissions the simulation has made.
struct DimSim {
    /// The next real entry to expire.
    real: usize,
    used: u128,
    simulated: VecDeque<Entry>,
}

impl DimSim {
    /// The simulation of `dim` from `now`. The expected debt in flight counts as a charge made
    /// at `now` on a dimension that settles: the calls settle (and book their real debt) at an
    /// instant no schedule knows, which wakes the waiters; until then it counts a whole span at
    /// most, so it never makes a cost that fits the limit wait for ever.
    fn new(dim: &Dim, settings: &KeyConfig, now: u64, in_flight: u128) -> Self {
        let mut simulated = VecDeque::new();
        let mut used = dim.ledger.used;
        if dim.which.settles() && in_flight > 0 {
            let amount = u64::try_from(in_flight).unwrap_or(u64::MAX);
            simulated.push_back(Entry {
                at: settings.grid(dim.which, now),
                amount,
            });
            used += u128::from(amount);
        }
        DimSim {
            real: 0,
            used,
            simulated,
        }
    }

    /// The offset at which the next entry (real or simulated) expires, and whether it is real.
    fn next_expiry(&self, dim: &Dim, span: u64) -> Option<(u64, bool)> {
        let real = dim
            .ledger
            .entries
            .get(self.real)
            .map(|e| e.at.saturating_add(span));
        let sim = self.simulated.front().map(|e| e.at.saturating_add(span));
        match (real, sim) {
            (Some(r), Some(s)) if s < r => Some((s, false)),
            (Some(r), _) => Some((r, true)),
            (None, Some(s)) => Some((s, false)),
            (None, None) => None,
        }
    }

    fn expire_next(&mut self, dim: &Dim, real: bool) {
        if real {
            self.used -= u128::from(dim.ledger.entries[self.real].amount);
            self.real += 1;
        } else if let Some(e) = self.simulated.pop_front() {
            self.used -= u128::from(e.amount);
        }
    }

    /// The first offset from `t` at which `cost` fits on this dimension, expiring entries up to
    /// it. `None` if it never fits. Fitting is monotone in time (entries only expire, the limit
    /// only recovers), so any later offset fits too.
    fn earliest(&mut self, dim: &Dim, settings: &KeyConfig, t: u64, cost: u64) -> Option<u64> {
        if cost == 0 {
            return Some(t);
        }
        let span = settings.span(dim.which);
        let mut t = t;
        loop {
            let next = self.next_expiry(dim, span);
            let candidate = match dim.reach(settings, self.used + u128::from(cost)) {
                Reach::Now => Some(t),
                Reach::At(at) => Some(t.max(at)),
                Reach::Never => None,
            };
            if let Some(candidate) = candidate
                && next.is_none_or(|(n, _)| candidate < n)
            {
                return Some(candidate);
            }
            let (n, real) = next?;
            t = t.max(n);
            self.expire_next(dim, real);
        }
    }

    /// Expires every entry that no longer counts at `t`.
    fn advance_to(&mut self, dim: &Dim, settings: &KeyConfig, t: u64) {
        let span = settings.span(dim.which);
        while let Some((n, real)) = self.next_expiry(dim, span) {
            if n > t {
                return;
            }
            self.expire_next(dim, real);
        }
    }
}

impl Dims {
    /// Drops, on every dimension, the entries that no longer count at `now`.
    #[inline]
    pub(super) fn expire(&mut self, settings: &KeyConfig, now: u64) {
        for dim in self.as_mut_slice() {
            dim.ledger.expire(settings.span(dim.which), now);
        }
    }

    /// The refusal of a token cost above a whole limit, if it is.
    #[inline]
    pub(super) fn above_limit(&self, tokens: u64) -> Option<AdmissionError> {
        above_limit(self.as_slice(), tokens)
    }

    /// Whether `tokens` costs nothing on any dimension of the key.
    #[inline]
    pub(super) fn costs_nothing(&self, tokens: u64) -> bool {
        tokens == 0 && !self.has(Dimension::Requests)
    }

    /// The first dimension on which `tokens` does not fit at `now`, if any.
    pub(super) fn blocking(
        &mut self,
        settings: &KeyConfig,
        now: u64,
        tokens: u64,
    ) -> Option<Dimension> {
        let in_flight = self.in_flight;
        self.as_mut_slice().iter_mut().find_map(|d| {
            let cost = d.which.cost(tokens);
            let fits = cost == 0
                || d.used(in_flight) + u128::from(cost) <= u128::from(d.effective(settings, now));
            (!fits).then_some(d.which)
        })
    }

    /// A request of `tokens` is held back: every dimension it does not fit at its configured
    /// limit starts probing above it, where the learned policy allows ([`Dim::probe_above`]).
    pub(super) fn probe_above(&mut self, settings: &KeyConfig, now: u64, tokens: u64) {
        let in_flight = self.in_flight;
        for d in self.as_mut_slice() {
            let cost = d.which.cost(tokens);
            if cost > 0 && d.used(in_flight) + u128::from(cost) > u128::from(d.limit) {
                d.probe_above(settings, now);
            }
        }
    }

    /// Whether every ledger is empty and no limit is lowered.
    pub(super) fn quiet(&mut self, settings: &KeyConfig, now: u64) -> bool {
        self.in_flight == 0
            && self
                .as_mut_slice()
                .iter_mut()
                .all(|d| d.ledger.entries.is_empty() && d.effective(settings, now) == d.limit)
    }

    /// The dimension fair shares are counted in (tokens if the key limits them, else requests,
    /// else tokens per day), with its span and the limit IN FORCE at `now` (the effective limit
    /// after feedback: a lane's minimum is a share of what the key may admit now, so a minimum
    /// cannot take more than the limit feedback left).
    pub(super) fn share(&self, settings: &KeyConfig, now: u64) -> Share {
        let unit = self.share_unit();
        let dims = self.as_slice();
        let Some(dim) = dims.iter().find(|d| d.which == unit) else {
            return Share {
                unit,
                span: settings.span(unit),
                limit: 0,
            };
        };
        Share {
            unit: dim.which,
            span: settings.span(dim.which),
            limit: dim.effective_at(settings, now),
        }
    }

    /// When (an offset) a request of `cost` tokens would be admitted behind waiters costing
    /// `ahead`, if each is admitted as soon as it fits on every dimension. `None` if it never
    /// fits. The ledgers must be expired at `now`.
    pub(super) fn schedule(
        &self,
        settings: &KeyConfig,
        now: u64,
        ahead: impl Iterator<Item = u64>,
        cost: u64,
    ) -> Option<u64> {
        let dims = self.as_slice();
        let mut sims: Vec<DimSim> = dims
            .iter()
            .map(|d| DimSim::new(d, settings, now, self.in_flight))
            .collect();
        let mut t = now;
        for c in ahead.chain(std::iter::once(cost)) {
            // Each dimension's earliest fit from `t`; the request goes at the latest of them,
            // where every dimension fits (fitting is monotone in time).
            for (dim, sim) in dims.iter().zip(&mut sims) {
                t = t.max(sim.earliest(dim, settings, t, dim.which.cost(c))?);
            }
            for (dim, sim) in dims.iter().zip(&mut sims) {
                sim.advance_to(dim, settings, t);
                let amount = dim.which.cost(c);
                let at = settings.grid(dim.which, t);
                sim.simulated.push_back(Entry { at, amount });
                sim.used += u128::from(amount);
            }
        }
        Some(t)
    }
}

/// What fair shares count in, on one key: the share dimension, its span, and its limit in force.
#[derive(Debug, Clone, Copy)]
pub(super) struct Share {
    /// The dimension the tenants' accounts and the lanes' minimums count.
    pub(super) unit: Dimension,
    /// How long an admission counts towards a lane's minimum.
    pub(super) span: u64,
    /// The limit in force on that dimension (the effective limit).
    pub(super) limit: u64,
}
