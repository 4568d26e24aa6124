//! Throttle-aware retries: full-jitter exponential backoff, per-cause attempt caps, a shared retry
//! budget and a deadline.
//!
//! [`ThrottleRetryLayer`] retries a call when its [classification](crate::classify) says it was
//! throttled for a cause that waiting can cure, or failed transiently. It sits outermost in the
//! stack, so every attempt passes the limiters again and is charged again, as Bedrock charges it.
//!
//! # What it guarantees
//!
//! - **What is retried:** [`Outcome::Throttled`](crate::classify::Outcome::Throttled) with a cause
//!   for which [`ThrottleCause::is_retryable`](crate::classify::ThrottleCause::is_retryable) holds,
//!   and [`Outcome::Transient`](crate::classify::Outcome::Transient). Success and fatal results,
//!   and [`ThrottleCause::TokensPerDay`](crate::classify::ThrottleCause::TokensPerDay) (a daily
//!   quota does not come back in minutes), go back to the caller at once.
//! - **Attempts:** at most 3 per call (first included), 5 when the model is not ready yet;
//!   both configurable, per cause.
//! - **Backoff:** before retry `n`, a random delay in `0 ..= min(1 s × 2^(n-1), 20 s)`
//!   ([`Backoff`]). A delay suggested by the server (`retry_after` in the classification, read
//!   from `x-amz-retry-after`) is honoured up to the backoff's largest cap, as the AWS SDK
//!   does: the layer waits `max(min(retry_after, max), backoff)`. Below the cap the server's
//!   "not before" holds and the backoff keeps growing under it, so a server that always says
//!   "1 s" during a long storm does not make every client come back every second; above it the
//!   cap wins, so no hint (not even 2^64 ms) can park a call for ever. With a deadline, a retry
//!   whose bounded delay would end past it is not started at all.
//! - **Budget:** over a sliding window, retries are at most `floor + ratio × first attempts`
//!   ([`RetryBudget`]), counted across every clone of the layer and its services.
//! - **Deadline:** with [`deadline`](ThrottleRetryLayer::deadline), a retry is started only if
//!   `now + delay + duration of the previous attempt ≤ first start + deadline` (the previous
//!   attempt's duration is the best estimate of the next one's). Time is tokio's clock, whose
//!   timers have a 1 ms resolution. An attempt in flight is not cut short: that is a timeout's job.
//!   **Waiting is not retrying:** the time attempts spent waiting in an admission layer of this
//!   crate below the retry layer is left out of both sides (the elapsed time and the previous
//!   attempt's duration), so a call that waited its turn for minutes and then met one throttle is
//!   still retried; the admission layer's own bounds (max wait, signature window) limit waits.
//! - **Cloning:** the request is copied through [`CloneRequest`](crate::classify::CloneRequest)
//!   before each attempt that could be followed by another. A request that cannot be copied
//!   (`None`) is sent once and its result returned, whatever it is.
//! - **Giving up:** the caller gets the last attempt's response or error unchanged: the service's
//!   `Response` and `Error` are the inner service's, and the layer adds no failure of its own.
//!   (An error from the inner service's `poll_ready` before a retry is returned as it came.)
//!
//! Every retry and every reason for giving up is a `tracing` event at debug level, with the
//! attempt number, the outcome and the delay.
//!
//! # Why full jitter
//!
//! A throttle rarely comes alone: when a quota runs out, every client in flight is throttled at
//! nearly the same moment. With a fixed or merely exponential delay they all come back at the
//! same moment too, and are throttled together again. Full jitter (a delay drawn uniformly from
//! zero to the exponential cap) spreads the retries over the whole interval; AWS measured it to
//! finish the same work with the fewest calls of the usual schemes ("Exponential Backoff And
//! Jitter", AWS Architecture Blog), and the AWS SDKs use it.
//!
//! # Why a budget and not only an attempt cap
//!
//! An attempt cap of 3 lets a client send three times its normal load exactly when the server is
//! short of capacity, and stacked retrying clients multiply that. A retry budget bounds the extra
//! load as a fraction of real traffic: when everything fails, retries stop once the budget is
//! spent and the load stays near `1 + ratio` times normal, while the floor still lets a quiet
//! client retry. The cap still bounds a single call; the budget bounds the storm.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//!
//! use bedrock_throttle::classify::{Classification, ThrottleCause};
//! use bedrock_throttle::retry::{Backoff, RetryBudget, ThrottleRetryLayer};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A service that is throttled twice, then answers.
//! let calls = Arc::new(AtomicU32::new(0));
//! let counter = calls.clone();
//! let inner = service_fn(move |_request: &'static str| {
//!     let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
//!     async move { Ok::<u16, Infallible>(if n < 3 { 429 } else { 200 }) }
//! });
//!
//! let classify = |result: Result<&u16, &Infallible>| match result {
//!     Ok(429) => Classification::throttled(ThrottleCause::Requests),
//!     _ => Classification::success(),
//! };
//! let retry = ThrottleRetryLayer::new(classify)
//!     .backoff(Backoff::new(Duration::from_millis(100), 2.0, Duration::from_secs(5))?)
//!     .budget(RetryBudget::new(Duration::from_secs(10), 10, 0.2)?)
//!     .deadline(Duration::from_secs(30));
//!
//! let mut service = ServiceBuilder::new().layer(retry).service(inner);
//! let status = service.ready().await?.call("hello").await?;
//! assert_eq!(status, 200);
//! assert_eq!(calls.load(Ordering::SeqCst), 3);
//! # Ok(()) }
//! ```

mod backoff;
mod budget;
mod error;
pub mod future;
mod layer;
mod policy;
mod service;
mod waited;

pub use backoff::Backoff;
pub use budget::RetryBudget;
pub use error::ConfigError;
pub use layer::ThrottleRetryLayer;
pub use policy::{GiveUpReason, RetryEvent};
pub use service::ThrottleRetry;
pub(crate) use waited::admission_waited;
