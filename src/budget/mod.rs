//! The admission engine: a keyed sliding-window budget over every dimension of a quota, with
//! FIFO waiting, exact settlement and throttle feedback. It knows nothing of Tower; the
//! [admission layer](crate::admit) is a thin wrapper around it (through [`QuotaStore`], the seam
//! a shared store plugs into).
//!
//! # What it guarantees
//!
//! Each key (a model in a region, say) has a [`Quota`]: a limit on requests and on tokens per
//! window `W` (60 s by default), and on tokens per [day](BudgetBuilder::day), each optional
//! ([`Dimension`]). Every admission counts one request and its tokens, as an *entry* in each
//! limited dimension's ledger, all timestamped with tokio's clock at the same instant, when the
//! request is admitted; an entry counts for its dimension's window (plus an optional
//! [expiry margin](BudgetBuilder::expiry_margin)). A request is admitted only when its cost fits
//! under the limit of EVERY dimension together with the entries still in that window. So **the
//! amount admitted on a key in any window of length `W` never exceeds its limit, on any
//! dimension** (the effective limit, while feedback has lowered it), and no charge is dated
//! before the request could leave: a request that waits for tokens has not yet taken a request
//! slot.
//!
//! Why a sliding window and not a token bucket or a fixed minute? Bedrock does not document how
//! it counts its per-minute quotas. A client that never puts more than the limit in *any* window
//! of length `W` is inside the quota whatever the server does: fixed minutes, sliding windows or
//! a bucket refilled at `limit / W`.
//!
//! # Reserve, then settle
//!
//! A token request does not know its cost until it ends. An admission reserves an estimate and
//! returns a [`Permit`]; [`Permit::settle`] corrects it:
//! - **refund** (used less than reserved): the admission entry is reduced at once, and waiting
//!   requests that now fit are admitted;
//! - **debt** (used more, normal with Bedrock's 5x output burndown): the overshoot is booked as a
//!   *new* entry at the settle instant, not back-dated to the admission. The server books usage
//!   when the call settles; back-dating the debt would make it expire earlier than the server's
//!   own record, and the client would admit too early against a token bucket or any server that
//!   books late. Debt cannot be refused (it has been spent), so a window may hold more than the
//!   limit after an under-estimate; later admissions wait until it has expired.
//! - a permit **dropped unsettled** settles its [`if_unknown`](Permit::if_unknown) amount, the
//!   most the server can have booked when the usage never arrives: the reservation by default,
//!   more where the protocol says so ([`Permit::with_if_unknown`]; Bedrock books output at five
//!   times its count on recent Claude models, so a call whose caller left can cost far more than
//!   its reservation).
//!
//! Settlement corrects the token dimensions; the request stays counted (it was sent).
//!
//! The split between what stays at the admission and what is booked at settlement must never
//! free tokens before the server does. A server that reserved *less* than this ledger (Bedrock
//! counts the input exactly, the client estimates it conservatively) books as debt, at its
//! settlement, everything above its own reservation; a plain [`Permit::settle`] would keep that
//! part at the admission instant, where it expires a call's duration too early. When the
//! server's own reservation is known, [`Permit::settle_against`] mirrors the server: at most the
//! server's reservation stays at the admission, the rest is debt now.
//!
//! # Waiting
//!
//! Waiters queue strictly FIFO per key (unless the budget shares keys fairly: see
//! [fair shares](#fair-shares)): a large request at the head is not overtaken by small
//! ones behind it, and keys never block each other. Only the head of a queue has a timer, set to
//! the instant at which enough entries expire (or the effective limit recovers enough) for it to
//! fit on every dimension; it is woken earlier when a refund or a limit raise frees capacity. There is no polling
//! loop. A request whose cost exceeds the key's whole limit fails at once
//! ([`AdmissionError::CostAboveLimit`]); [`max_wait`](BudgetBuilder::max_wait) and
//! [`max_queue`](BudgetBuilder::max_queue) bound the waiting, failing with the wait the request
//! would have had. A dropped waiter leaves no trace. A waiter costs one 32-byte queue slot plus its
//! [`Acquire`] future (72 bytes on 64-bit targets for keys up to 24 bytes), plus one timer
//! allocation while it heads the queue or has a [`max_wait`](BudgetBuilder::max_wait) deadline:
//! about 114 bytes per waiter with 100,000 waiters on one key, the queue's spare capacity
//! included (`benches/memory.rs`). Once a burst of waiters is over, the queue gives its memory
//! back.
//!
//! # Fair shares
//!
//! One quota often serves many tenants (customers of a SaaS, teams, interactive users next to a
//! nightly batch). FIFO makes every tenant wait behind the whole backlog of the one that floods.
//! With [`BudgetBuilder::fairness`], a key's waiters are served by their [`Class`] (a tenant and
//! a lane, given with [`Budget::acquire_as`]):
//! - **Lanes** ([`Lane`]) in priority order. A lane with a guaranteed
//!   [minimum](Lane::minimum) that was admitted less than `minimum × limit` in the last window
//!   goes first (a tiny ledger per lane counts what it was admitted); otherwise the highest
//!   backlogged lane. A lower lane is never starved below its minimum; without one, a saturated
//!   higher lane takes everything (strict priority).
//! - **Tenants** inside a lane share its admissions by weight, by TOKENS, not requests:
//!   start-time fair queuing with one tag per tenant. A backlogged tenant's tag is the start
//!   tag of its first waiter; serving it moves the tag by `cost / weight` and sets the lane's
//!   virtual time to the tag served; a tenant that becomes backlogged starts at
//!   `max(virtual time, its tag)`. The smallest tag goes first. So the shares of backlogged
//!   tenants follow their weights, what an idle tenant does not use goes to the others
//!   (work-conserving), and a tenant that was idle gets no burst of saved share when it returns.
//!   Settlement corrects the tenant's account by `(settled - reserved) / weight`: a tenant whose
//!   requests burn more than they reserved is served less. FIFO within a tenant of a lane.
//!   Weights (and minimums) change at run time ([`Budget::set_weight`],
//!   [`Budget::set_lane_minimum`]); unknown tenants get the
//!   [default weight](Fairness::default_weight).
//!
//! What does not change: the engine admits only the *selected* waiter, when it fits on every
//! dimension (it is not overtaken by smaller requests that would fit while it waits), only it
//! has a timer, at the instant it fits, and an arrival that becomes the selected one is told.
//! So **the sliding-window guarantee per key is exactly the FIFO one**, wake-ups stay at
//! computed instants (one approximation: a lane that falls below its minimum as its ledger
//! slides is noticed at the next event on the key, an arrival, a settlement or the selected
//! waiter's timer, not at an instant of its own), and a dropped waiter leaves no trace (a grant it never collected is
//! refunded on the window; its tenant's account keeps the charge). A request that does not have
//! to wait (nobody waits, it fits) is admitted as in FIFO: it was not contended, so it moves no
//! account (its lane's minimum ledger still counts it). The fair path costs the no-wait
//! admission little (`benches/engine.rs`; the figures, and the shares measured under a paused
//! clock by `benches/fairness.rs`, are in `BENCHMARKS.md`).
//!
//! **Bounds.** [`max_queue`](BudgetBuilder::max_queue) bounds each tenant's queue (a flooding
//! tenant fills its own, not the others'). The wait compared with
//! [`max_wait`](BudgetBuilder::max_wait) at arrival (and reported by
//! [`AdmissionError::WaitTooLong`]) is an *estimate*: it simulates the window with, ahead of
//! the request, every waiter of higher lanes, those of its own tenant, and those of the other
//! tenants of its lane whose tags come first; lanes below with a minimum, and later arrivals
//! with smaller tags, can delay it further, and requests ahead may leave. Exact would mean
//! simulating the whole discipline with its future arrivals, which nobody knows. The deadline
//! still ends a wait exactly.
//!
//! **Memory.** A tenant is tracked only while it has waiters or its account is ahead of its
//! lane's virtual time, and a lane without waiters forgets all of its tenants: idle tenants cost
//! nothing. At most [`max_tenants`](Fairness::max_tenants) are tracked per key; beyond, new
//! tenants share one overflow tenant per lane (FIFO inside it, default weight), so a tenant
//! function that returns a new value per request cannot grow memory without bound. A tracked
//! tenant with one waiter costs a few hundred bytes (`benches/memory.rs`).
//!
//! **With a shared store** (a fleet behind one quota), the window guarantee is the store's, and
//! fairness holds within each process's admissions: each process orders its own waiters, and
//! the store admits whoever of each process asks first. Fleet-wide weighted shares would need
//! the tags in the store; a tenant pinned to one process (sticky routing) gets its share of
//! that process.
//!
//! ```
//! use bedrock_throttle::budget::{Budget, Class, Fairness, Lane};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let budget: Budget<&str> = Budget::builder()
//!     .tokens(100_000)
//!     .fairness(
//!         Fairness::new()
//!             .weight("gold", 3.0)
//!             .lane(Lane::new("interactive").priority(1))
//!             .lane(Lane::new("batch").minimum(0.2))
//!             .default_lane("batch"),
//!     )
//!     .build()?;
//! let permit = budget
//!     .acquire_as("claude", 2_000, Class::tenant("gold").with_lane("interactive"))
//!     .await?;
//! permit.settle(1_500);
//! budget.set_weight("silver", 2.0)?;
//! # Ok(())
//! # }
//! ```
//!
//! # Feedback
//!
//! When the server throttles anyway (the quota is shared with other clients, or set too high),
//! [`Budget::throttled`] lowers the *effective* limit of the dimension the throttle names
//! ([`Dimension::of_cause`]: requests, tokens, tokens per day, both per-window dimensions when
//! the server did not say) multiplicatively ([`Aimd::decrease`], not below [`Aimd::floor`]) and
//! treats that dimension's window as exhausted up to the lowered limit
//! (a synthetic entry fills the gap, so queued requests wait for entries to expire, or for the
//! limit to recover, instead of hitting the quota again). The effective limit then recovers
//! linearly, by [`Aimd::recover_per_window`] of the limit per elapsed window, computed lazily
//! from the time of the last throttle.
//!
//! Two choices keep a throttle from costing more than it says:
//! - the fill goes up to the *lowered* limit, not the configured one. The throttle says the
//!   server's window is full; the lowered limit already keeps the key below where it was. A fill
//!   up to the configured limit would add a whole window of no admissions on top of the
//!   decrease, and with a quota that is merely set too high (the only user being this client)
//!   it would stop the client for a window after every throttle;
//! - one decrease per congestion event: feedback through the [`Permit`] of a request admitted
//!   before the last decrease ([`Permit::throttled`]) does not lower the limit again (requests
//!   in flight together are throttled together, and each would otherwise multiply the
//!   decrease). It still exhausts the window.
//!
//! # No global lock
//!
//! Each key has its own small mutex. The key-to-state map is a [`papaya`] lock-free hash map:
//! looking a key up takes no lock (an epoch guard and a probe), and inserting a new key is
//! lock-free too, so an admission that does not wait touches nothing shared with other keys but
//! the map's memory. A copy-on-write snapshot map would have made every new key copy the whole
//! map; a sharded `RwLock` map would share a lock word among the keys of a shard.
//!
//! # Memory and time
//!
//! A key is evicted when it is idle: its window is empty, nobody waits, no permit is outstanding,
//! feedback has not lowered its limit, and its limit was not set at run time with
//! [`Budget::set_quota`] (such keys are kept, so the setting survives). Idle keys are swept from
//! the path that inserts a new key, once the keys inserted since the last sweep number half the
//! keys in the map (at least 16): a sweep of n keys comes after at least n/2 insertions, so each
//! new key pays amortised O(1), and the map holds at most about twice the keys that were not idle
//! at the last sweep. A budget whose keys stop changing keeps its idle keys until new ones come
//! or [`Budget::evict_idle`] sweeps on demand. Eviction never loses the accounting of an
//! outstanding permit: a key with one is not idle.
//!
//! # The cost of an admission
//!
//! An admission that does not wait reads the clock once, probes the key map once (one hash of
//! the key), takes one reference to the key's state (the permit keeps it), takes the key's
//! uncontended lock, and books one ledger entry per limited dimension (a key with one dimension
//! keeps it inline; more are one allocation per key, not per admission). Settling at the reserved amount, or dropping the
//! permit, only drops that reference (and [`Permit::settle`] is inlined into the caller, so that
//! is all the caller runs); a refund takes the lock (and reads the clock only if requests wait,
//! as they may now fit); a debt reads the clock for its entry. Nothing is allocated per
//! admission. What keeps it that small:
//! - The ledger is a queue of 16-byte entries (a `u64` offset in nanoseconds from the budget's
//!   creation, and an amount); the conversion back to [`Instant`] is exact, nothing is rounded.
//!   Charges at the same instant share one entry (under a paused clock, or a burst within one
//!   clock tick), and a charge never goes before the last entry: a clock read that loses the race
//!   to the lock joins the later entry, which counts it longer, never shorter. An admission
//!   dates every dimension's entry at the same offset (the latest of the clock and each ledger's
//!   last entry); the permit keeps that offset, finds its entry by it when it refunds (the last
//!   entry first, else a binary search), and [`Permit::admitted_at`] converts it when asked.
//! - There is no separate counter of outstanding permits: a permit *is* a reference to the key's
//!   state, so eviction checks that the map holds the only reference, and [`Budget::stats`]
//!   derives the count from the reference count (exact when nothing is in flight on the key;
//!   an admission in progress on another thread may be counted).
//! - The waiting side of a key (its queue, its results for waiters not yet polled) is allocated
//!   the first time a request waits on the key; a key that never waits does not carry it.
//!
//! The fixed costs that remain are the clock read (below), the key's hash, and six atomic
//! operations that synchronise across cores: entering and leaving the map's epoch guard, taking
//! and dropping the permit's reference, locking and unlocking the key. `benches/engine.rs`
//! measures them against governor and tower; the numbers are in `BENCHMARKS.md`.
//!
//! The key's hash is [foldhash](https://docs.rs/foldhash) (`foldhash::fast::RandomState`), seeded
//! at random for each budget: about 1 ns for a small key where the standard library's SipHash
//! ([`std::collections::hash_map::RandomState`]) takes 12 to 15 ns, an eighth of a whole
//! admission. The trade-off is resistance to hash flooding. A random seed means no fixed set of
//! keys collides in every process, which is enough against keys chosen blindly; but foldhash
//! does not claim to resist an attacker who can observe the map's behaviour (timing) and choose
//! keys to match, as SipHash does. Here the keys are quota keys (a model in a region, a tenant),
//! not free-form client input, and a key the engine has not seen costs a state of its own
//! anyway; a service that derives keys from untrusted input should map them onto a known set
//! (every unknown model onto one shared key, say) before they reach the budget.
//!
//! # The clock
//!
//! Time is tokio's clock ([`tokio::time::Instant`]): tests run hours of traffic in milliseconds
//! under `tokio::time::pause()` and `advance`, and the ledger and the waiters' timers (tokio's)
//! agree on what time it is.
//!
//! It is also the largest fixed cost of an admission. Unpaused, tokio's clock *is* the OS's
//! monotonic clock (`std::time::Instant::now`, a `clock_gettime` through the vDSO: about 30 ns
//! on the machine of `BENCHMARKS.md`, close to half of an admission). When tokio's `test-util`
//! feature is compiled in (the dev-dependencies of this crate enable it, and so may those of an
//! application), tokio first loads one static flag, "was a clock ever paused", and costs the same
//! as the OS clock while it is not: the bench's std and tokio rows are within a nanosecond.
//!
//! A cheaper source exists, the CPU's time-stamp counter, which governor reads through quanta
//! (about half the cost), but the engine does not use it:
//! - it would not follow a paused tokio clock, and nothing public says whether tokio's clock is
//!   paused (the flag is private, and a crate cannot see which features of tokio are compiled
//!   in), so `pause()` and `advance` would silently stop driving the engine, in this crate's
//!   tests and in its users' tests;
//! - a counter scaled to nanoseconds by a calibration at start-up drifts from the monotonic
//!   clock. Running fast, it would expire entries early, the one error the window must never
//!   make; running slow, waiters woken by tokio's timers would find their capacity not yet free
//!   and sleep again and again.
//!
//! A coarse clock (`CLOCK_MONOTONIC_COARSE`, a few nanoseconds) lags the true time by up to a
//! scheduler tick, so it would date entries early: the same error.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use bedrock_throttle::budget::{AdmissionError, Budget};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let budget: Budget<&str> = Budget::builder()
//!     .tokens(1_000)
//!     .window(Duration::from_secs(60))
//!     .build()?;
//!
//! // Reserve an estimate, then settle with the real usage: the difference comes back at once.
//! let permit = budget.acquire("claude", 800).await?;
//! permit.settle(300);
//! assert_eq!(budget.stats(&"claude").unwrap().tokens.unwrap().used, 300);
//!
//! // 700 fits now; 800 more would wait for the window to slide, so `try_acquire` refuses it.
//! budget.try_acquire("claude", 700)?.settle(700);
//! assert!(matches!(
//!     budget.try_acquire("claude", 800),
//!     Err(AdmissionError::WaitTooLong { .. })
//! ));
//! // `acquire` waits instead, exactly until enough of the window has expired.
//! let start = tokio::time::Instant::now();
//! let permit = budget.acquire("claude", 800).await?;
//! assert_eq!(start.elapsed(), Duration::from_secs(60));
//! # drop(permit);
//! # Ok(())
//! # }
//! ```

mod acquire;
mod error;
mod fair;
mod permit;
mod quota;
mod shares;
mod state;
mod store;

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Waker;
use std::time::Duration;

use tokio::time::Instant;

use crate::classify::ThrottleCause;

pub use self::acquire::Acquire;
pub use self::error::{AdmissionError, ConfigError};
pub use self::fair::{Class, DEFAULT_MAX_TENANTS, Fairness, Lane};
pub use self::permit::Permit;
pub use self::quota::{Dimension, Quota};
use self::state::{Begin, KeyShared, KeyState, Settings, Ticket};
pub use self::store::{QuotaStore, StorePermit};

/// The feedback policy: how far the effective limit falls on a throttle and how fast it comes
/// back (additive increase, multiplicative decrease).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aimd {
    /// The factor applied to the effective limit on each throttle, in `(0, 1]`. Default 0.7.
    pub decrease: f64,
    /// The fraction of the configured limit regained per elapsed window, finite and `> 0`.
    /// Default 0.1 (a limit lowered to 70% is back in three windows).
    pub recover_per_window: f64,
    /// The lowest effective limit, as a fraction of the configured limit, in `(0, 1]`.
    /// Default 0.1.
    pub floor: f64,
}

impl Default for Aimd {
    fn default() -> Self {
        Aimd {
            decrease: 0.7,
            recover_per_window: 0.1,
            floor: 0.1,
        }
    }
}

impl Aimd {
    fn validate(&self) -> Result<(), ConfigError> {
        let unit = |name, value: f64| {
            if value > 0.0 && value <= 1.0 {
                Ok(())
            } else {
                Err(ConfigError::InvalidFactor {
                    name,
                    value,
                    expected: "in (0, 1]",
                })
            }
        };
        unit("aimd.decrease", self.decrease)?;
        unit("aimd.floor", self.floor)?;
        if !(self.recover_per_window.is_finite() && self.recover_per_window > 0.0) {
            return Err(ConfigError::InvalidFactor {
                name: "aimd.recover_per_window",
                value: self.recover_per_window,
                expected: "finite and greater than 0",
            });
        }
        Ok(())
    }

    /// The lowest effective limit for `limit`, at least 1.
    pub(crate) fn floor_amount(&self, limit: u64) -> u64 {
        ((self.floor * limit as f64).ceil() as u64).clamp(1, limit.max(1))
    }

    /// The amount regained per window for `limit`, at least 1.
    pub(crate) fn recover_amount(&self, limit: u64) -> u64 {
        ((self.recover_per_window * limit as f64).ceil() as u64).max(1)
    }
}

/// A snapshot of one dimension of a key, from [`Budget::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DimensionStats {
    /// The amount charged in the current window (debt included).
    pub used: u64,
    /// The configured limit per window.
    pub limit: u64,
    /// The limit in force now: the configured one, or lower after throttle feedback.
    pub effective_limit: u64,
}

/// A snapshot of one key, from [`Budget::stats`]: each limited dimension, and the waiting side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct KeyStats {
    /// The requests dimension, if the key limits it.
    pub requests: Option<DimensionStats>,
    /// The tokens dimension, if the key limits it.
    pub tokens: Option<DimensionStats>,
    /// The tokens-per-day dimension, if the key limits it.
    pub tokens_per_day: Option<DimensionStats>,
    /// Requests waiting on the key.
    pub waiters: usize,
    /// Permits handed out and not yet settled or dropped.
    pub outstanding: usize,
    /// With fairness: the tenants the key tracks now (those with waiters, or whose account is
    /// ahead of their lane's virtual time).
    pub tenants: usize,
}

impl KeyStats {
    /// The snapshot of `dimension`, if the key limits it.
    pub fn dimension(&self, dimension: Dimension) -> Option<DimensionStats> {
        match dimension {
            Dimension::Requests => self.requests,
            Dimension::Tokens => self.tokens,
            Dimension::TokensPerDay => self.tokens_per_day,
        }
    }
}

/// The fewest insertions of new keys between two sweeps of idle keys.
const SWEEP_MIN: usize = 16;

/// The default day window (tokens per day).
pub const DAY: Duration = Duration::from_secs(24 * 3600);

type QuotaFn<K> = Arc<dyn Fn(&K) -> Option<Quota> + Send + Sync>;

/// Builds a [`Budget`]; see [`Budget::builder`].
pub struct BudgetBuilder<K> {
    quota: Quota,
    window: Duration,
    day: Duration,
    per_key: HashMap<K, Quota>,
    quota_fn: Option<QuotaFn<K>>,
    max_wait: Option<Duration>,
    max_queue: Option<usize>,
    margin: Duration,
    aimd: Option<Aimd>,
    fairness: Option<Fairness>,
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static> BudgetBuilder<K> {
    /// Shares each key's quota fairly between tenants and priority lanes instead of FIFO (see
    /// the [module documentation](self#fair-shares)). Requests say who they are for with
    /// [`Budget::acquire_as`]; those admitted with [`Budget::acquire`] are the anonymous
    /// tenant in the default lane.
    pub fn fairness(mut self, fairness: Fairness) -> Self {
        self.fairness = Some(fairness);
        self
    }

    /// The tokens-per-window limit of every key not given a quota by
    /// [`quota_for`](Self::quota_for) or [`quota_fn`](Self::quota_fn).
    pub fn tokens(mut self, limit: u64) -> Self {
        self.quota.tokens = Some(limit);
        self
    }

    /// The requests-per-window limit of every key not given a quota by
    /// [`quota_for`](Self::quota_for) or [`quota_fn`](Self::quota_fn). Every admission counts
    /// as one request.
    pub fn requests(mut self, limit: u64) -> Self {
        self.quota.requests = Some(limit);
        self
    }

    /// The tokens-per-day limit of every key not given a quota by [`quota_for`](Self::quota_for)
    /// or [`quota_fn`](Self::quota_fn), over the [`day`](Self::day) window.
    pub fn tokens_per_day(mut self, limit: u64) -> Self {
        self.quota.tokens_per_day = Some(limit);
        self
    }

    /// The quota of every key not given one by [`quota_for`](Self::quota_for) or
    /// [`quota_fn`](Self::quota_fn) (replaces what [`tokens`](Self::tokens),
    /// [`requests`](Self::requests) and [`tokens_per_day`](Self::tokens_per_day) set).
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quota = quota;
        self
    }

    /// The window length `W` of the requests and tokens limits. Default 60 s.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The window of the tokens-per-day limit. Default 24 hours ([`DAY`]); shorter for a
    /// scaled emulator.
    pub fn day(mut self, day: Duration) -> Self {
        self.day = day;
        self
    }

    /// The quota of one key; takes precedence over [`quota_fn`](Self::quota_fn) and the default
    /// quota.
    pub fn quota_for(mut self, key: K, quota: Quota) -> Self {
        self.per_key.insert(key, quota);
        self
    }

    /// Computes the quota of a key the first time it is seen (and again after eviction).
    /// `None` (or an unlimited quota) means the key has no limit: its admissions are free and
    /// never wait (and, as such a key keeps no state, the function is called again at each of
    /// its admissions). When set, it decides for every key not given by
    /// [`quota_for`](Self::quota_for), and the default quota is not used. A function returning a
    /// zero limit makes every cost on that dimension fail with
    /// [`AdmissionError::CostAboveLimit`].
    pub fn quota_fn(mut self, f: impl Fn(&K) -> Option<Quota> + Send + Sync + 'static) -> Self {
        self.quota_fn = Some(Arc::new(f));
        self
    }

    /// The longest a request may wait. A request whose computed wait is longer fails at once with
    /// [`AdmissionError::WaitTooLong`]; one whose wait grows past it while queued (feedback, a
    /// lower limit) fails when its deadline passes. Default: no bound.
    ///
    /// Computing the wait of a new arrival walks the queue ahead of it and the window's entries,
    /// so with a bound each queued arrival costs time proportional to the queue; admissions that
    /// do not wait cost nothing extra.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// The most requests that may wait on one key; more fail with
    /// [`AdmissionError::QueueFull`]. `0` means never wait. Default: no bound.
    pub fn max_queue(mut self, max_queue: usize) -> Self {
        self.max_queue = Some(max_queue);
        self
    }

    /// Extra time each entry counts beyond its window, to absorb clock skew and latency between
    /// the client's admission and the server's booking. Default zero.
    pub fn expiry_margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// The feedback policy of [`Budget::throttled`]. Default [`Aimd::default`].
    pub fn aimd(mut self, aimd: Aimd) -> Self {
        self.aimd = Some(aimd);
        self
    }

    /// Turns off the decrease of the effective limit on feedback: [`Budget::throttled`] only
    /// exhausts the window.
    pub fn without_aimd(mut self) -> Self {
        self.aimd = None;
        self
    }

    /// Checks the configuration and builds the budget.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroLimit`] for a zero limit (default or per key),
    /// [`ConfigError::ZeroWindow`] for a zero window or day, [`ConfigError::WindowTooLong`] for
    /// a window or day plus margin over a year, [`ConfigError::MissingLimit`] when neither a
    /// limited quota nor a quota function is given, [`ConfigError::InvalidFactor`] for an AIMD
    /// factor out of range or NaN.
    pub fn build(self) -> Result<Budget<K>, ConfigError> {
        if self.window.is_zero() || self.day.is_zero() {
            return Err(ConfigError::ZeroWindow);
        }
        const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
        if self.window.max(self.day).saturating_add(self.margin) > YEAR {
            return Err(ConfigError::WindowTooLong);
        }
        if self.quota.zero_dimension().is_some()
            || self.per_key.values().any(|q| q.zero_dimension().is_some())
        {
            return Err(ConfigError::ZeroLimit);
        }
        if self.quota.is_unlimited() && self.quota_fn.is_none() && self.per_key.is_empty() {
            return Err(ConfigError::MissingLimit);
        }
        if let Some(aimd) = &self.aimd {
            aimd.validate()?;
        }
        let fair = self
            .fairness
            .map(Fairness::build)
            .transpose()?
            .map(Arc::new);
        Ok(Budget {
            inner: Arc::new(Inner {
                keys: papaya::HashMap::with_hasher(KeyHasher::default()),
                default_quota: self.quota,
                per_key: self.per_key,
                quota_fn: self.quota_fn,
                settings: Arc::new(Settings::new(
                    self.window,
                    self.day,
                    self.margin,
                    self.aimd,
                    fair,
                )),
                max_wait: self.max_wait,
                max_queue: self.max_queue,
                inserted: AtomicUsize::new(0),
            }),
        })
    }
}

impl<K> fmt::Debug for BudgetBuilder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BudgetBuilder")
            .field("quota", &self.quota)
            .field("window", &self.window)
            .field("day", &self.day)
            .field("per_key", &self.per_key.len())
            .field("quota_fn", &self.quota_fn.is_some())
            .field("max_wait", &self.max_wait)
            .field("max_queue", &self.max_queue)
            .field("expiry_margin", &self.margin)
            .field("aimd", &self.aimd)
            .field("fairness", &self.fairness)
            .finish()
    }
}

/// A keyed sliding-window budget. Clones share the same state.
///
/// See the [module documentation](self) for the guarantees.
pub struct Budget<K> {
    inner: Arc<Inner<K>>,
}

/// The hash of the key map: foldhash, seeded at random per map (see the
/// [module documentation](self#the-cost-of-an-admission) for the choice).
type KeyHasher = foldhash::fast::RandomState;

struct Inner<K> {
    keys: papaya::HashMap<K, Arc<KeyShared>, KeyHasher>,
    default_quota: Quota,
    per_key: HashMap<K, Quota>,
    quota_fn: Option<QuotaFn<K>>,
    settings: Arc<Settings>,
    max_wait: Option<Duration>,
    max_queue: Option<usize>,
    /// New keys inserted since the last sweep of idle keys.
    inserted: AtomicUsize,
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
            .field("window", &self.inner.settings.window)
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
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static> Budget<K> {
    /// A builder; a limited quota ([`tokens`](BudgetBuilder::tokens),
    /// [`requests`](BudgetBuilder::requests), [`quota`](BudgetBuilder::quota),
    /// [`quota_for`](BudgetBuilder::quota_for)) or a [`quota_fn`](BudgetBuilder::quota_fn) is
    /// required.
    pub fn builder() -> BudgetBuilder<K> {
        BudgetBuilder {
            quota: Quota::unlimited(),
            window: Duration::from_secs(60),
            day: DAY,
            per_key: HashMap::new(),
            quota_fn: None,
            max_wait: None,
            max_queue: None,
            margin: Duration::ZERO,
            aimd: Some(Aimd::default()),
            fairness: None,
        }
    }

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
    /// [`max_wait`](BudgetBuilder::max_wait), [`AdmissionError::QueueFull`] if
    /// [`max_queue`](BudgetBuilder::max_queue) requests already wait.
    pub fn acquire(&self, key: K, tokens: u64) -> Acquire<K> {
        Acquire::new(self.clone(), key, tokens, Class::default())
    }

    /// [`acquire`](Self::acquire) for a request of `class`: with
    /// [`fairness`](BudgetBuilder::fairness), it waits in its lane, in its tenant's queue, and
    /// is served by the fair shares (see the [module documentation](self#fair-shares));
    /// without, the class is ignored and the queue is FIFO.
    ///
    /// # Errors
    ///
    /// As [`acquire`](Self::acquire); with fairness, [`max_queue`](BudgetBuilder::max_queue)
    /// bounds each tenant's queue, and the wait compared with
    /// [`max_wait`](BudgetBuilder::max_wait) at arrival is an estimate (see
    /// [fair shares](self#fair-shares)).
    pub fn acquire_as(&self, key: K, tokens: u64, class: Class) -> Acquire<K> {
        Acquire::new(self.clone(), key, tokens, class)
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
        }
    }

    /// Whether the budget shares its keys fairly ([`BudgetBuilder::fairness`]).
    pub fn is_fair(&self) -> bool {
        self.inner.settings.fair.is_some()
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
            .settings
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
            .settings
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
            .settings
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
        let offset = inner.settings.offset(now);
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
            let begin = shared.begin(
                &mut state,
                tokens,
                offset,
                waker,
                inner.max_wait,
                inner.max_queue,
                class,
            );
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
    /// (see [`Aimd`]). Does nothing for a key without state or a cause no quota cures.
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
        self.inner.settings.window
    }

    /// The window of the tokens-per-day limit.
    pub fn day(&self) -> Duration {
        self.inner.settings.day
    }

    /// Forgets every idle key now (see the [module documentation](self#memory-and-time)), and
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
        let fresh = KeyShared::new(&quota, Arc::clone(&inner.settings))?;
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
