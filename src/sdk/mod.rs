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
//! use bedrock_throttle::budget::Quota;
//! use bedrock_throttle::sdk::BedrockThrottle;
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
//! alone, they multiply (3 SDK attempts × 3 stack attempts = 9 requests for one call). The stack
//! makes every retry, because it knows more: which quota was hit, whether a stream failed before
//! its first event, the server's delay, the shared retry budget, and it re-enters admission on
//! every attempt. The SDK retries ONE thing, which the stack cannot do: re-signing.
//!
//! Every attempt inside the stack resends the same signed request, which AWS accepts for
//! 5 minutes after signing. A request may wait for admission longer than that (a long backlog;
//! only the caller's own deadline, the SDK's operation timeout, or a
//! [`max_wait`](crate::budget::Settings::max_wait) the user sets, ends a wait). When its
//! signature is about to expire (30 s before, [`signature_margin`](BedrockThrottleBuilder::signature_margin)),
//! the attempt leaves the queue with [`LeftQueue`](crate::admit::LeftQueue), KEEPING ITS PLACE
//! under the SDK's `amz-sdk-invocation-id` (the same on every attempt of one operation); the
//! SDK's retry classifier of the setup ([`ResignOnly`]) retries exactly that error, the SDK
//! re-signs, and the new attempt takes its old place back, behind those who came before it and
//! ahead of those who came after. Every other failure reaches the caller as the stack left it:
//! [`ResignOnly`] forbids the SDK's own retries, its retry quota is one of the setup's own that
//! cannot run out, and its backoff is a few milliseconds (the place in line is kept, and waiting
//! is the stack's job). [`sdk_max_attempts`](BedrockThrottleBuilder::sdk_max_attempts) bounds the
//! re-signs (16 attempts: more than an hour of waiting).
//!
//! A request authenticated with a Bedrock API key (`Authorization: Bearer`, set with the
//! client config's `.bearer_token(Token::new(key, None))` and the HTTP bearer auth scheme
//! preferred) has no signature to expire: it waits in line as long as its caller lets it and
//! is never re-signed or cut at five minutes. A key does not reveal its account: account-wide
//! limits need the account named in configuration.
//!
//! A wait longer than a [`max_wait`](crate::budget::Settings::max_wait), or a retry deadline the
//! signature cannot cover, reach the SDK as `ConnectorError::other(_, Some(ErrorKind::ThrottlingError))`;
//! a request larger than the whole quota as `Some(ErrorKind::ClientError)`.
//!
//! The SDK's `RetryConfig::adaptive()` rate limiter is not needed: admission lets in exactly
//! what the quota allows, per model, before the request leaves.
//!
//! # Several clients, one quota
//!
//! Bedrock's quota belongs to the account, model and region, not to a client. Clients in one
//! process should share ONE `BedrockThrottle`, told the whole quota: `configure` every client
//! with it (or clone it; clones share the budget). Then every admission sees every other
//! client's reservations and output debts, as Bedrock does.
//!
//! Splitting a quota statically (each instance told a share, e.g. one process per share) keeps
//! every instance inside its share at each admission, but not the sum inside the quota at every
//! instant: Bedrock books output burndown (15x, 10x or 5x on recent models) when a call ends, as debt
//! beyond the reservation, and one instance's debt can spill past its share into room another
//! instance is admitting into. For instances in separate processes, share one ledger through
//! Redis instead ([`BedrockThrottleBuilder::redis`], feature `redis`): every process then
//! admits against the whole fleet's reservations and debts.
//!
//! # What one throttle does not see
//!
//! Even one throttle learns a call's output debt later than Bedrock books it: the server books
//! it when it generates the last token, the crate when the client reads the end of the body.
//! Admissions in between may use room that the server's debt has already taken, and the server
//! then throttles them (the stack retries them; the throttle also lowers the effective limit for
//! a while). The gap is the time the client takes to read the end of a response: small when
//! responses are read as they arrive, larger for a caller that reads a stream slowly. A caller
//! that leaves before the end is charged the most the server can have booked (input +
//! burndown × max output), at once.
//!
//! How far below the server's the ledger falls under load, and how often the server then
//! throttled, is in BENCHMARKS.md ("Settlement gap"), with the run it comes from.

//! # The parts
//!
//! [`LayeredHttpClient`] is the general adapter: any Tower layer over any inner `HttpClient`.

mod connector;
mod observe;
mod setup;
mod usage;

pub use connector::{
    ConnectorService, DEFAULT_SIGNATURE_MARGIN, LayeredHttpClient, SIGNATURE_VALIDITY,
    SignatureDeadline, SignatureExpiring, into_connector_error, signature_deadline,
};
pub use observe::{ResignHandBack, ThrottleObserver};
pub use setup::{
    BedrockStack, BedrockThrottle, BedrockThrottleBuilder, ResignOnly, SetupError,
    default_https_client,
};
