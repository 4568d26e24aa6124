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
//! Every operation on a key is one Lua script call (`EVALSHA`; on `NOSCRIPT`, after a restart
//! or `SCRIPT FLUSH`, the client loads it and repeats the call). A script runs atomically, so
//! the read of the window, the check of every dimension and the booking cannot interleave with
//! another process's: that is what makes the invariant hold across processes, in one round
//! trip for an admission that does not wait. A settlement at exactly the reservation changes
//! nothing and sends nothing; a refund or a debt is one more call. The script dates every entry
//! with the server's `TIME`, never a client's clock: processes whose clocks disagree still
//! share one timeline, and an entry's expiry is measured on the same clock that dated it.
//!
//! # Layout, and Redis Cluster
//!
//! A quota key's data is six Redis keys (its state hash, one sorted set per dimension with
//! entries `seq:amount` scored by their server time, the fleet's line of waiting tickets) whose
//! names share one hash tag, `{prefix:digest}`: they sit in one slot, so the script runs on one
//! node of a cluster and stays atomic. The digest is a SHA-1 of the key's
//! [stable bytes](StoreKey): names are bounded whatever the key, so keys from untrusted input
//! cannot grow or shape the key space. A prefix holding braces would break the tag and is
//! refused ([`StoreError::KeySpansSlots`]). Every write refreshes a TTL of the longest window
//! plus the margin: a process that dies leaves nothing charged for longer than a window, and
//! an idle key's data goes away by itself.
//!
//! # Waiting, and fairness across processes
//!
//! A refused admission learns from the script when it would fit (the instant enough entries
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
//! holds the line for no longer than that, and a dropped waiter cancels its ticket.
//!
//! # When Redis is down or slow
//!
//! Every call has a [timeout](RedisStoreBuilder::timeout); a failure or a timeout switches the
//! store to its [`Outage`] mode, logged at warn and counted ([`RedisStore::store_stats`]). While
//! degraded, one call per interval probes Redis; the first answer switches back (also logged).
//! Permits granted by the local share settle locally, and Redis never hears of them: nothing is
//! charged twice on return. The price is the other side of the same choice: for one window
//! after the return, the fleet's ledger does not see what the local shares (or fail open)
//! admitted during the outage, so the server may see up to that much above the limit; choose
//! the fraction (about 1 / processes) with that in mind, or fail closed. A settlement that cannot reach Redis leaves its reservation
//! standing until it expires with the window. Nothing panics.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use bedrock_throttle::budget::QuotaStore;
//! use bedrock_throttle::store::{Outage, RedisStore};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store: RedisStore<String> = RedisStore::builder("redis://127.0.0.1:6379")
//!     .tokens(100_000)
//!     .window(Duration::from_secs(60))
//!     .on_outage(Outage::LocalShare(0.25))
//!     .build()?;
//! store.ready().await?; // connect and load the script now: typed errors at start
//! let permit = store.acquire("claude".to_owned(), 4_000).await?;
//! permit.settle(1_500); // the refund is one more script call
//! # Ok(()) }
//! ```

#[cfg(feature = "redis")]
mod builder;
#[cfg(feature = "redis")]
mod call;
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
