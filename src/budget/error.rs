//! The errors of the admission engine.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::Dimension;

/// Why a request was not admitted.
///
/// Returned by [`Budget::acquire`](super::Budget::acquire) and
/// [`Budget::try_acquire`](super::Budget::try_acquire); the layers return it inside their
/// [`BoxError`](crate::BoxError), so callers can downcast to it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdmissionError {
    /// The request costs more than the key's whole limit on one dimension: it could never be
    /// admitted.
    CostAboveLimit {
        /// The dimension it does not fit in.
        dimension: Dimension,
        /// The cost of the request on that dimension.
        cost: u64,
        /// The key's configured limit on that dimension.
        limit: u64,
    },
    /// The request would have to wait longer than allowed.
    WaitTooLong {
        /// How long the request would have waited, from its arrival, given the requests queued
        /// ahead of it and the charges in the window when this was computed.
        would_wait: Duration,
        /// The longest wait allowed (zero for [`Budget::try_acquire`](super::Budget::try_acquire)).
        max_wait: Duration,
    },
    /// The key's queue of waiting requests is full.
    QueueFull {
        /// The number of requests already waiting on the key.
        depth: usize,
        /// How long this request would have waited behind them, if it could be computed.
        would_wait: Option<Duration>,
    },
    /// A request of several [scopes](super::Scopes) costs more than one scope's whole limit
    /// on one dimension: it could never be admitted.
    ScopeAboveLimit {
        /// The scope (its index in the request's scopes, from 0).
        scope: usize,
        /// The dimension it does not fit in.
        dimension: Dimension,
        /// The cost of the request on that dimension.
        cost: u64,
        /// The scope's configured limit on that dimension.
        limit: u64,
    },
    /// A scope after the first has no quota: a scope is named to be enforced, so one without a
    /// limit is a configuration mistake (give its key a quota).
    ScopeWithoutQuota {
        /// The scope (its index in the request's scopes).
        scope: usize,
    },
    /// The same key is named twice in one request's scopes.
    DuplicateScope {
        /// The scope that repeats an earlier one (its index in the request's scopes).
        scope: usize,
    },
    /// More scopes than [`MAX_SCOPES`](super::MAX_SCOPES) were named.
    TooManyScopes {
        /// The most a request may name.
        max: usize,
    },
}

impl AdmissionError {
    /// How long the request would have waited, when that was computed (`None` for a cost above
    /// the limit, which would wait for ever).
    pub fn would_wait(&self) -> Option<Duration> {
        match self {
            AdmissionError::WaitTooLong { would_wait, .. } => Some(*would_wait),
            AdmissionError::QueueFull { would_wait, .. } => *would_wait,
            _ => None,
        }
    }

    /// Whether waiting longer could ever admit the request: false for a cost above a limit
    /// and for scopes named wrongly.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            AdmissionError::WaitTooLong { .. } | AdmissionError::QueueFull { .. }
        )
    }

    /// The dimension a cost above a limit does not fit in (a daily limit of 0 refuses every
    /// request at once on [`Dimension::TokensPerDay`]: the tokens-per-day cause).
    pub fn dimension(&self) -> Option<Dimension> {
        match self {
            AdmissionError::CostAboveLimit { dimension, .. }
            | AdmissionError::ScopeAboveLimit { dimension, .. } => Some(*dimension),
            _ => None,
        }
    }

    /// The scope an error names, for a request of several scopes.
    pub fn scope(&self) -> Option<usize> {
        match self {
            AdmissionError::ScopeAboveLimit { scope, .. }
            | AdmissionError::ScopeWithoutQuota { scope }
            | AdmissionError::DuplicateScope { scope } => Some(*scope),
            _ => None,
        }
    }
}

impl fmt::Display for AdmissionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdmissionError::CostAboveLimit {
                dimension,
                cost,
                limit,
            } => write!(
                f,
                "request costs {cost} {dimension}, more than the whole limit of {limit}: it can \
                 never be admitted; lower its cost (e.g. max output tokens) or raise the limit"
            ),
            AdmissionError::WaitTooLong {
                would_wait,
                max_wait,
            } => write!(
                f,
                "request would wait {would_wait:?} for capacity, longer than the allowed \
                 {max_wait:?}; retry later or allow a longer wait"
            ),
            AdmissionError::QueueFull { depth, would_wait } => {
                write!(f, "{depth} requests are already waiting on this key")?;
                if let Some(wait) = would_wait {
                    write!(f, " (this one would wait {wait:?})")?;
                }
                write!(f, "; shed load or allow a deeper queue")
            }
            AdmissionError::ScopeAboveLimit {
                scope,
                dimension,
                cost,
                limit,
            } => write!(
                f,
                "request costs {cost} {dimension}, more than the whole limit of {limit} of its \
                 scope {scope}: it can never be admitted; lower its cost or raise that limit"
            ),
            AdmissionError::ScopeWithoutQuota { scope } => write!(
                f,
                "scope {scope} of the request has no quota: give its key a quota, or do not name it"
            ),
            AdmissionError::DuplicateScope { scope } => write!(
                f,
                "scope {scope} of the request names a key an earlier scope names: name each key once"
            ),
            AdmissionError::TooManyScopes { max } => write!(
                f,
                "a request names more than {max} scopes: merge some of them"
            ),
        }
    }
}

impl std::error::Error for AdmissionError {}

/// A configuration that cannot work, refused when a [`Budget`](super::Budget) is built or a limit
/// is changed.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A limit of zero: nothing could ever be admitted.
    ZeroLimit,
    /// A window of zero length: the limit would mean nothing.
    ZeroWindow,
    /// A window or day (plus expiry margin) longer than a year: almost certainly a unit mistake.
    WindowTooLong,
    /// Neither a default limit nor a limit function was given.
    MissingLimit,
    /// A ledger bucket ([`resolution`](super::BudgetBuilder::resolution) or
    /// [`day_bucket`](super::BudgetBuilder::day_bucket)) of zero length.
    ZeroBucket,
    /// A ledger bucket longer than its window: a window would be counted in less than one
    /// bucket, and its charges held for up to twice the window.
    BucketAboveWindow {
        /// The bucket given.
        bucket: Duration,
        /// Its window.
        window: Duration,
    },
    /// A factor outside its range, or NaN.
    InvalidFactor {
        /// Which setting.
        name: &'static str,
        /// The value given.
        value: f64,
        /// The accepted range, in words.
        expected: &'static str,
    },
    /// A tenant weight outside [`MIN_WEIGHT`](super::MIN_WEIGHT)`..=`[`MAX_WEIGHT`](super::MAX_WEIGHT)
    /// (zero, negative, NaN, infinite, or too small or large for the fair shares' arithmetic).
    InvalidWeight {
        /// The tenant (`None`: the default weight).
        tenant: Option<Arc<str>>,
        /// The weight given.
        value: f64,
    },
    /// A lane minimum outside `[0, 1]`, or NaN.
    InvalidMinimum {
        /// The lane.
        lane: Arc<str>,
        /// The minimum given.
        value: f64,
    },
    /// The lanes' minimum shares add up to more than the whole quota.
    MinimumsAboveWhole {
        /// Their sum.
        total: f64,
    },
    /// Two lanes with one name.
    DuplicateLane {
        /// The name.
        lane: Arc<str>,
    },
    /// A lane that the fairness configuration does not have.
    UnknownLane {
        /// The name.
        lane: Arc<str>,
    },
    /// A fairness setting changed on a budget built without
    /// [`fairness`](super::BudgetBuilder::fairness).
    NotFair,
    /// A [`Settings`](super::Settings) value sets something that the store it is given to
    /// does not implement (the shared store has no fair shares, queue bound or ledger buckets
    /// of its own): refused rather than ignored.
    Unsupported {
        /// The setting, as its setter is named.
        setting: &'static str,
        /// The store.
        store: &'static str,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::ZeroLimit => {
                f.write_str("a limit of zero admits nothing: give a limit of at least 1")
            }
            ConfigError::ZeroWindow => {
                f.write_str("a window of zero length is meaningless: give a positive window")
            }
            ConfigError::WindowTooLong => f.write_str(
                "a window (plus expiry margin) longer than a year: check the unit of the duration",
            ),
            ConfigError::Unsupported { setting, store } => write!(
                f,
                "the {store} store does not implement `{setting}`: leave it out of the settings \
                 given to that store"
            ),
            ConfigError::ZeroBucket => f.write_str(
                "a ledger bucket of zero length would keep one entry per admission: give a \
                 positive resolution (1 ms by default)",
            ),
            ConfigError::BucketAboveWindow { bucket, window } => write!(
                f,
                "a ledger bucket of {bucket:?} is longer than its window of {window:?}: give a \
                 bucket of at most the window (a small fraction of it)"
            ),
            ConfigError::MissingLimit => f.write_str(
                "no limit configured: give a quota (`tokens(n)`, `requests(n)`, `quota(..)`) or \
                 a `quota_fn(..)` on the budget builder",
            ),
            ConfigError::InvalidFactor {
                name,
                value,
                expected,
            } => write!(f, "{name} is {value}, but must be {expected}"),
            ConfigError::InvalidWeight { tenant, value } => match tenant {
                Some(t) => write!(
                    f,
                    "the weight of tenant {t:?} is {value}, but must be finite and greater than 0, \
                     in [{}, {}]",
                    super::MIN_WEIGHT,
                    super::MAX_WEIGHT
                ),
                None => write!(
                    f,
                    "the default tenant weight is {value}, but must be finite and greater than 0, \
                     in [{}, {}]",
                    super::MIN_WEIGHT,
                    super::MAX_WEIGHT
                ),
            },
            ConfigError::InvalidMinimum { lane, value } => write!(
                f,
                "the minimum share of lane {lane:?} is {value}, but must be in [0, 1]"
            ),
            ConfigError::MinimumsAboveWhole { total } => write!(
                f,
                "the lanes' minimum shares add up to {total}, more than the whole quota (1): \
                 lower some of them"
            ),
            ConfigError::DuplicateLane { lane } => {
                write!(
                    f,
                    "two lanes are called {lane:?}: give each lane its own name"
                )
            }
            ConfigError::UnknownLane { lane } => write!(
                f,
                "no lane is called {lane:?}: configure it with `Fairness::lane` first"
            ),
            ConfigError::NotFair => f.write_str(
                "this budget shares its quotas FIFO: build it with `fairness(..)` to set weights \
                 and minimums",
            ),
        }
    }
}

impl std::error::Error for ConfigError {}
