//! Scopes: one request charged to several keys at once (for Bedrock: its model's key and its
//! account's daily key; for a gateway: a tenant's key inside a model's key).
//!
//! # How a request of several scopes waits
//!
//! Its FIRST scope that has a quota is its *primary*: the request waits in the primary's queue,
//! served by that key's discipline (FIFO or fair shares) like any other waiter. When the
//! discipline serves it (it is the head, or the selected waiter, and fits on the primary: when
//! a waiter of one scope would be granted), the drain does not grant it
//! (only a holder of all of its keys' locks can), it tells it; the request then locks all of
//! its keys, in one canonical order (by the address of their states), and becomes a *gate* on
//! each of them: gates are numbered by one sequence for the whole budget, taken under those
//! locks, so any two gates that share keys are in the same order on every key they share. A
//! key serves its gates first, in that order, and its own queue after them. A gate is admitted
//! when it is first on every one of its keys and fits on every dimension of every key: all are
//! charged at one instant.
//!
//! Nothing of this is allocated per request: the states, their lock order, the held locks
//! and the permit's references are inline arrays of at most [`MAX_SCOPES`], each key is looked
//! up once (one hash, under one epoch guard for all of them) and locked once per step.
//!
//! **No deadlock.** Among gates, the one with the smallest sequence is first on all of its keys
//! (every gate on those keys came later), and fitting is monotone in time (entries expire,
//! limits recover), so it is admitted; by induction every gate is. A key's own waiters wait
//! only for its gates and for each other.
//!
//! **The bound.** A request of scopes `A` (primary) and `B` holds back the waiters of `A`
//! from the moment `A`'s discipline serves it until it is admitted: the time for the gates
//! ahead of it on `B` (each admitted as soon as it fits, by the argument above) and for its own
//! cost to fit on `B`. With [`max_wait`](super::BudgetBuilder::max_wait) that is at most
//! `max_wait` (a gate whose deadline passes leaves, and the next one moves up). The waiters of
//! `A` that are not gates are FIFO (or fair) among themselves; gates of requests whose primary
//! is another key go before them.

use std::sync::{Arc, MutexGuard};
use std::task::Waker;
use std::time::Duration;

use tokio::time::Instant;

use super::config::KeyConfig;
use super::error::AdmissionError;
use super::fair::Class;
use super::key::{KeyShared, KeyState};
use super::queue::{Account, Gate, Ticket, Verdict, Waiting};

/// The most scopes one request may name.
pub const MAX_SCOPES: usize = 4;

/// The quota keys one request is charged to: one to [`MAX_SCOPES`], admitted together (see
/// [`Budget::acquire_scopes`](super::Budget::acquire_scopes)). Kept inline: one scope allocates
/// nothing.
///
/// ```
/// use bedrock_throttle::budget::Scopes;
///
/// let scopes = Scopes::new("claude").with("account");
/// assert_eq!(scopes.len(), 2);
/// assert_eq!(scopes.iter().copied().collect::<Vec<_>>(), ["claude", "account"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scopes<K> {
    keys: [Option<K>; MAX_SCOPES],
    /// More than [`MAX_SCOPES`] were named: admission refuses the request.
    overflow: bool,
}

impl<K> Scopes<K> {
    /// One scope.
    pub fn new(first: K) -> Self {
        Scopes {
            keys: [Some(first), None, None, None],
            overflow: false,
        }
    }

    /// The same scopes and `key`. Beyond [`MAX_SCOPES`], admission refuses the request with
    /// [`AdmissionError::TooManyScopes`].
    pub fn with(mut self, key: K) -> Self {
        match self.keys.iter_mut().find(|k| k.is_none()) {
            Some(slot) => *slot = Some(key),
            None => self.overflow = true,
        }
        self
    }

    /// The number of scopes.
    pub fn len(&self) -> usize {
        self.keys.iter().flatten().count()
    }

    /// Always false: a request has at least one scope.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The first scope.
    pub fn first(&self) -> &K {
        match &self.keys[0] {
            Some(k) => k,
            None => unreachable!("the first scope is always set"),
        }
    }

    /// The scopes, in order.
    pub fn iter(&self) -> impl Iterator<Item = &K> {
        self.keys.iter().flatten()
    }

    /// The only scope, if there is one.
    pub(crate) fn into_single(self) -> Result<K, Self> {
        match self.keys {
            [Some(k), None, None, None] if !self.overflow => Ok(k),
            keys => Err(Scopes {
                keys,
                overflow: self.overflow,
            }),
        }
    }

    /// The first error of the scopes themselves: too many, or a key named twice.
    pub(crate) fn check(&self) -> Result<(), AdmissionError>
    where
        K: Eq,
    {
        if self.overflow {
            return Err(AdmissionError::TooManyScopes { max: MAX_SCOPES });
        }
        for (i, k) in self.iter().enumerate() {
            if self.iter().take(i).any(|earlier| earlier == k) {
                return Err(AdmissionError::DuplicateScope { scope: i });
            }
        }
        Ok(())
    }
}

impl<K> From<K> for Scopes<K> {
    fn from(key: K) -> Self {
        Scopes::new(key)
    }
}

/// The states of a request's scopes that have a quota, kept inline (a request of several
/// scopes allocates nothing to be admitted), in the one lock order of every set: by the
/// address of the state.
#[derive(Debug)]
pub(crate) struct ScopeSet {
    /// `(index of the scope in the request, its state)`, the first `len` set, in lock order.
    keys: [Option<(usize, Arc<KeyShared>)>; MAX_SCOPES],
    len: usize,
    /// The position in `keys` of the primary: the request's first scope with a quota.
    primary: usize,
}

/// The locks of a [`ScopeSet`], held, in its order.
struct Locked<'a> {
    guards: [Option<MutexGuard<'a, KeyState>>; MAX_SCOPES],
}

impl Locked<'_> {
    fn iter(&self) -> impl Iterator<Item = &KeyState> {
        self.guards.iter().flatten().map(|g| &**g)
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut KeyState> {
        self.guards.iter_mut().flatten().map(|g| &mut **g)
    }

    /// The state at position `i` of the set (`i` is below its length).
    fn at(&mut self, i: usize) -> &mut KeyState {
        match self.guards.get_mut(i).and_then(Option::as_deref_mut) {
            Some(state) => state,
            None => unreachable!("a position of the set is locked"),
        }
    }
}

/// A request of several scopes, waiting.
#[derive(Debug)]
pub(crate) struct ScopedWait {
    pub(crate) set: ScopeSet,
    /// Its place in the primary's queue (until it is served there).
    ticket: Ticket,
    /// Its gate, once its primary served it.
    gate: Option<u64>,
    /// The account its primary's fair shares charged, if any.
    account: Option<Account>,
}

/// What a request of several scopes gets.
pub(crate) enum ScopedPoll {
    Admitted(super::Permit),
    Failed(AdmissionError),
    /// First everywhere: it fits at this instant.
    Head(Instant),
    /// Others go first somewhere: it is told when it is first.
    Behind,
    /// Queued (from [`ScopeSet::begin`]).
    Queued(ScopedWait),
}

impl ScopeSet {
    /// No state yet.
    pub(crate) fn new() -> Self {
        ScopeSet {
            keys: [None, None, None, None],
            len: 0,
            primary: 0,
        }
    }

    /// Adds the state of the request's scope `scope` (scopes come in the request's order).
    pub(crate) fn push(&mut self, scope: usize, shared: Arc<KeyShared>) {
        debug_assert!(self.len < MAX_SCOPES, "at most MAX_SCOPES scopes");
        if let Some(slot) = self.keys.get_mut(self.len) {
            *slot = Some((scope, shared));
            self.len += 1;
        }
    }

    /// Whether no scope has a quota.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Puts the states in lock order and finds the primary.
    fn seal(&mut self) {
        let keys = &mut self.keys[..self.len];
        keys.sort_unstable_by_key(|k| k.as_ref().map(|(_, s)| Arc::as_ptr(s) as usize));
        self.primary = keys
            .iter()
            .enumerate()
            .min_by_key(|(_, k)| k.as_ref().map(|(scope, _)| *scope))
            .map_or(0, |(i, _)| i);
    }

    /// `(scope index, state)`, in lock order.
    fn states(&self) -> impl Iterator<Item = &(usize, Arc<KeyShared>)> {
        self.keys.iter().flatten()
    }

    /// The primary's state.
    fn primary(&self) -> &KeyShared {
        match &self.keys[self.primary] {
            Some((_, shared)) => shared,
            None => unreachable!("the primary is set"),
        }
    }

    fn config(&self) -> &KeyConfig {
        self.primary().config()
    }

    /// Locks every key, in the one canonical order.
    fn lock_all(&self) -> Locked<'_> {
        let mut guards = [None, None, None, None];
        for (slot, (_, shared)) in guards.iter_mut().zip(self.states()) {
            *slot = Some(shared.lock());
        }
        Locked { guards }
    }

    /// The states for a permit: the primary first (a fair settlement corrects its account).
    fn permit_keys(&self) -> [Option<Arc<KeyShared>>; MAX_SCOPES] {
        let mut out = [None, None, None, None];
        let rest = self
            .states()
            .enumerate()
            .filter(|&(i, _)| i != self.primary)
            .map(|(_, (_, s))| s);
        let primary = self.keys[self.primary].as_ref().map(|(_, s)| s);
        for (slot, shared) in out.iter_mut().zip(primary.into_iter().chain(rest)) {
            *slot = Some(Arc::clone(shared));
        }
        out
    }

    /// The states for a permit, moved out of the set: the primary first.
    fn into_permit_keys(self) -> [Option<Arc<KeyShared>>; MAX_SCOPES] {
        let mut keys = self.keys;
        keys.swap(0, self.primary);
        keys.map(|k| k.map(|(_, shared)| shared))
    }

    /// The refusal of a cost above one scope's whole limit (the first such scope of the
    /// request).
    fn above_limit(&self, guards: &Locked<'_>, tokens: u64) -> Option<AdmissionError> {
        self.states()
            .zip(guards.iter())
            .filter_map(|((scope, _), g)| Some((*scope, g.dims.above_limit(tokens)?)))
            .min_by_key(|(scope, _)| *scope)
            .map(|(scope, error)| match error {
                AdmissionError::CostAboveLimit {
                    dimension,
                    cost,
                    limit,
                } => AdmissionError::ScopeAboveLimit {
                    scope,
                    dimension,
                    cost,
                    limit,
                },
                other => other,
            })
    }

    /// Charges `tokens` on every key at one offset: the latest of `now` and every key's latest
    /// booking.
    fn charge(config: &KeyConfig, guards: &mut Locked<'_>, now: u64, tokens: u64) -> u64 {
        let at = guards.iter().map(|g| g.dims.latest()).fold(now, u64::max);
        for g in guards.iter_mut() {
            g.dims.charge(config, at, tokens);
        }
        at
    }

    /// The first step of an admission: admitted, refused, or queued in the primary's queue.
    /// `None` if a state was evicted meanwhile (the caller looks the keys up again).
    pub(crate) fn begin(
        mut self,
        tokens: u64,
        now: Instant,
        waker: Option<&Waker>,
        class: &Class,
    ) -> Option<ScopedPoll> {
        self.seal();
        let config = self.config();
        let now = config.offset(now);
        let mut guards = self.lock_all();
        if guards.iter().any(|g| g.evicted) {
            return None;
        }
        if let Some(error) = self.above_limit(&guards, tokens) {
            return Some(ScopedPoll::Failed(error));
        }
        if guards.iter().all(|g| g.dims.costs_nothing(tokens)) {
            drop(guards);
            let at = config.instant(now);
            return Some(ScopedPoll::Admitted(super::Permit::free(tokens, at)));
        }
        for ((_, shared), g) in self.states().zip(guards.iter_mut()) {
            g.dims.expire(config, now);
            if g.has_waiters() {
                shared.drain(g, now, false);
            }
        }
        if guards
            .iter_mut()
            .all(|g| !g.has_waiters() && g.dims.fits(config, now, tokens))
        {
            let at = Self::charge(config, &mut guards, now, tokens);
            if config.fair.as_ref().is_some_and(|f| f.has_minimums()) {
                self.primary()
                    .record_lane(guards.at(self.primary), class, at, tokens, now);
            }
            drop(guards);
            return Some(ScopedPoll::Admitted(super::Permit::scoped(
                self.into_permit_keys(),
                tokens,
                at,
                None,
            )));
        }
        // Queue in the primary's discipline.
        let p = self.primary;
        let share = guards.at(p).dims.share(config, now);
        let primary = guards
            .at(p)
            .waiting
            .get_or_insert_with(|| Box::new(Waiting::new(config)));
        let flow = primary.discipline.enter(class);
        let depth = primary.discipline.depth(flow);
        let estimate = |guards: &Locked<'_>| {
            let mut latest = now;
            for (i, g) in guards.iter().enumerate() {
                let mut ahead: Vec<u64> = Vec::new();
                if let Some(w) = g.waiting.as_deref() {
                    ahead.extend(w.gates.iter().map(|g| g.cost));
                    if i == p {
                        ahead.extend(w.discipline.ahead(flow, None, share));
                    }
                }
                match g.dims.schedule(config, now, ahead.into_iter(), tokens) {
                    Some(at) => latest = latest.max(at),
                    None => return Duration::MAX,
                }
            }
            Duration::from_nanos(latest - now)
        };
        let refused = if waker.is_none() {
            Some(AdmissionError::WaitTooLong {
                would_wait: estimate(&guards),
                max_wait: Duration::ZERO,
            })
        } else if let Some(max) = config.max_queue
            && depth >= max
        {
            Some(AdmissionError::QueueFull {
                depth,
                would_wait: Some(estimate(&guards)),
            })
        } else if let Some(max_wait) = config.max_wait {
            let would_wait = estimate(&guards);
            (would_wait > max_wait).then_some(AdmissionError::WaitTooLong {
                would_wait,
                max_wait,
            })
        } else {
            None
        };
        let Some(primary) = guards.at(p).waiting.as_deref_mut() else {
            unreachable!("allocated above");
        };
        if let Some(error) = refused {
            primary.discipline.release(flow);
            return Some(ScopedPoll::Failed(error));
        }
        let Some(waker) = waker else {
            unreachable!("refused above without a waker");
        };
        let seq = primary.ticket(true);
        primary.discipline.push(flow, seq, tokens, waker.clone());
        tracing::debug!(
            tokens,
            depth,
            scopes = self.len,
            "admission of several scopes waits"
        );
        drop(guards);
        Some(ScopedPoll::Queued(ScopedWait {
            set: self,
            ticket: Ticket { seq, flow },
            gate: None,
            account: None,
        }))
    }
}

impl ScopedWait {
    /// The waiter looks again: served by its primary, it becomes a gate on every key; first on
    /// every key and fitting everywhere, it is admitted.
    pub(crate) fn poll(&mut self, tokens: u64, now: Instant, waker: &Waker) -> ScopedPoll {
        let set = &self.set;
        let config = set.config();
        let now = config.offset(now);
        let mut guards = set.lock_all();
        if self.gate.is_none() {
            let primary = set.primary();
            let state = guards.at(set.primary);
            match state.take_outcome(self.ticket.seq) {
                Some(Verdict::Failed(error)) => return ScopedPoll::Failed(error),
                Some(Verdict::Granted { .. }) => {
                    super::shares::broken("a request of several scopes granted by one key");
                }
                None => {}
            }
            primary.drain(state, now, false);
            let share = state.dims.share(config, now);
            let KeyState { dims, waiting, .. } = state;
            let Some(waiting) = waiting.as_deref_mut() else {
                return lost();
            };
            let Some(slot) = waiting.discipline.find_mut(self.ticket) else {
                return lost();
            };
            match &slot.waker {
                Some(w) if w.will_wake(waker) => {}
                _ => slot.waker = Some(waker.clone()),
            }
            let selected = waiting
                .discipline
                .selected(now, share)
                .is_some_and(|(_, s)| s.ticket == self.ticket.seq);
            if !selected || !waiting.gates.is_empty() {
                if selected {
                    // Told it was selected, it found gates first: the drain that empties them
                    // must tell it again.
                    waiting.notified = u64::MAX;
                }
                return ScopedPoll::Behind;
            }
            if !dims.fits(config, now, tokens) {
                // Served when it fits on its primary, as a waiter of one scope would be (so
                // the fair shares account for it when the others it competes with are there).
                waiting.notified = self.ticket.seq;
                return match dims.schedule(config, now, std::iter::empty(), tokens) {
                    Some(at) => ScopedPoll::Head(config.instant(at)),
                    None => lost(),
                };
            }
            // Served by its primary: it leaves the queue there and waits at the gates.
            let Some((_, account)) =
                waiting
                    .discipline
                    .grant(self.ticket.flow, now, share.unit.cost(tokens))
            else {
                return lost();
            };
            self.account = account;
            let seq = config
                .gate_seq
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            for g in guards.iter_mut() {
                let waiting = g
                    .waiting
                    .get_or_insert_with(|| Box::new(Waiting::new(config)));
                waiting.gates.push_back(Gate {
                    seq,
                    cost: tokens,
                    waker: waker.clone(),
                });
            }
            self.gate = Some(seq);
        }
        let Some(seq) = self.gate else {
            unreachable!("a gate was just set");
        };
        if let Some(error) = set.above_limit(&guards, tokens) {
            // A limit fell below its cost while it waited.
            leave(set, &mut self.gate, self.ticket, &mut guards, now);
            return ScopedPoll::Failed(error);
        }
        let mut first_everywhere = true;
        for g in guards.iter_mut() {
            let Some(waiting) = g.waiting.as_deref_mut() else {
                return lost();
            };
            match waiting.gates.front_mut() {
                Some(front) if front.seq == seq => {
                    if !front.waker.will_wake(waker) {
                        front.waker = waker.clone();
                    }
                    waiting.gate_notified = seq;
                }
                _ => {
                    if let Some(gate) = waiting.gates.iter_mut().find(|g| g.seq == seq)
                        && !gate.waker.will_wake(waker)
                    {
                        gate.waker = waker.clone();
                    }
                    first_everywhere = false;
                }
            }
        }
        if !first_everywhere {
            return ScopedPoll::Behind;
        }
        for g in guards.iter_mut() {
            g.dims.expire(config, now);
        }
        if guards.iter_mut().all(|g| g.dims.fits(config, now, tokens)) {
            let at = ScopeSet::charge(config, &mut guards, now, tokens);
            for ((_, shared), g) in set.states().zip(guards.iter_mut()) {
                if let Some(waiting) = g.waiting.as_deref_mut() {
                    waiting.remove_gate(seq);
                }
                shared.drain(g, now, false);
            }
            self.gate = None;
            drop(guards);
            return ScopedPoll::Admitted(super::Permit::scoped(
                set.permit_keys(),
                tokens,
                at,
                self.account.take(),
            ));
        }
        let mut at = now;
        for g in guards.iter() {
            match g.dims.schedule(config, now, std::iter::empty(), tokens) {
                Some(t) => at = at.max(t),
                None => return lost(),
            }
        }
        ScopedPoll::Head(config.instant(at))
    }

    /// The deadline passed: it leaves, with an estimate of when it would have been admitted
    /// (every key's gates ahead of it, and its primary's queue ahead of it while it is there).
    pub(crate) fn give_up(&mut self, tokens: u64, now: Instant) -> Option<Instant> {
        let config = self.set.config();
        let now = config.offset(now);
        let mut guards = self.set.lock_all();
        let mut latest = Some(now);
        for (i, g) in guards.iter().enumerate() {
            let mut ahead: Vec<u64> = Vec::new();
            if let Some(w) = g.waiting.as_deref() {
                let mine = self.gate.unwrap_or(u64::MAX);
                ahead.extend(w.gates.iter().take_while(|g| g.seq < mine).map(|g| g.cost));
                if i == self.set.primary && self.gate.is_none() {
                    let share = g.dims.share(config, now);
                    ahead.extend(w.discipline.ahead(
                        self.ticket.flow,
                        Some(self.ticket.seq),
                        share,
                    ));
                }
            }
            latest = match (
                latest,
                g.dims.schedule(config, now, ahead.into_iter(), tokens),
            ) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
        }
        leave(&self.set, &mut self.gate, self.ticket, &mut guards, now);
        latest.map(|at| config.instant(at))
    }

    /// The waiter is dropped: it leaves no trace. Runs in a destructor: nothing here panics.
    pub(crate) fn cancel(&mut self) {
        let now = self.set.config().offset(Instant::now());
        let mut guards = self.set.lock_all();
        leave(&self.set, &mut self.gate, self.ticket, &mut guards, now);
    }
}

/// Leaves every queue the waiter is in (the locks held), and tells whoever goes first next.
fn leave(
    set: &ScopeSet,
    gate: &mut Option<u64>,
    ticket: Ticket,
    guards: &mut Locked<'_>,
    now: u64,
) {
    match gate.take() {
        Some(seq) => {
            for ((_, shared), g) in set.states().zip(guards.iter_mut()) {
                if let Some(waiting) = g.waiting.as_deref_mut() {
                    waiting.remove_gate(seq);
                }
                shared.drain(g, now, false);
            }
        }
        None => {
            let state = guards.at(set.primary);
            if state.take_outcome(ticket.seq).is_none() {
                set.primary().remove_waiter(state, ticket, now);
            }
        }
    }
}

/// A waiter whose place is neither queued nor decided: a broken invariant, reported as a
/// refusal.
fn lost() -> ScopedPoll {
    debug_assert!(false, "a waiter of several scopes lost its place");
    ScopedPoll::Failed(AdmissionError::QueueFull {
        depth: 0,
        would_wait: None,
    })
}
