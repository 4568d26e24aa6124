//! The keyed budget: the map of keys, and the admission path that finds a key's state.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Waker;
use std::time::Duration;

use tokio::time::Instant;

use super::acquire::{Acquire, Target};
use super::config::KeyConfig;
use super::error::{AdmissionError, ConfigError};
use super::fair::{ANONYMOUS, Class};
use super::key::{Arrival, Begin, KeyShared, KeyState};
use super::permit::Permit;
use super::queue::Ticket;
use super::quota::{Dimension, Quota};
use super::scoped::{ScopeSet, ScopedPoll, ScopedWait, Scopes};
use super::stats::KeyStats;
use crate::classify::ThrottleCause;

/// The fewest insertions of new keys between two sweeps of idle keys.
const SWEEP_MIN: usize = 16;

pub(super) type QuotaFn<K> = Arc<dyn Fn(&K) -> Option<Quota> + Send + Sync>;

/// A keyed sliding-window budget. Clones share the same state.
///
/// See the [module documentation](super) for the guarantees.
pub struct Budget<K> {
    pub(super) inner: Arc<Inner<K>>,
}

/// The hash of the key map: foldhash, seeded at random per map (see the
/// [module documentation](super#the-cost-of-an-admission) for the choice).
pub(super) type KeyHasher = foldhash::fast::RandomState;

pub(super) struct Inner<K> {
    pub(super) keys: papaya::HashMap<K, Arc<KeyShared>, KeyHasher>,
    pub(super) default_quota: Quota,
    pub(super) per_key: HashMap<K, Quota>,
    pub(super) quota_fn: Option<QuotaFn<K>>,
    pub(super) config: Arc<KeyConfig>,
    /// New keys inserted since the last sweep of idle keys.
    pub(super) inserted: AtomicUsize,
}

impl<K> Clone for Budget<K> {
    fn clone(&self) -> Self {
        Budget {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K: Eq + Hash> fmt::Debug for Budget<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budget")
            .field("window", &self.inner.config.window)
            .field("default_quota", &self.inner.default_quota)
            .field("keys", &self.inner.keys.len())
            .finish()
    }
}

/// What the first step of an admission gives.
pub(crate) enum Started {
    Ready(Result<Permit, AdmissionError>),
    Queued {
        shared: Arc<KeyShared>,
        ticket: Ticket,
        at: Instant,
        blocked: Option<Dimension>,
    },
    /// A request of several scopes, queued in its primary's queue.
    Scoped(Box<ScopedWait>),
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static> Budget<K> {
    /// Admits a request costing `tokens` on `key` (and one request, if the key limits
    /// requests), waiting in line (FIFO per key) until it fits on every dimension of the key's
    /// quota at once.
    ///
    /// The future does nothing until polled; the request takes its place in line at its first
    /// poll. A request that costs nothing on any of the key's dimensions (zero tokens on a key
    /// without a requests limit) is admitted at once.
    ///
    /// # Errors
    ///
    /// [`AdmissionError::CostAboveLimit`] if the cost exceeds the key's whole limit on a
    /// dimension, [`AdmissionError::WaitTooLong`] if the wait would exceed the
    /// [`max_wait`](super::BudgetBuilder::max_wait), [`AdmissionError::QueueFull`] if
    /// [`max_queue`](super::BudgetBuilder::max_queue) requests already wait.
    pub fn acquire(&self, key: K, tokens: u64) -> Acquire<K> {
        Acquire::new(self.clone(), Target::One(key), tokens, Class::default())
    }

    /// [`acquire`](Self::acquire) for a request of `class`: with
    /// [`fairness`](super::BudgetBuilder::fairness), it waits in its lane, in its tenant's queue, and
    /// is served by the fair shares (see the [module documentation](super#fair-shares));
    /// without, the class is ignored and the queue is FIFO.
    ///
    /// # Errors
    ///
    /// As [`acquire`](Self::acquire); with fairness, [`max_queue`](super::BudgetBuilder::max_queue)
    /// bounds each tenant's queue, and the wait compared with
    /// [`max_wait`](super::BudgetBuilder::max_wait) at arrival is an estimate (see
    /// [fair shares](super#fair-shares)).
    pub fn acquire_as(&self, key: K, tokens: u64, class: Class) -> Acquire<K> {
        Acquire::new(self.clone(), Target::One(key), tokens, class)
    }

    /// [`try_acquire`](Self::try_acquire) for a request of `class`: never waits.
    ///
    /// # Errors
    ///
    /// As [`try_acquire`](Self::try_acquire).
    pub fn try_acquire_as(
        &self,
        key: K,
        tokens: u64,
        class: &Class,
    ) -> Result<Permit, AdmissionError> {
        match self.start(key, tokens, None, Some(class)) {
            Started::Ready(result) => result,
            Started::Queued { shared, ticket, .. } => {
                debug_assert!(false, "try_acquire never queues");
                shared.cancel(ticket, tokens);
                Err(AdmissionError::QueueFull {
                    depth: 0,
                    would_wait: None,
                })
            }
            Started::Scoped(mut wait) => {
                debug_assert!(false, "try_acquire never queues");
                wait.cancel();
                Err(AdmissionError::QueueFull {
                    depth: 0,
                    would_wait: None,
                })
            }
        }
    }

    /// Admits a request costing `tokens` on every one of its `scopes` at once (each counts one
    /// request and the tokens on the dimensions its quota limits), waiting in its first scope's
    /// queue and then at the gates of all of them (see [scopes](super#scopes)). With one scope
    /// it is [`acquire`](Self::acquire).
    ///
    /// # Errors
    ///
    /// As [`acquire`](Self::acquire); besides, [`AdmissionError::ScopeAboveLimit`] (naming the
    /// scope) for a cost above one scope's whole limit, [`AdmissionError::ScopeWithoutQuota`]
    /// for a scope after the first whose key has no quota, [`AdmissionError::DuplicateScope`]
    /// and [`AdmissionError::TooManyScopes`].
    pub fn acquire_scopes(&self, scopes: Scopes<K>, tokens: u64) -> Acquire<K> {
        self.acquire_scopes_as(scopes, tokens, Class::default())
    }

    /// [`acquire_scopes`](Self::acquire_scopes) for a request of `class`: with fairness, it
    /// waits fairly in its first scope's queue.
    ///
    /// # Errors
    ///
    /// As [`acquire_scopes`](Self::acquire_scopes).
    pub fn acquire_scopes_as(&self, scopes: Scopes<K>, tokens: u64, class: Class) -> Acquire<K> {
        let target = match scopes.into_single() {
            Ok(key) => Target::One(key),
            Err(scopes) => Target::Many(Box::new(scopes)),
        };
        Acquire::new(self.clone(), target, tokens, class)
    }

    /// [`acquire_scopes`](Self::acquire_scopes) now, or fails: never waits.
    ///
    /// # Errors
    ///
    /// As [`try_acquire`](Self::try_acquire) and [`acquire_scopes`](Self::acquire_scopes).
    pub fn try_acquire_scopes(
        &self,
        scopes: Scopes<K>,
        tokens: u64,
    ) -> Result<Permit, AdmissionError> {
        let scopes = match scopes.into_single() {
            Ok(key) => return self.try_acquire(key, tokens),
            Err(scopes) => scopes,
        };
        match self.start_scoped(&scopes, tokens, None, &ANONYMOUS) {
            Started::Ready(result) => result,
            Started::Queued { .. } | Started::Scoped(_) => {
                debug_assert!(false, "try_acquire never queues");
                Err(AdmissionError::QueueFull {
                    depth: 0,
                    would_wait: None,
                })
            }
        }
    }

    /// The first step of an admission of several scopes.
    pub(crate) fn start_scoped(
        &self,
        scopes: &Scopes<K>,
        tokens: u64,
        waker: Option<&Waker>,
        class: &Class,
    ) -> Started {
        if let Err(error) = scopes.check() {
            return Started::Ready(Err(error));
        }
        // One clock read per admission.
        let now = Instant::now();
        loop {
            // One epoch guard for every lookup; each key is hashed once.
            let mut set = ScopeSet::new();
            {
                let map = self.inner.keys.pin();
                for (scope, key) in scopes.iter().enumerate() {
                    let found = match map.get(key) {
                        Some(shared) => Some(Arc::clone(shared)),
                        None => self.insert(key, None),
                    };
                    match found {
                        Some(shared) => set.push(scope, shared),
                        // The first scope may be without a limit (a model without a quota): it
                        // is not charged, as a key without a limit never is.
                        None if scope == 0 => {}
                        None => {
                            return Started::Ready(Err(AdmissionError::ScopeWithoutQuota {
                                scope,
                            }));
                        }
                    }
                }
            }
            if set.is_empty() {
                return Started::Ready(Ok(Permit::free(tokens, now)));
            }
            match set.begin(tokens, now, waker, class) {
                Some(ScopedPoll::Admitted(permit)) => return Started::Ready(Ok(permit)),
                Some(ScopedPoll::Failed(error)) => return Started::Ready(Err(error)),
                Some(ScopedPoll::Queued(wait)) => return Started::Scoped(Box::new(wait)),
                Some(ScopedPoll::Head(_) | ScopedPoll::Behind) => {
                    debug_assert!(false, "an arrival is admitted, refused or queued");
                    return Started::Ready(Err(AdmissionError::QueueFull {
                        depth: 0,
                        would_wait: None,
                    }));
                }
                None => {
                    // A state was evicted meanwhile: forget it and look the keys up again.
                    for key in scopes.iter() {
                        let found = self.inner.keys.pin().get(key).cloned();
                        if let Some(shared) = found
                            && shared.lock().evicted
                        {
                            self.forget(key, &shared);
                        }
                    }
                }
            }
        }
    }

    /// Whether the budget shares its keys fairly ([`BudgetBuilder::fairness`](super::BudgetBuilder::fairness)).
    pub fn is_fair(&self) -> bool {
        self.inner.config.fair.is_some()
    }

    /// Changes the weight of `tenant` at run time, on every key: tenants already waiting take
    /// it at the next admission on their key.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidWeight`] for a weight that is zero, negative, NaN or infinite;
    /// [`ConfigError::NotFair`] on a budget without fairness.
    pub fn set_weight(&self, tenant: impl Into<Arc<str>>, weight: f64) -> Result<(), ConfigError> {
        let fair = self
            .inner
            .config
            .fair
            .as_ref()
            .ok_or(ConfigError::NotFair)?;
        fair.set_weight(tenant.into(), weight)
    }

    /// Changes the weight of tenants not given one, at run time.
    ///
    /// # Errors
    ///
    /// As [`set_weight`](Self::set_weight).
    pub fn set_default_weight(&self, weight: f64) -> Result<(), ConfigError> {
        let fair = self
            .inner
            .config
            .fair
            .as_ref()
            .ok_or(ConfigError::NotFair)?;
        fair.set_default_weight(weight)
    }

    /// Changes the guaranteed minimum share of `lane` at run time.
    ///
    /// # Errors
    ///
    /// [`ConfigError::UnknownLane`], [`ConfigError::InvalidMinimum`] (outside `[0, 1]`),
    /// [`ConfigError::MinimumsAboveWhole`] (the lanes' minimums would add up to more than 1),
    /// [`ConfigError::NotFair`] on a budget without fairness.
    pub fn set_lane_minimum(&self, lane: &str, minimum: f64) -> Result<(), ConfigError> {
        let fair = self
            .inner
            .config
            .fair
            .as_ref()
            .ok_or(ConfigError::NotFair)?;
        fair.set_minimum(lane, minimum)
    }

    /// Admits a request costing `tokens` on `key` now, or fails: never waits.
    ///
    /// # Errors
    ///
    /// [`AdmissionError::CostAboveLimit`] if the cost exceeds the key's whole limit;
    /// [`AdmissionError::WaitTooLong`] (with a `max_wait` of zero) if it does not fit now or other
    /// requests are already waiting on the key, with the wait [`acquire`](Self::acquire) would
    /// have had.
    pub fn try_acquire(&self, key: K, tokens: u64) -> Result<Permit, AdmissionError> {
        match self.start(key, tokens, None, None) {
            Started::Ready(result) => result,
            Started::Queued { shared, ticket, .. } => {
                // Without a waker nothing is queued.
                debug_assert!(false, "try_acquire never queues");
                shared.cancel(ticket, tokens);
                Err(AdmissionError::QueueFull {
                    depth: 0,
                    would_wait: None,
                })
            }
            Started::Scoped(mut wait) => {
                debug_assert!(false, "try_acquire never queues");
                wait.cancel();
                Err(AdmissionError::QueueFull {
                    depth: 0,
                    would_wait: None,
                })
            }
        }
    }

    /// The first step of an admission: admitted, refused, or queued (with a waker only).
    ///
    /// This is the hot path: one clock read, one map probe, one reference-count increment, one
    /// uncontended lock, and a ledger entry per dimension (merged with the last one at the same
    /// instant).
    #[inline]
    pub(crate) fn start(
        &self,
        key: K,
        tokens: u64,
        waker: Option<&Waker>,
        class: Option<&Class>,
    ) -> Started {
        let now = Instant::now();
        let inner = &*self.inner;
        let arrival = Arrival {
            tokens,
            now: inner.config.offset(now),
            waker,
            class: class.unwrap_or(&ANONYMOUS),
        };
        loop {
            let Some(shared) = self.lookup(&key, None) else {
                return Started::Ready(Ok(Permit::free(tokens, now)));
            };
            let mut state = shared.lock();
            if state.evicted {
                drop(state);
                self.forget(&key, &shared);
                continue;
            }
            let begin = shared.begin(&mut state, &arrival);
            drop(state);
            return match begin {
                // With fairness too: a request admitted without waiting was not contended, so
                // its settlement does not move its tenant's account (see "Fair shares").
                Begin::Admitted(at) => Started::Ready(Ok(Permit::charged(shared, tokens, at))),
                Begin::Refused(error) => Started::Ready(Err(error)),
                Begin::Queued(ticket, blocked) => Started::Queued {
                    shared,
                    ticket,
                    at: now,
                    blocked,
                },
            };
        }
    }

    /// Changes the quota of `key` at run time. Waiters re-evaluate at once: those that now fit
    /// are admitted, those whose cost exceeds a new limit fail with
    /// [`AdmissionError::CostAboveLimit`]. The key is no longer evicted when idle, so the new
    /// quota is kept. A dimension the new quota adds starts with an empty window.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroLimit`] if a limit is zero, [`ConfigError::MissingLimit`] if the quota
    /// limits nothing.
    pub fn set_quota(&self, key: &K, quota: Quota) -> Result<(), ConfigError> {
        if quota.zero_dimension().is_some() {
            return Err(ConfigError::ZeroLimit);
        }
        if quota.is_unlimited() {
            return Err(ConfigError::MissingLimit);
        }
        let applied = self.with_state(key, Some(quota), |shared, state| {
            shared.set_quota(state, &quota, Instant::now());
        });
        debug_assert!(applied.is_some(), "a limited quota always has state");
        Ok(())
    }

    /// Feedback that the server throttled `key` for `cause`: each dimension the cause names
    /// ([`Dimension::of_cause`]) is treated as exhausted now, and its effective limit is lowered
    /// (see [`Aimd`](super::Aimd)). Does nothing for a key without state or a cause no quota cures.
    pub fn throttled(&self, key: &K, cause: ThrottleCause) {
        let dims = Dimension::of_cause(cause);
        if dims.is_empty() {
            return;
        }
        self.with_state(key, None, |shared, state| {
            shared.throttled(state, Instant::now(), dims, None);
        });
    }

    /// A snapshot of `key`, or `None` if the key has no state (never seen, evicted, or without
    /// limit).
    pub fn stats(&self, key: &K) -> Option<KeyStats> {
        let shared = self.inner.keys.pin().get(key).cloned()?;
        let mut state = shared.lock();
        if state.evicted {
            return None;
        }
        Some(KeyShared::stats(&shared, &mut state, Instant::now()))
    }

    /// The number of keys that have state.
    pub fn key_count(&self) -> usize {
        self.inner.keys.len()
    }

    /// The window length of the requests and tokens limits.
    pub fn window(&self) -> Duration {
        self.inner.config.window
    }

    /// The window of the tokens-per-day limit.
    pub fn day(&self) -> Duration {
        self.inner.config.day
    }

    /// Forgets every idle key now (see the [module documentation](super#memory-and-time)), and
    /// returns how many were forgotten. This also happens by itself when new keys arrive.
    pub fn evict_idle(&self) -> usize {
        let now = Instant::now();
        let keys = self.inner.keys.pin();
        let mut evicted = 0;
        for (key, shared) in keys.iter() {
            if KeyShared::try_evict(shared, now)
                && keys
                    .remove_if(key, |_, current| Arc::ptr_eq(current, shared))
                    .is_ok_and(|removed| removed.is_some())
            {
                evicted += 1;
            }
        }
        if evicted > 0 {
            tracing::debug!(evicted, "idle keys evicted");
        }
        evicted
    }

    /// Runs `f` on the live state of `key`, creating it (with `quota`, or the configured quota)
    /// if needed. `None` if the key has no limit.
    fn with_state<R>(
        &self,
        key: &K,
        quota: Option<Quota>,
        f: impl FnOnce(&KeyShared, &mut KeyState) -> R,
    ) -> Option<R> {
        loop {
            let shared = self.lookup(key, quota)?;
            let mut state = shared.lock();
            if state.evicted {
                drop(state);
                self.forget(key, &shared);
                continue;
            }
            return Some(f(&shared, &mut state));
        }
    }

    /// The state of `key`, created if absent. `None` if the key has no limit.
    #[inline]
    fn lookup(&self, key: &K, quota: Option<Quota>) -> Option<Arc<KeyShared>> {
        if let Some(shared) = self.inner.keys.pin().get(key) {
            return Some(Arc::clone(shared));
        }
        self.insert(key, quota)
    }

    /// The slow path of [`lookup`](Self::lookup): a key seen for the first time (or again after
    /// eviction).
    #[cold]
    #[inline(never)]
    fn insert(&self, key: &K, quota: Option<Quota>) -> Option<Arc<KeyShared>> {
        let inner = &*self.inner;
        let quota = quota.or_else(|| self.configured_quota(key))?;
        let fresh = KeyShared::new(&quota, Arc::clone(&inner.config))?;
        let shared = Arc::clone(
            inner
                .keys
                .pin()
                .get_or_insert_with(key.clone(), || Arc::new(fresh)),
        );
        self.maybe_sweep();
        Some(shared)
    }

    /// The configured quota of a key; `None` for a key without limit.
    fn configured_quota(&self, key: &K) -> Option<Quota> {
        let inner = &*self.inner;
        if let Some(&quota) = inner.per_key.get(key) {
            return Some(quota);
        }
        match &inner.quota_fn {
            Some(f) => f(key),
            None => Some(inner.default_quota),
        }
        .filter(|q| !q.is_unlimited())
    }

    /// Whether `key` is limited on `dimension` now (its state exists and has the dimension).
    pub fn limits(&self, key: &K, dimension: Dimension) -> bool {
        let Some(shared) = self.inner.keys.pin().get(key).cloned() else {
            return false;
        };
        let state = shared.lock();
        !state.evicted && state.limits(dimension)
    }

    /// Removes an evicted state that is still in the map.
    fn forget(&self, key: &K, shared: &Arc<KeyShared>) {
        let _ = self
            .inner
            .keys
            .pin()
            .remove_if(key, |_, current| Arc::ptr_eq(current, shared));
    }

    /// Sweeps idle keys once the keys inserted since the last sweep number half the map (at
    /// least [`SWEEP_MIN`]), from the slow path that inserts keys: a sweep costs O(n) and comes
    /// after at least n/2 insertions, so each new key pays amortised O(1); as the map counts the
    /// new keys too, it grows to at most about twice what the last sweep left.
    fn maybe_sweep(&self) {
        let inner = &*self.inner;
        let inserted = inner.inserted.fetch_add(1, Ordering::Relaxed) + 1;
        let due = (inner.keys.len() / 2).max(SWEEP_MIN);
        if inserted >= due
            && inner
                .inserted
                .compare_exchange(inserted, 0, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.evict_idle();
        }
    }
}
