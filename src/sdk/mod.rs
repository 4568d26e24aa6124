//! The AWS SDK for Rust adapter: the crate's layers inside the SDK's HTTP client.
//!
//! # One call
//!
//! [`BedrockThrottle`] takes per-model quotas and gives what
//! `aws_sdk_bedrockruntime::config::Builder` needs: a layered HTTP client and an SDK retry
//! configuration that goes with it.
//!
//! ```no_run
//! use aws_sdk_bedrockruntime::config::{BehaviorVersion, Region};
//! use bedrock_throttle::sdk::{BedrockThrottle, Quota};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let throttle = BedrockThrottle::builder()
//!     .quota("us.anthropic.claude-sonnet-4-5-20250929-v1:0", Quota::tokens(200_000))
//!     .quota("amazon.nova-lite-v1:0", Quota::tokens(400_000).with_requests(200))
//!     .build()?;
//! let sdk_config = aws_config::defaults(BehaviorVersion::latest())
//!     .region(Region::new("us-east-1"))
//!     .load()
//!     .await;
//! let config = throttle.configure(aws_sdk_bedrockruntime::config::Builder::from(&sdk_config));
//! let client = aws_sdk_bedrockruntime::Client::from_conf(config.build());
//! # let _ = client;
//! # Ok(()) }
//! ```
//!
//! Put the layered client on the Bedrock client's config, not on the shared `SdkConfig`:
//! credential providers would send their own requests through it.
//!
//! # How the crate's retries and the SDK's interact
//!
//! The SDK runs its retry loop around the HTTP client; the stack runs its own inside it. Left
//! alone, they multiply (3 SDK attempts × 3 stack attempts = 9 requests for one call). The setup
//! therefore sets the SDK to **one attempt** (standard mode, `max_attempts = 1`) and lets the
//! stack retry, because the stack knows more: which quota was hit, whether a stream failed
//! before its first event, the server's delay, the shared retry budget, and it re-enters the
//! limiters on every attempt.
//!
//! Every attempt inside the stack resends the same signed request, which AWS accepts for
//! 5 minutes after signing. The setup refuses waits that could outlast that
//! ([`SetupError::WaitsExceedSignatureWindow`]), and the adapter cuts a call short 30 s before
//! the signature expires. Both failures, and a wait longer than
//! [`max_wait`](BedrockThrottleBuilder::max_wait), reach the SDK as
//! `ConnectorError::other(_, Some(ErrorKind::ThrottlingError))`: with
//! [`sdk_max_attempts`](BedrockThrottleBuilder::sdk_max_attempts) above 1 the SDK backs off and
//! re-signs; with the default the caller gets a dispatch failure whose kind is throttling.
//!
//! The SDK's `RetryConfig::adaptive()` rate limiter is not needed: the token budget admits
//! exactly what the quota allows, per model, before the request leaves.
//!
//! # Several clients, one quota
//!
//! Bedrock's quota belongs to the account, model and region, not to a client. Clients in one
//! process should share ONE `BedrockThrottle`, told the whole quota: `configure` every client
//! with it (or clone it; clones share the limiters). Then every admission sees every other
//! client's reservations and output debts, as Bedrock does.
//!
//! Splitting a quota statically (each instance told a share, e.g. one process per share) keeps
//! every instance inside its share at each admission, but not the sum inside the quota at every
//! instant: Bedrock books output burndown (5x on recent Claude models) when a call ends, as debt
//! beyond the reservation, and one instance's debt can spill past its share into room another
//! instance is admitting into. A single throttle waits its own debts out. In `BENCHMARKS.md`
//! (goodput, 3x demand), four clients sharing one throttle saw no throttle; four instances with a
//! quarter each saw about 0.3% to 0.7% of attempts throttled (retried, none failed) under sliding
//! and fixed windows. For instances in separate processes, tell each a little less than its
//! share; a shared store for fleets is not built yet.
//!
//! # The parts
//!
//! [`LayeredHttpClient`] is the general adapter: any Tower layer over any inner `HttpClient`.

mod connector;
mod setup;

pub use connector::{
    ConnectorService, DEFAULT_SIGNATURE_MARGIN, LayeredHttpClient, SIGNATURE_VALIDITY,
    SignatureDeadline, SignatureExpiring, into_connector_error, signature_deadline,
};
pub use setup::{
    BedrockStack, BedrockThrottle, BedrockThrottleBuilder, ResignOnly, SetupError,
    default_https_client,
};
