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
//! request is admitted; a charge counts for its dimension's window (plus an optional
//! [expiry margin](BudgetBuilder::expiry_margin)) from the end of its ledger bucket, never
//! less (see [ledgers of bounded size](#ledgers-of-bounded-size)). A request is admitted only when its cost fits
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
//! **With a shared store** (a fleet behind one quota), the window guarantee is the store's,
//! and fair shares are not implemented: the Redis store serves each process's waiters FIFO,
//! and refuses [settings](Settings) with fairness ([`ConfigError::Unsupported`]) rather than
//! admit FIFO silently. Fleet-wide weighted shares would need the tags in the store.
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
//! # Scopes
//!
//! A request may be charged to several keys at once ([`Scopes`], up to [`MAX_SCOPES`]): for
//! Bedrock, its model's key (tokens and requests per minute) and its account's key in the
//! region (tokens per day, shared by every model of the account since 2026-09); for a gateway,
//! a tenant's own budget inside a model's quota. [`Budget::acquire_scopes`] admits it when
//! every dimension of every scope fits, and charges them all at one instant; each key keeps its
//! own [`Quota`] (from the same [`quota_fn`](BudgetBuilder::quota_fn)), and the window
//! guarantee above holds on every scope. Settlement, refunds, debt and the worst-case charge of
//! a permit dropped unsettled reach every scope; throttle feedback through the permit reaches
//! every scope that limits the dimension the cause names ("too many tokens per day" lowers the
//! scopes that limit tokens per day, such as the account's; a scope that does not limit a
//! dimension ignores it).
//!
//! The order across keys: the request waits in its first scope's queue (FIFO, or fairly),
//! and once served there, at a *gate* on each of its keys; gates are numbered by one sequence
//! for the whole budget, and a key serves its gates first, in that order. So there is no
//! deadlock (the oldest gate is first on all of its keys), requests whose first scope is a key
//! stay FIFO (or fair) among themselves, and a request of scopes `A` and `B` holds back the
//! other waiters of `A` only while it waits for `B`: for the gates ahead of it on `B` and its
//! own cost to fit there, at most [`max_wait`](BudgetBuilder::max_wait) when it is set.
//! A scope after the first must have a quota ([`AdmissionError::ScopeWithoutQuota`]); the
//! first may have none (a model without a quota is not charged, as a key without a limit
//! never is). A key named twice, too many scopes, or a cost above one scope's whole limit
//! (which names the scope) are typed errors, at once. (One approximation: the
//! [`outstanding`](KeyStats::outstanding) count of a later scope also counts the requests that
//! still wait in their first scope's queue.)
//!
//! ```
//! use std::time::Duration;
//! use bedrock_throttle::budget::{Budget, Quota, Scopes};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let budget: Budget<&str> = Budget::builder()
//!     .quota_fn(|key: &&str| match *key {
//!         "account" => Some(Quota::unlimited().with_tokens_per_day(1_000_000)),
//!         _ => Some(Quota::tokens(100_000)),
//!     })
//!     .build()?;
//! let permit = budget
//!     .acquire_scopes(Scopes::new("claude").with("account"), 2_000)
//!     .await?;
//! permit.settle(1_500);
//! assert_eq!(budget.stats(&"account").unwrap().tokens_per_day.unwrap().used, 1_500);
//! # Ok(())
//! # }
//! ```
//!
//! # Feedback
//!
//! When the server throttles anyway (the quota is shared with other clients, or set too high),
//! [`Budget::throttled`] lowers the *effective* limit of the dimension the throttle names
//! ([`Dimension::of_cause`]: requests, tokens, tokens per day, both per-window dimensions when
//! the server did not say) and treats that dimension's window as exhausted up to the lowered
//! limit (a synthetic entry fills the gap, so queued requests wait for entries to expire, or for
//! the limit to rise, instead of hitting the quota again). By default that is AIMD: the
//! multiplicative decrease ([`Aimd::decrease`], not below [`Aimd::floor`]) with linear recovery
//! ([`Aimd::recover_per_window`]). [`Aimd::learned`] instead sets the limit to what the ledger
//! held when the server refused (the ledger is in the server's units), less a small margin
//! ([`Learn::margin`]), and raises it again only by probing, ever more slowly while the server
//! keeps refusing at the same level ([`Learn::probe_per_window`]; with [`Learn::max`] above 1,
//! also above the configured limit). Both are computed lazily from the time of the last
//! throttle. A daily throttle touches only the daily dimension.
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
//! # Ledgers of bounded size
//!
//! A ledger keeps one entry per *bucket*, not per admission: a charge at offset `t` joins the
//! entry dated at the END of its bucket, `ceil(t / bucket) × bucket`, and counts until that
//! date plus the window. So **a key holds at most `window / bucket + 1` entries per dimension,
//! whatever the request rate**, and no charge is freed before its exact expiry: it is freed up
//! to one bucket later, never earlier, so the sliding-window guarantee is kept exactly (it is
//! only conservative by less than one bucket). The buckets:
//! - requests and tokens per window: [`resolution`](BudgetBuilder::resolution), 1 ms by
//!   default, so at most 60,001 entries (960 KB) for a minute, and in practice one per instant
//!   that admitted something (charges at one instant share an entry); waits come out at most
//!   1 ms longer than exact;
//! - tokens per day: [`day_bucket`](BudgetBuilder::day_bucket), the day / 1,440 by default
//!   (one minute): at most 1,441 entries, 23 KB, for an account key that every model of the
//!   account charges at any rate; a charge is freed at the end of its minute's day.
//!
//! A bucket coarser than its window is refused ([`ConfigError::BucketAboveWindow`]).
//! [`KeyStats::memory`] gives the bytes a key holds.
//!
//! **The shape, for a shared store.** Per key and dimension: an ordered list of `(bucket end,
//! amount)` pairs with strictly increasing ends, their sum (`used`), and the key's latest
//! booking offset. An admission at `t` (the store's clock) is dated `at = max(t, latest)`,
//! adds its cost to the pair of `ceil(at / bucket) × bucket` (the last pair, or a new one after
//! it) and to `used`; expiry pops pairs from the front while `end + window <= now`; a refund
//! takes from the pair of `ceil(at / bucket) × bucket` found by the permit's `at` (at most
//! what it charged); debt and a throttle's fill are bookings at the settle instant. Every
//! operation touches the ends of the list (or one pair found by its end), and the list holds
//! at most `window / bucket + 1` pairs: in Redis, a hash of `end → amount` plus `used`,
//! `latest` and the first end (or a sorted set scored by the end), so no script walks more
//! than the expired pairs.
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
//!   creation, and an amount), one per bucket (see [ledgers](#ledgers-of-bounded-size)). A
//!   charge never goes before an earlier booking of the key: a clock read that loses the race to
//!   the lock is dated at the later booking, which counts it longer, never shorter. An admission
//!   has one offset (the latest of the clock and the key's latest booking); the permit keeps
//!   it, finds its entry on each dimension by it when it refunds (the last entry first, else a
//!   binary search), and [`Permit::admitted_at`] converts it, exactly, when asked.
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
//! A request of several [scopes](#scopes) pays those per-key costs for each of its keys (a
//! probe under one epoch guard for all of them, a reference, a lock and its release, an entry
//! per limited dimension) and one clock read for all; its set of keys, their lock order, the
//! held locks and the permit's references are inline arrays of at most [`MAX_SCOPES`], so it
//! allocates nothing either (`tests/admission_allocs.rs` counts the allocations of both paths).
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
mod builder;
mod config;
mod engine;
mod error;
mod fair;
mod feedback;
mod key;
mod ledger;
mod permit;
mod queue;
mod quota;
mod scoped;
mod shares;
mod stats;
mod store;

#[cfg(test)]
pub(crate) mod tests;

use std::time::Duration;

pub use self::acquire::Acquire;
pub use self::builder::{BudgetBuilder, Settings};
pub use self::engine::Budget;
pub use self::error::{AdmissionError, ConfigError};
pub use self::fair::{Class, DEFAULT_MAX_TENANTS, Fairness, Lane, MAX_WEIGHT, MIN_WEIGHT};
pub use self::feedback::{Aimd, Learn};
pub use self::permit::Permit;
pub use self::quota::{Dimension, Quota};
pub use self::scoped::{MAX_SCOPES, Scopes};
pub use self::stats::{DimensionStats, KeyStats};
pub use self::store::{QuotaStore, StorePermit};

/// The default day window (tokens per day).
pub const DAY: Duration = Duration::from_secs(24 * 3600);
