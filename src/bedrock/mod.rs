//! Bedrock Runtime protocol knowledge: everything the generic layers need to know about a
//! Bedrock request or response, for `http::Request`/`http::Response` and the AWS SDK's
//! `HttpRequest`/`HttpResponse`.
//!
//! [`Bedrock`] is a [`Protocol`](crate::admit::Protocol) for the
//! [admission layer](crate::admit::AdmissionLayer), and a
//! [`Classify`](crate::classify::Classify) and [`CloneRequest`](crate::classify::CloneRequest)
//! for the [retry layer](crate::retry::ThrottleRetryLayer):
//!
//! | role | Bedrock's answer |
//! |---|---|
//! | plan (once per attempt) | key: region (host, else configured) + decoded model id (the body's `model` on the OpenAI-compatible `/openai/v1` routes); tokens: input estimate + max output tokens; if the usage never arrives: input + burndown × max output; memo: operation, burndown, max output |
//! | settle | `input + cache_write + output × burndown`, when the body ends, mirroring Bedrock's own reservation |
//! | classify | error code + message → throttle cause, transient, fatal |
//! | clone | in-memory bodies |
//!
//! Why it is more than parsing: Bedrock throttles on a RESERVATION (`input + max_tokens`, the
//! model's maximum when unset) and settles output tokens at a burndown rate per model (15×, 10×,
//! 5× or 1× in late 2026: the [model table](ModelTable), kept as dated data), so a client that
//! counts requests, or counts tokens after the fact, or uses a stale rate, overruns the quota. And the
//! information needed to react is spread over places a synchronous classifier cannot reach (the
//! error body, the first frame of a stream): [`BedrockResponseLayer`] brings it into the response.
//!
//! Stack them like this (the retry layer outermost, this module's response layer innermost):
//!
//! ```text
//! ThrottleRetryLayer(Bedrock) → AdmissionLayer(budget, Bedrock) → Bedrock::response_layer() → transport
//! ```
//!
//! ```
//! use bedrock_throttle::bedrock::Bedrock;
//! use bytes::Bytes;
//!
//! let bedrock = Bedrock::new();
//! let request = http::Request::post(
//!     "https://bedrock-runtime.us-west-2.amazonaws.com/model/us.anthropic.claude-sonnet-4-20250514-v1%3A0/converse",
//! )
//! .body(Bytes::from_static(br#"{"messages":[{"role":"user","content":[{"text":"Hello"}]}]}"#))
//! .unwrap();
//!
//! let plan = bedrock.plan_of(&request);
//! assert_eq!(plan.key.to_string(), "us-west-2/us.anthropic.claude-sonnet-4-20250514-v1:0");
//! // No maxTokens: the model's maximum (64,000) is reserved, as Bedrock does.
//! assert_eq!(plan.tokens, 64_000 + 8 + 2);
//! assert_eq!(plan.memo.burndown(), 5);
//! // A caller that leaves before the usage arrives may have cost the whole output at 5x.
//! assert_eq!(plan.if_unknown, 5 * 64_000 + 8 + 2);
//! ```

mod debt;
pub(crate) mod error;
pub(crate) mod estimate;
pub(crate) mod key;
mod model_table;
pub(crate) mod models;
mod openai;
mod protocol;
mod seen_cache;
pub(crate) mod settle;
pub(crate) mod stream;
pub(crate) mod usage;

pub use self::error::BedrockError;
pub use self::estimate::{EstimateBasis, Estimator, RequestEstimate};
pub use self::key::{BedrockKey, BodyBytes, Operation};
pub use self::model_table::{Endpoint, ModelRow, ModelTableError};
pub use self::models::{ModelFamily, ModelInfo, ModelTable};
pub use self::openai::{OpenAiBodyError, openai_model};
#[cfg(feature = "sdk")]
pub use self::protocol::classify_connector_error;
pub use self::protocol::{Bedrock, DebtInFlight, Memo, classify_response_parts};
pub use self::settle::{Reservation, SettlingBody};
pub use self::stream::{BedrockResponse, BedrockResponseLayer, ReplayBody};
pub use self::usage::Usage;

/// The response future of [`BedrockResponse`].
pub mod future {
    pub use super::stream::ResponseFuture;
}
