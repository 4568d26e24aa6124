//! The state of one key: its window ledger, its waiter queue and its AIMD state, behind one small
//! mutex. Nothing here is generic over the key type, so permits can hold it type-erased.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::Waker;
use std::time::Duration;

use tokio::time::Instant;

use super::error::AdmissionError;
use super::{Aimd, KeyStats};

/// Settings every key copies from its budget.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// The window length W.
    pub(crate) window: Duration,
    /// How long an entry counts: W + the expiry margin.
    pub(crate) span: Duration,
    /// The feedback policy, if any.
    pub(crate) aimd: Option<Aimd>,
}

/// The shared, reference-counted state of one key.
#[derive(Debug)]
pub(crate) struct KeyShared {
    state: Mutex<KeyState>,
    /// Permits handed out (or granted to a waiter not yet collected) and not yet dropped.
    /// Incremented under the state lock; decremented without it when a permit drops.
    outstanding: AtomicUsize,
    settings: Settings,
}

/// One charge in the window.
#[derive(Debug, Clone, Copy)]
struct Entry {
    at: Instant,
    amount: u64,
}

/// One waiting request. Kept small: a waiter costs this slot plus its future.
#[derive(Debug)]
struct Slot {
    ticket: u64,
    cost: u64,
    waker: Option<Waker>,
    /// False once cancelled or failed: a tombstone until it reaches the front or is compacted.
    live: bool,
}

/// What a waiter finds when it looks again.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Admitted: the entry's sequence number and the admission instant.
    Granted { seq: u64, at: Instant },
    /// Refused while waiting (the limit fell below its cost).
    Failed(AdmissionError),
}

/// The effective limit lowered by feedback: `base` at `since`, recovering linearly.
#[derive(Debug, Clone, Copy)]
struct Lowered {
    base: u64,
    since: Instant,
}

/// When the effective limit reaches an amount.
enum Reach {
    Now,
    At(Instant),
    Never,
}

#[derive(Debug)]
pub(crate) struct KeyState {
    /// The configured limit.
    limit: u64,
    /// The limit was set at run time: the key is never evicted, so the setting is not lost.
    pinned: bool,
    lowered: Option<Lowered>,
    entries: VecDeque<Entry>,
    /// The sequence number of `entries[0]`.
    first_seq: u64,
    /// The sum of the entries' amounts (u128: debt is not bounded by the limit).
    used: u128,
    /// Waiters in arrival order (ascending tickets); the front is always live.
    queue: VecDeque<Slot>,
    tombstones: usize,
    next_ticket: u64,
    /// The head that was last told it is the head (so it arms its timer).
    notified_head: u64,
    /// Results for waiters that were granted or failed and have not looked yet.
    outcomes: HashMap<u64, Outcome>,
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
    /// Admitted now: sequence number and instant of the entry.
    Admitted(u64, Instant),
    /// Refused.
    Refused(AdmissionError),
    /// Queued with this ticket.
    Queued(u64),
}

impl KeyShared {
    pub(crate) fn new(limit: u64, settings: Settings) -> Self {
        KeyShared {
            state: Mutex::new(KeyState {
                limit,
                pinned: false,
                lowered: None,
                entries: VecDeque::new(),
                first_seq: 0,
                used: 0,
                queue: VecDeque::new(),
                tombstones: 0,
                next_ticket: 0,
                notified_head: u64::MAX,
                outcomes: HashMap::new(),
                evicted: false,
            }),
            outstanding: AtomicUsize::new(0),
            settings,
        }
    }

    /// Locks the state. A panic while holding the lock cannot leave the ledger half-updated in a
    /// way that breaks the window guarantee (every update is a single push, pop or subtraction),
    /// so a poisoned lock is used as is.
    pub(crate) fn lock(&self) -> MutexGuard<'_, KeyState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn permit_dropped(&self) {
        self.outstanding.fetch_sub(1, Ordering::AcqRel);
    }

    /// An arrival: admit now, refuse, or queue.
    pub(crate) fn begin(
        &self,
        state: &mut KeyState,
        cost: u64,
        now: Instant,
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
        self.drain(state, now, false);
        if state.queue.is_empty()
            && state.used + u128::from(cost) <= u128::from(state.effective(self, now))
        {
            self.outstanding.fetch_add(1, Ordering::AcqRel);
            let (seq, at) = state.push(now, cost);
            return Begin::Admitted(seq, at);
        }
        let Some(waker) = waker else {
            // try_acquire: never waits.
            let would_wait = state.wait_behind_all(self, now, cost);
            return Begin::Refused(AdmissionError::WaitTooLong {
                would_wait,
                max_wait: Duration::ZERO,
            });
        };
        let depth = state.live_waiters();
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
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queue.push_back(Slot {
            ticket,
            cost,
            waker: Some(waker.clone()),
            live: true,
        });
        if state.queue.len() == 1 {
            state.notified_head = ticket;
        }
        tracing::debug!(cost, depth, used = %state.used, "admission waits for capacity");
        Begin::Queued(ticket)
    }

    /// A queued waiter looks at its state.
    pub(crate) fn poll_waiter(&self, ticket: u64, now: Instant, waker: &Waker) -> WaiterPoll {
        let mut state = self.lock();
        if let Some(outcome) = state.outcomes.remove(&ticket) {
            return WaiterPoll::Done(outcome);
        }
        self.drain(&mut state, now, false);
        if let Some(outcome) = state.outcomes.remove(&ticket) {
            return WaiterPoll::Done(outcome);
        }
        let Some(idx) = state.find(ticket) else {
            // Cannot happen: a ticket is either queued or has an outcome until it is collected.
            return WaiterPoll::Done(Outcome::Failed(AdmissionError::QueueFull {
                depth: state.live_waiters(),
                would_wait: None,
            }));
        };
        let slot = &mut state.queue[idx];
        match &slot.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => slot.waker = Some(waker.clone()),
        }
        if idx != 0 {
            return WaiterPoll::Behind;
        }
        let cost = slot.cost;
        state.notified_head = ticket;
        match state.schedule(self, now, std::iter::empty(), cost) {
            Some(at) => WaiterPoll::Head(at),
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
        let mut state = self.lock();
        self.drain(&mut state, now, false);
        if let Some(outcome) = state.outcomes.remove(&ticket) {
            return Ok(outcome);
        }
        let at = state.find(ticket).and_then(|idx| {
            let cost = state.queue[idx].cost;
            let ahead: Vec<u64> = state
                .queue
                .iter()
                .take(idx)
                .filter(|s| s.live)
                .map(|s| s.cost)
                .collect();
            state.schedule(self, now, ahead.into_iter(), cost)
        });
        state.remove_waiter(self, ticket, now);
        Err(at)
    }

    /// A waiter is dropped: it leaves no trace. A grant it never collected is refunded whole.
    pub(crate) fn cancel(&self, ticket: u64, reserved: u64) {
        let now = Instant::now();
        let mut state = self.lock();
        match state.outcomes.remove(&ticket) {
            Some(Outcome::Granted { seq, .. }) => {
                state.refund(seq, reserved);
                self.permit_dropped();
                self.drain(&mut state, now, true);
            }
            Some(Outcome::Failed(_)) => {}
            None => state.remove_waiter(self, ticket, now),
        }
    }

    /// Settles a permit under one lock: `refund` comes off its admission entry, `debt` is a new
    /// entry at `now`. Waiters are admitted only after both, so a refund never lets in a request
    /// that the debt booked with it would have kept out.
    pub(crate) fn settle(&self, seq: u64, refund: u64, debt: u64) {
        let now = Instant::now();
        let mut state = self.lock();
        if refund > 0 {
            state.refund(seq, refund);
        }
        if debt > 0 {
            state.expire(self.settings.span, now);
            state.push(now, debt);
        }
        if refund > 0 {
            self.drain(&mut state, now, true);
        }
    }

    /// Feedback through the permit of a request admitted at `admitted_at` that reserved
    /// `reserved`: the state is live (a permit is outstanding, so it is not evicted).
    pub(crate) fn throttled_now(&self, admitted_at: Instant, reserved: u64) {
        let now = Instant::now();
        let mut state = self.lock();
        self.throttled(&mut state, now, Some((admitted_at, reserved)));
    }

    /// Feedback: the effective limit goes down, and the window is exhausted up to it.
    ///
    /// With the throttled request's permit (`admitted_at`, `reserved`):
    /// - a request admitted before the last decrease does not lower the limit again: it was sent
    ///   under the old limit, and its throttle is an echo of the one that caused the decrease
    ///   (requests in flight together are throttled together). One decrease per congestion
    ///   event, as TCP does once per round trip;
    /// - its own reservation is counted as gone when filling: the server did not book it, and
    ///   its settlement will refund it, which must not reopen the window it just exhausted.
    pub(crate) fn throttled(
        &self,
        state: &mut KeyState,
        now: Instant,
        permit: Option<(Instant, u64)>,
    ) {
        state.expire(self.settings.span, now);
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
        let fill = u128::from(after).saturating_sub(state.used.saturating_sub(own));
        if fill > 0 {
            state.push(now, fill as u64);
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
        let old = state.limit;
        state.limit = limit;
        state.pinned = true;
        if limit < old {
            let mut failed = Vec::new();
            for slot in state.queue.iter_mut().filter(|s| s.live && s.cost > limit) {
                slot.live = false;
                failed.push((slot.ticket, slot.cost));
                if let Some(w) = slot.waker.take() {
                    w.wake();
                }
            }
            if !failed.is_empty() {
                state.tombstones += failed.len();
                for (ticket, cost) in failed {
                    let error = AdmissionError::CostAboveLimit { cost, limit };
                    state.outcomes.insert(ticket, Outcome::Failed(error));
                }
                state.clean();
            }
        }
        tracing::debug!(old, new = limit, "limit changed");
        self.drain(state, now, true);
    }

    pub(crate) fn stats(&self, state: &mut KeyState, now: Instant) -> KeyStats {
        state.expire(self.settings.span, now);
        let effective_limit = state.effective(self, now);
        KeyStats {
            used: u64::try_from(state.used).unwrap_or(u64::MAX),
            limit: state.limit,
            effective_limit,
            waiters: state.live_waiters(),
            outstanding: self.outstanding.load(Ordering::Acquire),
        }
    }

    /// Whether the key can be forgotten: marks it evicted if so.
    pub(crate) fn try_evict(&self, now: Instant) -> bool {
        let mut state = self.lock();
        if state.evicted {
            return true;
        }
        state.expire(self.settings.span, now);
        let effective = state.effective(self, now);
        let idle = state.entries.is_empty()
            && state.queue.is_empty()
            && state.outcomes.is_empty()
            && !state.pinned
            && effective == state.limit
            && self.outstanding.load(Ordering::Acquire) == 0;
        if idle {
            state.evicted = true;
        }
        idle
    }

    /// Expires entries and admits queued waiters that fit, in order. Wakes the new head so it
    /// arms its timer; with `notify_head`, wakes the head even if it was told before (capacity
    /// came back earlier than its timer).
    fn drain(&self, state: &mut KeyState, now: Instant, notify_head: bool) {
        state.expire(self.settings.span, now);
        let effective = state.effective(self, now);
        while let Some(head) = state.queue.front() {
            if state.used + u128::from(head.cost) <= u128::from(effective) {
                let Some(mut slot) = state.queue.pop_front() else {
                    break;
                };
                let (seq, at) = state.push(now, slot.cost);
                self.outstanding.fetch_add(1, Ordering::AcqRel);
                state
                    .outcomes
                    .insert(slot.ticket, Outcome::Granted { seq, at });
                if let Some(w) = slot.waker.take() {
                    w.wake();
                }
                state.clean();
            } else {
                let ticket = head.ticket;
                if notify_head || ticket != state.notified_head {
                    state.notified_head = ticket;
                    if let Some(w) = &head.waker {
                        w.wake_by_ref();
                    }
                }
                break;
            }
        }
    }
}

impl KeyState {
    /// Books an entry; returns its sequence number and its instant.
    fn push(&mut self, at: Instant, amount: u64) -> (u64, Instant) {
        let seq = self.first_seq + self.entries.len() as u64;
        // Entries stay in time order even if two callers read the clock in the other order.
        let at = self.entries.back().map_or(at, |last| at.max(last.at));
        self.entries.push_back(Entry { at, amount });
        self.used += u128::from(amount);
        (seq, at)
    }

    fn expire(&mut self, span: Duration, now: Instant) {
        while let Some(front) = self.entries.front() {
            if front.at + span > now {
                break;
            }
            self.used -= u128::from(front.amount);
            self.entries.pop_front();
            self.first_seq += 1;
        }
    }

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

    /// The effective limit now, forgetting a lowering that has fully recovered.
    fn effective(&mut self, key: &KeyShared, now: Instant) -> u64 {
        let effective = self.effective_at(key, now);
        if effective >= self.limit {
            self.lowered = None;
        }
        effective
    }

    fn effective_at(&self, key: &KeyShared, t: Instant) -> u64 {
        let (Some(lowered), Some(aimd)) = (self.lowered, key.settings.aimd) else {
            return self.limit;
        };
        let elapsed = t.saturating_duration_since(lowered.since).as_nanos();
        let per_window = u128::from(aimd.recover_amount(self.limit));
        let window = key.settings.window.as_nanos().max(1);
        let recovered = per_window.saturating_mul(elapsed) / window;
        let effective = u128::from(lowered.base).saturating_add(recovered);
        effective.min(u128::from(self.limit)) as u64
    }

    /// The first instant at which the effective limit is at least `amount`.
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
        let window = key.settings.window.as_nanos();
        let nanos = (missing * window).div_ceil(per_window);
        let nanos = u64::try_from(nanos).unwrap_or(u64::MAX);
        Reach::At(lowered.since + Duration::from_nanos(nanos))
    }

    /// When a request of `cost` would be admitted behind waiters costing `ahead`, if each is
    /// admitted as soon as it fits. `None` if it never fits. The state must be expired at `now`.
    fn schedule(
        &self,
        key: &KeyShared,
        now: Instant,
        ahead: impl Iterator<Item = u64>,
        cost: u64,
    ) -> Option<Instant> {
        let span = key.settings.span;
        let mut used = self.used;
        let mut real = 0; // next real entry to expire
        let mut simulated: VecDeque<Entry> = VecDeque::new();
        let mut t = now;
        for c in ahead.chain(std::iter::once(cost)) {
            loop {
                let next_real = self.entries.get(real).map(|e| e.at + span);
                let next_sim = simulated.front().map(|e| e.at + span);
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
                    used -= u128::from(self.entries[real].amount);
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

    /// How long a request of `cost` arriving now would wait behind every live waiter.
    fn wait_behind_all(&self, key: &KeyShared, now: Instant, cost: u64) -> Duration {
        let ahead = self.queue.iter().filter(|s| s.live).map(|s| s.cost);
        match self.schedule(key, now, ahead, cost) {
            Some(at) => at - now,
            None => Duration::MAX,
        }
    }

    fn live_waiters(&self) -> usize {
        self.queue.len() - self.tombstones
    }

    fn find(&self, ticket: u64) -> Option<usize> {
        self.queue
            .binary_search_by_key(&ticket, |s| s.ticket)
            .ok()
            .filter(|&idx| self.queue[idx].live)
    }

    /// Removes a queued waiter; if it was the head, the next one becomes head.
    fn remove_waiter(&mut self, key: &KeyShared, ticket: u64, now: Instant) {
        let Some(idx) = self.find(ticket) else {
            return;
        };
        self.queue[idx].live = false;
        self.queue[idx].waker = None;
        self.tombstones += 1;
        self.clean();
        if idx == 0 {
            key.drain(self, now, false);
        }
    }

    /// Pops tombstones off the front, and compacts when they are most of the queue.
    fn clean(&mut self) {
        while self.queue.front().is_some_and(|s| !s.live) {
            self.queue.pop_front();
            self.tombstones -= 1;
        }
        if self.tombstones > 32 && self.tombstones * 2 > self.queue.len() {
            self.queue.retain(|s| s.live);
            self.tombstones = 0;
        }
    }
}
