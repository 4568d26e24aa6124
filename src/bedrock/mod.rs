//! Bedrock Runtime protocol knowledge: everything the generic layers need to know about a
//! Bedrock request or response, for `http::Request`/`http::Response` and the AWS SDK's
//! `HttpRequest`/`HttpResponse`.
//!
//! The layers are generic over small traits ([`crate::classify`]); [`Bedrock`] implements all
//! of them:
//!
//! | trait | Bedrock's answer | where |
//! |---|---|---|
//! | [`QuotaKey`](crate::classify::QuotaKey) | region (host, else configured) + decoded model id | [`key`] |
//! | [`EstimateTokens`](crate::classify::EstimateTokens) | input estimate + max output tokens | [`estimate`] |
//! | [`Settle`](crate::classify::Settle) | `input + cache_write + output × burndown`, when the body ends | [`usage`], [`settle`] |
//! | [`Classify`](crate::classify::Classify) | error code + message → throttle cause, transient, fatal | [`error`], [`stream`] |
//! | [`CloneRequest`](crate::classify::CloneRequest) | in-memory bodies | [`protocol`] |
//!
//! Why it is more than parsing: Bedrock throttles on a RESERVATION (`input + max_tokens`, the
//! model's maximum when unset) and settles output tokens at 5× for recent Claude models, so a
//! client that counts requests, or counts tokens after the fact, overruns the quota. And the
//! information needed to react is spread over places a synchronous classifier cannot reach (the
//! error body, the first frame of a stream): [`BedrockResponseLayer`] brings it into the response.
//!
//! Stack them like this (the retry layer outermost, this module's response layer innermost):
//!
//! ```text
//! ThrottleRetryLayer(Bedrock) → RateLimitLayer(Bedrock) → TokenBudgetLayer(Bedrock)
//!     → Bedrock::response_layer() → transport
//! ```
//!
//! ```
//! use bedrock_throttle::bedrock::{Bedrock, Operation};
//! use bedrock_throttle::classify::{EstimateTokens, QuotaKey};
//! use bytes::Bytes;
//!
//! let bedrock = Bedrock::new();
//! let request = http::Request::post(
//!     "https://bedrock-runtime.us-west-2.amazonaws.com/model/us.anthropic.claude-sonnet-4-20250514-v1%3A0/converse",
//! )
//! .body(Bytes::from_static(br#"{"messages":[{"role":"user","content":[{"text":"Hello"}]}]}"#))
//! .unwrap();
//!
//! let key = bedrock.quota_key(&request);
//! assert_eq!(key.to_string(), "us-west-2/us.anthropic.claude-sonnet-4-20250514-v1:0");
//! // No maxTokens: the model's maximum (64,000) is reserved, as Bedrock does.
//! assert_eq!(bedrock.estimate_tokens(&request), 64_000 + 8 + 2);
//! assert_eq!(bedrock.output_burndown(key.model()), 5);
//! ```

pub mod error;
pub mod estimate;
pub mod key;
pub mod models;
pub mod protocol;
mod seen_cache;
pub mod settle;
pub mod stream;
pub mod usage;

pub use error::{BedrockError, classify_error, error_code, retry_after, throttle_cause};
pub use estimate::{EstimateBasis, EstimatorConfig, RequestEstimate};
pub use key::{
    BedrockCall, BedrockKey, BedrockRequest, BodyBytes, Operation, parse_path, region_from_host,
};
#[cfg(feature = "sdk")]
pub use protocol::classify_connector_error;
pub use protocol::{Bedrock, SettleResponse, UNTAGGED_BURNDOWN, classify_response_parts};
pub use settle::{Reservation, SettlingBody};
pub use stream::{
    BedrockResponse, BedrockResponseLayer, ERROR_BODY_LIMIT, EVENT_STREAM_CONTENT_TYPE,
    FIRST_FRAME_LIMIT, InspectResponse, ReplayBody, ResponseFuture, exception_of,
};
pub use usage::Usage;
