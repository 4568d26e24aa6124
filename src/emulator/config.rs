//! What an emulator enforces and generates: quotas, the window algorithm, output length, latency,
//! faults. Built in code with [`EmulatorBuilder`](super::EmulatorBuilder) or read from JSON with
//! [`EmulatorConfig::from_json`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::bedrock::models::{ModelFamily, ModelInfo, ModelTable};
use crate::budget::Quota;

use super::ops::Operation;

/// How usage is counted against a limit. Bedrock does not document which one it uses; a client
/// that never exceeds the limit in any window of the configured length passes all three.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Enforcement {
    /// The sum of bookings in `(now - window, now]` (bookings are grouped at 1/1000 of the window,
    /// and a group leaves the window when its LAST booking does: never early).
    #[default]
    SlidingWindow,
    /// A bucket of capacity `limit`, refilled continuously at `limit / window`. Settlement gives
    /// back unused reservation (up to capacity) or takes more, so the level can go negative.
    TokenBucket,
    /// Counters that reset at every multiple of the window since the server started.
    FixedWindow,
}

impl FromStr for Enforcement {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "sliding" | "sliding-window" | "sliding_window" => Ok(Self::SlidingWindow),
            "token-bucket" | "token_bucket" | "bucket" => Ok(Self::TokenBucket),
            "fixed" | "fixed-window" | "fixed_window" => Ok(Self::FixedWindow),
            _ => Err(ConfigError::new(format!(
                "unknown enforcement `{s}`: expected sliding, token-bucket or fixed"
            ))),
        }
    }
}

impl fmt::Display for Enforcement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SlidingWindow => "sliding",
            Self::TokenBucket => "token-bucket",
            Self::FixedWindow => "fixed",
        })
    }
}

/// How many output tokens a response generates, before the cap by the request's max tokens (or
/// the model's maximum when the request does not say) and an absolute cap of 1,000,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputLength {
    /// Always this many.
    Fixed(u64),
    /// Uniformly drawn in `min..=max` (from the seeded generator).
    Uniform {
        /// Smallest length.
        min: u64,
        /// Largest length.
        max: u64,
    },
}

impl Default for OutputLength {
    fn default() -> Self {
        Self::Fixed(32)
    }
}

impl FromStr for OutputLength {
    type Err = ConfigError;

    /// `N` or `MIN..MAX` (inclusive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let num = |t: &str| {
            t.trim().parse::<u64>().map_err(|_| {
                ConfigError::new(format!("bad output length `{s}`: expected N or MIN..MAX"))
            })
        };
        match s.split_once("..") {
            Some((a, b)) => Ok(Self::Uniform {
                min: num(a)?,
                max: num(b.trim_start_matches('='))?,
            }),
            None => Ok(Self::Fixed(num(s)?)),
        }
    }
}

/// Simulated model speed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    /// Delay before the first output token (and before a non-streaming response).
    pub time_to_first_token: Duration,
    /// Generation speed after the first token; `None` = instantaneous.
    pub tokens_per_second: Option<f64>,
}

/// The exception a stream fault sends as its `:exception-type` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum StreamException {
    /// `throttlingException` ("Too many tokens, please wait before trying again.").
    Throttling,
    /// `serviceUnavailableException`.
    ServiceUnavailable,
    /// `internalServerException`.
    InternalServer,
    /// `modelStreamErrorException`.
    ModelStreamError,
    /// `modelTimeoutException`.
    ModelTimeout,
    /// `validationException`.
    Validation,
}

impl StreamException {
    const ALL: [(Self, &'static str); 6] = [
        (Self::Throttling, "throttling"),
        (Self::ServiceUnavailable, "service-unavailable"),
        (Self::InternalServer, "internal-server"),
        (Self::ModelStreamError, "model-stream-error"),
        (Self::ModelTimeout, "model-timeout"),
        (Self::Validation, "validation"),
    ];

    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(e, _)| *e == self)
            .map_or("throttling", |(_, n)| n)
    }
}

/// A failure the emulator can inject instead of the normal response.
///
/// Textual form (used by the binary and the JSON config): `service-unavailable`,
/// `too-many-connections`, `internal-server`, `model-timeout`, `model-not-ready`,
/// `model-error`, `access-denied`, `service-quota-exceeded`, and
/// `stream:<exception>@<events>` where `<exception>` is `throttling`, `service-unavailable`,
/// `internal-server`, `model-stream-error`, `model-timeout` or `validation`.
///
/// ```
/// use bedrock_throttle::emulator::{Fault, StreamException};
/// let f: Fault = "stream:throttling@2".parse().unwrap();
/// assert_eq!(f, Fault::StreamException { exception: StreamException::Throttling, after_events: 2 });
/// assert_eq!(f.to_string(), "stream:throttling@2");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Fault {
    /// 503 `ServiceUnavailableException`: "Bedrock is unable to process your request."
    ServiceUnavailable,
    /// 503 `ServiceUnavailableException`: "Too many connections, please wait before trying again."
    TooManyConnections,
    /// 500 `InternalServerException`.
    InternalServer,
    /// 408 `ModelTimeoutException`.
    ModelTimeout,
    /// 429 `ModelNotReadyException`.
    ModelNotReady,
    /// 424 `ModelErrorException`, with `originalStatusCode` and `resourceName`.
    ModelError,
    /// 403 `AccessDeniedException` ("You don't have access to the model with the specified
    /// model ID.").
    AccessDenied,
    /// 400 `ServiceQuotaExceededException`. Modeled for InvokeModel and
    /// InvokeModelWithResponseStream only: Converse and ConverseStream answer normally.
    ServiceQuotaExceeded,
    /// HTTP 529 `overloaded_error` (some model APIs, since 2026): Anthropic's error envelope
    /// (`{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`), no
    /// `x-amzn-ErrorType`, and a `Retry-After` of this many seconds when given. Textual form
    /// `overloaded` or `overloaded@SECONDS`.
    Overloaded {
        /// The `Retry-After` header's seconds, if one is sent.
        retry_after_secs: Option<u32>,
    },
    /// HTTP 200, then `after_events` normal events, then an exception frame that ends the stream.
    /// Applies to the streaming operations whose event stream models the exception (other
    /// operations answer normally): every [`StreamException`] in InvokeModelWithResponseStream,
    /// all but [`StreamException::ModelTimeout`] in ConverseStream. The exception comes before
    /// the final event at the latest, so the stream never completes.
    StreamException {
        /// Which exception.
        exception: StreamException,
        /// How many events precede it (0 = before the first event).
        after_events: u32,
    },
}

impl Fault {
    /// Whether `op`'s service model defines this error, so that a client SDK can parse it
    /// (the AWS SDK's generated error enums of each operation and event stream): a fault an
    /// operation does not model would reach clients as an unparseable, untyped error, which no
    /// real Bedrock response is.
    pub(crate) fn applies(self, op: Operation) -> bool {
        match self {
            Self::ServiceQuotaExceeded => matches!(op, Operation::Invoke | Operation::InvokeStream),
            Self::StreamException { exception, .. } => match op {
                Operation::InvokeStream => true,
                Operation::ConverseStream => exception != StreamException::ModelTimeout,
                _ => false,
            },
            _ => op != Operation::CountTokens,
        }
    }
}

impl FromStr for Fault {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            ConfigError::new(format!(
                "unknown fault `{s}`: expected service-unavailable, too-many-connections, \
                 internal-server, model-timeout, model-not-ready, model-error, access-denied, \
                 service-quota-exceeded, overloaded[@<seconds>] or stream:<exception>@<events>"
            ))
        };
        let lower = s.trim().to_ascii_lowercase();
        if let Some(rest) = lower.strip_prefix("stream:") {
            let (name, events) = rest.split_once('@').unwrap_or((rest, "0"));
            let exception = StreamException::ALL
                .iter()
                .find(|(_, n)| *n == name)
                .map(|(e, _)| *e)
                .ok_or_else(bad)?;
            let after_events = events.parse().map_err(|_| bad())?;
            return Ok(Self::StreamException {
                exception,
                after_events,
            });
        }
        if let Some(secs) = lower.strip_prefix("overloaded@") {
            return Ok(Self::Overloaded {
                retry_after_secs: Some(secs.parse().map_err(|_| bad())?),
            });
        }
        Ok(match lower.as_str() {
            "overloaded" => Self::Overloaded {
                retry_after_secs: None,
            },
            "service-unavailable" => Self::ServiceUnavailable,
            "too-many-connections" => Self::TooManyConnections,
            "internal-server" => Self::InternalServer,
            "model-timeout" => Self::ModelTimeout,
            "model-not-ready" => Self::ModelNotReady,
            "model-error" => Self::ModelError,
            "access-denied" => Self::AccessDenied,
            "service-quota-exceeded" => Self::ServiceQuotaExceeded,
            _ => return Err(bad()),
        })
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ServiceUnavailable => f.write_str("service-unavailable"),
            Self::TooManyConnections => f.write_str("too-many-connections"),
            Self::InternalServer => f.write_str("internal-server"),
            Self::ModelTimeout => f.write_str("model-timeout"),
            Self::ModelNotReady => f.write_str("model-not-ready"),
            Self::ModelError => f.write_str("model-error"),
            Self::AccessDenied => f.write_str("access-denied"),
            Self::ServiceQuotaExceeded => f.write_str("service-quota-exceeded"),
            Self::Overloaded {
                retry_after_secs: None,
            } => f.write_str("overloaded"),
            Self::Overloaded {
                retry_after_secs: Some(secs),
            } => write!(f, "overloaded@{secs}"),
            Self::StreamException {
                exception,
                after_events,
            } => write!(f, "stream:{}@{after_events}", exception.name()),
        }
    }
}

/// A bedrock-mantle quota: input and output tokens per window, two separate limits. Admission
/// checks input + max tokens against `input` (a 429 when over); output is charged as it is
/// generated, and a response stops early (a 200 with a `length` finish) when `output` runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MantleQuota {
    /// Input tokens per window.
    pub input: u64,
    /// Output tokens per window.
    pub output: u64,
}

/// Fault injection: independent probabilities per fault and a schedule by request index.
///
/// The request index counts inference requests (InvokeModel, Converse and their streaming
/// variants; not CountTokens) in arrival order from 0, for the server's lifetime. A scheduled
/// fault wins over the probabilities. Probabilities are exclusive: one uniform draw per request
/// picks at most one fault, so they must sum to at most 1.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// `(fault, probability)` pairs.
    pub probabilities: Vec<(Fault, f64)>,
    /// Request index → fault.
    pub schedule: BTreeMap<u64, Fault>,
}

/// The whole emulator configuration. Build it with [`EmulatorBuilder`](super::EmulatorBuilder)
/// or parse it with [`EmulatorConfig::from_json`].
///
/// The JSON form (every field optional; unknown fields are an error so typos are loud; a quota's
/// `rpm`, `tpm` and `tpd` are the same as `requests`, `tokens` and `tokens_per_day`;
/// `"model_table": "FILE.json"` loads a model table instead of the built-in one):
///
/// ```
/// # use bedrock_throttle::emulator::EmulatorConfig;
/// let config = EmulatorConfig::from_json(r#"
/// {
///   "listen": "127.0.0.1:0",
///   "default_quota": { "requests": 100, "tokens": 200000, "tokens_per_day": null },
///   "model_quotas": { "us.anthropic.claude-sonnet-4-5-20250929-v1:0": { "tpm": 50000 } },
///   "window_secs": 60,
///   "enforcement": "sliding",
///   "output_tokens": { "min": 10, "max": 200 },
///   "time_to_first_token_ms": 0,
///   "tokens_per_second": null,
///   "strict_models": false,
///   "retry_after": false,
///   "seed": 0,
///   "models": { "arn:aws:bedrock:us-east-1:1:application-inference-profile/x":
///               { "family": "anthropic", "max_output_tokens": 64000, "output_burndown": 5 } },
///   "burndown": { "anthropic.claude-opus-4-8*": 15 },
///   "account_tokens_per_day": 700000000,
///   "mantle_quotas": { "openai.gpt-5.6-sol-v1:0": { "input": 10000000, "output": 2000000 } },
///   "faults": { "service-unavailable": 0.01, "overloaded@2": 0.001, "stream:throttling@2": 0.005 },
///   "fault_schedule": { "3": "model-timeout", "7": "stream:throttling@0" },
///   "max_connections": 4096,
///   "max_in_flight": 1024,
///   "header_read_timeout_ms": 30000,
///   "body_read_timeout_ms": 60000
/// }
/// "#)?;
/// assert_eq!(config.default_quota.tokens, Some(200_000));
/// # Ok::<(), bedrock_throttle::emulator::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EmulatorConfig {
    /// Where to listen (default `127.0.0.1:0`).
    pub listen: SocketAddr,
    /// The quota of every model without its own entry (default: unlimited).
    pub default_quota: Quota,
    /// Per-model quotas, by model id exactly as decoded from the request path.
    pub model_quotas: HashMap<String, Quota>,
    /// The window length (default 60 s); the per-day window is 1440 windows.
    pub window: Duration,
    /// The window algorithm (default sliding).
    pub enforcement: Enforcement,
    /// Generated output length.
    pub output_length: OutputLength,
    /// Simulated speed.
    pub latency: Latency,
    /// Fault injection.
    pub faults: Faults,
    /// Refuse model ids that are neither known to the built-in table nor configured (quota or
    /// model info), as Bedrock does. Off by default: without it any well-formed id is served.
    pub strict_models: bool,
    /// Send `x-amz-retry-after` (milliseconds) on throttles. Real Bedrock does not.
    pub retry_after: bool,
    /// Seed of the per-request generators (output length, padding, request ids, fault draws).
    pub seed: u64,
    /// Model info for ids the built-in table does not know (ARNs) or gets wrong.
    pub models: HashMap<String, ModelInfo>,
    /// The model table the emulator takes families, maximums and burndowns from: the crate's
    /// built-in one by default (the same DATA as the client's), or a newer one.
    pub model_table: ModelTable,
    /// Burndown overrides by exact id or pattern (`*`, `?`), applied over the table: to put
    /// the server out of step with a client on purpose (a server at 15x, a client at 5x).
    pub burndown: BTreeMap<String, u64>,
    /// bedrock-mantle quotas per model id (`/v1/chat/completions`, `/v1/responses`): input and
    /// output tokens per window. A model without one is unlimited there.
    pub mantle_quotas: HashMap<String, MantleQuota>,
    /// The account-wide tokens per day shared by every model ("Cross-Model Max Tokens Per
    /// Day", per account and region since 2026-09): `None` for none. A limit of 0 refuses
    /// every call with "Too many tokens per day", as a new account's zero quota does.
    pub account_tokens_per_day: Option<u64>,
    /// The most connections served at once (default 4,096). Further connections wait in the
    /// listen backlog until one closes.
    pub max_connections: usize,
    /// The most inference and CountTokens requests being validated or answered at once
    /// (default 1,024). A request takes its slot once its body is complete, so clients that
    /// stall mid-body hold none; further complete requests wait for a free one. Bodies still
    /// being read are bounded by the connections, Bedrock's 25 MB body limit and the
    /// [body-read timeout](Self::body_read_timeout).
    pub max_in_flight: usize,
    /// How long a client may take to send a request's headers, including an idle keep-alive
    /// connection waiting for its next request (default 30 s, hyper's default). A connection
    /// that takes longer is closed. For HTTP/2 it bounds the wait for the connection's first
    /// byte only (hyper has no per-stream header timeout).
    pub header_read_timeout: Duration,
    /// How long a client may take to send a request's body, from the moment its headers are
    /// read (default 60 s). A slower body is answered 408 `RequestTimeoutException`, as
    /// Bedrock's front end answers a client that stops sending, and its memory is freed.
    pub body_read_timeout: Duration,
    /// Entries of the Service Quotas listing beside those of the configured quotas.
    pub extra_service_quotas: Vec<crate::quotas::ListedQuota>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            default_quota: Quota::unlimited(),
            model_quotas: HashMap::new(),
            window: Duration::from_secs(60),
            enforcement: Enforcement::SlidingWindow,
            output_length: OutputLength::default(),
            latency: Latency::default(),
            faults: Faults::default(),
            strict_models: false,
            retry_after: false,
            seed: 0,
            models: HashMap::new(),
            model_table: ModelTable::default(),
            burndown: BTreeMap::new(),
            account_tokens_per_day: None,
            mantle_quotas: HashMap::new(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            extra_service_quotas: Vec::new(),
        }
    }
}

/// Default of [`EmulatorConfig::max_connections`].
const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default of [`EmulatorConfig::max_in_flight`].
const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
/// Default of [`EmulatorConfig::header_read_timeout`].
const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of [`EmulatorConfig::body_read_timeout`].
const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest simulated delay a configuration may ask for (time to first token).
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(86_400);
/// The most output tokens a configuration may ask a response to generate.
pub(crate) const MAX_GENERATED_TOKENS: u64 = 1_000_000;

impl EmulatorConfig {
    /// Parses the JSON form shown on [`EmulatorConfig`].
    ///
    /// ```
    /// use bedrock_throttle::emulator::{EmulatorConfig, Enforcement};
    /// let c = EmulatorConfig::from_json(r#"{"default_quota":{"tpm":1000},"enforcement":"fixed"}"#).unwrap();
    /// assert_eq!(c.default_quota.tokens, Some(1000));
    /// assert_eq!(c.enforcement, Enforcement::FixedWindow);
    /// assert!(EmulatorConfig::from_json(r#"{"tmp":1}"#).is_err());
    /// ```
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        let file: FileConfig =
            serde_json::from_str(json).map_err(|e| ConfigError::new(format!("config: {e}")))?;
        let mut c = Self::default();
        if let Some(listen) = file.listen {
            c.listen = listen
                .parse()
                .map_err(|_| ConfigError::new(format!("config: bad listen address `{listen}`")))?;
        }
        if let Some(q) = file.default_quota {
            c.default_quota = q;
        }
        c.model_quotas = file.model_quotas;
        if let Some(secs) = file.window_secs {
            c.window = duration_from_secs(secs)?;
        }
        if let Some(e) = file.enforcement {
            c.enforcement = e.parse()?;
        }
        match file.output_tokens {
            None => {}
            Some(FileOutput::Fixed(n)) => c.output_length = OutputLength::Fixed(n),
            Some(FileOutput::Range { min, max }) => {
                c.output_length = OutputLength::Uniform { min, max }
            }
        }
        if let Some(ms) = file.time_to_first_token_ms {
            c.latency.time_to_first_token = duration_from_secs(ms / 1000.0)?;
        }
        c.latency.tokens_per_second = file.tokens_per_second;
        c.strict_models = file.strict_models;
        c.retry_after = file.retry_after;
        c.seed = file.seed;
        for (id, m) in file.models {
            c.models.insert(id, m.into_info()?);
        }
        if let Some(path) = file.model_table {
            c.model_table = ModelTable::from_file(&path)
                .map_err(|e| ConfigError::new(format!("config: model_table: {e}")))?;
        }
        c.burndown = file.burndown;
        c.account_tokens_per_day = file.account_tokens_per_day;
        c.mantle_quotas = file.mantle_quotas;
        for (fault, p) in file.faults {
            c.faults.probabilities.push((fault.parse()?, p));
        }
        for (index, fault) in file.fault_schedule {
            let index = index
                .parse()
                .map_err(|_| ConfigError::new(format!("config: bad request index `{index}`")))?;
            c.faults.schedule.insert(index, fault.parse()?);
        }
        if let Some(n) = file.max_connections {
            c.max_connections = n;
        }
        if let Some(n) = file.max_in_flight {
            c.max_in_flight = n;
        }
        if let Some(ms) = file.header_read_timeout_ms {
            c.header_read_timeout = duration_from_secs(ms / 1000.0)?;
        }
        if let Some(ms) = file.body_read_timeout_ms {
            c.body_read_timeout = duration_from_secs(ms / 1000.0)?;
        }
        c.validate()?;
        Ok(c)
    }

    /// Checks what the types cannot: a positive window, `min <= max`, output lengths up to
    /// 1,000,000 tokens, a time to first token up to one day, probabilities in `[0, 1]` summing
    /// to at most 1, a positive finite speed, positive connection and in-flight limits and
    /// header-read timeout. A setting outside these bounds is refused, never clamped: a clamped
    /// setting would make the emulator quietly do something else than asked.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_connections == 0 {
            return Err(ConfigError::new("max connections must be at least 1"));
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::new(
                "max in-flight requests must be at least 1",
            ));
        }
        if self.header_read_timeout.is_zero() {
            return Err(ConfigError::new(
                "the header read timeout must be longer than zero",
            ));
        }
        if self.body_read_timeout.is_zero() {
            return Err(ConfigError::new(
                "the body read timeout must be longer than zero",
            ));
        }
        let longest = match self.output_length {
            OutputLength::Fixed(n) => n,
            OutputLength::Uniform { max, .. } => max,
        };
        if longest > MAX_GENERATED_TOKENS {
            return Err(ConfigError::new(format!(
                "output length {longest} is above the most the emulator generates \
                 ({MAX_GENERATED_TOKENS} tokens)"
            )));
        }
        if self.latency.time_to_first_token > MAX_DELAY {
            return Err(ConfigError::new(
                "the time to first token is longer than a day",
            ));
        }
        if self.window.is_zero() {
            return Err(ConfigError::new("the window must be longer than zero"));
        }
        if self.window.checked_mul(1440).is_none() {
            return Err(ConfigError::new("the window is too long"));
        }
        if let OutputLength::Uniform { min, max } = self.output_length
            && min > max
        {
            return Err(ConfigError::new(format!(
                "output length: min {min} > max {max}"
            )));
        }
        if let Some(tps) = self.latency.tokens_per_second
            && !(tps.is_finite() && tps > 0.0)
        {
            return Err(ConfigError::new(
                "tokens per second must be a positive number",
            ));
        }
        let mut sum = 0.0;
        for (fault, p) in &self.faults.probabilities {
            if !(0.0..=1.0).contains(p) {
                return Err(ConfigError::new(format!(
                    "probability of {fault} is not in [0, 1]"
                )));
            }
            sum += p;
        }
        if sum > 1.0 + 1e-9 {
            return Err(ConfigError::new("fault probabilities sum to more than 1"));
        }
        self.table()?;
        Ok(())
    }

    /// The model table in force: [`model_table`](Self::model_table), then the exact
    /// [`models`](Self::models), then the [`burndown`](Self::burndown) overrides.
    ///
    /// # Errors
    ///
    /// A burndown of 0, or an override pattern that matches no row.
    pub fn table(&self) -> Result<ModelTable, ConfigError> {
        let bad = |e: crate::bedrock::ModelTableError| ConfigError::new(format!("models: {e}"));
        let mut table = self.model_table.clone();
        for (id, info) in &self.models {
            table = table.with_model(id.clone(), *info).map_err(bad)?;
        }
        for (pattern, burndown) in &self.burndown {
            table = table.with_burndown(pattern, *burndown).map_err(bad)?;
        }
        Ok(table)
    }
}

fn duration_from_secs(secs: f64) -> Result<Duration, ConfigError> {
    Duration::try_from_secs_f64(secs)
        .map_err(|_| ConfigError::new(format!("bad duration: {secs} seconds")))
}

/// A configuration that cannot be used, with what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    message: String,
}

impl ConfigError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// What is wrong, e.g. `"output length: min 5 > max 1"`.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    default_quota: Option<Quota>,
    #[serde(default)]
    model_quotas: HashMap<String, Quota>,
    window_secs: Option<f64>,
    enforcement: Option<String>,
    output_tokens: Option<FileOutput>,
    time_to_first_token_ms: Option<f64>,
    tokens_per_second: Option<f64>,
    #[serde(default)]
    strict_models: bool,
    #[serde(default)]
    retry_after: bool,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    models: HashMap<String, FileModel>,
    model_table: Option<String>,
    #[serde(default)]
    burndown: BTreeMap<String, u64>,
    account_tokens_per_day: Option<u64>,
    #[serde(default)]
    mantle_quotas: HashMap<String, MantleQuota>,
    #[serde(default)]
    faults: BTreeMap<String, f64>,
    #[serde(default)]
    fault_schedule: BTreeMap<String, String>,
    max_connections: Option<usize>,
    max_in_flight: Option<usize>,
    header_read_timeout_ms: Option<f64>,
    body_read_timeout_ms: Option<f64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum FileOutput {
    Fixed(u64),
    Range { min: u64, max: u64 },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileModel {
    family: String,
    max_output_tokens: u64,
    #[serde(default = "one")]
    output_burndown: u64,
}

fn one() -> u64 {
    1
}

impl FileModel {
    fn into_info(self) -> Result<ModelInfo, ConfigError> {
        let family = parse_family(&self.family)?;
        Ok(ModelInfo::new(
            family,
            self.max_output_tokens,
            self.output_burndown,
        ))
    }
}

/// Parses a family name: `anthropic`, `titan-text`, `embedding`, `nova`, `llama`, `jurassic`,
/// `max-tokens`, `unknown`.
pub(crate) fn parse_family(s: &str) -> Result<ModelFamily, ConfigError> {
    ModelFamily::from_name(s).ok_or_else(|| ConfigError::new(format!("unknown model family `{s}`")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_round_trip() {
        for s in [
            "service-unavailable",
            "too-many-connections",
            "internal-server",
            "model-timeout",
            "model-not-ready",
            "model-error",
            "access-denied",
            "service-quota-exceeded",
            "overloaded",
            "overloaded@3",
            "stream:throttling@0",
            "stream:model-stream-error@3",
            "stream:validation@1",
        ] {
            let f: Fault = s.parse().unwrap();
            assert_eq!(f.to_string(), s);
        }
        assert!("stream:nope@1".parse::<Fault>().is_err());
        assert!("stream:throttling@x".parse::<Fault>().is_err());
        assert!("boom".parse::<Fault>().is_err());
    }

    #[test]
    fn output_length_parse() {
        assert_eq!("5".parse::<OutputLength>().unwrap(), OutputLength::Fixed(5));
        assert_eq!(
            "3..9".parse::<OutputLength>().unwrap(),
            OutputLength::Uniform { min: 3, max: 9 }
        );
        assert!("x".parse::<OutputLength>().is_err());
    }

    #[test]
    fn full_json() {
        let c = EmulatorConfig::from_json(
            r#"{
              "listen": "127.0.0.1:8080",
              "default_quota": {"rpm": 1, "tpm": 2, "tpd": 3},
              "model_quotas": {"m": {"tpm": 5}},
              "window_secs": 0.5,
              "enforcement": "token-bucket",
              "output_tokens": {"min": 1, "max": 4},
              "time_to_first_token_ms": 20,
              "tokens_per_second": 100,
              "strict_models": true,
              "retry_after": true,
              "seed": 9,
              "models": {"arn:x": {"family": "anthropic", "max_output_tokens": 100, "output_burndown": 5}},
              "faults": {"service-unavailable": 0.25},
              "fault_schedule": {"2": "stream:throttling@1"},
              "max_connections": 8,
              "max_in_flight": 4,
              "header_read_timeout_ms": 1500,
              "body_read_timeout_ms": 2500
            }"#,
        )
        .unwrap();
        assert_eq!(c.listen.port(), 8080);
        assert_eq!(
            c.default_quota,
            Quota {
                requests: Some(1),
                tokens: Some(2),
                tokens_per_day: Some(3)
            }
        );
        assert_eq!(c.model_quotas["m"].tokens, Some(5));
        assert_eq!(c.window, Duration::from_millis(500));
        assert_eq!(c.enforcement, Enforcement::TokenBucket);
        assert_eq!(c.output_length, OutputLength::Uniform { min: 1, max: 4 });
        assert_eq!(c.latency.time_to_first_token, Duration::from_millis(20));
        assert_eq!(c.latency.tokens_per_second, Some(100.0));
        assert!(c.strict_models && c.retry_after);
        assert_eq!(c.seed, 9);
        assert_eq!((c.max_connections, c.max_in_flight), (8, 4));
        assert_eq!(c.header_read_timeout, Duration::from_millis(1500));
        assert_eq!(c.body_read_timeout, Duration::from_millis(2500));
        assert_eq!(c.models["arn:x"].output_burndown, 5);
        assert_eq!(
            c.faults.probabilities,
            vec![(Fault::ServiceUnavailable, 0.25)]
        );
        assert_eq!(
            c.faults.schedule[&2],
            Fault::StreamException {
                exception: StreamException::Throttling,
                after_events: 1
            }
        );
    }

    #[test]
    fn invalid_configs() {
        for bad in [
            r#"{"window_secs": 0}"#,
            r#"{"window_secs": -1}"#,
            r#"{"output_tokens": {"min": 5, "max": 1}}"#,
            r#"{"faults": {"internal-server": 0.7, "model-timeout": 0.7}}"#,
            r#"{"faults": {"internal-server": 1.5}}"#,
            r#"{"tokens_per_second": 0}"#,
            r#"{"enforcement": "leaky"}"#,
            r#"{"models": {"x": {"family": "martian", "max_output_tokens": 1}}}"#,
            r#"{"fault_schedule": {"a": "model-timeout"}}"#,
            r#"{"listen": "nope"}"#,
            r#"{"max_connections": 0}"#,
            r#"{"max_in_flight": 0}"#,
            r#"{"header_read_timeout_ms": 0}"#,
            r#"{"body_read_timeout_ms": 0}"#,
            r#"{"output_tokens": 1000001}"#,
            r#"{"output_tokens": {"min": 1, "max": 1000001}}"#,
            r#"{"time_to_first_token_ms": 86400001}"#,
            r#"not json"#,
        ] {
            assert!(EmulatorConfig::from_json(bad).is_err(), "{bad}");
        }
    }
}
