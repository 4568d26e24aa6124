//! The state of one key and the engine's verbs on it: an arrival, a waiter's poll, its giving
//! up or cancelling, settlement, a quota change, and the drain that serves waiters. Each verb is
//! written once, against the key's queue [`Discipline`](super::queue::Discipline) (FIFO or
//! fair shares); nothing here is generic over the key type, so permits can hold it type-erased.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;
use std::time::Duration;

use tokio::time::Instant;

use super::config::KeyConfig;
use super::error::AdmissionError;
use super::fair::Class;
use super::ledger::{Dim, Dims};
use super::queue::{Account, SCOPED, Ticket, Verdict, Waiting};
use super::quota::{Dimension, Quota};

/// The shared, reference-counted state of one key.
///
/// Who holds a reference: the key map (while the key is live), every outstanding [`Permit`],
/// every queued [`Acquire`] future, and transiently an admission or a `stats` call in progress.
/// There is no separate permit counter: [`try_evict`](Self::try_evict) evicts only a state the
/// map alone holds, and `stats` derives the outstanding permits from the reference count. That
/// saves two atomic read-modify-writes per admission.
///
/// [`Permit`]: super::Permit
/// [`Acquire`]: super::Acquire
#[derive(Debug)]
pub(crate) struct KeyShared {
    state: Mutex<KeyState>,
    pub(super) config: Arc<KeyConfig>,
}

#[derive(Debug)]
pub(crate) struct KeyState {
    pub(super) dims: Dims,
    pub(super) waiting: Option<Box<Waiting>>,
    /// The quota was set at run time: the key is never evicted, so the setting is not lost.
    pinned: bool,
    /// Set when the key is removed from the map: whoever finds it looks the key up again.
    pub(crate) evicted: bool,
}

/// A request arriving on a key: what it costs, when (an offset), who waits for it (no waker:
/// `try_acquire`, never waits), and for whom (its tenant and lane, for fair shares).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arrival<'a> {
    pub(crate) tokens: u64,
    pub(crate) now: u64,
    pub(crate) waker: Option<&'a Waker>,
    pub(crate) class: &'a Class,
}

/// What a queued waiter should do next.
#[derive(Debug)]
pub(crate) enum WaiterPoll {
    /// It has its result.
    Done(Verdict),
    /// It is selected (the head): it fits at this instant (absent the unexpected).
    Head(Instant),
    /// Others are served first: it is woken when it is selected.
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
    /// waiter served next when it arrived).
    Queued(Ticket, Option<Dimension>),
}

impl KeyShared {
    /// The state of a key with `quota`; `None` for an unlimited quota (such keys keep no state).
    pub(crate) fn new(quota: &Quota, config: Arc<KeyConfig>) -> Option<Self> {
        Some(KeyShared {
            state: Mutex::new(KeyState {
                dims: Dims::of(quota)?,
                waiting: None,
                pinned: false,
                evicted: false,
            }),
            config,
        })
    }

    pub(crate) fn config(&self) -> &KeyConfig {
        &self.config
    }

    /// Locks the state. A panic while holding the lock cannot leave a ledger half-updated in a
    /// way that breaks the window guarantee (every update is a single push, pop or subtraction),
    /// so a poisoned lock is used as is.
    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, KeyState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An arrival: admit now, refuse, or queue.
    #[inline]
    pub(crate) fn begin(&self, state: &mut KeyState, arrival: &Arrival<'_>) -> Begin {
        let (tokens, now) = (arrival.tokens, arrival.now);
        let config = &*self.config;
        if let Some(error) = state.dims.above_limit(tokens) {
            return Begin::Refused(error);
        }
        if state.dims.costs_nothing(tokens) {
            // Nothing to charge (a token budget asked for zero tokens): no reason to queue.
            return Begin::Admitted(now);
        }
        state.dims.expire(config, now);
        if state.has_waiters() {
            // Those ahead go first; some may fit now.
            self.drain(state, now, false);
        }
        if !state.has_waiters() && state.dims.fits(config, now, tokens) {
            let at = state.dims.charge(config, now, tokens);
            if config.fair.as_ref().is_some_and(|f| f.has_minimums()) {
                self.record_lane(state, arrival.class, at, tokens, now);
            }
            return Begin::Admitted(at);
        }
        self.queue(state, arrival)
    }

    /// An admission that did not wait counts towards its lane's minimum share.
    #[cold]
    pub(super) fn record_lane(
        &self,
        state: &mut KeyState,
        class: &Class,
        at: u64,
        tokens: u64,
        now: u64,
    ) {
        let unit = state.dims.share(&self.config, now).unit;
        state
            .waiting
            .get_or_insert_with(|| Box::new(Waiting::new(&self.config)))
            .discipline
            .record(class, at, unit.cost(tokens));
    }

    /// An arrival that does not fit now (or finds others waiting): it joins the queue, unless
    /// it may not wait ([`max_queue`](super::BudgetBuilder::max_queue) waiters already, in the
    /// key or, fair, in its tenant; a wait over [`max_wait`](super::BudgetBuilder::max_wait) by
    /// the discipline's estimate; no waker).
    #[cold]
    fn queue(&self, state: &mut KeyState, arrival: &Arrival<'_>) -> Begin {
        let Arrival {
            tokens: cost,
            now,
            waker,
            class,
        } = *arrival;
        let config = &*self.config;
        // Demand held back: where the learned limit may go above the configured one, it
        // starts probing (a no-op otherwise).
        state.dims.probe_above(config, now, cost);
        let share = state.dims.share(config, now);
        let waiting = state
            .waiting
            .get_or_insert_with(|| Box::new(Waiting::new(config)));
        let flow = waiting.discipline.enter(class);
        let depth = waiting.discipline.depth(flow);
        let estimate = |state: &KeyState| {
            let ahead = state
                .waiting
                .as_deref()
                .map(|w| {
                    let gates = w.gates.iter().map(|g| g.cost);
                    gates
                        .chain(w.discipline.ahead(flow, None, share))
                        .collect::<Vec<u64>>()
                })
                .unwrap_or_default();
            match state.dims.schedule(config, now, ahead.into_iter(), cost) {
                Some(at) => Duration::from_nanos(at - now),
                None => Duration::MAX,
            }
        };
        let refused = if waker.is_none() {
            Some(AdmissionError::WaitTooLong {
                would_wait: estimate(state),
                max_wait: Duration::ZERO,
            })
        } else if let Some(max) = config.max_queue
            && depth >= max
        {
            Some(AdmissionError::QueueFull {
                depth,
                would_wait: Some(estimate(state)),
            })
        } else if let Some(max_wait) = config.max_wait {
            let would_wait = estimate(state);
            (would_wait > max_wait).then_some(AdmissionError::WaitTooLong {
                would_wait,
                max_wait,
            })
        } else {
            None
        };
        let KeyState { dims, waiting, .. } = state;
        let Some(waiting) = waiting.as_deref_mut() else {
            unreachable!("allocated above");
        };
        if let Some(error) = refused {
            waiting.discipline.release(flow);
            return Begin::Refused(error);
        }
        let Some(waker) = waker else {
            unreachable!("refused above without a waker");
        };
        let next = waiting
            .discipline
            .selected(now, share)
            .map_or(cost, |(_, s)| s.cost);
        let blocked = dims.blocking(config, now, next);
        let seq = waiting.ticket(false);
        waiting.discipline.push(flow, seq, cost, waker.clone());
        // The arrival may now be the selected waiter: it polls at once, so it needs no wake-up.
        // If it displaced another (fair), that one keeps its timer (a spurious wake-up at
        // worst), and the drain below tells whoever is selected now.
        if waiting
            .discipline
            .selected(now, share)
            .is_some_and(|(_, s)| s.ticket == seq)
        {
            waiting.notified = seq;
        }
        tracing::debug!(cost, depth, ?blocked, "admission waits for its turn");
        self.drain(state, now, false);
        Begin::Queued(Ticket { seq, flow }, blocked)
    }

    /// A queued waiter looks at its state.
    pub(crate) fn poll_waiter(&self, ticket: Ticket, now: Instant, waker: &Waker) -> WaiterPoll {
        let now = self.config.offset(now);
        let mut guard = self.lock();
        let state = &mut *guard;
        if let Some(outcome) = state.take_outcome(ticket.seq) {
            return WaiterPoll::Done(outcome);
        }
        self.drain(state, now, false);
        if let Some(outcome) = state.take_outcome(ticket.seq) {
            return WaiterPoll::Done(outcome);
        }
        let share = state.dims.share(&self.config, now);
        let Some(waiting) = state.waiting.as_deref_mut() else {
            return lost();
        };
        let Some(slot) = waiting.discipline.find_mut(ticket) else {
            return lost();
        };
        match &slot.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => slot.waker = Some(waker.clone()),
        }
        let cost = slot.cost;
        let selected = waiting
            .discipline
            .selected(now, share)
            .is_some_and(|(_, s)| s.ticket == ticket.seq);
        if !selected {
            return WaiterPoll::Behind;
        }
        if !waiting.gates.is_empty() {
            // Requests of several scopes go first; the drain that admits the last of them
            // tells this one again.
            waiting.notified = u64::MAX;
            return WaiterPoll::Behind;
        }
        waiting.notified = ticket.seq;
        match state
            .dims
            .schedule(&self.config, now, std::iter::empty(), cost)
        {
            Some(at) => WaiterPoll::Head(self.config.instant(at)),
            None => {
                // Costs above a limit are failed when the quota changes.
                debug_assert!(false, "a queued cost above its limit");
                let error = state
                    .dims
                    .above_limit(cost)
                    .unwrap_or(AdmissionError::QueueFull {
                        depth: 0,
                        would_wait: None,
                    });
                self.remove_waiter(state, ticket, now);
                WaiterPoll::Done(Verdict::Failed(error))
            }
        }
    }

    /// A waiter whose deadline passed gives up, unless it was admitted meanwhile. Returns the
    /// outcome if it has one, else the instant it would have been admitted (if any; with
    /// fairness, an estimate).
    pub(crate) fn give_up(&self, ticket: Ticket, now: Instant) -> Result<Verdict, Option<Instant>> {
        let now = self.config.offset(now);
        let mut guard = self.lock();
        let state = &mut *guard;
        self.drain(state, now, false);
        if let Some(outcome) = state.take_outcome(ticket.seq) {
            return Ok(outcome);
        }
        let share = state.dims.share(&self.config, now);
        let queued = state.waiting.as_deref_mut().and_then(|w| {
            let cost = w.discipline.find_mut(ticket)?.cost;
            Some((
                cost,
                w.discipline.ahead(ticket.flow, Some(ticket.seq), share),
            ))
        });
        let at = queued.and_then(|(cost, ahead)| {
            state
                .dims
                .schedule(&self.config, now, ahead.into_iter(), cost)
        });
        self.remove_waiter(state, ticket, now);
        Err(at.map(|at| self.config.instant(at)))
    }

    /// A waiter is dropped: it leaves no trace. A grant it never collected is refunded whole, on
    /// every dimension (the request was never sent). Runs in a destructor: nothing here panics.
    pub(crate) fn cancel(&self, ticket: Ticket, tokens: u64) {
        let now = self.config.offset(Instant::now());
        let mut guard = self.lock();
        let state = &mut *guard;
        match state.take_outcome(ticket.seq) {
            Some(Verdict::Granted { at, .. }) => {
                for dim in state.dims.as_mut_slice() {
                    Dims::unbook(&self.config, dim, at, dim.which.cost(tokens));
                }
                self.drain(state, now, true);
            }
            Some(Verdict::Failed(_)) => {}
            None => self.remove_waiter(state, ticket, now),
        }
    }

    /// Removes a queued waiter; whoever is selected next is told.
    pub(super) fn remove_waiter(&self, state: &mut KeyState, ticket: Ticket, now: u64) {
        let removed = state
            .waiting
            .as_deref_mut()
            .and_then(|w| w.discipline.remove(ticket));
        if removed.is_some() {
            self.drain(state, now, false);
        }
    }

    /// Counts `extra` tokens of expected debt while a call is in flight (see
    /// [`Permit::expect_debt`](super::Permit::expect_debt)); its settlement takes them back.
    pub(crate) fn expect_debt(&self, extra: u64) {
        let mut state = self.lock();
        state.dims.in_flight = state.dims.in_flight.saturating_add(u128::from(extra));
    }

    /// Settles a permit admitted at offset `at` under one lock: `refund` comes off its admission
    /// entry on each token dimension, `debt` is a new entry at the settle instant; with the
    /// `account` of a permit the fair shares granted, the tenant's account is corrected by what
    /// it really used first. Waiters are admitted only after all of it, so a refund never lets
    /// in a request that the debt booked with it would have kept out. The clock is read only if
    /// there is debt to date or someone waits (the refund may let them in). Runs in a
    /// destructor (a dropped permit): nothing here panics. The `expected` debt the permit
    /// counted while in flight is taken back first.
    pub(crate) fn settle(
        &self,
        at: u64,
        refund: u64,
        debt: u64,
        account: Option<&Account>,
        expected: u64,
    ) {
        let mut guard = self.lock();
        let state = &mut *guard;
        state.dims.in_flight = state.dims.in_flight.saturating_sub(u128::from(expected));
        if let Some(account) = account
            && state.dims.share_unit().settles()
            && let Some(waiting) = state.waiting.as_deref_mut()
        {
            waiting
                .discipline
                .on_settle(account, i128::from(debt) - i128::from(refund));
        }
        if refund > 0 {
            for dim in state.dims.as_mut_slice() {
                if dim.which.settles() {
                    Dims::unbook(&self.config, dim, at, refund);
                }
            }
        }
        let drain = (refund > 0 || expected > 0) && state.has_waiters();
        if debt == 0 && !drain {
            return;
        }
        let now = self.config.offset(Instant::now());
        if debt > 0 {
            let at = state.dims.stamp(now);
            for dim in state.dims.as_mut_slice() {
                if dim.which.settles() {
                    dim.ledger.expire(self.config.span(dim.which), now);
                    Dims::book(&self.config, dim, at, debt);
                }
            }
        }
        if drain {
            self.drain(state, now, true);
        }
    }

    /// Changes the quota; waiters whose cost no longer fits at all fail. A dimension the new
    /// quota adds starts with an empty window; one it drops is forgotten. A quota that limits
    /// nothing changes nothing (the caller refuses it).
    pub(crate) fn set_quota(&self, state: &mut KeyState, quota: &Quota, now: Instant) {
        let now = self.config.offset(now);
        let in_flight = state.dims.in_flight;
        let (mut old, latest) = state.dims.take();
        let mut dims = Vec::with_capacity(Dimension::ALL.len());
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
        state.dims = match dims.len() {
            0 => {
                // Refused by the caller; keep the old limits rather than none.
                old.sort_by_key(|d| d.which);
                Dims::from_vec(old, latest)
            }
            _ => Dims::from_vec(dims, latest),
        };
        state.dims.in_flight = in_flight;
        state.pinned = true;
        let KeyState { dims, waiting, .. } = state;
        if let Some(waiting) = waiting.as_deref_mut() {
            for (ticket, error, waker) in
                waiting.discipline.fail_where(|cost| dims.above_limit(cost))
            {
                waiting.outcomes.insert(ticket, Verdict::Failed(error));
                waker.wake();
            }
        }
        tracing::debug!(%quota, "quota changed");
        self.drain(state, now, true);
    }

    /// Whether the key can be forgotten: marks it evicted if so. `this` must be the map's own
    /// reference, not a clone.
    pub(crate) fn try_evict(this: &Arc<Self>, now: Instant) -> bool {
        let now = this.config.offset(now);
        let mut guard = this.lock();
        let state = &mut *guard;
        if state.evicted {
            return true;
        }
        state.dims.expire(&this.config, now);
        let quiet = state.dims.quiet(&this.config, now);
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

    /// Expires entries and admits the selected waiter while it fits on every dimension. Tells
    /// the waiter selected after that, so it arms its timer; with `notify_head`, tells it even
    /// if it was told before (capacity came back earlier than its timer).
    pub(super) fn drain(&self, state: &mut KeyState, now: u64, notify_head: bool) {
        let config = &*self.config;
        state.dims.expire(config, now);
        if !state.has_waiters() {
            return;
        }
        // The limit in force does not change while waiters are served: one share for the drain.
        let share = state.dims.share(config, now);
        let KeyState { dims, waiting, .. } = state;
        let Some(waiting) = waiting.as_deref_mut() else {
            return;
        };
        if let Some(gate) = waiting.gates.front() {
            // A request of several scopes goes first; only it can admit itself (it locks all of
            // its keys), so it is told.
            if notify_head || gate.seq != waiting.gate_notified {
                gate.waker.wake_by_ref();
                waiting.gate_notified = gate.seq;
            }
            return;
        }
        loop {
            let Some((flow, head)) = waiting.discipline.selected(now, share) else {
                return;
            };
            let (cost, ticket) = (head.cost, head.ticket);
            if ticket & SCOPED != 0 || !dims.fits(config, now, cost) {
                if notify_head || ticket != waiting.notified {
                    if let Some(w) = &head.waker {
                        w.wake_by_ref();
                    }
                    waiting.notified = ticket;
                }
                return;
            }
            let at = dims.charge(config, now, cost);
            let Some((slot, account)) = waiting.discipline.grant(flow, at, share.unit.cost(cost))
            else {
                super::shares::broken("the selected waiter cannot be granted");
                return;
            };
            waiting
                .outcomes
                .insert(ticket, Verdict::Granted { at, account });
            if let Some(w) = slot.waker {
                w.wake();
            }
        }
    }
}

/// The result of a waiter whose ticket is neither queued nor decided: a broken invariant (a
/// ticket is queued or has an outcome until it is collected), reported as a refusal.
fn lost() -> WaiterPoll {
    debug_assert!(false, "a waiter's ticket is neither queued nor decided");
    WaiterPoll::Done(Verdict::Failed(AdmissionError::QueueFull {
        depth: 0,
        would_wait: None,
    }))
}

impl KeyState {
    #[inline]
    pub(super) fn has_waiters(&self) -> bool {
        self.waiting.as_ref().is_some_and(|w| !w.is_empty())
    }

    pub(super) fn take_outcome(&mut self, seq: u64) -> Option<Verdict> {
        self.waiting.as_mut()?.take_outcome(seq)
    }

    /// Whether the key limits `dimension`.
    pub(crate) fn limits(&self, dimension: Dimension) -> bool {
        self.dims.has(dimension)
    }
}
