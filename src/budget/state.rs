//! The state of one key: its window ledger, its waiter queue and its AIMD state, behind one small
//! mutex. Nothing here is generic over the key type, so permits can hold it type-erased.
//!
//! Time inside a key is a `u64` count of nanoseconds since the budget's epoch (see
//! [`Settings::offset`]): ledger entries are 16 bytes, expiry is one integer comparison, and the
//! conversion back to [`Instant`] is exact, so nothing is rounded.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;
use std::time::Duration;

use tokio::time::Instant;

use super::error::AdmissionError;
use super::{Aimd, KeyStats};

/// A key's waiter queue and outcome table keep at most this capacity once empty.
const KEEP_CAPACITY: usize = 64;

/// Settings shared by every key of a budget.
#[derive(Debug)]
pub(crate) struct Settings {
    /// The window length W.
    pub(crate) window: Duration,
    /// W in nanoseconds, at least 1.
    window_nanos: u64,
    /// How long an entry counts, in nanoseconds: W + the expiry margin.
    span_nanos: u64,
    /// The feedback policy, if any.
    pub(crate) aimd: Option<Aimd>,
    /// The origin of the keys' time offsets.
    epoch: Instant,
}

impl Settings {
    /// `window + margin` must fit in a `u64` of nanoseconds (the builder refuses more than a
    /// year).
    pub(crate) fn new(window: Duration, margin: Duration, aimd: Option<Aimd>) -> Self {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Settings {
            window,
            window_nanos: nanos(window).max(1),
            span_nanos: nanos(window.saturating_add(margin)),
            aimd,
            epoch: Instant::now(),
        }
    }

    /// `t` as nanoseconds since the epoch. An instant before the epoch (a clock from another
    /// runtime) maps to the epoch itself: later than the truth, so its entries count longer,
    /// never shorter.
    #[inline]
    pub(crate) fn offset(&self, t: Instant) -> u64 {
        let d = t.saturating_duration_since(self.epoch);
        d.as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(d.subsec_nanos()))
    }

    /// The instant of an offset; exact inverse of [`offset`](Self::offset) after the epoch.
    pub(crate) fn instant(&self, offset: u64) -> Instant {
        self.epoch + Duration::from_nanos(offset)
    }
}

/// The shared, reference-counted state of one key.
///
/// Who holds a reference: the key map (while the key is live), every outstanding [`Permit`],
/// every queued [`Acquire`] future, and transiently an admission or a [`stats`](Self::stats) call
/// in progress. There is no separate permit counter: [`try_evict`](Self::try_evict) evicts only a
/// state the map alone holds, and [`stats`](Self::stats) derives the outstanding permits from the
/// reference count. That saves two atomic read-modify-writes per admission.
///
/// [`Permit`]: super::Permit
/// [`Acquire`]: super::Acquire
#[derive(Debug)]
pub(crate) struct KeyShared {
    state: Mutex<KeyState>,
    settings: Arc<Settings>,
}

/// One charge in the window: an offset (see [`Settings::offset`]) and an amount. Charges at the
/// same instant share one entry.
#[derive(Debug, Clone, Copy)]
struct Entry {
    at: u64,
    amount: u64,
}

/// The charges of the window, in time order.
#[derive(Debug, Default)]
struct Ledger {
    entries: VecDeque<Entry>,
    /// The sequence number of `entries[0]`.
    first_seq: u64,
    /// The sum of the entries' amounts (u128: debt is not bounded by the limit).
    used: u128,
}

/// One waiting request. Kept small: a waiter costs this slot plus its future. A slot is live
/// while it has a waker; cancelled or failed, it is a tombstone until it reaches the front or is
/// compacted.
#[derive(Debug)]
struct Slot {
    ticket: u64,
    cost: u64,
    waker: Option<Waker>,
}

impl Slot {
    fn live(&self) -> bool {
        self.waker.is_some()
    }
}

/// What a waiter finds when it looks again.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Admitted: the entry's sequence number and the admission offset.
    Granted { seq: u64, at: u64 },
    /// Refused while waiting (the limit fell below its cost).
    Failed(AdmissionError),
}

/// The effective limit lowered by feedback: `base` at offset `since`, recovering linearly.
#[derive(Debug, Clone, Copy)]
struct Lowered {
    base: u64,
    since: u64,
}

/// When the effective limit reaches an amount.
enum Reach {
    Now,
    At(u64),
    Never,
}

/// The waiting side of a key, allocated the first time a request waits on it: a key that never
/// waits does not pay for it.
#[derive(Debug)]
struct Waiting {
    /// Waiters in arrival order (ascending tickets); the front is always live.
    queue: VecDeque<Slot>,
    tombstones: usize,
    next_ticket: u64,
    /// The head that was last told it is the head (so it arms its timer).
    notified_head: u64,
    /// Results for waiters that were granted or failed and have not looked yet.
    outcomes: HashMap<u64, Outcome>,
}

impl Waiting {
    fn new() -> Self {
        Waiting {
            queue: VecDeque::new(),
            tombstones: 0,
            next_ticket: 0,
            notified_head: u64::MAX,
            outcomes: HashMap::new(),
        }
    }

    fn live_waiters(&self) -> usize {
        self.queue.len() - self.tombstones
    }

    fn find(&self, ticket: u64) -> Option<usize> {
        self.queue
            .binary_search_by_key(&ticket, |s| s.ticket)
            .ok()
            .filter(|&idx| self.queue[idx].live())
    }

    /// Pops tombstones off the front, and compacts when they are most of the queue.
    fn clean(&mut self) {
        while self.queue.front().is_some_and(|s| !s.live()) {
            self.queue.pop_front();
            self.tombstones -= 1;
        }
        if self.tombstones > 32 && self.tombstones * 2 > self.queue.len() {
            self.queue.retain(Slot::live);
            self.tombstones = 0;
        }
        if self.queue.is_empty() && self.queue.capacity() > KEEP_CAPACITY {
            // A burst of waiters is over: give its memory back rather than keep it until the key
            // is evicted.
            self.queue = VecDeque::new();
        }
    }
}

#[derive(Debug)]
pub(crate) struct KeyState {
    /// The configured limit.
    limit: u64,
    lowered: Option<Lowered>,
    ledger: Ledger,
    waiting: Option<Box<Waiting>>,
    /// The limit was set at run time: the key is never evicted, so the setting is not lost.
    pinned: bool,
    /// Set when the key is removed from the map: whoever finds it looks the key up again.
    pub(crate) evicted: bool,
}

/// What a queued waiter should do next.
#[derive(Debug)]
pub(crate) enum WaiterPoll {
    /// It has its result.
    Done(Outcome),
    /// It is the head: it fits at this instant (absent the unexpected).
    Head(Instant),
    /// It waits behind others: it is woken when it becomes the head.
    Behind,
}

/// What a new arrival gets.
#[derive(Debug)]
pub(crate) enum Begin {
    /// Admitted now: sequence number and offset of the entry.
    Admitted(u64, u64),
    /// Refused.
    Refused(AdmissionError),
    /// Queued with this ticket.
    Queued(u64),
}

impl KeyShared {
    pub(crate) fn new(limit: u64, settings: Arc<Settings>) -> Self {
        KeyShared {
            state: Mutex::new(KeyState {
                limit,
                lowered: None,
                ledger: Ledger::default(),
                waiting: None,
                pinned: false,
                evicted: false,
            }),
            settings,
        }
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Locks the state. A panic while holding the lock cannot leave the ledger half-updated in a
    /// way that breaks the window guarantee (every update is a single push, pop or subtraction),
    /// so a poisoned lock is used as is.
    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, KeyState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An arrival at offset `now`: admit now, refuse, or queue.
    #[inline]
    pub(crate) fn begin(
        &self,
        state: &mut KeyState,
        cost: u64,
        now: u64,
        waker: Option<&Waker>,
        max_wait: Option<Duration>,
        max_queue: Option<usize>,
    ) -> Begin {
        if cost > state.limit {
            return Begin::Refused(AdmissionError::CostAboveLimit {
                cost,
                limit: state.limit,
            });
        }
        state.ledger.expire(self.settings.span_nanos, now);
        if state.has_waiters() {
            // Those ahead go first; some may fit now.
            self.drain(state, now, false);
        }
        if !state.has_waiters()
            && state.ledger.used + u128::from(cost) <= u128::from(state.effective(self, now))
        {
            let (seq, at) = state.ledger.push(now, cost);
            return Begin::Admitted(seq, at);
        }
        self.begin_slow(state, cost, now, waker, max_wait, max_queue)
    }

    /// An arrival that does not fit now.
    #[cold]
    fn begin_slow(
        &self,
        state: &mut KeyState,
        cost: u64,
        now: u64,
        waker: Option<&Waker>,
        max_wait: Option<Duration>,
        max_queue: Option<usize>,
    ) -> Begin {
        let Some(waker) = waker else {
            // try_acquire: never waits.
            let would_wait = state.wait_behind_all(self, now, cost);
            return Begin::Refused(AdmissionError::WaitTooLong {
                would_wait,
                max_wait: Duration::ZERO,
            });
        };
        let depth = state.waiting.as_ref().map_or(0, |w| w.live_waiters());
        if let Some(max) = max_queue
            && depth >= max
        {
            let would_wait = Some(state.wait_behind_all(self, now, cost));
            return Begin::Refused(AdmissionError::QueueFull { depth, would_wait });
        }
        if let Some(max_wait) = max_wait {
            let would_wait = state.wait_behind_all(self, now, cost);
            if would_wait > max_wait {
                return Begin::Refused(AdmissionError::WaitTooLong {
                    would_wait,
                    max_wait,
                });
            }
        }
        let used = state.ledger.used;
        let waiting = state
            .waiting
            .get_or_insert_with(|| Box::new(Waiting::new()));
        let ticket = waiting.next_ticket;
        waiting.next_ticket += 1;
        waiting.queue.push_back(Slot {
            ticket,
            cost,
            waker: Some(waker.clone()),
        });
        if waiting.queue.len() == 1 {
            waiting.notified_head = ticket;
        }
        tracing::debug!(cost, depth, used = %used, "admission waits for capacity");
        Begin::Queued(ticket)
    }

    /// A queued waiter looks at its state.
    pub(crate) fn poll_waiter(&self, ticket: u64, now: Instant, waker: &Waker) -> WaiterPoll {
        let now = self.settings.offset(now);
        let mut guard = self.lock();
        let state = &mut *guard;
        if let Some(outcome) = state.take_outcome(ticket) {
            return WaiterPoll::Done(outcome);
        }
        self.drain(state, now, false);
        if let Some(outcome) = state.take_outcome(ticket) {
            return WaiterPoll::Done(outcome);
        }
        let Some((idx, waiting)) = state
            .waiting
            .as_deref_mut()
            .and_then(|w| Some((w.find(ticket)?, w)))
        else {
            // Cannot happen: a ticket is either queued or has an outcome until it is collected.
            return WaiterPoll::Done(Outcome::Failed(AdmissionError::QueueFull {
                depth: state.waiting.as_ref().map_or(0, |w| w.live_waiters()),
                would_wait: None,
            }));
        };
        let slot = &mut waiting.queue[idx];
        match &slot.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => slot.waker = Some(waker.clone()),
        }
        if idx != 0 {
            return WaiterPoll::Behind;
        }
        let cost = slot.cost;
        waiting.notified_head = ticket;
        match state.schedule(self, now, std::iter::empty(), cost) {
            Some(at) => WaiterPoll::Head(self.settings.instant(at)),
            None => {
                // Cannot happen: costs above the limit are failed when the limit changes.
                let limit = state.limit;
                state.remove_waiter(self, ticket, now);
                WaiterPoll::Done(Outcome::Failed(AdmissionError::CostAboveLimit {
                    cost,
                    limit,
                }))
            }
        }
    }

    /// A waiter whose deadline passed gives up, unless it was admitted meanwhile. Returns the
    /// outcome if it has one, else the instant it would have been admitted (if any).
    pub(crate) fn give_up(&self, ticket: u64, now: Instant) -> Result<Outcome, Option<Instant>> {
        let now = self.settings.offset(now);
        let mut guard = self.lock();
        let state = &mut *guard;
        self.drain(state, now, false);
        if let Some(outcome) = state.take_outcome(ticket) {
            return Ok(outcome);
        }
        let at = state.waiting.as_deref().and_then(|w| {
            let idx = w.find(ticket)?;
            let cost = w.queue[idx].cost;
            let ahead = w
                .queue
                .iter()
                .take(idx)
                .filter(|s| s.live())
                .map(|s| s.cost);
            state.schedule(self, now, ahead, cost)
        });
        state.remove_waiter(self, ticket, now);
        Err(at.map(|at| self.settings.instant(at)))
    }

    /// A waiter is dropped: it leaves no trace. A grant it never collected is refunded whole.
    pub(crate) fn cancel(&self, ticket: u64, reserved: u64) {
        let now = self.settings.offset(Instant::now());
        let mut guard = self.lock();
        let state = &mut *guard;
        match state.take_outcome(ticket) {
            Some(Outcome::Granted { seq, .. }) => {
                state.ledger.refund(seq, reserved);
                self.drain(state, now, true);
            }
            Some(Outcome::Failed(_)) => {}
            None => state.remove_waiter(self, ticket, now),
        }
    }

    /// Settles a permit under one lock: `refund` comes off its admission entry, `debt` is a new
    /// entry at the settle instant. Waiters are admitted only after both, so a refund never lets
    /// in a request that the debt booked with it would have kept out. The clock is read only if
    /// there is debt to date or someone waits (the refund may let them in).
    pub(crate) fn settle(&self, seq: u64, refund: u64, debt: u64) {
        let mut guard = self.lock();
        let state = &mut *guard;
        if refund > 0 {
            state.ledger.refund(seq, refund);
        }
        let drain = refund > 0 && state.has_waiters();
        if debt == 0 && !drain {
            return;
        }
        let now = self.settings.offset(Instant::now());
        if debt > 0 {
            state.ledger.expire(self.settings.span_nanos, now);
            state.ledger.push(now, debt);
        }
        if drain {
            self.drain(state, now, true);
        }
    }

    /// Feedback through the permit of a request admitted at offset `admitted_at` that reserved
    /// `reserved`: the state is live (a permit is outstanding, so it is not evicted).
    pub(crate) fn throttled_now(&self, admitted_at: u64, reserved: u64) {
        let now = Instant::now();
        let mut state = self.lock();
        self.throttled(&mut state, now, Some((admitted_at, reserved)));
    }

    /// Feedback: the effective limit goes down, and the window is exhausted up to it.
    ///
    /// With the throttled request's permit (`admitted_at` as an offset, `reserved`):
    /// - a request admitted before the last decrease does not lower the limit again: it was sent
    ///   under the old limit, and its throttle is an echo of the one that caused the decrease
    ///   (requests in flight together are throttled together). One decrease per congestion
    ///   event, as TCP does once per round trip;
    /// - its own reservation is counted as gone when filling: the server did not book it, and
    ///   its settlement will refund it, which must not reopen the window it just exhausted.
    pub(crate) fn throttled(&self, state: &mut KeyState, now: Instant, permit: Option<(u64, u64)>) {
        let now = self.settings.offset(now);
        state.ledger.expire(self.settings.span_nanos, now);
        let before = state.effective(self, now);
        let echo = matches!(
            (permit, state.lowered),
            (Some((admitted, _)), Some(lowered)) if admitted < lowered.since
        );
        if let Some(aimd) = self.settings.aimd
            && !echo
        {
            let floor = aimd.floor_amount(state.limit);
            let lowered = ((before as f64 * aimd.decrease) as u64)
                .max(floor)
                .min(state.limit);
            state.lowered = Some(Lowered {
                base: lowered,
                since: now,
            });
        }
        let after = state.effective(self, now);
        let own = permit.map_or(0, |(_, reserved)| u128::from(reserved));
        let fill = u128::from(after).saturating_sub(state.ledger.used.saturating_sub(own));
        if fill > 0 {
            state.ledger.push(now, fill as u64);
        }
        tracing::debug!(
            limit = state.limit,
            effective_before = before,
            effective_after = after,
            synthetic = %fill,
            "throttle feedback: window exhausted, effective limit lowered"
        );
    }

    /// Changes the configured limit; waiters whose cost no longer fits at all fail.
    pub(crate) fn set_limit(&self, state: &mut KeyState, limit: u64, now: Instant) {
        let now = self.settings.offset(now);
        let old = state.limit;
        state.limit = limit;
        state.pinned = true;
        if limit < old
            && let Some(waiting) = state.waiting.as_deref_mut()
        {
            let mut failed = 0;
            for slot in waiting.queue.iter_mut().filter(|s| s.cost > limit) {
                if let Some(w) = slot.waker.take() {
                    failed += 1;
                    let error = AdmissionError::CostAboveLimit {
                        cost: slot.cost,
                        limit,
                    };
                    waiting.outcomes.insert(slot.ticket, Outcome::Failed(error));
                    w.wake();
                }
            }
            if failed > 0 {
                waiting.tombstones += failed;
                waiting.clean();
            }
        }
        tracing::debug!(old, new = limit, "limit changed");
        self.drain(state, now, true);
    }

    /// A snapshot of the key. `this` must be a reference of the caller's own (a clone taken from
    /// the map), and the state must be live: the map and the caller account for two references.
    pub(crate) fn stats(this: &Arc<Self>, state: &mut KeyState, now: Instant) -> KeyStats {
        let now = this.settings.offset(now);
        state.ledger.expire(this.settings.span_nanos, now);
        let effective_limit = state.effective(this, now);
        // A waiter granted but not yet polled holds its permit-to-be: it counts as outstanding.
        let (waiters, holding) = state.waiting.as_ref().map_or((0, 0), |w| {
            let failed = w
                .outcomes
                .values()
                .filter(|o| matches!(o, Outcome::Failed(_)))
                .count();
            (w.live_waiters(), w.live_waiters() + failed)
        });
        KeyStats {
            used: u64::try_from(state.ledger.used).unwrap_or(u64::MAX),
            limit: state.limit,
            effective_limit,
            waiters,
            // Every reference but the map's, the caller's and the waiting futures' is a permit.
            outstanding: Arc::strong_count(this).saturating_sub(2 + holding),
        }
    }

    /// Whether the key can be forgotten: marks it evicted if so. `this` must be the map's own
    /// reference, not a clone.
    pub(crate) fn try_evict(this: &Arc<Self>, now: Instant) -> bool {
        let now = this.settings.offset(now);
        let mut guard = this.lock();
        let state = &mut *guard;
        if state.evicted {
            return true;
        }
        state.ledger.expire(this.settings.span_nanos, now);
        let effective = state.effective(this, now);
        // Under the lock, the count cannot rise above 1 by a permit or a waiter: both are made
        // under this lock, from a reference cloned out of the map. A clone taken but not yet
        // locked raises the count (the key is then kept) or finds the key evicted and retries.
        let idle = state.ledger.entries.is_empty()
            && state
                .waiting
                .as_ref()
                .is_none_or(|w| w.queue.is_empty() && w.outcomes.is_empty())
            && !state.pinned
            && effective == state.limit
            && Arc::strong_count(this) == 1;
        if idle {
            state.evicted = true;
        }
        idle
    }

    /// Expires entries and admits queued waiters that fit, in order. Wakes the new head so it
    /// arms its timer; with `notify_head`, wakes the head even if it was told before (capacity
    /// came back earlier than its timer).
    fn drain(&self, state: &mut KeyState, now: u64, notify_head: bool) {
        state.ledger.expire(self.settings.span_nanos, now);
        let effective = state.effective(self, now);
        let KeyState {
            ledger, waiting, ..
        } = state;
        let Some(waiting) = waiting.as_deref_mut() else {
            return;
        };
        while let Some(head) = waiting.queue.front_mut() {
            if ledger.used + u128::from(head.cost) <= u128::from(effective) {
                let (seq, at) = ledger.push(now, head.cost);
                let ticket = head.ticket;
                let waker = head.waker.take();
                waiting.tombstones += 1;
                waiting
                    .outcomes
                    .insert(ticket, Outcome::Granted { seq, at });
                if let Some(w) = waker {
                    w.wake();
                }
                waiting.clean();
            } else {
                let ticket = head.ticket;
                if notify_head || ticket != waiting.notified_head {
                    waiting.notified_head = ticket;
                    if let Some(w) = &head.waker {
                        w.wake_by_ref();
                    }
                }
                break;
            }
        }
    }
}

impl Ledger {
    /// Books a charge at offset `at`; returns the entry's sequence number and offset. Entries
    /// stay in time order even if two callers read the clock in the other order: a charge never
    /// goes before the last entry, it joins it (a later instant: it counts longer, never shorter).
    #[inline]
    fn push(&mut self, at: u64, amount: u64) -> (u64, u64) {
        self.used += u128::from(amount);
        let len = self.entries.len() as u64;
        if let Some(last) = self.entries.back_mut()
            && last.at >= at
            && let Some(sum) = last.amount.checked_add(amount)
        {
            last.amount = sum;
            return (self.first_seq + len - 1, last.at);
        }
        let at = self.entries.back().map_or(at, |last| at.max(last.at));
        let seq = self.first_seq + len;
        if self.entries.capacity() == 0 {
            // A key used once (most keys, before they go idle) holds one 16-byte entry, not the
            // four a first push would allocate.
            self.entries.reserve_exact(1);
        }
        self.entries.push_back(Entry { at, amount });
        (seq, at)
    }

    /// Drops the entries that no longer count at `now`: those with `at + span <= now`.
    #[inline]
    fn expire(&mut self, span: u64, now: u64) {
        let Some(cutoff) = now.checked_sub(span) else {
            return;
        };
        while let Some(front) = self.entries.front() {
            if front.at > cutoff {
                break;
            }
            self.used -= u128::from(front.amount);
            self.entries.pop_front();
            self.first_seq += 1;
        }
    }

    /// Gives back `amount` of the entry `seq`. Several permits may share an entry (charges at one
    /// instant are merged), but each refunds at most its own reservation, so the entry never
    /// goes below the charges that remain.
    fn refund(&mut self, seq: u64, amount: u64) {
        if seq < self.first_seq {
            return; // Already expired: the charge no longer counts anyway.
        }
        if let Some(entry) = self.entries.get_mut((seq - self.first_seq) as usize) {
            let amount = amount.min(entry.amount);
            entry.amount -= amount;
            self.used -= u128::from(amount);
        }
    }
}

impl KeyState {
    #[inline]
    fn has_waiters(&self) -> bool {
        self.waiting.as_ref().is_some_and(|w| !w.queue.is_empty())
    }

    fn take_outcome(&mut self, ticket: u64) -> Option<Outcome> {
        let outcomes = &mut self.waiting.as_mut()?.outcomes;
        let outcome = outcomes.remove(&ticket);
        if outcomes.is_empty() && outcomes.capacity() > KEEP_CAPACITY {
            *outcomes = HashMap::new();
        }
        outcome
    }

    /// The effective limit at offset `now`, forgetting a lowering that has fully recovered.
    #[inline]
    fn effective(&mut self, key: &KeyShared, now: u64) -> u64 {
        if self.lowered.is_none() {
            return self.limit;
        }
        let effective = self.effective_at(key, now);
        if effective >= self.limit {
            self.lowered = None;
        }
        effective
    }

    fn effective_at(&self, key: &KeyShared, t: u64) -> u64 {
        let (Some(lowered), Some(aimd)) = (self.lowered, key.settings.aimd) else {
            return self.limit;
        };
        let elapsed = u128::from(t.saturating_sub(lowered.since));
        let per_window = u128::from(aimd.recover_amount(self.limit));
        let recovered = per_window.saturating_mul(elapsed) / u128::from(key.settings.window_nanos);
        let effective = u128::from(lowered.base).saturating_add(recovered);
        effective.min(u128::from(self.limit)) as u64
    }

    /// The first offset at which the effective limit is at least `amount`.
    fn reach(&self, key: &KeyShared, amount: u128) -> Reach {
        if amount > u128::from(self.limit) {
            return Reach::Never;
        }
        let (Some(lowered), Some(aimd)) = (self.lowered, key.settings.aimd) else {
            return Reach::Now;
        };
        if amount <= u128::from(lowered.base) {
            return Reach::Now;
        }
        let missing = amount - u128::from(lowered.base);
        let per_window = u128::from(aimd.recover_amount(self.limit));
        let window = u128::from(key.settings.window_nanos);
        let nanos = (missing * window).div_ceil(per_window);
        let nanos = u64::try_from(nanos).unwrap_or(u64::MAX);
        Reach::At(lowered.since.saturating_add(nanos))
    }

    /// When (an offset) a request of `cost` would be admitted behind waiters costing `ahead`, if
    /// each is admitted as soon as it fits. `None` if it never fits. The ledger must be expired at
    /// `now`.
    fn schedule(
        &self,
        key: &KeyShared,
        now: u64,
        ahead: impl Iterator<Item = u64>,
        cost: u64,
    ) -> Option<u64> {
        let span = key.settings.span_nanos;
        let entries = &self.ledger.entries;
        let mut used = self.ledger.used;
        let mut real = 0; // next real entry to expire
        let mut simulated: VecDeque<Entry> = VecDeque::new();
        let mut t = now;
        for c in ahead.chain(std::iter::once(cost)) {
            loop {
                let next_real = entries.get(real).map(|e| e.at.saturating_add(span));
                let next_sim = simulated.front().map(|e| e.at.saturating_add(span));
                let next = match (next_real, next_sim) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let candidate = match self.reach(key, used + u128::from(c)) {
                    Reach::Now => Some(t),
                    Reach::At(at) => Some(t.max(at)),
                    Reach::Never => None,
                };
                if let Some(candidate) = candidate
                    && next.is_none_or(|n| candidate < n)
                {
                    t = candidate;
                    break;
                }
                let next = next?;
                t = t.max(next);
                if next_real == Some(next) {
                    used -= u128::from(entries[real].amount);
                    real += 1;
                } else if let Some(e) = simulated.pop_front() {
                    used -= u128::from(e.amount);
                }
            }
            simulated.push_back(Entry { at: t, amount: c });
            used += u128::from(c);
        }
        Some(t)
    }

    /// How long a request of `cost` arriving at `now` would wait behind every live waiter.
    fn wait_behind_all(&self, key: &KeyShared, now: u64, cost: u64) -> Duration {
        let ahead = self
            .waiting
            .iter()
            .flat_map(|w| w.queue.iter().filter(|s| s.live()).map(|s| s.cost));
        match self.schedule(key, now, ahead, cost) {
            Some(at) => Duration::from_nanos(at - now),
            None => Duration::MAX,
        }
    }

    /// Removes a queued waiter; if it was the head, the next one becomes head.
    fn remove_waiter(&mut self, key: &KeyShared, ticket: u64, now: u64) {
        let Some(waiting) = self.waiting.as_deref_mut() else {
            return;
        };
        let Some(idx) = waiting.find(ticket) else {
            return;
        };
        waiting.queue[idx].waker = None;
        waiting.tombstones += 1;
        waiting.clean();
        if idx == 0 {
            key.drain(self, now, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};
    use std::time::Duration;

    use tokio::time::advance;

    use super::{Entry, Ledger};
    use crate::budget::{AdmissionError, Budget};

    const W: Duration = Duration::from_secs(60);

    fn budget(limit: u64) -> Budget<&'static str> {
        Budget::builder().limit(limit).window(W).build().unwrap()
    }

    fn entries(b: &Budget<&'static str>, key: &'static str) -> Vec<(u64, u64)> {
        let keys = b.inner.keys.pin();
        let state = keys.get(&key).unwrap().lock();
        state
            .ledger
            .entries
            .iter()
            .map(|e| (e.at, e.amount))
            .collect()
    }

    #[test]
    fn a_late_clock_read_joins_the_later_entry() {
        let mut ledger = Ledger::default();
        assert_eq!(ledger.push(100, 1), (0, 100));
        // Read the clock at 50 but got the lock after the charge at 100: it counts from 100.
        assert_eq!(ledger.push(50, 2), (0, 100));
        assert_eq!(ledger.push(150, 4), (1, 150));
        let all: Vec<_> = ledger.entries.iter().map(|e| (e.at, e.amount)).collect();
        assert_eq!(all, [(100, 3), (150, 4)]);
        assert_eq!(ledger.used, 7);
        // A sum that would overflow an entry gets an entry of its own, at the same instant.
        assert_eq!(ledger.push(150, u64::MAX), (2, 150));
        assert_eq!(ledger.entries.len(), 3);
    }

    #[test]
    fn expiry_is_exact_and_never_early() {
        let mut ledger = Ledger::default();
        ledger.entries.push_back(Entry { at: 0, amount: 1 });
        ledger.entries.push_back(Entry { at: 10, amount: 2 });
        ledger.used = 3;
        // `now` below the span: nothing can have expired (an entry at 0 counts until `span`).
        ledger.expire(100, 99);
        assert_eq!(ledger.used, 3);
        ledger.expire(100, 100);
        assert_eq!((ledger.used, ledger.first_seq), (2, 1));
        ledger.expire(100, 109);
        assert_eq!(ledger.used, 2);
        ledger.expire(100, 110);
        assert_eq!(
            (ledger.used, ledger.first_seq, ledger.entries.len()),
            (0, 2, 0)
        );
        // A refund for an expired entry changes nothing.
        ledger.refund(1, 2);
        assert_eq!(ledger.used, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn permits_sharing_an_entry_refund_only_their_own_part() {
        let b = budget(10);
        let p = b.try_acquire("k", 4).unwrap();
        let q = b.try_acquire("k", 5).unwrap();
        assert_eq!(entries(&b, "k").len(), 1, "same instant, one entry");
        assert_eq!(p.admitted_at(), q.admitted_at());
        p.settle(0);
        assert_eq!(b.stats(&"k").unwrap().used, 5);
        q.settle(2);
        assert_eq!(b.stats(&"k").unwrap().used, 2);
        assert_eq!(entries(&b, "k")[0].1, 2);
        // Debt at a later instant is an entry of its own.
        advance(Duration::from_secs(1)).await;
        b.try_acquire("k", 1).unwrap().settle(3);
        assert_eq!(entries(&b, "k").len(), 2);
        assert_eq!(b.stats(&"k").unwrap().used, 5);
        advance(W).await;
        assert_eq!(b.stats(&"k").unwrap().used, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn outstanding_counts_permits_and_granted_waiters_only() {
        let b = budget(10);
        let p = b.try_acquire("k", 10).unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        let mut small = b.acquire("k", 4);
        let mut big = b.acquire("k", 8);
        assert!(Pin::new(&mut small).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut big).poll(&mut cx).is_pending());
        let s = b.stats(&"k").unwrap();
        assert_eq!((s.outstanding, s.waiters), (1, 2));
        // The big one fails (not collected yet), the small one is granted by the refund.
        b.set_limit(&"k", 6).unwrap();
        p.settle(2);
        let s = b.stats(&"k").unwrap();
        assert_eq!((s.outstanding, s.waiters, s.used), (1, 0, 6));
        match Pin::new(&mut big).poll(&mut cx) {
            Poll::Ready(Err(e)) => {
                assert_eq!(e, AdmissionError::CostAboveLimit { cost: 8, limit: 6 })
            }
            other => panic!("expected the failure, got {other:?}"),
        }
        let granted = match Pin::new(&mut small).poll(&mut cx) {
            Poll::Ready(Ok(permit)) => permit,
            other => panic!("expected the grant, got {other:?}"),
        };
        assert_eq!(b.stats(&"k").unwrap().outstanding, 1);
        drop(granted);
        drop((small, big));
        assert_eq!(b.stats(&"k").unwrap().outstanding, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_waiters_gives_its_queue_memory_back() {
        let b = budget(1);
        let p = b.try_acquire("k", 1).unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        let mut waiters: Vec<_> = (0..1_000).map(|_| b.acquire("k", 1)).collect();
        for w in &mut waiters {
            assert!(Pin::new(w).poll(&mut cx).is_pending());
        }
        drop(waiters);
        drop(p);
        let keys = b.inner.keys.pin();
        let state = keys.get(&"k").unwrap().lock();
        let waiting = state.waiting.as_ref().unwrap();
        assert!(waiting.queue.is_empty());
        assert!(waiting.queue.capacity() <= super::KEEP_CAPACITY);
    }
}
