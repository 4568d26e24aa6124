//! The state of one key: a window ledger per limited dimension, one waiter queue and the AIMD
//! state of each dimension, behind one small mutex. Nothing here is generic over the key type,
//! so permits can hold it type-erased.
//!
//! Time inside a key is a `u64` count of nanoseconds since the budget's epoch (see
//! [`Settings::offset`]): ledger entries are 16 bytes, expiry is one integer comparison, and the
//! conversion back to [`Instant`] is exact, so nothing is rounded.
//!
//! Every dimension of a key is admitted at the same instant: an admission books one entry on
//! each limited dimension, all dated at one offset (the latest of the clock and every ledger's
//! last entry), so no charge is older than the request.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;
use std::time::Duration;

use tokio::time::Instant;

use super::error::AdmissionError;
use super::fair::{Class, FairShared};
use super::quota::{Dimension, Quota};
use super::shares::{Fair, Place};
use super::{Aimd, DimensionStats, KeyStats};

/// A key's waiter queue and outcome table keep at most this capacity once empty.
const KEEP_CAPACITY: usize = 64;

const DIMENSIONS: usize = Dimension::ALL.len();

/// Settings shared by every key of a budget.
#[derive(Debug)]
pub(crate) struct Settings {
    /// The window length W (requests and tokens).
    pub(crate) window: Duration,
    /// The day window (tokens per day).
    pub(crate) day: Duration,
    /// Each dimension's window in nanoseconds, at least 1 (for the AIMD recovery rate).
    window_nanos: [u64; DIMENSIONS],
    /// How long an entry counts on each dimension, in nanoseconds: its window + the margin.
    span_nanos: [u64; DIMENSIONS],
    /// The feedback policy, if any.
    pub(crate) aimd: Option<Aimd>,
    /// The origin of the keys' time offsets.
    epoch: Instant,
    /// Fair shares between tenants and lanes; `None`: FIFO.
    pub(crate) fair: Option<Arc<FairShared>>,
}

impl Settings {
    /// `window + margin` and `day + margin` must fit in a `u64` of nanoseconds (the builder
    /// refuses more than a year).
    pub(crate) fn new(
        window: Duration,
        day: Duration,
        margin: Duration,
        aimd: Option<Aimd>,
        fair: Option<Arc<FairShared>>,
    ) -> Self {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let windows = [window, window, day];
        Settings {
            window,
            day,
            window_nanos: windows.map(|w| nanos(w).max(1)),
            span_nanos: windows.map(|w| nanos(w.saturating_add(margin))),
            aimd,
            epoch: Instant::now(),
            fair,
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

    #[inline]
    pub(super) fn span(&self, dimension: Dimension) -> u64 {
        self.span_nanos[dimension.index()]
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
pub(super) struct Entry {
    at: u64,
    amount: u64,
}

/// The charges of one dimension's window, in time order.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    entries: VecDeque<Entry>,
    /// The sum of the entries' amounts (u128: debt is not bounded by the limit).
    pub(super) used: u128,
}

/// One waiting request. Kept small: a waiter costs this slot plus its future. A slot is live
/// while it has a waker; cancelled or failed, it is a tombstone until it reaches the front or is
/// compacted. Its cost on each dimension follows from its token cost ([`Dimension::cost`]).
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) ticket: u64,
    pub(super) cost: u64,
    pub(super) waker: Option<Waker>,
}

impl Slot {
    pub(super) fn live(&self) -> bool {
        self.waker.is_some()
    }
}

/// What a waiter finds when it looks again.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Admitted at this offset (every dimension's entry is dated there); with fairness, the
    /// tenant and lane whose account its settlement corrects.
    Granted {
        at: u64,
        account: Option<(Option<Arc<str>>, u8)>,
    },
    /// Refused while waiting (a limit fell below its cost).
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

/// One limited dimension of a key: its configured limit, its feedback state, its ledger.
#[derive(Debug)]
struct Dim {
    which: Dimension,
    limit: u64,
    lowered: Option<Lowered>,
    ledger: Ledger,
}

impl Dim {
    fn new(which: Dimension, limit: u64) -> Self {
        Dim {
            which,
            limit,
            lowered: None,
            ledger: Ledger::default(),
        }
    }
}

/// The limited dimensions of a key, in [`Dimension::ALL`] order. A key with one dimension (the
/// common case: tokens, or requests) keeps it inline, so its admissions chase no pointer.
#[derive(Debug)]
enum Dims {
    One(Dim),
    Many(Box<[Dim]>),
}

impl Dims {
    /// The dimensions of `quota`; `None` for an unlimited quota.
    fn of(quota: &Quota) -> Option<Self> {
        let mut dims: Vec<Dim> = quota.limits().map(|(d, l)| Dim::new(d, l)).collect();
        match dims.len() {
            0 => None,
            1 => dims.pop().map(Dims::One),
            _ => Some(Dims::Many(dims.into_boxed_slice())),
        }
    }

    #[inline]
    fn as_slice(&self) -> &[Dim] {
        match self {
            Dims::One(d) => std::slice::from_ref(d),
            Dims::Many(ds) => ds,
        }
    }

    #[inline]
    fn as_mut_slice(&mut self) -> &mut [Dim] {
        match self {
            Dims::One(d) => std::slice::from_mut(d),
            Dims::Many(ds) => ds,
        }
    }

    fn has(&self, which: Dimension) -> bool {
        self.as_slice().iter().any(|d| d.which == which)
    }
}

/// The waiting side of a key, allocated the first time a request waits on it: a key that never
/// waits does not pay for it.
///
/// The queue discipline is FIFO by default: the head is served first, and nobody overtakes it.
/// With [`Fairness`](super::Fairness), the waiters are kept by lane and tenant instead
/// ([`Fair`]): the *selected* waiter plays the head's part (only it has a timer, and only it is
/// admitted, when it fits on every dimension). Tickets are unique per key in both.
#[derive(Debug)]
struct Waiting {
    /// FIFO: waiters in arrival order (ascending tickets); the front is always live. Empty
    /// with fairness.
    queue: VecDeque<Slot>,
    tombstones: usize,
    /// The fair discipline, if the budget has one.
    fair: Option<Box<Fair>>,
    next_ticket: u64,
    /// The head that was last told it is the head (so it arms its timer).
    notified_head: u64,
    /// Results for waiters that were granted or failed and have not looked yet.
    outcomes: HashMap<u64, Verdict>,
}

impl Waiting {
    fn new(settings: &Settings) -> Self {
        Waiting {
            queue: VecDeque::new(),
            tombstones: 0,
            fair: settings
                .fair
                .as_ref()
                .map(|f| Box::new(Fair::new(Arc::clone(f)))),
            next_ticket: 0,
            notified_head: u64::MAX,
            outcomes: HashMap::new(),
        }
    }

    fn live_waiters(&self) -> usize {
        self.queue.len() - self.tombstones + self.fair.as_ref().map_or(0, |f| f.live_waiters())
    }

    #[inline]
    fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.fair.as_ref().is_none_or(|f| f.is_empty())
    }

    fn find(&self, ticket: u64) -> Option<usize> {
        self.queue
            .binary_search_by_key(&ticket, |s| s.ticket)
            .ok()
            .filter(|&idx| self.queue[idx].live())
    }

    /// The costs of the live waiters, in the order they will be served.
    fn live_costs(&self) -> impl Iterator<Item = u64> + '_ {
        self.queue.iter().filter(|s| s.live()).map(|s| s.cost)
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
    dims: Dims,
    waiting: Option<Box<Waiting>>,
    /// The quota was set at run time: the key is never evicted, so the setting is not lost.
    pinned: bool,
    /// Set when the key is removed from the map: whoever finds it looks the key up again.
    pub(crate) evicted: bool,
}

/// A queued waiter's identity: its ticket, and (with fairness) the flow of its tenant, so it is
/// found without a search through every tenant.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    pub(crate) seq: u64,
    pub(crate) flow: u32,
}

impl Ticket {
    fn place(self) -> Place {
        Place {
            flow: self.flow,
            seq: self.seq,
        }
    }
}

/// What a queued waiter should do next.
#[derive(Debug)]
pub(crate) enum WaiterPoll {
    /// It has its result.
    Done(Verdict),
    /// It is the head: it fits at this instant (absent the unexpected).
    Head(Instant),
    /// It waits behind others: it is woken when it becomes the head.
    Behind,
}

/// What a new arrival gets.
#[derive(Debug)]
pub(crate) enum Begin {
    /// Admitted now, dated at this offset.
    Admitted(u64),
    /// Refused.
    Refused(AdmissionError),
    /// Queued with this ticket, waiting on this dimension (the one that did not fit for the
    /// head of the queue when it arrived).
    Queued(Ticket, Option<Dimension>),
}

impl KeyShared {
    /// The state of a key with `quota`; `None` for an unlimited quota (such keys keep no state).
    pub(crate) fn new(quota: &Quota, settings: Arc<Settings>) -> Option<Self> {
        Some(KeyShared {
            state: Mutex::new(KeyState {
                dims: Dims::of(quota)?,
                waiting: None,
                pinned: false,
                evicted: false,
            }),
            settings,
        })
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Locks the state. A panic while holding the lock cannot leave a ledger half-updated in a
    /// way that breaks the window guarantee (every update is a single push, pop or subtraction),
    /// so a poisoned lock is used as is.
    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, KeyState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An arrival of `tokens` at offset `now`: admit now, refuse, or queue.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn begin(
        &self,
        state: &mut KeyState,
        tokens: u64,
        now: u64,
        waker: Option<&Waker>,
        max_wait: Option<Duration>,
        max_queue: Option<usize>,
        class: Option<&Class>,
    ) -> Begin {
        if let Some(error) = state.above_limit(tokens) {
            return Begin::Refused(error);
        }
        if state.costs_nothing(tokens) {
            // Nothing to charge (a token budget asked for zero tokens): no reason to queue.
            return Begin::Admitted(now);
        }
        state.expire(&self.settings, now);
        if state.has_waiters() {
            // Those ahead go first; some may fit now.
            self.drain(state, now, false);
        }
        if !state.has_waiters() && state.fits(self, now, tokens) {
            let at = state.charge(now, tokens);
            if let Some(fair) = &self.settings.fair
                && fair.has_minimums()
            {
                self.record_lane(state, class, at, tokens);
            }
            return Begin::Admitted(at);
        }
        if self.settings.fair.is_some() {
            let anonymous = Class::default();
            let class = class.unwrap_or(&anonymous);
            return self.begin_fair(state, tokens, now, waker, max_wait, max_queue, class);
        }
        self.begin_slow(state, tokens, now, waker, max_wait, max_queue)
    }

    /// An admission that did not wait counts towards its lane's minimum share.
    #[cold]
    fn record_lane(&self, state: &mut KeyState, class: Option<&Class>, at: u64, tokens: u64) {
        let (unit, _, _) = state.share(&self.settings);
        let anonymous = Class::default();
        let waiting = state
            .waiting
            .get_or_insert_with(|| Box::new(Waiting::new(&self.settings)));
        if let Some(fair) = waiting.fair.as_deref_mut() {
            fair.record(class.unwrap_or(&anonymous), at, unit.cost(tokens));
        }
    }

    /// An arrival that does not fit now, on a fair key: it joins its tenant's queue in its
    /// lane. `max_queue` bounds each tenant's queue; the wait checked against `max_wait` is the
    /// estimate of [`Fair::ahead`].
    #[cold]
    #[allow(clippy::too_many_arguments)]
    fn begin_fair(
        &self,
        state: &mut KeyState,
        cost: u64,
        now: u64,
        waker: Option<&Waker>,
        max_wait: Option<Duration>,
        max_queue: Option<usize>,
        class: &Class,
    ) -> Begin {
        let (unit, span, limit) = state.share(&self.settings);
        let waiting = state
            .waiting
            .get_or_insert_with(|| Box::new(Waiting::new(&self.settings)));
        let Some(fair) = waiting.fair.as_deref_mut() else {
            unreachable!("a fair budget's keys wait fairly");
        };
        let flow = fair.flow_for(class);
        let depth = fair.depth(flow);
        let estimate = |state: &KeyState| {
            let ahead = state
                .waiting
                .as_deref()
                .and_then(|w| w.fair.as_deref())
                .map(|f| f.ahead(flow, None, |c| unit.cost(c)))
                .unwrap_or_default();
            match state.schedule(self, now, ahead.into_iter(), cost) {
                Some(at) => Duration::from_nanos(at - now),
                None => Duration::MAX,
            }
        };
        let refused = if waker.is_none() {
            let would_wait = estimate(state);
            Some(AdmissionError::WaitTooLong {
                would_wait,
                max_wait: Duration::ZERO,
            })
        } else if let Some(max) = max_queue
            && depth >= max
        {
            Some(AdmissionError::QueueFull {
                depth,
                would_wait: Some(estimate(state)),
            })
        } else if let Some(max_wait) = max_wait {
            let would_wait = estimate(state);
            (would_wait > max_wait).then_some(AdmissionError::WaitTooLong {
                would_wait,
                max_wait,
            })
        } else {
            None
        };
        let Some(fair) = state
            .waiting
            .as_deref_mut()
            .and_then(|w| w.fair.as_deref_mut())
        else {
            unreachable!("allocated above");
        };
        if let Some(error) = refused {
            fair.release(flow);
            return Begin::Refused(error);
        }
        let Some(waker) = waker else {
            unreachable!("refused above without a waker");
        };
        let blocked = state.blocking(self, now, cost);
        let Some(waiting) = state.waiting.as_deref_mut() else {
            unreachable!("allocated above");
        };
        let seq = waiting.next_ticket;
        waiting.next_ticket += 1;
        if let Some(fair) = waiting.fair.as_deref_mut() {
            fair.push(flow, seq, cost, waker.clone());
            // The arrival may now be the selected waiter: it polls at once, so it needs no
            // wake-up. If it displaced another, that one keeps its timer (a spurious wake-up
            // at worst), and the drain below tells whoever is selected now.
            let place = Place { flow, seq };
            if fair.is_selected(place, now, span, limit) {
                waiting.notified_head = seq;
            }
        }
        tracing::debug!(cost, depth, ?blocked, "admission waits for its fair turn");
        self.drain(state, now, false);
        Begin::Queued(Ticket { seq, flow }, blocked)
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
        let head = state
            .waiting
            .as_ref()
            .and_then(|w| w.live_costs().next())
            .unwrap_or(cost);
        let blocked = state.blocking(self, now, head);
        let waiting = state
            .waiting
            .get_or_insert_with(|| Box::new(Waiting::new(&self.settings)));
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
        tracing::debug!(cost, depth, ?blocked, "admission waits for capacity");
        Begin::Queued(
            Ticket {
                seq: ticket,
                flow: 0,
            },
            blocked,
        )
    }

    /// A queued waiter looks at its state.
    pub(crate) fn poll_waiter(&self, ticket: Ticket, now: Instant, waker: &Waker) -> WaiterPoll {
        let now = self.settings.offset(now);
        let mut guard = self.lock();
        let state = &mut *guard;
        if let Some(outcome) = state.take_outcome(ticket.seq) {
            return WaiterPoll::Done(outcome);
        }
        self.drain(state, now, false);
        if let Some(outcome) = state.take_outcome(ticket.seq) {
            return WaiterPoll::Done(outcome);
        }
        if self.settings.fair.is_some() {
            return self.poll_fair(state, ticket, now, waker);
        }
        let ticket = ticket.seq;
        let Some((idx, waiting)) = state
            .waiting
            .as_deref_mut()
            .and_then(|w| Some((w.find(ticket)?, w)))
        else {
            // A ticket is either queued or has an outcome until it is collected.
            debug_assert!(false, "a waiter's ticket is neither queued nor decided");
            return WaiterPoll::Done(Verdict::Failed(AdmissionError::QueueFull {
                depth: 0,
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
        self.poll_head(
            state,
            Ticket {
                seq: ticket,
                flow: 0,
            },
            cost,
            now,
        )
    }

    /// The head (or, fair, the selected waiter) of `ticket` and `cost`: the instant it fits.
    fn poll_head(&self, state: &mut KeyState, ticket: Ticket, cost: u64, now: u64) -> WaiterPoll {
        match state.schedule(self, now, std::iter::empty(), cost) {
            Some(at) => WaiterPoll::Head(self.settings.instant(at)),
            None => {
                // Costs above a limit are failed when the quota changes.
                debug_assert!(false, "a queued cost above its limit");
                let error = state
                    .above_limit(cost)
                    .unwrap_or(AdmissionError::QueueFull {
                        depth: 0,
                        would_wait: None,
                    });
                state.remove_waiter(self, ticket, now);
                WaiterPoll::Done(Verdict::Failed(error))
            }
        }
    }

    /// [`poll_waiter`](Self::poll_waiter) on a fair key: the selected waiter plays the head.
    fn poll_fair(
        &self,
        state: &mut KeyState,
        ticket: Ticket,
        now: u64,
        waker: &Waker,
    ) -> WaiterPoll {
        let (_, span, limit) = state.share(&self.settings);
        let Some(waiting) = state.waiting.as_deref_mut() else {
            debug_assert!(false, "a waiter's ticket is neither queued nor decided");
            return WaiterPoll::Done(Verdict::Failed(AdmissionError::QueueFull {
                depth: 0,
                would_wait: None,
            }));
        };
        let Some(fair) = waiting.fair.as_deref_mut() else {
            unreachable!("a fair budget's keys wait fairly");
        };
        let Some(slot) = fair.find_mut(ticket.place()) else {
            debug_assert!(false, "a waiter's ticket is neither queued nor decided");
            return WaiterPoll::Done(Verdict::Failed(AdmissionError::QueueFull {
                depth: 0,
                would_wait: None,
            }));
        };
        match &slot.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => slot.waker = Some(waker.clone()),
        }
        let cost = slot.cost;
        if !fair.is_selected(ticket.place(), now, span, limit) {
            return WaiterPoll::Behind;
        }
        waiting.notified_head = ticket.seq;
        self.poll_head(state, ticket, cost, now)
    }

    /// A waiter whose deadline passed gives up, unless it was admitted meanwhile. Returns the
    /// outcome if it has one, else the instant it would have been admitted (if any; with
    /// fairness, an estimate).
    pub(crate) fn give_up(&self, ticket: Ticket, now: Instant) -> Result<Verdict, Option<Instant>> {
        let now = self.settings.offset(now);
        let mut guard = self.lock();
        let state = &mut *guard;
        self.drain(state, now, false);
        if let Some(outcome) = state.take_outcome(ticket.seq) {
            return Ok(outcome);
        }
        if let Some(fair) = state.waiting.as_deref().and_then(|w| w.fair.as_deref()) {
            let (unit, _, _) = state.share(&self.settings);
            let cost = fair.find(ticket.place()).map(|s| s.cost);
            let at = cost.and_then(|cost| {
                let ahead = fair.ahead(ticket.flow, Some(ticket.seq), |c| unit.cost(c));
                state.schedule(self, now, ahead.into_iter(), cost)
            });
            state.remove_waiter(self, ticket, now);
            return Err(at.map(|at| self.settings.instant(at)));
        }
        let ticket_seq = ticket.seq;
        let at = state.waiting.as_deref().and_then(|w| {
            let ticket = ticket_seq;
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

    /// A waiter is dropped: it leaves no trace. A grant it never collected is refunded whole, on
    /// every dimension (the request was never sent).
    pub(crate) fn cancel(&self, ticket: Ticket, tokens: u64) {
        let now = self.settings.offset(Instant::now());
        let mut guard = self.lock();
        let state = &mut *guard;
        match state.take_outcome(ticket.seq) {
            Some(Verdict::Granted { at, .. }) => {
                for dim in state.dims.as_mut_slice() {
                    dim.ledger.refund(at, dim.which.cost(tokens));
                }
                self.drain(state, now, true);
            }
            Some(Verdict::Failed(_)) => {}
            None => state.remove_waiter(self, ticket, now),
        }
    }

    /// Settles a permit admitted at offset `at` under one lock: `refund` comes off its admission
    /// entry on each token dimension, `debt` is a new entry at the settle instant. Waiters are
    /// admitted only after both, so a refund never lets in a request that the debt booked with
    /// it would have kept out. The clock is read only if there is debt to date or someone waits
    /// (the refund may let them in).
    pub(crate) fn settle(&self, at: u64, refund: u64, debt: u64) {
        let mut guard = self.lock();
        self.settle_locked(&mut guard, at, refund, debt);
    }

    /// [`settle`](Self::settle) on a fair key: the tenant's account is corrected by what it
    /// really used, `(settled - reserved) / weight`, before waiters are admitted.
    pub(crate) fn settle_fair(
        &self,
        at: u64,
        refund: u64,
        debt: u64,
        tenant: Option<&Arc<str>>,
        lane: u8,
    ) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let (unit, _, _) = state.share(&self.settings);
        if unit.settles()
            && let Some(fair) = state
                .waiting
                .as_deref_mut()
                .and_then(|w| w.fair.as_deref_mut())
        {
            fair.correct(tenant, lane, i128::from(debt) - i128::from(refund));
        }
        self.settle_locked(state, at, refund, debt);
    }

    fn settle_locked(&self, state: &mut KeyState, at: u64, refund: u64, debt: u64) {
        if refund > 0 {
            for dim in state.dims.as_mut_slice() {
                if dim.which.settles() {
                    dim.ledger.refund(at, refund);
                }
            }
        }
        let drain = refund > 0 && state.has_waiters();
        if debt == 0 && !drain {
            return;
        }
        let now = self.settings.offset(Instant::now());
        if debt > 0 {
            for dim in state.dims.as_mut_slice() {
                if dim.which.settles() {
                    dim.ledger.expire(self.settings.span(dim.which), now);
                    dim.ledger.push(now, debt);
                }
            }
        }
        if drain {
            self.drain(state, now, true);
        }
    }

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
        let now = self.settings.offset(now);
        let settings = &*self.settings;
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
                dim.ledger.push(now, fill as u64);
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

    /// Changes the quota; waiters whose cost no longer fits at all fail. A dimension the new
    /// quota adds starts with an empty window; one it drops is forgotten. `quota` is limited on
    /// at least one dimension.
    pub(crate) fn set_quota(&self, state: &mut KeyState, quota: &Quota, now: Instant) {
        let now = self.settings.offset(now);
        let mut old: Vec<Dim> = match std::mem::replace(&mut state.dims, Dims::Many(Box::new([]))) {
            Dims::One(d) => vec![d],
            Dims::Many(ds) => ds.into_vec(),
        };
        let mut dims = Vec::with_capacity(3);
        for (which, limit) in quota.limits() {
            match old.iter().position(|d| d.which == which) {
                Some(i) => {
                    let mut dim = old.swap_remove(i);
                    dim.limit = limit;
                    dims.push(dim);
                }
                None => dims.push(Dim::new(which, limit)),
            }
        }
        state.dims = if dims.len() == 1 {
            Dims::One(dims.pop().expect("one dimension"))
        } else {
            debug_assert!(!dims.is_empty(), "set_quota needs a limited quota");
            Dims::Many(dims.into_boxed_slice())
        };
        state.pinned = true;
        let KeyState { dims, waiting, .. } = state;
        if let Some(waiting) = waiting.as_deref_mut()
            && let Some(fair) = waiting.fair.as_deref_mut()
        {
            let outcomes = &mut waiting.outcomes;
            fair.fail_where(|slot| {
                let Some(error) = above_limit(dims.as_slice(), slot.cost) else {
                    return false;
                };
                let Some(w) = slot.waker.take() else {
                    return false;
                };
                outcomes.insert(slot.ticket, Verdict::Failed(error));
                w.wake();
                true
            });
        } else if let Some(waiting) = waiting.as_deref_mut() {
            let mut failed = 0;
            for slot in waiting.queue.iter_mut().filter(|s| s.live()) {
                let Some(error) = above_limit(dims.as_slice(), slot.cost) else {
                    continue;
                };
                if let Some(w) = slot.waker.take() {
                    failed += 1;
                    waiting.outcomes.insert(slot.ticket, Verdict::Failed(error));
                    w.wake();
                }
            }
            if failed > 0 {
                waiting.tombstones += failed;
                waiting.clean();
            }
        }
        tracing::debug!(%quota, "quota changed");
        self.drain(state, now, true);
    }

    /// A snapshot of the key. `this` must be a reference of the caller's own (a clone taken from
    /// the map), and the state must be live: the map and the caller account for two references.
    pub(crate) fn stats(this: &Arc<Self>, state: &mut KeyState, now: Instant) -> KeyStats {
        let now = this.settings.offset(now);
        state.expire(&this.settings, now);
        let mut stats = KeyStats::default();
        for dim in state.dims.as_mut_slice() {
            let effective_limit = dim.effective(&this.settings, now);
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
            (w.live_waiters(), w.live_waiters() + failed)
        });
        stats.waiters = waiters;
        stats.tenants = state
            .waiting
            .as_ref()
            .and_then(|w| w.fair.as_ref())
            .map_or(0, |f| f.tracked());
        // Every reference but the map's, the caller's and the waiting futures' is a permit.
        stats.outstanding = Arc::strong_count(this).saturating_sub(2 + holding);
        stats
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
        state.expire(&this.settings, now);
        let settings = &*this.settings;
        let quiet = state
            .dims
            .as_mut_slice()
            .iter_mut()
            .all(|d| d.ledger.entries.is_empty() && d.effective(settings, now) == d.limit);
        // Under the lock, the count cannot rise above 1 by a permit or a waiter: both are made
        // under this lock, from a reference cloned out of the map. A clone taken but not yet
        // locked raises the count (the key is then kept) or finds the key evicted and retries.
        let idle = quiet
            && state
                .waiting
                .as_ref()
                .is_none_or(|w| w.is_empty() && w.outcomes.is_empty())
            && !state.pinned
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
        state.expire(&self.settings, now);
        if !state.has_waiters() {
            return;
        }
        if self.settings.fair.is_some() {
            self.drain_fair(state, now, notify_head);
            return;
        }
        loop {
            let Some(head) = state.waiting.as_deref().and_then(|w| w.queue.front()) else {
                return;
            };
            let cost = head.cost;
            if state.fits(self, now, cost) {
                let at = state.charge(now, cost);
                let Some(waiting) = state.waiting.as_deref_mut() else {
                    return;
                };
                let Some(head) = waiting.queue.front_mut() else {
                    return;
                };
                let ticket = head.ticket;
                let waker = head.waker.take();
                waiting.tombstones += 1;
                waiting
                    .outcomes
                    .insert(ticket, Verdict::Granted { at, account: None });
                if let Some(w) = waker {
                    w.wake();
                }
                waiting.clean();
            } else {
                let Some(waiting) = state.waiting.as_deref_mut() else {
                    return;
                };
                let Some(head) = waiting.queue.front() else {
                    return;
                };
                let ticket = head.ticket;
                if notify_head || ticket != waiting.notified_head {
                    waiting.notified_head = ticket;
                    if let Some(w) = &head.waker {
                        w.wake_by_ref();
                    }
                }
                return;
            }
        }
    }
}

impl KeyShared {
    /// [`drain`](Self::drain) on a fair key: admits the selected waiter while it fits, and
    /// tells the one selected after that.
    fn drain_fair(&self, state: &mut KeyState, now: u64, notify_head: bool) {
        let settings = &*self.settings;
        let (unit, span, limit) = state.share(settings);
        let KeyState { dims, waiting, .. } = state;
        let Some(waiting) = waiting.as_deref_mut() else {
            return;
        };
        let Some(fair) = waiting.fair.as_deref_mut() else {
            return;
        };
        loop {
            let Some(flow) = fair.selected(now, span, limit) else {
                return;
            };
            let Some(head) = fair.head(flow) else {
                debug_assert!(false, "a backlogged flow without a waiter");
                return;
            };
            let (cost, ticket) = (head.cost, head.ticket);
            if dims.fits(settings, now, cost) {
                let at = dims.charge(now, cost);
                let Some((slot, account)) = fair.grant(flow, at, unit.cost(cost)) else {
                    debug_assert!(false, "the selected flow has a head");
                    return;
                };
                waiting
                    .outcomes
                    .insert(ticket, Verdict::Granted { at, account });
                if let Some(w) = slot.waker {
                    w.wake();
                }
            } else {
                if notify_head || ticket != waiting.notified_head {
                    waiting.notified_head = ticket;
                    if let Some(w) = &head.waker {
                        w.wake_by_ref();
                    }
                }
                return;
            }
        }
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
    #[inline]
    fn last_at(&self) -> Option<u64> {
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
    fn refund(&mut self, at: u64, amount: u64) {
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

impl Dim {
    /// The effective limit at offset `now`, forgetting a lowering that has fully recovered.
    #[inline]
    fn effective(&mut self, settings: &Settings, now: u64) -> u64 {
        if self.lowered.is_none() {
            return self.limit;
        }
        let effective = self.effective_at(settings, now);
        if effective >= self.limit {
            self.lowered = None;
        }
        effective
    }

    fn effective_at(&self, settings: &Settings, t: u64) -> u64 {
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
    fn reach(&self, settings: &Settings, amount: u128) -> Reach {
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

/// The first dimension of `dims` on which `tokens` costs more than the whole limit.
fn above_limit(dims: &[Dim], tokens: u64) -> Option<AdmissionError> {
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
    fn new(dim: &Dim) -> Self {
        DimSim {
            real: 0,
            used: dim.ledger.used,
            simulated: VecDeque::new(),
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
    fn earliest(&mut self, dim: &Dim, settings: &Settings, t: u64, cost: u64) -> Option<u64> {
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
    fn advance_to(&mut self, dim: &Dim, settings: &Settings, t: u64) {
        let span = settings.span(dim.which);
        while let Some((n, real)) = self.next_expiry(dim, span) {
            if n > t {
                return;
            }
            self.expire_next(dim, real);
        }
    }
}

impl KeyState {
    #[inline]
    fn has_waiters(&self) -> bool {
        self.waiting.as_ref().is_some_and(|w| !w.is_empty())
    }

    /// The refusal of a token cost above a whole limit, if it is.
    #[inline]
    fn above_limit(&self, tokens: u64) -> Option<AdmissionError> {
        above_limit(self.dims.as_slice(), tokens)
    }

    #[inline]
    fn expire(&mut self, settings: &Settings, now: u64) {
        for dim in self.dims.as_mut_slice() {
            dim.ledger.expire(settings.span(dim.which), now);
        }
    }

    /// Whether `tokens` fits on every dimension at `now` (the ledgers expired at `now`).
    #[inline]
    fn fits(&mut self, key: &KeyShared, now: u64, tokens: u64) -> bool {
        self.dims.fits(&key.settings, now, tokens)
    }

    /// The first dimension on which `tokens` does not fit at `now`, if any.
    fn blocking(&mut self, key: &KeyShared, now: u64, tokens: u64) -> Option<Dimension> {
        let settings = &*key.settings;
        self.dims.as_mut_slice().iter_mut().find_map(|d| {
            let cost = d.which.cost(tokens);
            let fits = cost == 0
                || d.ledger.used + u128::from(cost) <= u128::from(d.effective(settings, now));
            (!fits).then_some(d.which)
        })
    }

    /// Whether `tokens` costs nothing on any dimension of the key.
    #[inline]
    fn costs_nothing(&self, tokens: u64) -> bool {
        tokens == 0 && !self.dims.has(Dimension::Requests)
    }

    /// Books an admission of `tokens` on every dimension, all at one offset: the latest of `now`
    /// and every ledger's last entry. Returns that offset.
    #[inline]
    fn charge(&mut self, now: u64, tokens: u64) -> u64 {
        self.dims.charge(now, tokens)
    }

    /// The dimension fair shares are counted in (tokens if the key limits them, else requests,
    /// else tokens per day), its span and its configured limit.
    fn share(&self, settings: &Settings) -> (Dimension, u64, u64) {
        let dims = self.dims.as_slice();
        let dim = [
            Dimension::Tokens,
            Dimension::Requests,
            Dimension::TokensPerDay,
        ]
        .into_iter()
        .find_map(|which| dims.iter().find(|d| d.which == which))
        .unwrap_or(&dims[0]);
        (dim.which, settings.span(dim.which), dim.limit)
    }
}

impl Dims {
    /// Whether `tokens` fits on every dimension at `now` (the ledgers expired at `now`).
    #[inline]
    fn fits(&mut self, settings: &Settings, now: u64, tokens: u64) -> bool {
        self.as_mut_slice().iter_mut().all(|d| {
            let cost = d.which.cost(tokens);
            cost == 0 || d.ledger.used + u128::from(cost) <= u128::from(d.effective(settings, now))
        })
    }

    /// Books an admission of `tokens` on every dimension, all at one offset: the latest of `now`
    /// and every ledger's last entry. Returns that offset.
    #[inline]
    fn charge(&mut self, now: u64, tokens: u64) -> u64 {
        let dims = self.as_mut_slice();
        let at = dims
            .iter()
            .filter_map(|d| d.ledger.last_at())
            .fold(now, u64::max);
        for dim in dims {
            let cost = dim.which.cost(tokens);
            if cost > 0 {
                dim.ledger.push(at, cost);
            }
        }
        at
    }
}

impl KeyState {
    fn take_outcome(&mut self, ticket: u64) -> Option<Verdict> {
        let outcomes = &mut self.waiting.as_mut()?.outcomes;
        let outcome = outcomes.remove(&ticket);
        if outcomes.is_empty() && outcomes.capacity() > KEEP_CAPACITY {
            *outcomes = HashMap::new();
        }
        outcome
    }

    /// When (an offset) a request of `cost` tokens would be admitted behind waiters costing
    /// `ahead`, if each is admitted as soon as it fits on every dimension. `None` if it never
    /// fits. The ledgers must be expired at `now`.
    fn schedule(
        &self,
        key: &KeyShared,
        now: u64,
        ahead: impl Iterator<Item = u64>,
        cost: u64,
    ) -> Option<u64> {
        let settings = &*key.settings;
        let dims = self.dims.as_slice();
        let mut sims: Vec<DimSim> = dims.iter().map(DimSim::new).collect();
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
                sim.simulated.push_back(Entry { at: t, amount });
                sim.used += u128::from(amount);
            }
        }
        Some(t)
    }

    /// How long a request of `cost` arriving at `now` would wait behind every live waiter.
    fn wait_behind_all(&self, key: &KeyShared, now: u64, cost: u64) -> Duration {
        let ahead = self.waiting.iter().flat_map(|w| w.live_costs());
        match self.schedule(key, now, ahead, cost) {
            Some(at) => Duration::from_nanos(at - now),
            None => Duration::MAX,
        }
    }

    /// Removes a queued waiter; if it was the head, the next one becomes head.
    fn remove_waiter(&mut self, key: &KeyShared, ticket: Ticket, now: u64) {
        let Some(waiting) = self.waiting.as_deref_mut() else {
            return;
        };
        if let Some(fair) = waiting.fair.as_deref_mut() {
            // The removed waiter may have been the selected one: select again.
            if fair.remove(ticket.place()) {
                key.drain(self, now, false);
            }
            return;
        }
        let Some(idx) = waiting.find(ticket.seq) else {
            return;
        };
        waiting.queue[idx].waker = None;
        waiting.tombstones += 1;
        waiting.clean();
        if idx == 0 {
            key.drain(self, now, false);
        }
    }

    /// Whether the key limits `dimension`.
    pub(crate) fn limits(&self, dimension: Dimension) -> bool {
        self.dims.has(dimension)
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
    use crate::budget::{AdmissionError, Budget, Dimension};

    const W: Duration = Duration::from_secs(60);

    fn budget(limit: u64) -> Budget<&'static str> {
        Budget::builder().tokens(limit).window(W).build().unwrap()
    }

    fn entries(b: &Budget<&'static str>, key: &'static str) -> Vec<(u64, u64)> {
        let keys = b.inner.keys.pin();
        let state = keys.get(&key).unwrap().lock();
        state.dims.as_slice()[0]
            .ledger
            .entries
            .iter()
            .map(|e| (e.at, e.amount))
            .collect()
    }

    fn used(b: &Budget<&'static str>, key: &'static str) -> u64 {
        b.stats(&key).unwrap().tokens.unwrap().used
    }

    #[test]
    fn a_late_clock_read_joins_the_later_entry() {
        let mut ledger = Ledger::default();
        ledger.push(100, 1);
        // Read the clock at 50 but got the lock after the charge at 100: it counts from 100.
        ledger.push(50, 2);
        ledger.push(150, 4);
        let all: Vec<_> = ledger.entries.iter().map(|e| (e.at, e.amount)).collect();
        assert_eq!(all, [(100, 3), (150, 4)]);
        assert_eq!(ledger.used, 7);
        // A sum that would overflow an entry gets an entry of its own, at the same instant.
        ledger.push(150, u64::MAX);
        assert_eq!(ledger.entries.len(), 3);
        assert_eq!(ledger.last_at(), Some(150));
    }

    #[test]
    fn a_refund_finds_its_entry_by_offset_and_never_goes_below_zero() {
        let mut ledger = Ledger::default();
        ledger.push(10, 5);
        ledger.push(20, 7);
        ledger.push(30, 1);
        ledger.refund(20, 3);
        ledger.refund(10, 99);
        ledger.refund(15, 1); // no entry there: nothing
        let all: Vec<_> = ledger.entries.iter().map(|e| (e.at, e.amount)).collect();
        assert_eq!(all, [(10, 0), (20, 4), (30, 1)]);
        assert_eq!(ledger.used, 5);
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
        assert_eq!((ledger.used, ledger.entries.len()), (2, 1));
        ledger.expire(100, 109);
        assert_eq!(ledger.used, 2);
        ledger.expire(100, 110);
        assert_eq!((ledger.used, ledger.entries.len()), (0, 0));
        // A refund for an expired entry changes nothing.
        ledger.refund(10, 2);
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
        assert_eq!(used(&b, "k"), 5);
        q.settle(2);
        assert_eq!(used(&b, "k"), 2);
        assert_eq!(entries(&b, "k")[0].1, 2);
        // Debt at a later instant is an entry of its own.
        advance(Duration::from_secs(1)).await;
        b.try_acquire("k", 1).unwrap().settle(3);
        assert_eq!(entries(&b, "k").len(), 2);
        assert_eq!(used(&b, "k"), 5);
        advance(W).await;
        assert_eq!(used(&b, "k"), 0);
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
        b.set_quota(&"k", crate::budget::Quota::tokens(6)).unwrap();
        p.settle(2);
        let s = b.stats(&"k").unwrap();
        assert_eq!(
            (s.outstanding, s.waiters, s.tokens.unwrap().used),
            (1, 0, 6)
        );
        match Pin::new(&mut big).poll(&mut cx) {
            Poll::Ready(Err(e)) => assert_eq!(
                e,
                AdmissionError::CostAboveLimit {
                    dimension: Dimension::Tokens,
                    cost: 8,
                    limit: 6
                }
            ),
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
