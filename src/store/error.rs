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
            StoreError::KeySpansSlots { .. } | StoreError::Timeout => None,
        }
    }
}
