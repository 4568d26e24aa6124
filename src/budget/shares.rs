//! The fair queue discipline of one key: lanes in priority order, weighted fair queuing by
//! tokens between the tenants of a lane, FIFO within a tenant.
//!
//! Start-time fair queuing (Goyal, Vin and Cheng, 1996), with tags kept per tenant rather than
//! per request: a backlogged tenant's tag is the start tag `S` of its first waiter; serving it
//! sets the lane's virtual time `V = S` and moves the tenant's tag to its finish tag
//! `F = S + cost / weight`; a tenant that becomes backlogged starts at `max(V, F)`, so an idle
//! tenant saves nothing for later (no burst) and a tenant that was just served waits its turn.
//! The tenant with the smallest tag is served first. Keeping tags per tenant, not per request,
//! means a cancelled waiter needs no correction (its tag was never taken), and settlement
//! corrects one number: `F += (settled - reserved) / weight`.
//!
//! A tenant is tracked (a `Flow`) only while it has waiters or its tag is ahead of `V`; when
//! a lane has no waiters at all, its idle tenants are forgotten (the busy period ends, and the
//! next starts even).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::task::Waker;

use super::error::AdmissionError;
use super::fair::{Class, FairShared};
use super::ledger::{Ledger, Share};
use super::queue::{Account, Slot, Ticket};

type Hasher = foldhash::fast::RandomState;

/// Who a flow belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum TenantId {
    Anonymous,
    Named(Arc<str>),
    /// The tenants beyond `max_tenants`, together.
    Overflow,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FlowKey {
    lane: u8,
    tenant: TenantId,
}

/// One tenant of one lane.
#[derive(Debug)]
struct Flow {
    key: FlowKey,
    weight: f64,
    /// Backlogged: the start tag of its first waiter. Idle: its last finish tag.
    tag: f64,
    /// Waiters in arrival order; the front is always live.
    queue: VecDeque<Slot>,
    live: u32,
    tombstones: u32,
}

/// A tag as an ordered key: the bits of a non-negative finite `f64` sort as the number does.
/// Weights are validated so that tags stay finite; this runs inside destructors (a dropped
/// waiter), so a broken invariant is reported, never asserted.
#[inline]
fn bits(tag: f64) -> u64 {
    if !(tag >= 0.0 && tag.is_finite()) {
        broken("a fair tag is negative or not finite");
        return if tag > 0.0 { f64::MAX.to_bits() } else { 0 };
    }
    tag.to_bits()
}

/// Reports a broken invariant of the fair bookkeeping. The bookkeeping runs in destructors
/// (a waiter dropped, a permit settled), where a panic would abort the process: it logs
/// instead, and the caller takes the safe fallback.
#[cold]
pub(super) fn broken(what: &str) {
    tracing::error!(
        invariant = what,
        "bedrock-throttle: broken invariant in the fair shares"
    );
}

/// `n - 1`, reporting an underflow instead of panicking.
#[inline]
fn decrement<T: Copy + PartialEq + std::ops::Sub<Output = T> + From<u8>>(n: &mut T, what: &str) {
    if *n == T::from(0) {
        broken(what);
    } else {
        *n = *n - T::from(1);
    }
}

#[derive(Debug, Default)]
struct LaneState {
    /// The tag last served.
    virtual_time: f64,
    /// Backlogged flows by (tag, index).
    backlog: BTreeSet<(u64, u32)>,
    /// Idle flows whose tag is ahead of the virtual time, by (tag, index).
    ahead: BTreeSet<(u64, u32)>,
    /// What the lane was admitted in the last window, on the share dimension.
    admitted: Ledger,
}

/// The fair discipline of one key.
#[derive(Debug)]
pub(crate) struct Fair {
    shared: Arc<FairShared>,
    generation: u64,
    minimums: Box<[f64]>,
    any_minimum: bool,
    lanes: Box<[LaneState]>,
    flows: Vec<Option<Flow>>,
    free: Vec<u32>,
    index: HashMap<FlowKey, u32, Hasher>,
    /// Flows of named tenants (the bound of `max_tenants`).
    named: usize,
    live: usize,
}

impl Fair {
    pub(crate) fn new(shared: Arc<FairShared>) -> Self {
        let (generation, live) = shared.snapshot();
        let lanes = (0..shared.lanes()).map(|_| LaneState::default()).collect();
        let any_minimum = live.minimums.iter().any(|&m| m > 0.0);
        Fair {
            generation,
            minimums: live.minimums.into_boxed_slice(),
            any_minimum,
            lanes,
            flows: Vec::new(),
            free: Vec::new(),
            index: HashMap::default(),
            named: 0,
            live: 0,
            shared,
        }
    }

    /// Re-reads weights and minimums changed at run time.
    fn refresh(&mut self) {
        if self.shared.generation() == self.generation {
            return;
        }
        let (generation, live) = self.shared.snapshot();
        self.generation = generation;
        self.any_minimum = live.minimums.iter().any(|&m| m > 0.0);
        self.minimums = live.minimums.clone().into_boxed_slice();
        for flow in self.flows.iter_mut().flatten() {
            flow.weight = match &flow.key.tenant {
                TenantId::Named(t) => live.weight_of(Some(t)),
                TenantId::Anonymous | TenantId::Overflow => live.default_weight,
            };
        }
    }

    pub(crate) fn live_waiters(&self) -> usize {
        self.live
    }

    /// An estimate of the bytes the discipline holds beyond its fixed size.
    pub(crate) fn memory(&self) -> usize {
        use std::mem::size_of;
        let queues: usize = self
            .flows
            .iter()
            .flatten()
            .map(|f| f.queue.capacity() * size_of::<Slot>())
            .sum();
        let lanes: usize = self
            .lanes
            .iter()
            .map(|l| {
                size_of::<LaneState>()
                    + l.admitted.entries.capacity() * 16
                    + (l.backlog.len() + l.ahead.len()) * 2 * size_of::<(u64, u32)>()
            })
            .sum();
        self.flows.capacity() * size_of::<Option<Flow>>()
            + self.free.capacity() * size_of::<u32>()
            + self.index.capacity() * (size_of::<FlowKey>() + size_of::<u32>() + 1)
            + queues
            + lanes
    }

    /// Tracked flows (for tests and stats).
    pub(crate) fn tracked(&self) -> usize {
        self.index.len()
    }

    pub(crate) fn lane_of(&self, class: &Class) -> u8 {
        self.shared.lane_of(class) as u8
    }

    fn flow(&self, idx: u32) -> Option<&Flow> {
        self.flows.get(idx as usize).and_then(Option::as_ref)
    }

    fn flow_mut(&mut self, idx: u32) -> Option<&mut Flow> {
        self.flows.get_mut(idx as usize).and_then(Option::as_mut)
    }

    /// The flow of `class`, created if needed (the overflow flow beyond `max_tenants`).
    pub(crate) fn flow_for(&mut self, class: &Class) -> u32 {
        self.refresh();
        let lane = self.lane_of(class);
        let tenant = match class.tenant_arc() {
            Some(t) => TenantId::Named(Arc::clone(t)),
            None => TenantId::Anonymous,
        };
        let key = FlowKey { lane, tenant };
        if let Some(&idx) = self.index.get(&key) {
            return idx;
        }
        let key = if matches!(key.tenant, TenantId::Named(_)) {
            let overflow = FlowKey {
                lane,
                tenant: TenantId::Overflow,
            };
            let full = self.named >= self.shared.max_tenants;
            match self.index.get(&overflow) {
                // While the overflow tenant has waiters, every untracked tenant joins it: one of
                // them may have waiters there, and FIFO within a tenant must hold.
                Some(&idx) if full || self.depth(idx) > 0 => return idx,
                _ if full => overflow,
                _ => key,
            }
        } else {
            key
        };
        let weight = match &key.tenant {
            TenantId::Named(t) => self.shared.weight_of(Some(t)),
            _ => self.shared.weight_of(None),
        };
        self.insert_flow(key, weight, self.lanes[lane as usize].virtual_time)
    }

    fn insert_flow(&mut self, key: FlowKey, weight: f64, tag: f64) -> u32 {
        if matches!(key.tenant, TenantId::Named(_)) {
            self.named += 1;
        }
        let flow = Flow {
            key: key.clone(),
            weight,
            tag,
            queue: VecDeque::new(),
            live: 0,
            tombstones: 0,
        };
        let idx = match self.free.pop() {
            Some(idx) => {
                self.flows[idx as usize] = Some(flow);
                idx
            }
            None => {
                self.flows.push(Some(flow));
                (self.flows.len() - 1) as u32
            }
        };
        self.index.insert(key, idx);
        idx
    }

    fn remove_flow(&mut self, idx: u32) {
        let Some(flow) = self.flows.get_mut(idx as usize).and_then(Option::take) else {
            return;
        };
        if matches!(flow.key.tenant, TenantId::Named(_)) {
            decrement(&mut self.named, "named tenants");
        }
        self.index.remove(&flow.key);
        self.free.push(idx);
        if self.index.is_empty() {
            // Every tenant left: give the memory of a crowd back.
            if self.flows.capacity() > 64 {
                self.flows = Vec::new();
                self.free = Vec::new();
                self.index = HashMap::default();
            } else {
                self.flows.clear();
                self.free.clear();
            }
        }
    }

    /// A flow without waiters: kept while its tag is ahead of its lane's virtual time and the
    /// lane is busy, else forgotten.
    fn settle_idle(&mut self, idx: u32) {
        let Some(flow) = self.flows.get(idx as usize).and_then(Option::as_ref) else {
            return;
        };
        if flow.live > 0 {
            return;
        }
        let lane = &mut self.lanes[flow.key.lane as usize];
        if flow.tag > lane.virtual_time && !lane.backlog.is_empty() {
            lane.ahead.insert((bits(flow.tag), idx));
        } else {
            self.remove_flow(idx);
        }
    }

    /// Forgets the idle flows of `lane` that the virtual time has passed (all of them if the
    /// lane has no waiters).
    fn sweep_lane(&mut self, lane: usize) {
        loop {
            let l = &mut self.lanes[lane];
            let Some(&(tag, idx)) = l.ahead.first() else {
                return;
            };
            if !l.backlog.is_empty() && f64::from_bits(tag) > l.virtual_time {
                return;
            }
            l.ahead.pop_first();
            self.remove_flow(idx);
        }
    }

    /// The live waiters of flow `idx`.
    pub(crate) fn depth(&self, idx: u32) -> usize {
        self.flow(idx).map_or(0, |f| f.live as usize)
    }

    /// Forgets flow `idx` if it was created for an arrival that was then refused.
    pub(crate) fn release(&mut self, idx: u32) {
        self.settle_idle(idx);
    }

    /// Queues a waiter on flow `idx`.
    pub(crate) fn push(&mut self, idx: u32, seq: u64, cost: u64, waker: Waker) {
        let Some(flow) = self.flows.get_mut(idx as usize).and_then(Option::as_mut) else {
            broken("push on a flow that does not exist");
            return;
        };
        let lane = &mut self.lanes[flow.key.lane as usize];
        if flow.live == 0 {
            lane.ahead.remove(&(bits(flow.tag), idx));
            flow.tag = flow.tag.max(lane.virtual_time);
            lane.backlog.insert((bits(flow.tag), idx));
        }
        if flow.queue.capacity() == 0 {
            // Most tenants wait with one request at a time: one slot, not the four a first push
            // would allocate.
            flow.queue.reserve_exact(1);
        }
        flow.queue.push_back(Slot {
            ticket: seq,
            cost,
            waker: Some(waker),
        });
        flow.live += 1;
        self.live += 1;
    }

    /// The flow whose first waiter is served next: the highest lane below its minimum share
    /// of the limit in force (on the share dimension, admitted in the last span), else the
    /// highest backlogged lane; in the lane, the smallest tag.
    pub(crate) fn selected(&mut self, now: u64, share: Share) -> Option<u32> {
        let (span, limit) = (share.span, share.limit);
        if self.live == 0 {
            return None;
        }
        self.refresh();
        let mut first = None;
        for (rank, lane) in self.lanes.iter_mut().enumerate() {
            let Some(&(_, idx)) = lane.backlog.first() else {
                continue;
            };
            first.get_or_insert(idx);
            let minimum = self.minimums[rank];
            if minimum > 0.0 {
                lane.admitted.expire(span, now);
                if (lane.admitted.used as f64) < minimum * limit as f64 {
                    return Some(idx);
                }
            }
        }
        first
    }

    /// The selected flow's first waiter.
    pub(crate) fn head(&self, idx: u32) -> Option<&Slot> {
        self.flow(idx).and_then(|f| f.queue.front())
    }

    /// Serves the first waiter of flow `idx`, admitted at `at` for `amount` on the share
    /// dimension: returns its slot (the caller records the grant and wakes it).
    pub(crate) fn grant(
        &mut self,
        idx: u32,
        at: u64,
        amount: u64,
    ) -> Option<(Slot, Option<Account>)> {
        let flow = self.flows.get_mut(idx as usize).and_then(Option::as_mut)?;
        let slot = flow.queue.pop_front()?;
        let account = match &flow.key.tenant {
            TenantId::Named(t) => Some((Some(Arc::clone(t)), flow.key.lane)),
            TenantId::Anonymous => Some((None, flow.key.lane)),
            // The overflow tenant's members are not tracked one by one.
            TenantId::Overflow => None,
        };
        decrement(&mut flow.live, "a flow's live waiters");
        decrement(&mut self.live, "a key's live waiters");
        clean(flow);
        let lane_rank = flow.key.lane as usize;
        let lane = &mut self.lanes[lane_rank];
        lane.backlog.remove(&(bits(flow.tag), idx));
        lane.virtual_time = lane.virtual_time.max(flow.tag);
        flow.tag += amount as f64 / flow.weight;
        if self.any_minimum {
            lane.admitted.push(at, amount);
        }
        if flow.live > 0 {
            lane.backlog.insert((bits(flow.tag), idx));
        }
        self.settle_idle(idx);
        self.sweep_lane(lane_rank);
        Some((slot, account))
    }

    /// An admission of `amount` (share dimension) that did not wait, for the lane minimums.
    pub(crate) fn record(&mut self, class: &Class, at: u64, amount: u64) {
        if self.any_minimum {
            let lane = self.lane_of(class) as usize;
            self.lanes[lane].admitted.push(at, amount);
        }
    }

    /// The slot of waiter `place`, if it is queued and live.
    pub(crate) fn find_mut(&mut self, place: Ticket) -> Option<&mut Slot> {
        let flow = self.flow_mut(place.flow)?;
        let idx = flow
            .queue
            .binary_search_by_key(&place.seq, |s| s.ticket)
            .ok()?;
        let slot = &mut flow.queue[idx];
        slot.waker.is_some().then_some(slot)
    }

    /// Removes waiter `place` (cancelled, failed, or given up). Returns its waker if it was
    /// queued.
    pub(crate) fn remove(&mut self, place: Ticket) -> Option<Waker> {
        let slot = self.find_mut(place)?;
        let waker = slot.waker.take();
        self.mark_removed(place.flow, 1);
        waker
    }

    /// Counts `n` slots of flow `idx` that were just made tombstones. Counted BEFORE the queue
    /// is cleaned: cleaning pops tombstones and decrements the count, so a tombstone must be
    /// counted before it can be popped.
    fn mark_removed(&mut self, idx: u32, n: u32) {
        let Some(flow) = self.flows.get_mut(idx as usize).and_then(Option::as_mut) else {
            return;
        };
        for _ in 0..n {
            decrement(&mut flow.live, "a flow's live waiters");
            decrement(&mut self.live, "a key's live waiters");
        }
        flow.tombstones += n;
        clean(flow);
        if flow.live == 0 {
            let (tag, lane) = (flow.tag, flow.key.lane as usize);
            self.lanes[lane].backlog.remove(&(bits(tag), idx));
            self.settle_idle(idx);
            self.sweep_lane(lane);
        }
    }

    /// Removes every live waiter `refuse` (given its cost) returns an error for; returns them
    /// with their wakers. Each flow counts its failed slots before it is cleaned once.
    pub(crate) fn fail_where(
        &mut self,
        mut refuse: impl FnMut(u64) -> Option<AdmissionError>,
    ) -> Vec<(u64, AdmissionError, Waker)> {
        let mut failed = Vec::new();
        for idx in 0..self.flows.len() as u32 {
            let Some(flow) = self.flow_mut(idx) else {
                continue;
            };
            let before = failed.len();
            for slot in flow.queue.iter_mut().filter(|s| s.live()) {
                if let Some(error) = refuse(slot.cost)
                    && let Some(w) = slot.waker.take()
                {
                    failed.push((slot.ticket, error, w));
                }
            }
            let n = (failed.len() - before) as u32;
            if n > 0 {
                self.mark_removed(idx, n);
            }
        }
        failed
    }

    /// Settlement's correction of a tenant's account by `delta` on the share dimension
    /// (settled minus reserved), divided by its weight.
    pub(crate) fn correct(&mut self, tenant: Option<&Arc<str>>, lane: u8, delta: i128) {
        let key = FlowKey {
            lane,
            tenant: match tenant {
                Some(t) => TenantId::Named(Arc::clone(t)),
                None => TenantId::Anonymous,
            },
        };
        let rank = lane as usize;
        if rank >= self.lanes.len() {
            return;
        }
        match self.index.get(&key).copied() {
            Some(idx) => {
                let Some(flow) = self.flows.get_mut(idx as usize).and_then(Option::as_mut) else {
                    return;
                };
                let old = flow.tag;
                let backlogged = flow.live > 0;
                let lane = &mut self.lanes[rank];
                let tag = (old + delta as f64 / flow.weight).max(lane.virtual_time);
                flow.tag = tag;
                let set = if backlogged {
                    &mut lane.backlog
                } else {
                    &mut lane.ahead
                };
                if set.remove(&(bits(old), idx)) {
                    set.insert((bits(tag), idx));
                }
                if !backlogged {
                    self.settle_idle(idx);
                    self.sweep_lane(rank);
                }
            }
            None => {
                // A tenant no longer tracked: only debt matters, and only while the lane is busy
                // (its account then is ahead of the others').
                let lane = &self.lanes[rank];
                let overflow = FlowKey {
                    lane: key.lane,
                    tenant: TenantId::Overflow,
                };
                // A tenant not tracked may have waiters in the overflow tenant: a flow of its own
                // would let its next arrival overtake them.
                let overflowing = self
                    .index
                    .get(&overflow)
                    .is_some_and(|&i| self.depth(i) > 0);
                if delta <= 0
                    || lane.backlog.is_empty()
                    || (matches!(key.tenant, TenantId::Named(_))
                        && (overflowing || self.named >= self.shared.max_tenants))
                {
                    return;
                }
                let weight = match &key.tenant {
                    TenantId::Named(t) => self.shared.weight_of(Some(t)),
                    _ => self.shared.weight_of(None),
                };
                let tag = lane.virtual_time + delta as f64 / weight;
                let idx = self.insert_flow(key, weight, tag);
                self.lanes[rank].ahead.insert((bits(tag), idx));
            }
        }
    }

    /// The costs that (by the tags, with no later arrival) go before a request of `cost`
    /// (share units: `unit_cost`) at `place`, or at the end of flow `idx` for a new arrival:
    /// every waiter of higher lanes, the waiters ahead of it in its flow, and the waiters of
    /// the other flows of its lane whose start tags come before its own.
    pub(crate) fn ahead(
        &self,
        idx: u32,
        seq: Option<u64>,
        unit_cost: impl Fn(u64) -> u64,
    ) -> Vec<u64> {
        let Some(own) = self.flow(idx) else {
            return Vec::new();
        };
        let rank = own.key.lane as usize;
        let mut out = Vec::new();
        for lane in &self.lanes[..rank] {
            for &(_, f) in &lane.backlog {
                if let Some(flow) = self.flow(f) {
                    out.extend(flow.queue.iter().filter(|s| s.live()).map(|s| s.cost));
                }
            }
        }
        let lane = &self.lanes[rank];
        let mut tag = if own.live > 0 {
            own.tag
        } else {
            own.tag.max(lane.virtual_time)
        };
        for slot in own.queue.iter().filter(|s| s.live()) {
            if seq.is_some_and(|seq| slot.ticket >= seq) {
                break;
            }
            out.push(slot.cost);
            tag += unit_cost(slot.cost) as f64 / own.weight;
        }
        for &(t, f) in &lane.backlog {
            if f == idx {
                continue;
            }
            let Some(flow) = self.flow(f) else { continue };
            let mut start = f64::from_bits(t);
            for slot in flow.queue.iter().filter(|s| s.live()) {
                if start >= tag {
                    break;
                }
                out.push(slot.cost);
                start += unit_cost(slot.cost) as f64 / flow.weight;
            }
        }
        out
    }
}

/// Pops tombstones off the front of a flow, and compacts when they are most of it.
fn clean(flow: &mut Flow) {
    while flow.queue.front().is_some_and(|s| !s.live()) {
        flow.queue.pop_front();
        decrement(&mut flow.tombstones, "a flow's tombstones");
    }
    if flow.tombstones > 32 && flow.tombstones as usize * 2 > flow.queue.len() {
        flow.queue.retain(Slot::live);
        flow.tombstones = 0;
    }
    if flow.queue.is_empty() && flow.queue.capacity() > 16 {
        flow.queue = VecDeque::new();
    }
}
