//! Keeps tokens per window inside each key's quota: reserve an estimate, settle the real usage.
//!
//! [`TokenBudgetLayer`] reserves a request's token estimate ([`EstimateTokens`]) on a keyed
//! [`Budget`](crate::budget::Budget) before the request reaches the inner service, and settles
//! the reservation from the response ([`Settle`]): a refund when the call used less, debt when it
//! used more (normal with Bedrock's 5x output burndown). It guarantees what the budget
//! guarantees: **the tokens admitted on a key in any window of length `W` never exceed the
//! limit**, requests admitted in arrival order per key; debt that settles after the last
//! admission of a window is the only charge that can go over, and later admissions wait it out.
//!
//! Why reserve and settle? A token quota is charged on usage that is only known when the call
//! ends. Reserving the worst case (input + max output tokens) and refunding the difference keeps
//! the client inside the quota without waiting for every call to finish first.
//!
//! What if the usage is unknown? If [`Settle`] returns no usage, the call fails, or the call is
//! dropped mid-flight, the permit drops unsettled and the whole reservation stays charged: the
//! conservative choice. A streamed response can move the [`Permit`](crate::budget::Permit) into
//! its body and settle when the stream ends.
//!
//! The estimate is taken with [`estimate_tokens_mut`], so an estimator can mark the request for
//! its settlement: the Bedrock one records the max output tokens it reserved, so that the
//! settlement knows Bedrock's own reservation and books as debt, as Bedrock does, whatever the
//! call used above it (see [`Permit::settle_as`](crate::budget::Permit::settle_as)).
//!
//! **Feedback.** With a [classifier](TokenBudgetLayer::classify), a result classified as
//! throttled for the token quota ([`ThrottleCause::Tokens`](crate::classify::ThrottleCause::Tokens)
//! or [`Unknown`](crate::classify::ThrottleCause::Unknown)) lowers the key's effective limit for
//! a while and exhausts its window up to it, through the call's permit
//! ([`Permit::throttled`](crate::budget::Permit::throttled)).
//!
//! [`EstimateTokens`]: crate::classify::EstimateTokens
//! [`estimate_tokens_mut`]: crate::classify::EstimateTokens::estimate_tokens_mut
//! [`Settle`]: crate::classify::Settle
//!
//! ```
//! use std::time::Duration;
//! use bedrock_throttle::budget::Budget;
//! use bedrock_throttle::classify::SingleKey;
//! use bedrock_throttle::token_budget::TokenBudgetLayer;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), bedrock_throttle::BoxError> {
//! // 10,000 tokens per minute; requests say their worst case, responses their real usage.
//! let budget = Budget::builder().limit(10_000).build()?;
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
//! // 8,000 were reserved, 2,000 used: the 6,000 came back at once.
//! assert_eq!(budget.stats(&()).unwrap().used, 2_000);
//! # Ok(())
//! # }
//! ```

mod layer;
mod service;

pub mod future;

pub use self::layer::TokenBudgetLayer;
pub use self::service::TokenBudget;
