//! Quota bookkeeping: the three window algorithms and the per-model ledger that reserves at
//! admission and settles at the end of a response, as Bedrock's documented token burndown does
//! (reserve `input + max output` at the start, settle `input + output × burndown` at the end).
//!
//! Every operation here is synchronous and short: callers hold a model's mutex only for one
//! call, never across an await, so thousands of requests per second do not queue on it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use super::config::Enforcement;
use super::stats::{Counters, ModelStats, Stats, WindowUsage, bump};
use crate::budget::Quota;

/// Locks a mutex, ignoring poisoning: the ledger's invariants hold between calls, and a panic
/// elsewhere must not turn every later request into a panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether `t` has left a window of length `len` at `now`, i.e. `t <= now - len`.
fn expired(t: Instant, len: Duration, now: Instant) -> bool {
    now.saturating_duration_since(t) >= len
}

/// One usage window of one dimension.
#[derive(Debug)]
pub(crate) enum Window {
    Sliding(Sliding),
    Bucket(Bucket),
    Fixed(Fixed),
}

/// Where a booking landed, so that a refund can reduce the same charge.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Booking {
    /// Token bucket: a refund simply gives back.
    Bucket,
    /// Sliding window: the sequence number of the entry.
    Sliding(u64),
    /// Fixed window: the index of the window.
    Fixed(u64),
}

impl Window {
    /// A window of length `len` for a dimension limited by `limit` (`None`: unlimited, usage is
    /// still tracked; a token bucket needs a capacity, so an unlimited one tracks a sliding sum).
    pub(crate) fn new(
        enforcement: Enforcement,
        limit: Option<u64>,
        len: Duration,
        origin: Instant,
    ) -> Self {
        match (enforcement, limit) {
            (Enforcement::TokenBucket, Some(cap)) => Self::Bucket(Bucket::new(cap, len, origin)),
            (Enforcement::FixedWindow, _) => Self::Fixed(Fixed {
                origin,
                len,
                index: 0,
                count: 0,
            }),
            _ => Self::Sliding(Sliding::new(len)),
        }
    }

    /// Whether booking `amount` now keeps usage within `limit`.
    pub(crate) fn fits(&mut self, now: Instant, amount: u64, limit: u64) -> bool {
        match self {
            Self::Bucket(b) => b.fits(now, amount),
            _ => self.usage(now).saturating_add(amount) <= limit,
        }
    }

    /// Current usage (token bucket: capacity minus level, rounded up).
    pub(crate) fn usage(&mut self, now: Instant) -> u64 {
        match self {
            Self::Sliding(s) => {
                s.evict(now);
                s.sum
            }
            Self::Bucket(b) => b.usage(now),
            Self::Fixed(f) => {
                f.roll(now);
                f.count
            }
        }
    }

    /// Charges `amount` now.
    pub(crate) fn book(&mut self, now: Instant, amount: u64) -> Booking {
        match self {
            Self::Sliding(s) => Booking::Sliding(s.book(now, amount)),
            Self::Bucket(b) => {
                b.take(now, amount);
                Booking::Bucket
            }
            Self::Fixed(f) => {
                f.roll(now);
                f.count = f.count.saturating_add(amount);
                Booking::Fixed(f.index)
            }
        }
    }

    /// Reduces the charge of `booking` by up to `amount` (nothing when it already left the
    /// window).
    pub(crate) fn refund(&mut self, now: Instant, booking: Booking, amount: u64) {
        match (self, booking) {
            (Self::Sliding(s), Booking::Sliding(seq)) => s.refund(now, seq, amount),
            (Self::Bucket(b), _) => b.give(now, amount),
            (Self::Fixed(f), Booking::Fixed(index)) => {
                f.roll(now);
                if f.index == index {
                    f.count = f.count.saturating_sub(amount);
                }
            }
            _ => {}
        }
    }

    /// How long until `amount` fits under `limit` if nothing else is booked; `None` when it
    /// never can.
    pub(crate) fn retry_after(
        &mut self,
        now: Instant,
        amount: u64,
        limit: u64,
    ) -> Option<Duration> {
        if amount > limit {
            return None;
        }
        match self {
            Self::Sliding(s) => {
                s.evict(now);
                let excess = s.sum.saturating_add(amount).saturating_sub(limit);
                let mut freed = 0u64;
                for e in &s.entries {
                    freed = freed.saturating_add(e.amount);
                    if freed >= excess {
                        return Some(s.len.saturating_sub(now.saturating_duration_since(e.last)));
                    }
                }
                Some(Duration::ZERO)
            }
            Self::Bucket(b) => Some(b.time_to(now, amount)),
            Self::Fixed(f) => {
                f.roll(now);
                let elapsed = now.saturating_duration_since(f.origin);
                let next = f.len.as_nanos().saturating_mul(u128::from(f.index) + 1);
                let wait = next.saturating_sub(elapsed.as_nanos());
                Some(Duration::from_nanos(
                    u64::try_from(wait).unwrap_or(u64::MAX),
                ))
            }
        }
    }
}

/// Exact sliding sum over `(now - len, now]`, with bookings grouped into entries that span at
/// most `len / 1000`, so memory stays bounded whatever the request rate. An entry leaves the
/// window when its last booking does: usage is over-counted by at most one group, never under.
#[derive(Debug)]
pub(crate) struct Sliding {
    len: Duration,
    group: Duration,
    entries: VecDeque<Entry>,
    front_seq: u64,
    sum: u64,
}

#[derive(Debug)]
struct Entry {
    first: Instant,
    last: Instant,
    amount: u64,
}

impl Sliding {
    fn new(len: Duration) -> Self {
        Self {
            len,
            group: len.checked_div(1000).unwrap_or_default(),
            entries: VecDeque::new(),
            front_seq: 0,
            sum: 0,
        }
    }

    fn evict(&mut self, now: Instant) {
        while let Some(e) = self.entries.front() {
            if !expired(e.last, self.len, now) {
                break;
            }
            self.sum = self.sum.saturating_sub(e.amount);
            self.entries.pop_front();
            self.front_seq = self.front_seq.saturating_add(1);
        }
    }

    fn book(&mut self, now: Instant, amount: u64) -> u64 {
        self.evict(now);
        self.sum = self.sum.saturating_add(amount);
        let next_seq = self
            .front_seq
            .saturating_add(u64::try_from(self.entries.len()).unwrap_or(u64::MAX));
        if let Some(e) = self.entries.back_mut()
            && now >= e.last
            && now.saturating_duration_since(e.first) <= self.group
        {
            e.amount = e.amount.saturating_add(amount);
            e.last = now;
            return next_seq.saturating_sub(1);
        }
        self.entries.push_back(Entry {
            first: now,
            last: now,
            amount,
        });
        next_seq
    }

    fn refund(&mut self, now: Instant, seq: u64, amount: u64) {
        self.evict(now);
        let Some(index) = seq.checked_sub(self.front_seq) else {
            return;
        };
        let Some(e) = usize::try_from(index)
            .ok()
            .and_then(|i| self.entries.get_mut(i))
        else {
            return;
        };
        let cut = amount.min(e.amount);
        e.amount = e.amount.saturating_sub(cut);
        self.sum = self.sum.saturating_sub(cut);
    }
}

/// Token bucket in micro-tokens, so that continuous refill loses nothing visible.
#[derive(Debug)]
pub(crate) struct Bucket {
    cap: i128,
    level: i128,
    len: Duration,
    last: Instant,
}

const MICRO: i128 = 1_000_000;

/// `amount` in micro-tokens (exact: `u64::MAX × 10⁶` is far below `i128::MAX`).
fn micro(amount: u64) -> i128 {
    i128::from(amount).saturating_mul(MICRO)
}

impl Bucket {
    fn new(cap: u64, len: Duration, now: Instant) -> Self {
        let cap = micro(cap);
        Self {
            cap,
            level: cap,
            len,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        if elapsed.is_zero() || self.level >= self.cap {
            self.last = self.last.max(now);
            return;
        }
        self.last = now;
        let fraction = elapsed.as_secs_f64() / self.len.as_secs_f64();
        // `as` saturates for floats: a huge elapsed time simply fills the bucket.
        let add = (self.cap as f64 * fraction) as i128;
        self.level = self.level.saturating_add(add).min(self.cap);
    }

    fn fits(&mut self, now: Instant, amount: u64) -> bool {
        self.refill(now);
        self.level >= micro(amount)
    }

    fn usage(&mut self, now: Instant) -> u64 {
        self.refill(now);
        let used = self.cap.saturating_sub(self.level).max(0);
        u64::try_from(
            used.div_euclid(MICRO)
                .saturating_add(i128::from(used.rem_euclid(MICRO) > 0)),
        )
        .unwrap_or(u64::MAX)
    }

    fn take(&mut self, now: Instant, amount: u64) {
        self.refill(now);
        self.level = self.level.saturating_sub(micro(amount));
    }

    fn give(&mut self, now: Instant, amount: u64) {
        self.refill(now);
        self.level = self.level.saturating_add(micro(amount)).min(self.cap);
    }

    fn time_to(&mut self, now: Instant, amount: u64) -> Duration {
        self.refill(now);
        let deficit = micro(amount).saturating_sub(self.level);
        if deficit <= 0 || self.cap == 0 {
            return Duration::ZERO;
        }
        // deficit / cap of a window, rounded up to the nanosecond.
        let len = i128::try_from(self.len.as_nanos()).unwrap_or(i128::MAX);
        let nanos = deficit.checked_mul(len).map_or_else(
            || (deficit as f64 / self.cap as f64 * len as f64) as i128,
            |product| {
                let cap = self.cap;
                product
                    .div_euclid(cap)
                    .saturating_add(i128::from(product.rem_euclid(cap) > 0))
            },
        );
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// Counters that reset at every multiple of `len` since `origin`.
#[derive(Debug)]
pub(crate) struct Fixed {
    origin: Instant,
    len: Duration,
    index: u64,
    count: u64,
}

impl Fixed {
    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.origin).as_nanos();
        let index = u64::try_from(elapsed.checked_div(self.len.as_nanos()).unwrap_or(0))
            .unwrap_or(u64::MAX);
        if index != self.index {
            self.index = index;
            self.count = 0;
        }
    }
}

/// The quota dimension that refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Throttle {
    Requests,
    Tokens,
    TokensPerDay,
}

impl Throttle {
    /// Bedrock's message for this dimension.
    pub(crate) fn message(self) -> &'static str {
        match self {
            Self::Requests => "Too many requests, please wait before trying again.",
            Self::Tokens => "Too many tokens, please wait before trying again.",
            Self::TokensPerDay => "Too many tokens per day, please wait before trying again.",
        }
    }
}

/// What an admitted request holds until it settles.
#[derive(Debug)]
pub(crate) struct Reservation {
    reserved: u64,
    tokens: Booking,
    day: Booking,
    /// The booking in the account-wide day, when there is one.
    account: Option<Booking>,
}

/// The account-wide tokens per day, shared by every model's ledger. Locked after a model's
/// ledger, never before, so two admissions cannot deadlock.
#[derive(Debug)]
pub(crate) struct AccountDay {
    limit: u64,
    window: Window,
}

impl AccountDay {
    /// Current usage of the account's day.
    pub(crate) fn usage(&mut self, now: Instant) -> u64 {
        self.window.usage(now)
    }
}

/// The quota state and counters of one model.
#[derive(Debug)]
pub(crate) struct ModelLedger {
    quota: Quota,
    requests: Window,
    tokens: Window,
    day: Window,
    account: Option<Arc<Mutex<AccountDay>>>,
    pub(crate) counters: Counters,
    peak: WindowUsage,
}

impl ModelLedger {
    fn new(quota: Quota, enforcement: Enforcement, window: Duration, origin: Instant) -> Self {
        let day = window.saturating_mul(1440);
        Self {
            quota,
            requests: Window::new(enforcement, quota.requests, window, origin),
            tokens: Window::new(enforcement, quota.tokens, window, origin),
            day: Window::new(enforcement, quota.tokens_per_day, day, origin),
            account: None,
            counters: Counters::default(),
            peak: WindowUsage::default(),
        }
    }

    /// Admits a request that reserves `reservation` tokens, or says which limit refuses it (and
    /// when it would fit). A refused request is not charged.
    pub(crate) fn admit(
        &mut self,
        now: Instant,
        reservation: u64,
    ) -> Result<Reservation, (Throttle, Option<Duration>)> {
        let checks = [
            (Throttle::Requests, self.quota.requests, 1),
            (Throttle::Tokens, self.quota.tokens, reservation),
            (
                Throttle::TokensPerDay,
                self.quota.tokens_per_day,
                reservation,
            ),
        ];
        for (dim, limit, amount) in checks {
            let Some(limit) = limit else { continue };
            let window = match dim {
                Throttle::Requests => &mut self.requests,
                Throttle::Tokens => &mut self.tokens,
                Throttle::TokensPerDay => &mut self.day,
            };
            if !window.fits(now, amount, limit) {
                let wait = window.retry_after(now, amount, limit);
                match dim {
                    Throttle::Requests => bump(&mut self.counters.throttled_requests),
                    Throttle::Tokens => bump(&mut self.counters.throttled_tokens),
                    Throttle::TokensPerDay => bump(&mut self.counters.throttled_tokens_per_day),
                }
                return Err((dim, wait));
            }
        }
        let mut account = self.account.as_deref().map(lock);
        if let Some(a) = account.as_deref_mut() {
            // A limit of 0 refuses even a reservation of 0 (Bedrock refuses a 2-token call).
            if a.limit == 0 || !a.window.fits(now, reservation, a.limit) {
                let wait = a.window.retry_after(now, reservation, a.limit);
                bump(&mut self.counters.throttled_tokens_per_day);
                return Err((Throttle::TokensPerDay, wait.filter(|_| a.limit > 0)));
            }
        }
        self.requests.book(now, 1);
        let tokens = self.tokens.book(now, reservation);
        let day = self.day.book(now, reservation);
        let account = account.map(|mut a| a.window.book(now, reservation));
        self.counters.admitted = self.counters.admitted.saturating_add(1);
        self.counters.tokens_reserved = self.counters.tokens_reserved.saturating_add(reservation);
        self.track_peak(now);
        Ok(Reservation {
            reserved: reservation,
            tokens,
            day,
            account,
        })
    }

    /// Settles an admitted request: a refund reduces the admission-time charge, an overshoot is
    /// booked now.
    pub(crate) fn settle(&mut self, now: Instant, r: &Reservation, settled: u64, output: u64) {
        let mut account = self.account.as_deref().map(lock);
        if settled < r.reserved {
            let refund = r.reserved.saturating_sub(settled);
            self.tokens.refund(now, r.tokens, refund);
            self.day.refund(now, r.day, refund);
            if let (Some(a), Some(booking)) = (account.as_deref_mut(), r.account) {
                a.window.refund(now, booking, refund);
            }
        } else if settled > r.reserved {
            let extra = settled.saturating_sub(r.reserved);
            self.tokens.book(now, extra);
            self.day.book(now, extra);
            if let (Some(a), Some(_)) = (account.as_deref_mut(), r.account) {
                a.window.book(now, extra);
            }
            drop(account);
            self.track_peak(now);
        }
        self.counters.tokens_settled = self.counters.tokens_settled.saturating_add(settled);
        self.counters.output_tokens = self.counters.output_tokens.saturating_add(output);
        self.counters.settled = self.counters.settled.saturating_add(1);
    }

    fn track_peak(&mut self, now: Instant) {
        let usage = self.usage(now);
        self.peak.max_with(usage);
    }

    /// The tokens-per-window limit, if any.
    pub(crate) fn token_limit(&self) -> Option<u64> {
        self.quota.tokens
    }

    /// Current usage of the three windows.
    pub(crate) fn usage(&mut self, now: Instant) -> WindowUsage {
        WindowUsage {
            requests: self.requests.usage(now),
            tokens: self.tokens.usage(now),
            tokens_per_day: self.day.usage(now),
        }
    }
}

/// Every model's ledger, created on first use with the model's quota.
#[derive(Debug)]
pub(crate) struct Ledgers {
    enforcement: Enforcement,
    window: Duration,
    origin: Instant,
    default_quota: Quota,
    model_quotas: HashMap<String, Quota>,
    map: RwLock<HashMap<String, Arc<Mutex<ModelLedger>>>>,
    /// The most model ids with a ledger ([`MAX_MODELS`]).
    max_models: usize,
    /// The account-wide day, shared by every ledger.
    account: Option<Arc<Mutex<AccountDay>>>,
}

/// The most distinct model ids the emulator keeps a ledger for. Without strict model checking
/// any well-formed id is served, so without a bound a client sending random ids would grow the
/// ledgers (and the stats) without end; past the bound, ids without a ledger are refused as
/// unknown ids are. Configured ids (a quota or model info) always have room.
pub(crate) const MAX_MODELS: usize = 10_000;

impl Ledgers {
    pub(crate) fn new(
        enforcement: Enforcement,
        window: Duration,
        default_quota: Quota,
        model_quotas: HashMap<String, Quota>,
    ) -> Self {
        Self {
            enforcement,
            window,
            origin: Instant::now(),
            default_quota,
            model_quotas,
            map: RwLock::new(HashMap::new()),
            max_models: MAX_MODELS,
            account: None,
        }
    }

    /// The same ledgers with an account-wide tokens-per-day `limit` shared by every model.
    pub(crate) fn with_account_day(mut self, limit: u64) -> Self {
        let day = self.window.saturating_mul(1440);
        // A bucket needs a capacity above 0; a limit of 0 refuses before the window is read.
        let window = Window::new(self.enforcement, Some(limit.max(1)), day, self.origin);
        self.account = Some(Arc::new(Mutex::new(AccountDay { limit, window })));
        self
    }

    /// The account-wide day's usage, if there is one.
    pub(crate) fn account_usage(&self) -> Option<u64> {
        self.account
            .as_deref()
            .map(|a| lock(a).usage(Instant::now()))
    }

    /// The ledger of `model_id`, created if needed.
    pub(crate) fn get(&self, model_id: &str) -> Arc<Mutex<ModelLedger>> {
        if let Some(l) = self
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(model_id)
        {
            return Arc::clone(l);
        }
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        let ledger = map.entry(model_id.to_owned()).or_insert_with(|| {
            // bedrock-mantle's ledgers: their own quotas only (unlimited unless configured),
            // and no share of the runtime's account-wide day (mantle keeps its own).
            let mantle = model_id.starts_with(super::mantle::PREFIX);
            let quota = self
                .model_quotas
                .get(model_id)
                .copied()
                .unwrap_or(if mantle {
                    Quota::unlimited()
                } else {
                    self.default_quota
                });
            let mut ledger = ModelLedger::new(quota, self.enforcement, self.window, self.origin);
            if !mantle {
                ledger.account = self.account.clone();
            }
            Arc::new(Mutex::new(ledger))
        });
        Arc::clone(ledger)
    }

    /// Whether a quota is configured for exactly this id.
    /// Whether a request for `model_id` may use a ledger: it has one, or there is room for one.
    pub(crate) fn has_room_for(&self, model_id: &str) -> bool {
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        map.len() < self.max_models || map.contains_key(model_id)
    }

    pub(crate) fn has_quota(&self, model_id: &str) -> bool {
        self.model_quotas.contains_key(model_id)
    }

    /// A snapshot of every counter and window.
    pub(crate) fn snapshot(&self) -> Stats {
        let now = Instant::now();
        let ledgers: Vec<(String, Arc<Mutex<ModelLedger>>)> = self
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect();
        let mut stats = Stats::default();
        for (id, ledger) in ledgers {
            let mut l = lock(&ledger);
            let model = ModelStats {
                counters: l.counters,
                window: l.usage(now),
                peak_window: l.peak,
            };
            drop(l);
            // `Counters`' `AddAssign` saturates, field by field.
            #[allow(clippy::arithmetic_side_effects)]
            {
                stats.totals += model.counters;
            }
            stats.models.insert(id, model);
        }
        stats.account_tokens_per_day = self.account_usage();
        stats
    }

    /// Zeroes counters and peaks (the peaks restart from the current usage). Window state is
    /// kept: resetting statistics must not hand out quota.
    pub(crate) fn reset(&self) {
        let now = Instant::now();
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        for ledger in map.values() {
            let mut l = lock(ledger);
            l.counters = Counters::default();
            l.peak = l.usage(now);
        }
    }
}

/// An admitted request's claim on its model's quota. Settles exactly once: explicitly with
/// [`Admission::settle`], or on drop (client gone) with the amount last set by
/// [`Admission::set_on_drop`].
#[derive(Debug)]
pub(crate) struct Admission {
    ledger: Arc<Mutex<ModelLedger>>,
    reservation: Reservation,
    on_drop: (u64, u64),
    done: bool,
}

impl Admission {
    pub(crate) fn new(
        ledger: Arc<Mutex<ModelLedger>>,
        reservation: Reservation,
        on_drop: u64,
    ) -> Self {
        Self {
            ledger,
            reservation,
            on_drop: (on_drop, 0),
            done: false,
        }
    }

    /// What to settle if the response is abandoned from now on: `(quota tokens, output tokens)`.
    pub(crate) fn set_on_drop(&mut self, settled: u64, output: u64) {
        self.on_drop = (settled, output);
    }

    /// Settles now.
    pub(crate) fn settle(mut self, settled: u64, output: u64) {
        self.finish(settled, output);
    }

    fn finish(&mut self, settled: u64, output: u64) {
        if self.done {
            return;
        }
        self.done = true;
        lock(&self.ledger).settle(Instant::now(), &self.reservation, settled, output);
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let (settled, output) = self.on_drop;
        self.finish(settled, output);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(e: Enforcement, q: Quota) -> ModelLedger {
        ModelLedger::new(q, e, Duration::from_secs(1), Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn sliding_window_slides() {
        let mut l = ledger(Enforcement::SlidingWindow, Quota::tokens(100));
        let a = l.admit(Instant::now(), 60).unwrap();
        tokio::time::advance(Duration::from_millis(600)).await;
        assert_eq!(l.admit(Instant::now(), 50).unwrap_err().0, Throttle::Tokens);
        let _b = l.admit(Instant::now(), 40).unwrap();
        // The first booking leaves at 1 s: 40 remain.
        tokio::time::advance(Duration::from_millis(400)).await;
        assert_eq!(l.usage(Instant::now()).tokens, 40);
        // A refund of a booking that already left changes nothing.
        l.settle(Instant::now(), &a, 10, 10);
        assert_eq!(l.usage(Instant::now()).tokens, 40);
        assert_eq!(l.peak.tokens, 100);
    }

    #[tokio::test(start_paused = true)]
    async fn refund_and_overshoot() {
        let mut l = ledger(Enforcement::SlidingWindow, Quota::tokens(1000));
        let a = l.admit(Instant::now(), 500).unwrap();
        l.settle(Instant::now(), &a, 200, 0);
        assert_eq!(l.usage(Instant::now()).tokens, 200);
        let b = l.admit(Instant::now(), 100).unwrap();
        l.settle(Instant::now(), &b, 900, 0);
        assert_eq!(l.usage(Instant::now()).tokens, 1100);
        assert_eq!(l.admit(Instant::now(), 1).unwrap_err().0, Throttle::Tokens);
        assert_eq!(l.peak.tokens, 1100);
    }

    #[tokio::test(start_paused = true)]
    async fn token_bucket_refills_and_goes_negative() {
        let mut l = ledger(Enforcement::TokenBucket, Quota::tokens(1000));
        let a = l.admit(Instant::now(), 1000).unwrap();
        assert!(l.admit(Instant::now(), 1).is_err());
        l.settle(Instant::now(), &a, 1500, 100);
        assert_eq!(l.usage(Instant::now()).tokens, 1500);
        // Refill 1000 per second: after 0.5 s the level is 0, after 1 s it is 500.
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(l.admit(Instant::now(), 1).is_err());
        let (_, wait) = l.admit(Instant::now(), 500).unwrap_err();
        assert_eq!(wait, Some(Duration::from_millis(500)));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(l.admit(Instant::now(), 500).is_ok());
        assert_eq!(l.peak.tokens, 1500);
    }

    #[tokio::test(start_paused = true)]
    async fn fixed_window_resets_on_boundaries() {
        let mut l = ledger(Enforcement::FixedWindow, Quota::requests(2));
        tokio::time::advance(Duration::from_millis(900)).await;
        assert!(l.admit(Instant::now(), 0).is_ok());
        assert!(l.admit(Instant::now(), 0).is_ok());
        let (dim, wait) = l.admit(Instant::now(), 0).unwrap_err();
        assert_eq!(dim, Throttle::Requests);
        assert_eq!(wait, Some(Duration::from_millis(100)));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(l.admit(Instant::now(), 0).is_ok());
        assert_eq!(l.counters.throttled_requests, 1);
        assert_eq!(l.counters.admitted, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn day_window_is_1440_windows() {
        let mut l = ledger(
            Enforcement::SlidingWindow,
            Quota::unlimited().with_tokens_per_day(100),
        );
        assert!(l.admit(Instant::now(), 100).is_ok());
        tokio::time::advance(Duration::from_secs(1439)).await;
        assert_eq!(
            l.admit(Instant::now(), 1).unwrap_err().0,
            Throttle::TokensPerDay
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(l.admit(Instant::now(), 100).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_admission_settles_its_last_known_amount() {
        let ledgers = Ledgers::new(
            Enforcement::SlidingWindow,
            Duration::from_secs(1),
            Quota::tokens(1_000),
            HashMap::new(),
        );
        let ledger = ledgers.get("m");
        let r = lock(&ledger).admit(Instant::now(), 500).unwrap();
        let mut admission = Admission::new(Arc::clone(&ledger), r, 10);
        admission.set_on_drop(60, 10);
        drop(admission);
        let stats = ledgers.snapshot().model("m");
        assert_eq!(stats.counters.settled, 1);
        assert_eq!(stats.counters.tokens_settled, 60);
        assert_eq!(stats.counters.output_tokens, 10);
        assert_eq!(stats.window.tokens, 60, "the unused 440 went back");

        // Settled explicitly: the drop does not settle twice.
        let r = lock(&ledger).admit(Instant::now(), 100).unwrap();
        Admission::new(Arc::clone(&ledger), r, 1).settle(30, 0);
        let stats = ledgers.snapshot().model("m");
        assert_eq!(stats.counters.settled, 2);
        assert_eq!(stats.window.tokens, 90);
    }

    #[tokio::test(start_paused = true)]
    async fn sliding_groups_bound_memory() {
        let mut s = Sliding::new(Duration::from_secs(1));
        for _ in 0..10_000 {
            s.book(Instant::now(), 1);
            tokio::time::advance(Duration::from_micros(100)).await;
        }
        // 1 s of bookings every 0.1 ms, grouped by 1 ms.
        assert!(s.entries.len() <= 1001, "{}", s.entries.len());
        assert_eq!(s.sum, 10_000);
    }

    #[test]
    fn the_number_of_model_ledgers_is_bounded() {
        let mut ledgers = Ledgers::new(
            Enforcement::SlidingWindow,
            Duration::from_secs(60),
            Quota::unlimited(),
            HashMap::new(),
        );
        ledgers.max_models = 2;
        assert!(ledgers.has_room_for("a"));
        ledgers.get("a");
        ledgers.get("b");
        assert!(ledgers.has_room_for("a") && ledgers.has_room_for("b"));
        assert!(!ledgers.has_room_for("c"));
    }
}
