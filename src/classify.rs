//! What a layer needs to know about a request or a response, as small pluggable traits.
//!
//! The layers are generic: they never parse a request themselves. The admission layer asks one
//! [`Protocol`](crate::admit::Protocol) (which [`Bedrock`](crate::bedrock::Bedrock) implements);
//! for plain services, each piece of knowledge comes from one small trait that a closure
//! implements, and [`Closures`](crate::admit::Closures) makes a protocol of them.
//!
//! | trait | used by | answers |
//! |---|---|---|
//! | [`QuotaKey`] | rate limit, token budget | which quota does this request draw on? |
//! | [`EstimateTokens`] | token budget | how many tokens to reserve before the call? |
//! | [`Settle`](crate::admit::Settle) (in `admit`: it handles the engine's permit) | token budget | how many tokens did the call really use? |
//! | [`Classify`] | admission, retry | did the call succeed, get throttled (and why), or fail? |
//! | [`CloneRequest`] | retry | can this request be sent again? |
//!
//! ```
//! use bedrock_throttle::classify::{Classification, Classify, ThrottleCause};
//!
//! // A classifier for a plain service whose responses are status codes.
//! let classify = |result: Result<&u16, &std::io::Error>| match result {
//!     Ok(200) => Classification::success(),
//!     Ok(429) => Classification::throttled(ThrottleCause::Requests),
//!     Ok(503) => Classification::throttled(ThrottleCause::Capacity),
//!     Ok(_) => Classification::fatal(),
//!     Err(_) => Classification::transient(),
//! };
//! assert!(classify.classify(Ok(&429)).is_throttled());
//! ```

use std::hash::Hash;
use std::time::Duration;

/// Which quota a throttle was about, as far as the server said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ThrottleCause {
    /// Too many requests in the window (requests-per-minute quota).
    Requests,
    /// Too many tokens in the window (tokens-per-minute quota).
    Tokens,
    /// The daily token quota is spent. Waiting minutes cannot cure it: never retried.
    TokensPerDay,
    /// The service has no capacity right now (HTTP 503, "too many connections"; HTTP 529
    /// `overloaded_error`). A regional capacity signal, not the account's quota: it is never
    /// fed back to a quota's window.
    Capacity,
    /// The model is still loading; the service asks for a few more attempts.
    ModelNotReady,
    /// Throttled, but the server did not say which quota.
    Unknown,
}

impl ThrottleCause {
    /// Whether waiting a little and trying again can succeed. False only for
    /// [`ThrottleCause::TokensPerDay`].
    pub fn is_retryable(self) -> bool {
        !matches!(self, ThrottleCause::TokensPerDay)
    }
}

/// What happened to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// The call did what was asked.
    Success,
    /// The server refused the call for lack of quota or capacity.
    Throttled(ThrottleCause),
    /// A failure that may pass on its own (server error, timeout, connection reset).
    Transient,
    /// A failure that will happen again whatever we do (bad request, access denied).
    Fatal,
}

/// The classification of one result: its [`Outcome`] plus a delay the server suggested, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Classification {
    /// What happened.
    pub outcome: Outcome,
    /// How long the server asked the client to wait before trying again (e.g. `x-amz-retry-after`).
    /// The retry layer bounds it by its backoff's maximum, and never waits past its deadline.
    pub retry_after: Option<Duration>,
}

impl Classification {
    /// A successful call.
    pub const fn success() -> Self {
        Self::new(Outcome::Success)
    }
    /// A throttled call, with its cause.
    pub const fn throttled(cause: ThrottleCause) -> Self {
        Self::new(Outcome::Throttled(cause))
    }
    /// A transient failure.
    pub const fn transient() -> Self {
        Self::new(Outcome::Transient)
    }
    /// A fatal failure.
    pub const fn fatal() -> Self {
        Self::new(Outcome::Fatal)
    }
    /// A classification of `outcome` with no suggested delay.
    pub const fn new(outcome: Outcome) -> Self {
        Self {
            outcome,
            retry_after: None,
        }
    }
    /// The same classification with a server-suggested delay.
    pub const fn with_retry_after(mut self, delay: Option<Duration>) -> Self {
        self.retry_after = delay;
        self
    }
    /// The throttle cause, if the call was throttled.
    pub fn throttle_cause(&self) -> Option<ThrottleCause> {
        match self.outcome {
            Outcome::Throttled(cause) => Some(cause),
            _ => None,
        }
    }
    /// Whether the call was throttled, for any cause.
    pub fn is_throttled(&self) -> bool {
        self.throttle_cause().is_some()
    }
}

/// Classifies the result of a call. Implemented by any `Fn(Result<&Res, &E>) -> Classification`.
pub trait Classify<Res, E> {
    /// Classifies one result.
    fn classify(&self, result: Result<&Res, &E>) -> Classification;
}

impl<F, Res, E> Classify<Res, E> for F
where
    F: Fn(Result<&Res, &E>) -> Classification,
{
    fn classify(&self, result: Result<&Res, &E>) -> Classification {
        self(result)
    }
}

/// A classifier that calls every `Ok` a success and every `Err` transient; the default of the
/// layers when no classifier is given. It never reports a throttle, so limiters get no feedback.
#[derive(Debug, Clone, Copy, Default)]
pub struct OkIsSuccess;

impl<Res, E> Classify<Res, E> for OkIsSuccess {
    fn classify(&self, result: Result<&Res, &E>) -> Classification {
        match result {
            Ok(_) => Classification::success(),
            Err(_) => Classification::transient(),
        }
    }
}

/// The quota key of a request: requests with equal keys share one limit.
///
/// Implemented by any `Fn(&Req) -> K` whose `K` is a usable key.
pub trait QuotaKey<Req> {
    /// The key type.
    type Key: Clone + Eq + Hash + Send + Sync + 'static;
    /// The key of `request`.
    fn quota_key(&self, request: &Req) -> Self::Key;
}

impl<F, Req, K> QuotaKey<Req> for F
where
    F: Fn(&Req) -> K,
    K: Clone + Eq + Hash + Send + Sync + 'static,
{
    type Key = K;
    fn quota_key(&self, request: &Req) -> K {
        self(request)
    }
}

/// A single quota for every request: the key of all requests is `()`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleKey;

impl<Req> QuotaKey<Req> for SingleKey {
    type Key = ();
    fn quota_key(&self, _request: &Req) {}
}

/// How many tokens a request may use, reserved before it is sent. Implemented by any
/// `Fn(&Req) -> u64`. Over-estimating is safe (the difference is refunded at settlement);
/// under-estimating lets the caller overrun the quota until settlement catches up.
pub trait EstimateTokens<Req> {
    /// The number of tokens to reserve for `request`.
    fn estimate_tokens(&self, request: &Req) -> u64;
}

impl<F, Req> EstimateTokens<Req> for F
where
    F: Fn(&Req) -> u64,
{
    fn estimate_tokens(&self, request: &Req) -> u64 {
        self(request)
    }
}

/// Makes a copy of a request for another attempt. `None` means the request cannot be copied
/// (a streaming body, say) and is sent at most once.
///
/// Implemented by any `Fn(&Req) -> Option<Req>`, and by [`CloneByClone`] for `Req: Clone`.
pub trait CloneRequest<Req> {
    /// A copy of `request`, or `None` if it cannot be sent twice.
    fn clone_request(&self, request: &Req) -> Option<Req>;
}

impl<F, Req> CloneRequest<Req> for F
where
    F: Fn(&Req) -> Option<Req>,
{
    fn clone_request(&self, request: &Req) -> Option<Req> {
        self(request)
    }
}

/// Copies requests with their `Clone` implementation.
#[derive(Debug, Clone, Copy, Default)]
pub struct CloneByClone;

impl<Req: Clone> CloneRequest<Req> for CloneByClone {
    fn clone_request(&self, request: &Req) -> Option<Req> {
        Some(request.clone())
    }
}
