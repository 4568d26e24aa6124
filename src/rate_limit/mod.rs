//! Limits requests per window on each quota key, waiting in line instead of failing.
//!
//! [`RateLimitLayer`] admits every request at cost 1 on a keyed [`Budget`](crate::budget::Budget)
//! (the requests-per-minute quota of a model, say) before it reaches the inner service. What it
//! guarantees is the budget's guarantee: **no more requests than the limit in any window of
//! length `W` on a key**, requests of a key admitted in arrival order, and keys independent of
//! each other.
//!
//! Why wait instead of failing fast like `tower::limit::RateLimit`? A quota is a rate, not an
//! error: a request refused locally is one the caller must retry, usually by sleeping blindly;
//! a request that waits is sent the moment the window has room. Waits can still be bounded
//! ([`max_wait`](crate::budget::BudgetBuilder::max_wait),
//! [`max_queue`](crate::budget::BudgetBuilder::max_queue)); the error is then an
//! [`AdmissionError`](crate::budget::AdmissionError) inside the [`BoxError`](crate::BoxError).
//!
//! Unlike tower's rate limit, admission happens in the response future, not in `poll_ready`:
//! the key comes from the request. `poll_ready` only forwards to the inner service.
//!
//! **Feedback.** With a [classifier](RateLimitLayer::classify), a result classified as throttled
//! for the request quota ([`ThrottleCause::Requests`](crate::classify::ThrottleCause::Requests),
//! or [`Unknown`](crate::classify::ThrottleCause::Unknown)) tells the budget that the key's window
//! is exhausted and lowers its effective limit for a while (see
//! [`Budget::throttled`](crate::budget::Budget::throttled)): useful when the quota is shared with
//! other clients or the configured limit is too high.
//!
//! **Known compiler limitation.** As with tower's own `Timeout` (any layer whose error is
//! `BoxError` and that requires `S::Error: Into<BoxError>`), spawning a call on an inner service
//! whose error type is itself `BoxError` fails to compile with "implementation of `From` is not
//! general enough" (rust-lang/rust#64552). Give the inner service a concrete error type, or erase
//! the stack with `tower::ServiceExt::boxed` before spawning.
//!
//! ```
//! use std::time::Duration;
//! use bedrock_throttle::budget::Budget;
//! use bedrock_throttle::classify::{Classification, ThrottleCause};
//! use bedrock_throttle::rate_limit::RateLimitLayer;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), bedrock_throttle::BoxError> {
//! // 2 requests per second per model.
//! let budget = Budget::builder().limit(2).window(Duration::from_secs(1)).build()?;
//! let mut svc = ServiceBuilder::new()
//!     .layer(
//!         RateLimitLayer::new(budget, |req: &(&'static str, u32)| req.0).classify(
//!             |res: Result<&u16, &std::io::Error>| match res {
//!                 Ok(429) => Classification::throttled(ThrottleCause::Requests),
//!                 _ => Classification::success(),
//!             },
//!         ),
//!     )
//!     .service_fn(|_req: (&'static str, u32)| async { Ok::<u16, std::io::Error>(200) });
//!
//! let start = tokio::time::Instant::now();
//! for i in 0..4 {
//!     svc.ready().await?.call(("claude", i)).await?;
//! }
//! // The 3rd and 4th requests waited for the window to slide.
//! assert_eq!(start.elapsed(), Duration::from_secs(1));
//! # Ok(())
//! # }
//! ```

mod layer;
mod service;

pub mod future;

pub use self::layer::RateLimitLayer;
pub use self::service::RateLimit;
