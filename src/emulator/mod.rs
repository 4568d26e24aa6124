//! A local Amazon Bedrock Runtime that enforces quotas with the real wire format.
//!
//! # Why
//!
//! Quota behaviour is what this crate is about, and the real service cannot be used to test it:
//! quotas cost money, differ per account, and the interesting failures (throttles by dimension,
//! `max_tokens` reservations, output burndown, mid-stream exceptions) are hard to provoke on
//! demand. Generic AWS mocks neither throttle nor stream. This emulator does, faithfully enough
//! that the real `aws-sdk-bedrockruntime` client parses every response and error it sends.
//!
//! # What it does
//!
//! - **Operations** on the real paths: InvokeModel, InvokeModelWithResponseStream, Converse,
//!   ConverseStream, CountTokens. The model id is the percent-decoded path segment.
//!   `Authorization` (SigV4 or Bearer) is accepted without checking.
//! - **Model ids**: an id that breaks the operation's id pattern gets Bedrock's
//!   "1 validation error detected: Value '...' at 'modelId' failed to satisfy constraint:
//!   Member must satisfy regular expression pattern: ..." `ValidationException`.
//!   **Without [`strict_models`](EmulatorBuilder::strict_models) (`--strict-models`) the
//!   emulator serves ANY other id**, even a misspelt one, as a model of the family its name
//!   suggests (or an unknown family). With it, an id that is neither in the built-in table
//!   nor configured is refused as Bedrock refuses it: 400 `ValidationException` "The provided
//!   model identifier is invalid.", or for an ARN 404 `ResourceNotFoundException` "Could not
//!   resolve the foundation model from the provided model identifier.". Either way the
//!   emulator keeps counters for at most 10,000 distinct ids (configured ones always fit);
//!   past that, further unconfigured ids are refused the same way, so random ids cannot grow
//!   its memory.
//! - **Quotas** per model id (requests, tokens, tokens per day; each optional), enforced as
//!   Bedrock does: at the start a request reserves `input + max output tokens` (the family's
//!   max-tokens field, `inferenceConfig.maxTokens` for Converse, or the model's maximum when
//!   absent) and is throttled with `ThrottlingException` if that would exceed a limit (a
//!   throttled request is not charged). When the last byte of the response is produced it
//!   settles `input + output × burndown` (the rate of the crate's [model
//!   table](crate::bedrock::ModelTable), the same data as the client's, or an
//!   [override](EmulatorBuilder::burndown) that puts the server out of step): a refund reduces the
//!   start-time charge, an overshoot is booked at the settle instant. Input tokens follow the
//!   rule in [`tokens`].
//! - **Account-wide tokens per day** ([`account_tokens_per_day`](EmulatorBuilder::account_tokens_per_day)):
//!   one daily quota across every model, as Bedrock's "Cross-Model Max Tokens Per Day" since
//!   2026-09; 0 refuses every call with "Too many tokens per day".
//! - **OpenAI-compatible routes**: `POST /openai/v1/chat/completions` and
//!   `POST /openai/v1/responses` (synchronous), the model in the body's `model`, on the same
//!   per-model quota and burndown. The same bodies on `POST /v1/chat/completions` and
//!   `POST /v1/responses` play bedrock-mantle: input and output tokens per window
//!   ([`mantle_quota`](EmulatorBuilder::mantle_quota)), a 429 when input + max tokens does not
//!   fit the input quota, a response cut short (200, `length`) when the output quota runs out,
//!   no burndown, no share of the account-wide day.
//! - **Windows**: sliding, token bucket or fixed ([`Enforcement`]), of any length (the day
//!   window is 1440 windows), so tests can use 1 s windows. Time is `tokio::time`, so tests with
//!   a paused clock drive it with `advance`.
//! - **Responses**: model-native InvokeModel bodies (Anthropic messages and text completions,
//!   Titan text and embeddings, Nova, Llama, Cohere embeddings, Mistral-style for the rest) with
//!   the `x-amzn-bedrock-*` headers; Converse bodies; event-stream frames with CRCs, `"p"`
//!   padding, and `amazon-bedrock-invocationMetrics` on the last chunk.
//! - **Errors** as Bedrock sends them: `x-amzn-ErrorType: Code:http://internal.amazon.com/coral/com.amazon.bedrock/`,
//!   `x-amzn-RequestId`, body `{"message": ...}` plus the exception's modeled members.
//!   `ValidationException` for malformed bodies, wrong types, missing fields, non-UTF-8, max
//!   tokens above the model's maximum, bodies over 25,000,000 bytes (refused without buffering
//!   them), and, for the Anthropic Claude Messages API (the one family whose schema the
//!   emulator enforces), keys the schema does not permit: `Malformed input request: #:
//!   extraneous key [stream] is not permitted, please reformat your input and try again.`,
//!   every violation listed one after the other as Bedrock lists them; the same for keys
//!   outside a Claude content block's and for any key outside a Nova body's schema (such as
//!   `max_tokens`). CountTokens refuses inference-profile ids and Nova ("The provided model
//!   doesn't support counting tokens."). Unknown paths get a 404.
//! - **Faults** by probability or by request index ([`Fault`]): 503 (both messages), 529
//!   `overloaded_error` (with or without `Retry-After`), 500, 408,
//!   `ModelNotReadyException`, `ModelErrorException`, `AccessDeniedException`,
//!   `ServiceQuotaExceededException`, and exception frames (every member the stream's model
//!   defines, `modelStreamErrorException` with `originalStatusCode` and `originalMessage`)
//!   before the first event or after some. A fault is injected only into operations whose
//!   service model defines it, so every error parses as a typed error in the SDKs: no
//!   `modelTimeoutException` frame in ConverseStream, no `ServiceQuotaExceededException` from
//!   Converse. A faulted request is not charged, except that a stream that fails after some
//!   events settles what it produced (`input + produced output × burndown`).
//! - **Bounded resources**: a request body is read once into one buffer and validated in one
//!   streaming pass, without building a JSON tree, so a request costs about its body's size;
//!   connections and in-flight requests are limited ([`max_connections`](EmulatorBuilder::max_connections),
//!   [`max_in_flight`](EmulatorBuilder::max_in_flight)), and a client that does not send its
//!   headers in time is disconnected ([`header_read_timeout`](EmulatorBuilder::header_read_timeout)),
//!   one that does not send its body in time is answered 408
//!   ([`body_read_timeout`](EmulatorBuilder::body_read_timeout)). An in-flight slot is taken once
//!   the body is complete, so clients stalled mid-body cannot keep complete requests waiting.
//! - **Stats** at `GET /_emulator/stats` (and [`EmulatorHandle::stats`]): per model, requests,
//!   admissions, throttles by dimension, faults, tokens reserved and settled, current and peak
//!   window usage ([`Stats`]). `POST /_emulator/reset` zeroes the counters.
//!
//! A response whose client disconnects settles `input + output produced so far × burndown`.
//!
//! # An oracle, not a mirror
//!
//! The emulator checks the crate's client side, so it must not share the code it checks: it
//! shares DATA with the client (the model table: families, maximum output tokens, burndown),
//! never the logic that reads fields from request
//! bodies, usage from responses, errors or event streams. It has its own body reader, its own
//! max-tokens reading, its own token rule ([`tokens`]) and its own frame writer, so a bug in
//! the client's parsing shows up as a disagreement instead of being repeated on both sides.
//!
//! # Example
//!
//! Start it in-process, call it with the real SDK client, read the stats:
//!
//! ```
//! use bedrock_throttle::budget::Quota;
//! use bedrock_throttle::emulator::Emulator;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let emulator = Emulator::builder()
//!     .default_quota(Quota::tokens(1_000))
//!     .start()
//!     .await?;
//! println!("Bedrock Runtime at {}", emulator.endpoint_url());
//!
//! # #[cfg(feature = "sdk")]
//! # {
//! use aws_sdk_bedrockruntime::config::{BehaviorVersion, Credentials, Region};
//! use aws_sdk_bedrockruntime::types::{ContentBlock, ConversationRole, InferenceConfiguration, Message};
//! let config = aws_sdk_bedrockruntime::Config::builder()
//!     .behavior_version(BehaviorVersion::latest())
//!     .region(Region::new("us-east-1"))
//!     .credentials_provider(Credentials::new("AK", "SK", None, None, "example"))
//!     .endpoint_url(emulator.endpoint_url())
//!     .http_client(aws_smithy_http_client::Builder::new().build_http())
//!     .build();
//! let client = aws_sdk_bedrockruntime::Client::from_conf(config);
//! let model = "us.anthropic.claude-sonnet-4-20250514-v1:0";
//! let message = Message::builder()
//!     .role(ConversationRole::User)
//!     .content(ContentBlock::Text("Hello".into()))
//!     .build()?;
//! // Reserves input + 100; settles input + 32 × 5 (the default output is 32 tokens).
//! let out = client
//!     .converse()
//!     .model_id(model)
//!     .messages(message.clone())
//!     .inference_config(InferenceConfiguration::builder().max_tokens(100).build())
//!     .send()
//!     .await?;
//! assert_eq!(out.usage().unwrap().output_tokens(), 32);
//! let stats = emulator.stats().model(model);
//! assert_eq!(stats.counters.tokens_settled, 5 + 32 * 5); // "Hello": 2 tokens + 3 per message
//!
//! // Without maxTokens, Converse reserves the model's maximum (64,000): over the quota.
//! let err = client.converse().model_id(model).messages(message).send().await.unwrap_err();
//! assert!(err.into_service_error().is_throttling_exception());
//! # }
//! emulator.shutdown().await;
//! # Ok(())
//! # }
//! ```

// Numbers here come from requests, responses and settings: no arithmetic may panic or wrap
// on them (issue 21). Each exception is an `#[allow]` that says why it cannot.
#![warn(clippy::arithmetic_side_effects)]

mod body;
mod config;
mod error;
mod eventstream;
mod faults;
mod ledger;
mod mantle;
mod model_id;
mod openai;
mod ops;
mod server;
mod service_quotas;
mod stats;
pub mod tokens;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::bedrock::models::ModelInfo;
use crate::budget::Quota;

pub use config::{
    ConfigError, EmulatorConfig, Enforcement, Fault, Faults, Latency, MantleQuota, OutputLength,
    StreamException,
};
pub use error::Error;
pub use stats::{Counters, FaultCounters, ModelStats, Stats, WindowUsage};

use server::Shared;

/// Entry point: [`Emulator::builder`] or [`Emulator::start`].
#[derive(Debug, Clone, Copy)]
pub struct Emulator {
    _private: (),
}

impl Emulator {
    /// A builder with the defaults: `127.0.0.1:0`, no limits, 60 s sliding window, 32 output
    /// tokens, no latency, no faults.
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder::from_config(EmulatorConfig::default())
    }

    /// Starts an emulator with `config` on the current Tokio runtime.
    ///
    /// # Errors
    /// [`Error::Config`] when the configuration is invalid, [`Error::Bind`] when the listen
    /// address cannot be bound.
    pub async fn start(config: EmulatorConfig) -> Result<EmulatorHandle, Error> {
        EmulatorBuilder::from_config(config).start().await
    }
}

/// Configures and starts an emulator. Every method consumes and returns the builder.
///
/// ```
/// use std::time::Duration;
/// use bedrock_throttle::emulator::{Emulator, Enforcement, Fault, OutputLength};
/// use bedrock_throttle::budget::Quota;
///
/// let builder = Emulator::builder()
///     .default_quota(Quota::requests(60).with_tokens(100_000))
///     .model_quota("us.anthropic.claude-sonnet-4-20250514-v1:0", Quota::tokens(20_000))
///     .window(Duration::from_secs(1))
///     .enforcement(Enforcement::TokenBucket)
///     .output_length(OutputLength::Uniform { min: 10, max: 200 })
///     .time_to_first_token(Duration::from_millis(50))
///     .tokens_per_second(500.0)
///     .fault_probability(Fault::ServiceUnavailable, 0.01)
///     .fault_at(3, "stream:throttling@2".parse().unwrap())
///     .seed(7);
/// assert_eq!(builder.config().window, Duration::from_secs(1));
/// ```
#[derive(Debug, Clone)]
pub struct EmulatorBuilder {
    config: EmulatorConfig,
}

impl EmulatorBuilder {
    /// A builder starting from `config`.
    pub fn from_config(config: EmulatorConfig) -> Self {
        Self { config }
    }

    /// The configuration so far.
    pub fn config(&self) -> &EmulatorConfig {
        &self.config
    }

    /// Listens on `addr` instead of `127.0.0.1:0`.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.config.listen = addr;
        self
    }

    /// The quota of every model without its own.
    pub fn default_quota(mut self, quota: Quota) -> Self {
        self.config.default_quota = quota;
        self
    }

    /// The quota of one model id, exactly as decoded from the request path (so `us.anthropic.X`
    /// and `anthropic.X` are different quotas, as on Bedrock).
    pub fn model_quota(mut self, model_id: impl Into<String>, quota: Quota) -> Self {
        self.config.model_quotas.insert(model_id.into(), quota);
        self
    }

    /// The window length (default 60 s). The day window is 1440 of them.
    pub fn window(mut self, window: Duration) -> Self {
        self.config.window = window;
        self
    }

    /// The window algorithm (default [`Enforcement::SlidingWindow`]).
    pub fn enforcement(mut self, enforcement: Enforcement) -> Self {
        self.config.enforcement = enforcement;
        self
    }

    /// How many output tokens responses generate (capped by the request's max tokens).
    pub fn output_length(mut self, length: OutputLength) -> Self {
        self.config.output_length = length;
        self
    }

    /// Delay before the first output token.
    pub fn time_to_first_token(mut self, delay: Duration) -> Self {
        self.config.latency.time_to_first_token = delay;
        self
    }

    /// Generation speed after the first token (must be positive and finite).
    pub fn tokens_per_second(mut self, tokens_per_second: f64) -> Self {
        self.config.latency.tokens_per_second = Some(tokens_per_second);
        self
    }

    /// Injects `fault` with probability `p` (probabilities of all faults sum to at most 1).
    pub fn fault_probability(mut self, fault: Fault, p: f64) -> Self {
        self.config.faults.probabilities.push((fault, p));
        self
    }

    /// Injects `fault` into inference request number `request_index` (0-based, arrival order,
    /// CountTokens excluded).
    pub fn fault_at(mut self, request_index: u64, fault: Fault) -> Self {
        self.config.faults.schedule.insert(request_index, fault);
        self
    }

    /// Refuses model ids the emulator does not know, as Bedrock refuses ids that are no model
    /// in the region: 400 `ValidationException` "The provided model identifier is invalid."
    /// (404 `ResourceNotFoundException` for an ARN). Known: recognized by the built-in table,
    /// or given a quota or model info.
    ///
    /// Off by default: **without it, the emulator serves any id** that satisfies the
    /// operation's id pattern, even a misspelt one.
    pub fn strict_models(mut self, strict: bool) -> Self {
        self.config.strict_models = strict;
        self
    }

    /// Declares what a model id is (for ARNs and ids the built-in table does not know).
    pub fn model_info(mut self, model_id: impl Into<String>, info: ModelInfo) -> Self {
        self.config.models.insert(model_id.into(), info);
        self
    }

    /// Takes families, maximums and burndowns from `table` instead of the crate's built-in
    /// one (the exact [`model_info`](Self::model_info) entries and [`burndown`](Self::burndown)
    /// overrides still apply over it).
    pub fn model_table(mut self, table: crate::bedrock::ModelTable) -> Self {
        self.config.model_table = table;
        self
    }

    /// Settles the output of the models `id_or_pattern` names (an exact id, or a pattern with
    /// `*` or `?` that matches a row of the table) at `burndown` instead of the table's rate:
    /// a server out of step with its clients, as Bedrock is when it changes a rate before a
    /// client's table does. [`start`](Self::start) refuses a burndown of 0 and a pattern
    /// that matches no row.
    pub fn burndown(mut self, id_or_pattern: impl Into<String>, burndown: u64) -> Self {
        self.config.burndown.insert(id_or_pattern.into(), burndown);
        self
    }

    /// The account-wide tokens per day, shared by every model (Bedrock's "Cross-Model Max
    /// Tokens Per Day" since 2026-09, per account and region): a call is refused with "Too
    /// many tokens per day, please wait before trying again." when its reservation does not
    /// fit in what the account has left of its day (1440 windows), whatever its model. Zero
    /// refuses every call, as a new account's quota of 0 does. Service Quotas lists it under
    /// code L-E3F10727.
    pub fn account_tokens_per_day(mut self, limit: u64) -> Self {
        self.config.account_tokens_per_day = Some(limit);
        self
    }

    /// A bedrock-mantle quota for `model_id` on the emulator's `/v1/chat/completions` and
    /// `/v1/responses`: `input` and `output` tokens per window, two limits (see
    /// [`MantleQuota`]).
    pub fn mantle_quota(mut self, model_id: impl Into<String>, input: u64, output: u64) -> Self {
        self.config
            .mantle_quotas
            .insert(model_id.into(), MantleQuota { input, output });
        self
    }

    /// Sends `x-amz-retry-after` (milliseconds until the request would fit) on throttles. Off
    /// by default: real Bedrock sends no retry hint.
    pub fn retry_after(mut self, enabled: bool) -> Self {
        self.config.retry_after = enabled;
        self
    }

    /// Seeds the per-request generators (output length, text, padding, ids, fault draws).
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }

    /// The most connections served at once (default 4,096); further ones wait in the listen
    /// backlog. Zero is refused by [`start`](Self::start).
    pub fn max_connections(mut self, max: usize) -> Self {
        self.config.max_connections = max;
        self
    }

    /// The most requests validated or answered at once (default 1,024); a request takes its
    /// slot once its body is complete, and further ones wait for a free slot. Zero is refused
    /// by [`start`](Self::start).
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.config.max_in_flight = max;
        self
    }

    /// How long a client may take to send a request's headers, idle keep-alive time included
    /// (default 30 s); slower connections are closed. Zero is refused by [`start`](Self::start).
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.config.header_read_timeout = timeout;
        self
    }

    /// How long a client may take to send a request's body once its headers are read (default
    /// 60 s); a slower body is answered 408 `RequestTimeoutException`. Zero is refused by
    /// [`start`](Self::start).
    pub fn body_read_timeout(mut self, timeout: Duration) -> Self {
        self.config.body_read_timeout = timeout;
        self
    }

    /// Validates the configuration, binds, and serves on the current Tokio runtime until the
    /// handle is shut down or dropped.
    ///
    /// # Errors
    /// [`Error::Config`] when the configuration is invalid, [`Error::Bind`] when the listen
    /// address cannot be bound.
    pub async fn start(self) -> Result<EmulatorHandle, Error> {
        self.config.validate()?;
        let table = self.config.table()?;
        let addr = self.config.listen;
        let bind = |source| Error::Bind { addr, source };
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(bind)?;
        let addr = listener.local_addr().map_err(bind)?;
        let shared = Arc::new(Shared::new(self.config, table));
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(server::serve(listener, Arc::clone(&shared), rx));
        Ok(EmulatorHandle {
            addr,
            shared,
            shutdown: Some(tx),
            task: Some(task),
        })
    }
}

/// A running emulator. Dropping it stops the server (open responses get a few seconds to
/// finish); [`EmulatorHandle::shutdown`] does the same and waits.
pub struct EmulatorHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for EmulatorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmulatorHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl EmulatorHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, for the SDK's `endpoint_url`.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The configuration in use.
    pub fn config(&self) -> &EmulatorConfig {
        &self.shared.config
    }

    /// A snapshot of the counters (the same as `GET /_emulator/stats`).
    pub fn stats(&self) -> Stats {
        self.shared.ledgers.snapshot()
    }

    /// Zeroes the counters and restarts the peaks from the current usage. Quota state is kept.
    pub fn reset_stats(&self) {
        self.shared.ledgers.reset();
    }

    /// Stops accepting, lets open responses finish (up to a few seconds), and waits.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The request validators, for the fuzz entry points (`crate::fuzzing`); not an API.
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzz_hooks {
    pub(crate) use super::validate::{converse, count_tokens, invoke};
}
