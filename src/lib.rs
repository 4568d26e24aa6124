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
//! | [`TokenBudgetLayer`](admit::TokenBudgetLayer) | per key, the requests and tokens admitted in ANY window of length `W` never exceed the key's limits (every dimension of its [`Quota`](budget::Quota) admitted at once); callers wait in FIFO order instead of failing; reserve an estimate before the call, settle the real usage after it (refund, or debt that later admissions wait out) |
//! | [`RateLimitLayer`](admit::RateLimitLayer) | the same for requests only: at most `limit` requests per key in any window |
//! | [`AdmissionLayer`](admit::AdmissionLayer) | the layer both are built on, for any [`Protocol`](admit::Protocol) (the [`bedrock`] one plans, settles and classifies Bedrock calls) |
//! | [`ThrottleRetryLayer`](retry::ThrottleRetryLayer) | retries throttles that waiting can cure and transient failures, with full-jitter exponential backoff, a per-cause attempt cap, a retry budget shared by clones and a deadline; gives back the last result unchanged |
//!
//! All of them work on any `tower::Service`. Admission asks its protocol one question per
//! attempt (a [`Plan`](admit::Plan): the quota key, the tokens, a memo for the settlement);
//! closures plug in for every role (the small traits of [`classify`]). Clones of a layer or
//! service share their state (an `Arc` inside), so a stack rebuilt per attempt, as the AWS SDK
//! does, still has one limiter.
//!
//! # How to stack them
//!
//! ```text
//! caller ──► ThrottleRetryLayer ──► admission (TokenBudgetLayer / AdmissionLayer) ──► service
//! ```
//!
//! Retry goes outermost, so every attempt passes admission again and is charged again, as the
//! server charges it. Admission sees each result before the retry layer does: a throttled
//! result tells the budget that the dimension the server named is exhausted (and lowers its
//! effective limit for a while), so queued requests wait instead of piling onto a throttled
//! quota.
//!
//! ```
//! use std::time::Duration;
//! use bedrock_throttle::admit::TokenBudgetLayer;
//! use bedrock_throttle::budget::Budget;
//! use bedrock_throttle::classify::{Classification, ThrottleCause};
//! use bedrock_throttle::retry::ThrottleRetryLayer;
//! use bedrock_throttle::BoxError;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! #[derive(Clone)]
//! struct Prompt { tenant: &'static str, max_tokens: u64 }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! // 60 requests and 100,000 tokens per minute for each tenant, admitted together.
//! let budget = Budget::builder()
//!     .requests(60)
//!     .tokens(100_000)
//!     .window(Duration::from_secs(60))
//!     .build()?;
//! let tenant = |p: &Prompt| p.tenant;
//! // The backend answers with the tokens it used; a real one may refuse (a throttle).
//! let classify = |r: Result<&u64, &BoxError>| match r {
//!     Ok(_) => Classification::success(),
//!     Err(_) => Classification::throttled(ThrottleCause::Unknown),
//! };
//! let mut service = ServiceBuilder::new()
//!     .layer(ThrottleRetryLayer::new(classify))
//!     .layer(TokenBudgetLayer::new(budget.clone(), tenant, |p: &Prompt| p.max_tokens, |used: &u64| Some(*used)))
//!     .service_fn(|p: Prompt| async move { Ok::<u64, std::io::Error>(p.max_tokens / 2) });
//!
//! let used = service.ready().await?.call(Prompt { tenant: "acme", max_tokens: 4_000 }).await?;
//! assert_eq!(used, 2_000);
//! let stats = budget.stats(&"acme").unwrap();
//! assert_eq!(stats.tokens.unwrap().used, 2_000); // 4,000 reserved, 2,000 refunded
//! assert_eq!(stats.requests.unwrap().used, 1);
//! # Ok(()) }
//! ```
//!
//! # With the AWS SDK for Rust
//!
//! [`sdk::BedrockThrottle`] takes per-model quotas and configures the SDK client: the layered
//! HTTP client (retry → admission → Bedrock response handling) and an SDK retry configuration
//! that only re-signs requests whose wait outlived their signature; see the [`sdk`] module. The
//! [`emulator`] is a local Bedrock Runtime that enforces quotas with the real wire format, for
//! tests, benchmarks and load tests without spending quota.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | (none) | | the admission engine ([`budget`]), the layers ([`admit`], [`retry`]), [`classify`] |
//! | `bedrock` | via `sdk` | [`bedrock`]: model tables, body parsing and token estimates, usage, error classification, event streams |
//! | `sdk` | yes | [`sdk`]: the layered `HttpClient` for the AWS SDK and the one-call setup (pulls in `aws-sdk-bedrockruntime`) |
//! | `emulator` | no | [`emulator`]: the local Bedrock Runtime server (and its Service Quotas API) and the `bedrock-emulator` binary |
//! | `redis` | no | [`store::RedisStore`]: one quota shared by a fleet of processes through Redis, Valkey or Redis Cluster (one script call per admission, server time) |
//! | `service-quotas` | no | `AppliedQuotas::fetch` in [`quotas`]: the applied quotas from AWS Service Quotas (pulls in `aws-sdk-servicequotas`) |
//! | `metrics` | no | `metrics`: admission, throttle and retry metrics through the `metrics` facade |
//!
//! [`quotas`] (names, display-name table, applied quotas) and [`report`] (the capacity report)
//! come with `bedrock`.
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

mod macros;

#[cfg(any(feature = "metrics", feature = "bedrock"))]
mod bounded;

pub mod admit;
pub mod budget;
pub mod classify;
pub mod retry;
pub mod store;

#[cfg(feature = "bedrock")]
pub mod bedrock;
#[cfg(feature = "emulator")]
pub mod emulator;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "bedrock")]
pub mod quotas;
#[cfg(feature = "bedrock")]
pub mod report;
#[cfg(feature = "sdk")]
pub mod sdk;

/// The error type of layers that add failures of their own: callers downcast to the concrete
/// error types of each module.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
