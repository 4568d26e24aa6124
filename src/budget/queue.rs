//! The waiting side of a key, and its queue discipline: the ONE seam between FIFO and fair
//! shares. The engine's verbs (`key.rs`) are written once against [`Discipline`]: push a
//! waiter, find the selected one (the waiter served next: the head of a FIFO queue, or the pick
//! of the fair shares), grant it, remove a waiter, list what is ahead of one, correct an account
//! on settlement, fail the waiters a new limit refuses.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::task::Waker;

use super::config::KeyConfig;
use super::error::AdmissionError;
use super::fair::Class;
use super::ledger::Share;
use super::shares::Fair;

/// A key's waiter queue and outcome table keep at most this capacity once empty.
pub(super) const KEEP_CAPACITY: usize = 64;

/// One waiting request. Kept small: a waiter costs this slot plus its future. A slot is live
/// while it has a waker; cancelled or failed, it is a tombstone until it reaches the front or is
/// compacted. Its cost on each dimension follows from its token cost (`Dimension::cost`).
///
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

/// The tenant and lane whose account a permit's settlement corrects (`None` inside: the
/// anonymous tenant).
pub(crate) type Account = (Option<Arc<str>>, u8);

/// What a waiter finds when it looks again.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Admitted at this offset (every dimension's entry is dated there); with fairness, the
    /// tenant and lane whose account its settlement corrects.
    Granted { at: u64, account: Option<Account> },
    /// Refused while waiting (a limit fell below its cost).
    Failed(AdmissionError),
}

/// A queued waiter's identity: its ticket, and (with fairness) the flow of its tenant, so it is
/// found without a search through every tenant.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    pub(crate) seq: u64,
    pub(crate) flow: u32,
}

/// FIFO: waiters in arrival order (ascending tickets); the front is always live.
#[derive(Debug, Default)]
pub(super) struct Fifo {
    queue: VecDeque<Slot>,
    tombstones: usize,
}

impl Fifo {
    fn find(&self, seq: u64) -> Option<usize> {
        self.queue
            .binary_search_by_key(&seq, |s| s.ticket)
            .ok()
            .filter(|&idx| self.queue[idx].live())
    }

    /// Pops tombstones off the front, and compacts when they are most of the queue.
    fn clean(&mut self) {
        while self.queue.front().is_some_and(|s| !s.live()) {
            self.queue.pop_front();
            self.tombstones = self.tombstones.saturating_sub(1);
        }
        if self.tombstones > 32 && self.tombstones * 2 > self.queue.len() {
            self.queue.retain(Slot::live);
            self.tombstones = 0;
        }
        if self.queue.is_empty() {
            self.tombstones = 0;
            if self.queue.capacity() > KEEP_CAPACITY {
                // A burst of waiters is over: give its memory back rather than keep it until
                // the key is evicted.
                self.queue = VecDeque::new();
            }
        }
    }

    fn live(&self) -> usize {
        self.queue.len().saturating_sub(self.tombstones)
    }
}

/// The order in which a key's waiters are served.
#[derive(Debug)]
pub(super) enum Discipline {
    /// Strictly in arrival order: the head is served first, and nobody overtakes it.
    Fifo(Fifo),
    /// By lane and tenant ([`Fair`]): the selected waiter plays the head's part.
    Fair(Box<Fair>),
}

impl Discipline {
    fn new(config: &KeyConfig) -> Self {
        match &config.fair {
            Some(f) => Discipline::Fair(Box::new(Fair::new(Arc::clone(f)))),
            None => Discipline::Fifo(Fifo::default()),
        }
    }

    /// The flow an arrival of `class` joins (always 0 in FIFO), created if needed.
    pub(super) fn enter(&mut self, class: &Class) -> u32 {
        match self {
            Discipline::Fifo(_) => 0,
            Discipline::Fair(f) => f.flow_for(class),
        }
    }

    /// The waiters that count against `max_queue` for an arrival in `flow`: the key's (FIFO),
    /// the tenant's (fair).
    pub(super) fn depth(&self, flow: u32) -> usize {
        match self {
            Discipline::Fifo(q) => q.live(),
            Discipline::Fair(f) => f.depth(flow),
        }
    }

    /// Forgets what [`enter`](Self::enter) created for an arrival that was then refused.
    pub(super) fn release(&mut self, flow: u32) {
        if let Discipline::Fair(f) = self {
            f.release(flow);
        }
    }

    /// Queues a waiter in `flow`.
    pub(super) fn push(&mut self, flow: u32, seq: u64, cost: u64, waker: Waker) {
        match self {
            Discipline::Fifo(q) => q.queue.push_back(Slot {
                ticket: seq,
                cost,
                waker: Some(waker),
            }),
            Discipline::Fair(f) => f.push(flow, seq, cost, waker),
        }
    }

    /// The waiter served next, if any.
    pub(super) fn selected(&mut self, now: u64, share: Share) -> Option<(u32, &Slot)> {
        match self {
            Discipline::Fifo(q) => q.queue.front().map(|s| (0, s)),
            Discipline::Fair(f) => {
                let flow = f.selected(now, share)?;
                f.head(flow).map(|s| (flow, s))
            }
        }
    }

    /// Serves the selected waiter of `flow`, admitted at `at` for `amount` on the share
    /// dimension: returns its slot (the caller records the grant and wakes it) and the account
    /// its settlement corrects.
    pub(super) fn grant(
        &mut self,
        flow: u32,
        at: u64,
        amount: u64,
    ) -> Option<(Slot, Option<Account>)> {
        match self {
            Discipline::Fifo(q) => {
                let slot = q.queue.pop_front()?;
                q.clean();
                Some((slot, None))
            }
            Discipline::Fair(f) => f.grant(flow, at, amount),
        }
    }

    /// The live slot of `ticket`.
    pub(super) fn find_mut(&mut self, ticket: Ticket) -> Option<&mut Slot> {
        match self {
            Discipline::Fifo(q) => {
                let idx = q.find(ticket.seq)?;
                Some(&mut q.queue[idx])
            }
            Discipline::Fair(f) => f.find_mut(ticket),
        }
    }

    /// Removes a waiter (cancelled, failed, or given up). Returns its waker if it was queued.
    pub(super) fn remove(&mut self, ticket: Ticket) -> Option<Waker> {
        match self {
            Discipline::Fifo(q) => {
                let idx = q.find(ticket.seq)?;
                let waker = q.queue[idx].waker.take();
                q.tombstones += 1;
                q.clean();
                waker
            }
            Discipline::Fair(f) => f.remove(ticket),
        }
    }

    /// The costs served before the waiter `ticket` (or, with `None` as its sequence, a new
    /// arrival in `ticket.flow`), by the discipline as it stands (no later arrival): a FIFO
    /// queue's waiters ahead; with fairness, an estimate (see `Fair::ahead`).
    pub(super) fn ahead(&self, flow: u32, seq: Option<u64>, share: Share) -> Vec<u64> {
        match self {
            Discipline::Fifo(q) => q
                .queue
                .iter()
                .filter(|s| s.live() && seq.is_none_or(|seq| s.ticket < seq))
                .map(|s| s.cost)
                .collect(),
            Discipline::Fair(f) => f.ahead(flow, seq, |c| share.unit.cost(c)),
        }
    }

    /// An admission of `amount` (share dimension) that did not wait: counted for its lane's
    /// minimum.
    pub(super) fn record(&mut self, class: &Class, at: u64, amount: u64) {
        if let Discipline::Fair(f) = self {
            f.record(class, at, amount);
        }
    }

    /// Settlement: the account of a permit granted by the fair shares is corrected by what it
    /// really used, `delta = settled - reserved` on the share dimension.
    pub(super) fn on_settle(&mut self, account: &Account, delta: i128) {
        if let Discipline::Fair(f) = self {
            f.correct(account.0.as_ref(), account.1, delta);
        }
    }

    /// Removes every live waiter `refuse` returns an error for; returns them with their wakers,
    /// for the caller to record and wake.
    pub(super) fn fail_where(
        &mut self,
        refuse: impl FnMut(u64) -> Option<AdmissionError>,
    ) -> Vec<(u64, AdmissionError, Waker)> {
        match self {
            Discipline::Fifo(q) => {
                let mut refuse = refuse;
                let mut failed = Vec::new();
                for slot in q.queue.iter_mut().filter(|s| s.live()) {
                    if let Some(error) = refuse(slot.cost)
                        && let Some(w) = slot.waker.take()
                    {
                        failed.push((slot.ticket, error, w));
                    }
                }
                q.tombstones += failed.len();
                q.clean();
                failed
            }
            Discipline::Fair(f) => f.fail_where(refuse),
        }
    }

    pub(super) fn live_waiters(&self) -> usize {
        match self {
            Discipline::Fifo(q) => q.live(),
            Discipline::Fair(f) => f.live_waiters(),
        }
    }

    /// Tenants tracked (0 in FIFO).
    pub(super) fn tracked(&self) -> usize {
        match self {
            Discipline::Fifo(_) => 0,
            Discipline::Fair(f) => f.tracked(),
        }
    }
}

/// A request of several scopes that its first scope has served, waiting for every scope to
/// fit (see `scoped.rs`): on each of its keys, gates go before the key's own queue, in the
/// order of their `seq` (one sequence for the whole budget, taken under the locks of all of the
/// request's keys, so every key orders two gates alike).
#[derive(Debug)]
pub(super) struct Gate {
    pub(super) seq: u64,
    pub(super) cost: u64,
    pub(super) waker: Waker,
}

/// The low bit of a ticket: the waiter names several scopes. The discipline orders it as any
/// other waiter; when it is selected, the drain does not grant it (its other keys are not
/// locked) but tells it, and it moves to the gates of all of its keys.
pub(super) const SCOPED: u64 = 1;

/// The waiting side of a key, allocated the first time a request waits on it (or, with lane
/// minimums, is counted for its lane): a key that never waits does not pay for it.
#[derive(Debug)]
pub(super) struct Waiting {
    pub(super) discipline: Discipline,
    /// Requests of several scopes served by their first scope, in `seq` order: they go first.
    pub(super) gates: VecDeque<Gate>,
    /// The gate that was last told it is first.
    pub(super) gate_notified: u64,
    /// The next ticket: tickets go up by 2, the low bit says [`SCOPED`].
    pub(super) next_ticket: u64,
    /// The selected waiter that was last told it is selected (so it arms its timer).
    pub(super) notified: u64,
    /// Results for waiters that were granted or failed and have not looked yet.
    pub(super) outcomes: HashMap<u64, Verdict>,
}

impl Waiting {
    pub(super) fn new(config: &KeyConfig) -> Self {
        Waiting {
            discipline: Discipline::new(config),
            gates: VecDeque::new(),
            gate_notified: u64::MAX,
            next_ticket: 0,
            notified: u64::MAX,
            outcomes: HashMap::new(),
        }
    }

    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.gates.is_empty() && self.discipline.live_waiters() == 0
    }

    /// The bytes of the waiting side: exact for FIFO queues, gates and outcomes (by capacity;
    /// the outcome table's per-slot overhead estimated at one byte), estimated for fair shares.
    pub(super) fn memory(&self) -> usize {
        use std::mem::size_of;
        let discipline = match &self.discipline {
            Discipline::Fifo(q) => q.queue.capacity() * size_of::<Slot>(),
            Discipline::Fair(f) => size_of::<Fair>() + f.memory(),
        };
        size_of::<Waiting>()
            + discipline
            + self.gates.capacity() * size_of::<Gate>()
            + self.outcomes.capacity() * (size_of::<(u64, Verdict)>() + 1)
    }

    /// Waiters on the key: its own, and the gates.
    pub(super) fn live_waiters(&self) -> usize {
        self.discipline.live_waiters() + self.gates.len()
    }

    /// A new ticket (with the [`SCOPED`] bit for a request of several scopes).
    pub(super) fn ticket(&mut self, scoped: bool) -> u64 {
        let seq = self.next_ticket | u64::from(scoped);
        self.next_ticket += 2;
        seq
    }

    /// Removes the gate `seq`; whether it was the first.
    pub(super) fn remove_gate(&mut self, seq: u64) -> bool {
        match self.gates.binary_search_by_key(&seq, |g| g.seq) {
            Ok(idx) => {
                self.gates.remove(idx);
                if self.gates.is_empty() && self.gates.capacity() > KEEP_CAPACITY {
                    self.gates = VecDeque::new();
                }
                idx == 0
            }
            Err(_) => false,
        }
    }

    pub(super) fn take_outcome(&mut self, seq: u64) -> Option<Verdict> {
        let outcome = self.outcomes.remove(&seq);
        if self.outcomes.is_empty() && self.outcomes.capacity() > KEEP_CAPACITY {
            self.outcomes = HashMap::new();
        }
        outcome
    }

    #[cfg(test)]
    pub(super) fn fifo_capacity(&self) -> Option<(usize, usize)> {
        match &self.discipline {
            Discipline::Fifo(q) => Some((q.queue.len(), q.queue.capacity())),
            Discipline::Fair(_) => None,
        }
    }
}
