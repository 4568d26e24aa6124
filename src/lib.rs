//! Tower middleware that keeps Amazon Bedrock traffic inside its quotas.
//!
//! Bedrock throttles per model and region on tokens per minute (and per day, and on some
//! models requests per minute). A `ThrottlingException` is a capacity signal, not a bug: this
//! crate admits requests before they leave, in fair order, so the quota is used to the full and
//! not overrun; it settles the real usage the way Bedrock counts it; and it classifies and
//! retries whatever the server still refuses.
//!
//! # The layers
//!
//! | layer | what it guarantees |
//! |---|---|
//! | [`RateLimitLayer`](rate_limit::RateLimitLayer) | at most `limit` requests per key in ANY window of length `W`; callers wait in FIFO order instead of failing |
//! | [`TokenBudgetLayer`](token_budget::TokenBudgetLayer) | tokens admitted per key in any window never exceed `limit`: reserve an estimate before the call, settle the real usage after it (refund, or debt that later admissions wait out) |
//! | [`ThrottleRetryLayer`](retry::ThrottleRetryLayer) | retries throttles that waiting can cure and transient failures, with full-jitter exponential backoff, a per-cause attempt cap, a retry budget shared by clones and a deadline; gives back the last result unchanged |
//!
//! All three work on any `tower::Service`. What they need to know about a request or response
//! (its quota key, its token estimate, its usage, the classification of a result) comes from
//! the small traits of [`classify`], which closures implement; the [`bedrock`] module implements
//! them all for Bedrock Runtime. Clones of a layer or service share their state (an `Arc`
//! inside), so a stack rebuilt per attempt, as the AWS SDK does, still has one limiter.
//!
//! # How to stack them
//!
//! ```text
//! caller ──► ThrottleRetryLayer ──► RateLimitLayer ──► TokenBudgetLayer ──► service
//! ```
//!
//! Retry goes outermost, so every attempt passes admission again and is charged again, as the
//! server charges it. The limiters see each result before the retry layer does: a throttled
//! result tells them the window is exhausted (and lowers the key's effective limit for a while),
//! so queued requests wait instead of piling onto a throttled quota.
//!
//! ```
//! use std::time::Duration;
//! use bedrock_throttle::budget::Budget;
//! use bedrock_throttle::classify::{Classification, ThrottleCause};
//! use bedrock_throttle::rate_limit::RateLimitLayer;
//! use bedrock_throttle::retry::ThrottleRetryLayer;
//! use bedrock_throttle::token_budget::TokenBudgetLayer;
//! use bedrock_throttle::BoxError;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! #[derive(Clone)]
//! struct Prompt { tenant: &'static str, max_tokens: u64 }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let requests = Budget::builder().limit(60).window(Duration::from_secs(60)).build()?;
//! let tokens = Budget::builder().limit(100_000).window(Duration::from_secs(60)).build()?;
//! let tenant = |p: &Prompt| p.tenant;
//! // The backend answers with the tokens it used; a real one may refuse (a throttle).
//! let classify = |r: Result<&u64, &BoxError>| match r {
//!     Ok(_) => Classification::success(),
//!     Err(_) => Classification::throttled(ThrottleCause::Unknown),
//! };
//! let mut service = ServiceBuilder::new()
//!     .layer(ThrottleRetryLayer::new(classify))
//!     .layer(RateLimitLayer::new(requests, tenant))
//!     .layer(TokenBudgetLayer::new(tokens.clone(), tenant, |p: &Prompt| p.max_tokens, |used: &u64| Some(*used)))
//!     .service_fn(|p: Prompt| async move { Ok::<u64, std::io::Error>(p.max_tokens / 2) });
//!
//! let used = service.ready().await?.call(Prompt { tenant: "acme", max_tokens: 4_000 }).await?;
//! assert_eq!(used, 2_000);
//! assert_eq!(tokens.stats(&"acme").unwrap().used, 2_000); // 4,000 reserved, 2,000 refunded
//! # Ok(()) }
//! ```
//!
//! # With the AWS SDK for Rust
//!
//! [`sdk::BedrockThrottle`] takes per-model quotas and returns the layered HTTP client and the
//! SDK retry configuration that goes with it; see the [`sdk`] module. The
//! [`emulator`] is a local Bedrock Runtime that enforces quotas with the real wire format, for
//! tests, benchmarks and load tests without spending quota.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | (none) | | the admission engine ([`budget`]), the three layers, [`classify`] |
//! | `bedrock` | via `sdk` | [`bedrock`]: model tables, body parsing and token estimates, usage, error classification, event streams |
//! | `sdk` | yes | [`sdk`]: the layered `HttpClient` for the AWS SDK and the one-call setup (pulls in `aws-sdk-bedrockruntime`) |
//! | `emulator` | no | [`emulator`]: the local Bedrock Runtime server and the `bedrock-emulator` binary |
//!
//! A user of the generic layers alone (`default-features = false`) does not compile the AWS SDK.

#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod budget;
pub mod classify;
pub mod rate_limit;
pub mod retry;
pub mod token_budget;

#[cfg(feature = "bedrock")]
pub mod bedrock;
#[cfg(feature = "emulator")]
pub mod emulator;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "sdk")]
pub mod sdk;

/// The error type of layers that add failures of their own: callers downcast to the concrete
/// error types of each module.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
