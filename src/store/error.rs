//! The errors of the shared store.

use std::fmt;

/// What went wrong with the Redis store: at build (a bad URL, a bad prefix), at connection (an
/// unreachable server, one without scripting) or on a call.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The URL (or a cluster node's URL) does not parse.
    BadUrl {
        /// The URL as given.
        url: String,
        /// Why it does not parse.
        source: redis::RedisError,
    },
    /// The server could not be reached (refused, timed out, dropped).
    Unreachable(redis::RedisError),
    /// The server does not run Lua scripts (`EVAL` is unknown or disabled), which the store
    /// needs for atomic admission.
    NoScripting(redis::RedisError),
    /// The key prefix holds `{` or `}`: the names of one quota key would not share one hash
    /// tag, so they could span Redis Cluster slots.
    KeySpansSlots {
        /// The prefix as given.
        prefix: String,
    },
    /// A limit above [`MAX_LIMIT`](super::MAX_LIMIT) (2^53): the store's script counts in
    /// doubles, exact only up to there, so a larger limit would be rounded (and near 2^63,
    /// corrupted).
    LimitTooLarge {
        /// The dimension of the limit.
        dimension: crate::budget::Dimension,
        /// The limit given.
        limit: u64,
    },
    /// A call did not answer within the configured timeout.
    Timeout,
    /// Another error from the server or the client.
    Redis(redis::RedisError),
}

impl StoreError {
    pub(crate) fn classify(e: redis::RedisError) -> Self {
        if e.is_timeout() {
            StoreError::Timeout
        } else if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
            StoreError::Unreachable(e)
        } else if matches!(
            e.kind(),
            redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
        ) || {
            // No EVAL at all, or an ACL that forbids scripts.
            let text = e.to_string().to_ascii_lowercase();
            text.contains("unknown command")
                || (text.contains("noperm") && (text.contains("eval") || text.contains("script")))
        } {
            StoreError::NoScripting(e)
        } else {
            StoreError::Redis(e)
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::BadUrl { url, source } => write!(
                f,
                "the Redis URL {url:?} is not valid ({source}): use redis://host:port[/db]"
            ),
            StoreError::Unreachable(e) => write!(
                f,
                "the Redis server cannot be reached ({e}): check the URL and that it is running"
            ),
            StoreError::NoScripting(e) => write!(
                f,
                "the Redis server does not run Lua scripts ({e}): the store needs EVAL/EVALSHA \
                 (Redis 7+ or Valkey 8+ with scripting enabled)"
            ),
            StoreError::KeySpansSlots { prefix } => write!(
                f,
                "the key prefix {prefix:?} holds '{{' or '}}', so one quota key's names could \
                 span cluster slots: use a prefix without braces"
            ),
            StoreError::LimitTooLarge { dimension, limit } => write!(
                f,
                "the {dimension:?} limit {limit} is above 2^53, the largest the Redis store \
                 counts exactly: give a smaller limit (or none)"
            ),
            StoreError::Timeout => f.write_str("the Redis store did not answer within its timeout"),
            StoreError::Redis(e) => write!(f, "Redis error: {e}"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::BadUrl { source, .. } => Some(source),
            StoreError::Unreachable(e) | StoreError::NoScripting(e) | StoreError::Redis(e) => {
                Some(e)
            }
            StoreError::KeySpansSlots { .. }
            | StoreError::LimitTooLarge { .. }
            | StoreError::Timeout => None,
        }
    }
}

/// What [`RedisStore::ready`](super::RedisStore::ready) found that does not stop the store but
/// weakens its guarantee. Each is also logged at warn.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreWarning {
    /// The server's `maxmemory-policy` may evict the store's keys under memory pressure: an
    /// evicted ledger forgets what the fleet admitted, so up to a whole window more may pass
    /// (the store notices a lost ledger only when this process held live charges on it). Use
    /// `noeviction`.
    Eviction {
        /// The policy in force.
        policy: String,
    },
    /// The policy could not be read (`CONFIG` renamed or forbidden, as on some managed
    /// services): check it is `noeviction`.
    EvictionUnknown {
        /// Why it could not be read.
        reason: String,
    },
}

impl fmt::Display for StoreWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreWarning::Eviction { policy } => write!(
                f,
                "the Redis maxmemory-policy is {policy:?}: it may evict a ledger and let a window \
                 be admitted twice; set it to noeviction"
            ),
            StoreWarning::EvictionUnknown { reason } => write!(
                f,
                "the Redis maxmemory-policy could not be read ({reason}): make sure it is \
                 noeviction"
            ),
        }
    }
}
