//! The quota of one key: its limits on each dimension.

use std::fmt;

use crate::classify::ThrottleCause;

/// One dimension of a quota: what an admission is counted in, and over which window.
///
/// Every admission counts as one request on [`Requests`](Dimension::Requests) and as its token
/// cost on [`Tokens`](Dimension::Tokens) and [`TokensPerDay`](Dimension::TokensPerDay). A key is
/// limited only on the dimensions its [`Quota`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    /// Requests per window (Bedrock's "requests per minute").
    Requests,
    /// Tokens per window (Bedrock's "tokens per minute").
    Tokens,
    /// Tokens per day: the same token costs, over the day window
    /// ([`BudgetBuilder::day`](super::BudgetBuilder::day)).
    TokensPerDay,
}

impl Dimension {
    /// Every dimension, in the order a key keeps them.
    pub const ALL: [Dimension; 3] = [
        Dimension::Requests,
        Dimension::Tokens,
        Dimension::TokensPerDay,
    ];

    /// The amount an admission of `tokens` counts on this dimension.
    #[inline]
    pub(crate) fn cost(self, tokens: u64) -> u64 {
        match self {
            Dimension::Requests => 1,
            Dimension::Tokens | Dimension::TokensPerDay => tokens,
        }
    }

    /// Whether settlement corrects this dimension (a request is a request; tokens are known at
    /// the end).
    #[inline]
    pub(crate) fn settles(self) -> bool {
        !matches!(self, Dimension::Requests)
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The dimensions a throttle of `cause` is feedback for: the one the server named, both
    /// per-window dimensions when it did not say, none for causes a quota cannot cure
    /// (capacity, a model still loading).
    pub fn of_cause(cause: ThrottleCause) -> &'static [Dimension] {
        match cause {
            ThrottleCause::Requests => &[Dimension::Requests],
            ThrottleCause::Tokens => &[Dimension::Tokens],
            ThrottleCause::TokensPerDay => &[Dimension::TokensPerDay],
            ThrottleCause::Unknown => &[Dimension::Requests, Dimension::Tokens],
            ThrottleCause::Capacity | ThrottleCause::ModelNotReady => &[],
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dimension::Requests => "requests",
            Dimension::Tokens => "tokens",
            Dimension::TokensPerDay => "tokens per day",
        })
    }
}

/// The limits of one quota key (a model in a region, a tenant): requests and tokens per window,
/// tokens per day. Every limit is optional: an absent one is not enforced. The one quota type of
/// the crate: the engine, the SDK setup and the emulator all take it.
///
/// ```
/// use bedrock_throttle::budget::{Dimension, Quota};
///
/// let quota = Quota::tokens(200_000).with_requests(50);
/// assert_eq!(quota.tokens, Some(200_000));
/// assert_eq!(quota.get(Dimension::Requests), Some(50));
/// assert_eq!(quota.tokens_per_day, None);
/// assert!(!quota.is_unlimited());
/// ```
///
/// With the `bedrock` feature it reads and writes as JSON (`{"requests": 60, "tokens": 200000}`;
/// `rpm`, `tpm` and `tpd` are accepted as the same fields, as the emulator's configuration
/// files name them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "bedrock",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct Quota {
    /// Requests per window.
    #[cfg_attr(feature = "bedrock", serde(alias = "rpm"))]
    pub requests: Option<u64>,
    /// Tokens per window.
    #[cfg_attr(feature = "bedrock", serde(alias = "tpm"))]
    pub tokens: Option<u64>,
    /// Tokens per day window.
    #[cfg_attr(feature = "bedrock", serde(alias = "tpd"))]
    pub tokens_per_day: Option<u64>,
}

impl Quota {
    /// No limit on any dimension.
    pub const fn unlimited() -> Self {
        Self {
            requests: None,
            tokens: None,
            tokens_per_day: None,
        }
    }
    /// A tokens-per-window quota.
    pub const fn tokens(tokens: u64) -> Self {
        Self::unlimited().with_tokens(tokens)
    }
    /// A requests-per-window quota.
    pub const fn requests(requests: u64) -> Self {
        Self::unlimited().with_requests(requests)
    }
    /// The same quota with a requests-per-window limit.
    pub const fn with_requests(mut self, requests: u64) -> Self {
        self.requests = Some(requests);
        self
    }
    /// The same quota with a tokens-per-window limit.
    pub const fn with_tokens(mut self, tokens: u64) -> Self {
        self.tokens = Some(tokens);
        self
    }
    /// The same quota with a tokens-per-day limit.
    pub const fn with_tokens_per_day(mut self, tokens: u64) -> Self {
        self.tokens_per_day = Some(tokens);
        self
    }
    /// The limit on `dimension`, if any.
    pub const fn get(&self, dimension: Dimension) -> Option<u64> {
        match dimension {
            Dimension::Requests => self.requests,
            Dimension::Tokens => self.tokens,
            Dimension::TokensPerDay => self.tokens_per_day,
        }
    }
    /// The same quota with the limit on `dimension` set (or removed with `None`).
    pub const fn with(mut self, dimension: Dimension, limit: Option<u64>) -> Self {
        match dimension {
            Dimension::Requests => self.requests = limit,
            Dimension::Tokens => self.tokens = limit,
            Dimension::TokensPerDay => self.tokens_per_day = limit,
        }
        self
    }
    /// Whether no dimension is limited.
    pub const fn is_unlimited(&self) -> bool {
        self.requests.is_none() && self.tokens.is_none() && self.tokens_per_day.is_none()
    }
    /// The limited dimensions and their limits, in [`Dimension::ALL`] order.
    pub fn limits(&self) -> impl Iterator<Item = (Dimension, u64)> + '_ {
        Dimension::ALL
            .into_iter()
            .filter_map(|d| self.get(d).map(|limit| (d, limit)))
    }
    /// The first dimension whose limit is zero, if any (a zero limit admits nothing).
    pub(crate) fn zero_dimension(&self) -> Option<Dimension> {
        self.limits().find(|&(_, limit)| limit == 0).map(|(d, _)| d)
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_unlimited() {
            return f.write_str("unlimited");
        }
        let mut first = true;
        for (dimension, limit) in self.limits() {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{limit} {dimension}")?;
        }
        Ok(())
    }
}
