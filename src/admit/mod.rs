//! Admission: each attempt planned once, admitted on every dimension of its quota at once, and
//! settled from what the plan knew.
//!
//! # One question per attempt
//!
//! [`Admission`] asks its [`Protocol`] one question per attempt: a [`Plan`] with the quota key,
//! the tokens to reserve (every attempt also counts one request), what to settle if the usage
//! never arrives, and a memo that travels inside the response future to the settlement. It then
//! admits the attempt on every dimension of the key's [`Quota`](crate::budget::Quota)
//! (requests, tokens, tokens per day) at the same instant, when all of them fit, so no charge is
//! dated before the request can leave. It classifies the result once, feeds a throttle back to
//! the dimension its cause names (requests, tokens, tokens per day; both per-window dimensions
//! when the cause is unknown), and settles from the memo.
//!
//! Why one admission and not a requests limiter stacked on a token limiter? Stacked, the first
//! charges its request when it admits, then the request may wait in the second for longer than
//! a window; its request slot expires a window after the first admission, not after the send,
//! and the server sees more requests in one window than the limit allows.
//!
//! # The layers
//!
//! | layer | protocol | charges |
//! |---|---|---|
//! | [`RateLimitLayer`] | a key closure | one request |
//! | [`TokenBudgetLayer`] | key, estimate and settle closures | one request and the estimated tokens, settled from the response |
//! | [`AdmissionLayer`] | any [`Protocol`], e.g. [`Bedrock`](crate::bedrock::Bedrock) | whatever the plan says, on every dimension of the key |
//!
//! All three build the same [`Admission`] service. The guarantee is the store's: **the amount
//! admitted on a key in any window of length `W` never exceeds its limit on any dimension**,
//! requests admitted in arrival order per key. Stacking a `RateLimitLayer` on a
//! `TokenBudgetLayer` makes two admissions, one per budget, with the overrun above; give ONE
//! budget both limits ([`BudgetBuilder::requests`](crate::budget::BudgetBuilder::requests) and
//! [`tokens`](crate::budget::BudgetBuilder::tokens)) to a `TokenBudgetLayer` instead: every
//! request then counts one request and its tokens, admitted together.
//!
//! Admission happens in the response future, not in `poll_ready`: the key comes from the
//! request. `poll_ready` only forwards to the inner service.
//!
//! # When the usage is unknown
//!
//! A permit dropped before the usage is known (the caller went away, the body was dropped, the
//! call failed after the server may have booked it) settles the plan's
//! [`if_unknown`](Plan::if_unknown): for Bedrock, the most the server can have booked,
//! `input + cache + burndown × max output`. The reservation is not enough: Bedrock books output
//! at five times its count on recent Claude models, so a call abandoned mid-way can have cost
//! the server far more than it reserved.
//!
//! # Attempts that must leave
//!
//! A signed request must reach the server before its signature expires, however long the queue
//! ahead of it. A plan may say by when the attempt must leave ([`Plan::leave_by`]) and who it
//! is across re-sent attempts ([`Plan::arrival`]). An attempt still waiting then fails with
//! [`LeftQueue`], and its place in line is kept: the re-sent attempt (same arrival) takes it
//! back, admitted or still waiting, ahead of everyone who came after it. The observer sees
//! [`Event::LeftQueue`]. A re-sent attempt that comes back after its place was given up fails
//! with [`LostPlace`] (send it again: it queues anew).
//!
//! ```
//! use std::time::Duration;
//! use bedrock_throttle::admit::TokenBudgetLayer;
//! use bedrock_throttle::budget::Budget;
//! use bedrock_throttle::classify::SingleKey;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), bedrock_throttle::BoxError> {
//! // 60 requests and 10,000 tokens per minute, admitted together.
//! let budget = Budget::builder().requests(60).tokens(10_000).build()?;
//! let mut svc = ServiceBuilder::new()
//!     .layer(TokenBudgetLayer::new(
//!         budget.clone(),
//!         SingleKey,
//!         |max_tokens: &u64| *max_tokens,
//!         |used: &u64| Some(*used),
//!     ))
//!     .service_fn(|max_tokens: u64| async move { Ok::<u64, std::io::Error>(max_tokens / 4) });
//!
//! let used = svc.ready().await?.call(8_000).await?;
//! assert_eq!(used, 2_000);
//! let stats = budget.stats(&()).unwrap();
//! // 8,000 were reserved, 2,000 used: the 6,000 came back at once. The request stays counted.
//! assert_eq!(stats.tokens.unwrap().used, 2_000);
//! assert_eq!(stats.requests.unwrap().used, 1);
//! # Ok(())
//! # }
//! ```
//!
//! # In an HTTP server
//!
//! A refusal is an error of the layer by default ([`AsError`]): a `BoxError` that downcasts to
//! [`AdmissionError`](crate::budget::AdmissionError). An HTTP service may answer it itself
//! instead ([`respond_to_refusals`](AdmissionLayer::respond_to_refusals), [`AsResponse`]):
//! 429 with `Retry-After` for a wait, 413 for a request larger than the whole quota. The
//! service then keeps its inner error type, so an axum route takes the layer as it is.
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use bedrock_throttle::admit::RateLimitLayer;
//! use bedrock_throttle::budget::Budget;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // One request per minute per path, waiting at most a second.
//! let budget = Budget::builder().requests(1).max_wait(Duration::from_secs(1)).build()?;
//! let path = |request: &http::Request<String>| request.uri().path().to_owned();
//! let svc = ServiceBuilder::new()
//!     .layer(RateLimitLayer::new(budget, path).respond_to_refusals())
//!     .service_fn(|_: http::Request<String>| async {
//!         Ok::<_, Infallible>(http::Response::new("hello".to_owned()))
//!     });
//!
//! let first = svc.clone().oneshot(http::Request::new(String::new())).await?;
//! assert_eq!(first.status(), 200);
//! let second = svc.oneshot(http::Request::new(String::new())).await?;
//! assert_eq!(second.status(), 429);
//! assert!(second.headers().contains_key("retry-after")); // when the window has slid
//! # Ok(())
//! # }
//! ```
//!
//! **Known compiler limitation.** As with tower's own `Timeout` (any layer whose error is
//! `BoxError` and that requires `S::Error: Into<BoxError>`), spawning a call on an inner service
//! whose error type is itself `BoxError` fails to compile with "implementation of `From` is not
//! general enough" (rust-lang/rust#64552). Give the inner service a concrete error type, or erase
//! the stack with `tower::ServiceExt::boxed` before spawning.

mod error;
mod layer;
mod observe;
mod park;
mod plan;
mod respond;
mod service;

pub mod future;

pub use self::error::{LeftQueue, LostPlace};
pub use self::layer::{AdmissionLayer, RateLimitLayer, TokenBudgetLayer};
pub use self::observe::{Event, Observe};
pub use self::plan::{
    ArrivalId, Closures, KeepReservation, LeaveBy, NoClass, NoTokens, Plan, Protocol, RequestClass,
    Settle,
};
pub use self::respond::{AsError, AsResponse, retry_after};
pub use self::service::Admission;
