//! Where the ledgers live: in this process ([`Budget`](crate::budget::Budget)), or shared by a fleet of processes
//! through Redis or Valkey ([`RedisStore`], feature `redis`). [`Store`] is either, so one stack
//! type (the SDK setup's) serves both.
//!
//! # Why a shared store
//!
//! A Bedrock quota belongs to an account, a region and a model; production traffic comes from
//! many processes. Each process with its own ledger cannot see the others' reservations and
//! debt (Bedrock books output at five times its count on recent Claude models), so a static
//! split of the quota throttles at peaks and wastes whatever share an idle process leaves. The
//! shared store keeps ONE ledger per quota key for the whole fleet, with the guarantees of the
//! in-process engine (see [`budget`](crate::budget)):
//!
//! - the amount admitted on a key by all processes in any window of length `W` never exceeds
//!   the key's (effective) limit, on every dimension, all dimensions admitted together;
//! - reserve then settle: a refund frees capacity at once, debt is booked at the settle instant,
//!   [`Permit::settle_against`](crate::budget::Permit::settle_against) mirrors the server's reservation,
//!   an unsettled drop settles the worst case;
//! - throttle feedback and [`set_quota`](crate::budget::QuotaStore::set_quota) are fleet-wide: they live in the
//!   key's shared state, so one process's throttle lowers every process's effective limit, and
//!   the recovery is shared.
//!
//! # Why one script, and the server's clock
//!
//! Every operation on a key is one Lua script call (`EVALSHA`; on `NOSCRIPT`, after a restart,
//! a failover or `SCRIPT FLUSH`, the client repeats the call with the script itself, and takes
//! the key's ledger for lost: see below). A script runs atomically, so
//! the read of the window, the check of every dimension and the booking cannot interleave with
//! another process's: that is what makes the invariant hold across processes, in one round
//! trip for an admission that does not wait. A settlement at exactly the reservation changes
//! nothing and sends nothing; a refund or a debt is one more call. The script dates every entry
//! with the server's `TIME`, never a client's clock: processes whose clocks disagree still
//! share one timeline, and an entry's expiry is measured on the same clock that dated it.
//!
//! # Ledgers of bounded size, calls of bounded cost
//!
//! Each dimension of a key keeps *buckets*, not one entry per admission: the charges of one
//! resolution step (1/100 of the window for requests and tokens, 1/1440 of the day for tokens
//! per day: one minute) add up in one bucket, dated at its **last** charge. A bucket leaves the
//! window when its date does, so every charge is freed no earlier than its exact expiry (late
//! by at most one step) and the sliding-window guarantee holds unchanged. A ledger holds at most
//! `steps + 1` buckets at any request rate: about 3 KB for a per-minute key, under 300 KB for a
//! day at any rate. A running total per dimension is kept beside the buckets, so no script
//! call reads a whole ledger: an admission reads the totals and drops the buckets that left
//! (at most 256 per call; the rest count until the next call, conservatively), and a refusal
//! says when it will fit by reading the oldest buckets, 32 at most (if they do not free
//! enough, it answers when they will have gone, and the waiter asks again then). A refund
//! comes off the bucket of its admission, found from the server time the admission returned.
//!
//! Amounts are integers; the script counts in Lua numbers (doubles), exact up to 2^53, so a
//! limit above [`MAX_LIMIT`] (2^53) is refused with [`StoreError::LimitTooLarge`] at build or
//! [`apply_quota`](RedisStore::apply_quota) (a limit a [`quota_fn`](crate::budget::Settings::quota_fn)
//! returns is capped there, with a warning); a debt above the limit is booked as the limit (it
//! blocks the window no longer).
//!
//! # Layout, and Redis Cluster
//!
//! A quota key's data is seven Redis keys (its state hash with the totals, one sorted set of
//! bucket dates per dimension, a hash of the buckets' amounts, the fleet's line of waiting
//! tickets and their costs) whose names share one hash tag, `{prefix:digest}`: they sit in one
//! slot, so the script runs on one node of a cluster and stays atomic. The digest is a SHA-1 of the
//! key's [stable bytes](StoreKey): names are bounded whatever the key, so keys from untrusted
//! input cannot grow or shape the key space. A prefix holding braces would break the tag and is
//! refused ([`StoreError::KeySpansSlots`]). A key's data expires after its longest configured
//! window (the day only when it has a daily limit) plus the margin and two steps, counted from
//! its newest bucket: a process that dies leaves nothing charged for longer than a window, and
//! an idle key's data goes away by itself.
//!
//! The script opens each ledger from an offset in its keys, so that a plan's several keys
//! (scopes: a model's per-minute key and the account's daily key) can be admitted in one call
//! once the engine plans them; in a cluster every key of one plan must then share a slot, a
//! hash tag by account and region. Not done yet: one call admits one key.
//!
//! # Waiting, and fairness across processes
//!
//! A refused admission learns from the script when it would fit (the instant enough buckets
//! expire, or the effective limit recovers); the process's queue head sleeps until then, woken
//! early by a refund settled in its own process, and asks again. Requests of one process queue
//! FIFO locally behind that head and cost no round trips. Across processes, the head's refusal
//! takes a *ticket* in the key's shared line (numbered in arrival order): an admission is
//! granted only if it fits together with the costs of every live ticket older than its own.
//! **Guarantee: once a process's head has a ticket, no later arrival anywhere in the fleet
//! (with or without a ticket) is admitted in a way that delays it**; later requests may only
//! use capacity left over after every older ticket's cost, so a large request is not starved
//! by a stream of small ones from other processes: it is admitted as soon as its cost fits
//! behind the older tickets. A ticket lives until the instant its holder was told to come back
//! plus a grace ([`ticket_grace`](RedisStoreBuilder::ticket_grace)); a dead process's ticket
//! holds the line for no longer than that, and a dropped waiter cancels its ticket. The line
//! holds one ticket per waiting process, so reading it costs in proportion to the processes
//! waiting on the key, never to the request rate.
//!
//! # When Redis is down or slow
//!
//! Every admission call has a [timeout](RedisStoreBuilder::timeout); a failure or a timeout
//! switches the store to its [`Outage`] mode, logged at warn and counted
//! ([`RedisStore::store_stats`]). While degraded, a probe (`PING`) asks Redis every 50 ms, and
//! its first answer sends every waiter back to Redis; waiters in an outage mode do not hold
//! their key's turn, so nothing delays the return. Settlements, throttle feedback and
//! cancelled tickets run in the background with their own
//! [timeout](RedisStoreBuilder::background_timeout): their failures are counted (a timeout as
//! [unconfirmed](StoreStats::unconfirmed): it may well have run) and never switch the mode.
//! Each mode says what it can overshoot ([`Outage`]): fail closed nothing; the local share
//! starts from the fleet's usage as last read and, with fractions adding up to 1, stays within
//! the limits; fail open paces every request at the configured rate and can overshoot by what
//! the server's window held when Redis went away. Permits granted in an outage mode settle
//! locally, and Redis never hears of them: nothing is charged twice on return, and for one
//! window after it the fleet's ledger does not see them. An admission call that timed out may
//! still run on the server later (after a `CLIENT PAUSE`, say): its charge is booked for a
//! request that was not admitted through it, and expires with the window (it costs capacity,
//! never the guarantee). Nothing panics.
//!
//! # What the guarantee needs of the server, and a lost ledger
//!
//! The ledger is the server's memory: the guarantee needs a server that keeps it for a window.
//! Use `maxmemory-policy noeviction` ([`RedisStore::ready`] returns a [`StoreWarning`] and logs
//! one otherwise), and for a failover a replica that has the last writes (`WAIT`-free
//! replication can lose the last second; `appendonly yes` with `appendfsync everysec` bounds
//! what a restart loses to about a second). When the store finds a ledger lost, it treats the
//! key as full for one window (as a throttle does, without lowering the effective limit),
//! counts it ([`StoreStats::lost_ledgers`]) and logs why: the server forgot the script
//! (`NOSCRIPT` after this process had run it: a restart or a failover; the script is sent
//! with `EVALSHA`, not as a replicated function, precisely so this shows), the key's state is
//! gone while this process holds live charges on it, or the fleet's usage is below those
//! charges. Live charges are those certainly still in the window: admitted less than the
//! window minus the timeout ago. So a ledger lost while the script survives (`FLUSHALL`, an
//! eviction) can let the fleet admit again what it admitted in the last timeout of those
//! charges' window before a process notices; and one lost while no process holds a live
//! charge on it (an eviction of an idle key) is not noticed, and costs at most one window's
//! limit. The day's usage lost with a ledger is not rebuilt.
//!
//! # High availability
//!
//! A single server, or a Redis Cluster ([`node`](RedisStoreBuilder::node)), whose replicas
//! take over a failed master's slots. Redis Sentinel is not built in: point the URL at a name
//! that follows the master (a DNS name your failover updates, or a proxy such as Envoy's Redis
//! proxy or HAProxy with a role check), and keep `noeviction`. The tests run on Redis 7 and
//! Valkey 9.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use bedrock_throttle::budget::{QuotaStore, Settings};
//! use bedrock_throttle::store::{Outage, RedisStore};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // The same settings value as the in-process `Budget::new` takes.
//! let settings = Settings::new()
//!     .tokens(100_000)
//!     .window(Duration::from_secs(60));
//! let store: RedisStore<String> = RedisStore::builder("redis://127.0.0.1:6379", settings)
//!     .on_outage(Outage::LocalShare(0.25))
//!     .build()?;
//! // Connect and load the script now: typed errors at start, and warnings (an evicting server).
//! for warning in store.ready().await? {
//!     eprintln!("{warning}");
//! }
//! let permit = store.acquire("claude".to_owned(), 4_000).await?;
//! permit.settle(1_500); // the refund is one more script call
//! # Ok(()) }
//! ```

#[cfg(feature = "redis")]
mod builder;
#[cfg(feature = "redis")]
mod call;
#[cfg(feature = "redis")]
mod charge;
mod either;
#[cfg(feature = "redis")]
mod error;
mod key;
#[cfg(feature = "redis")]
mod local;
#[cfg(feature = "redis")]
mod redis;

#[cfg(feature = "redis")]
pub use self::builder::{BuildError, MAX_LIMIT, Outage, RedisStoreBuilder, StoreStats};
pub use self::either::{Store, StoreAcquire};
#[cfg(feature = "redis")]
pub use self::error::{StoreError, StoreWarning};
pub use self::key::StoreKey;
#[cfg(feature = "redis")]
pub use self::redis::{RedisAcquire, RedisStore};
