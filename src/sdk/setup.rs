//! The one-call setup: quotas in, a coherently configured Bedrock client out.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_types::retry::RetryConfig;
use tower::ServiceBuilder;
use tower::layer::util::{Identity, Stack};

use super::connector::{DEFAULT_SIGNATURE_MARGIN, LayeredHttpClient};
use crate::bedrock::{Bedrock, BedrockKey, BedrockResponseLayer};
use crate::budget::{Budget, ConfigError};
use crate::rate_limit::RateLimitLayer;
use crate::retry::{Backoff, RetryBudget, ThrottleRetryLayer};
use crate::token_budget::TokenBudgetLayer;

/// The quota of one model in one region, per window (a minute for real Bedrock). Every limit is
/// optional: an absent one is not enforced by the crate.
///
/// ```
/// use bedrock_throttle::sdk::Quota;
/// let quota = Quota::tokens(200_000).with_requests(50);
/// assert_eq!(quota.tokens, Some(200_000));
/// assert_eq!(quota.requests, Some(50));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    /// Tokens per window (Bedrock's "tokens per minute").
    pub tokens: Option<u64>,
    /// Requests per window (Bedrock's "requests per minute"; no longer enforced by Bedrock for
    /// most models, so optional).
    pub requests: Option<u64>,
}

impl Quota {
    /// A tokens-per-window quota.
    pub const fn tokens(tokens: u64) -> Self {
        Self {
            tokens: Some(tokens),
            requests: None,
        }
    }
    /// A requests-per-window quota.
    pub const fn requests(requests: u64) -> Self {
        Self {
            tokens: None,
            requests: Some(requests),
        }
    }
    /// The same quota with a requests-per-window limit.
    pub const fn with_requests(mut self, requests: u64) -> Self {
        self.requests = Some(requests);
        self
    }
    /// The same quota with a tokens-per-window limit.
    pub const fn with_tokens(mut self, tokens: u64) -> Self {
        self.tokens = Some(tokens);
        self
    }
}

/// An error in the setup's configuration.
#[derive(Debug)]
#[non_exhaustive]
pub enum SetupError {
    /// A limiter setting is invalid.
    Budget(ConfigError),
    /// A retry setting is invalid.
    Retry(crate::retry::ConfigError),
    /// The waits allowed inside the stack do not fit in the SigV4 signature window.
    WaitsExceedSignatureWindow {
        /// The longest the stack may hold one request (max wait or retry deadline).
        wait: Duration,
        /// The most the signature window allows.
        limit: Duration,
    },
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::Budget(e) => write!(f, "invalid limiter configuration: {e}"),
            SetupError::Retry(e) => write!(f, "invalid retry configuration: {e}"),
            SetupError::WaitsExceedSignatureWindow { wait, limit } => write!(
                f,
                "a request may be held {wait:?} inside the stack, but a signed request must be sent \
                 within {limit:?}: lower max_wait / retry_deadline"
            ),
        }
    }
}

impl std::error::Error for SetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SetupError::Budget(e) => Some(e),
            SetupError::Retry(e) => Some(e),
            SetupError::WaitsExceedSignatureWindow { .. } => None,
        }
    }
}

impl From<ConfigError> for SetupError {
    fn from(e: ConfigError) -> Self {
        SetupError::Budget(e)
    }
}

impl From<crate::retry::ConfigError> for SetupError {
    fn from(e: crate::retry::ConfigError) -> Self {
        SetupError::Retry(e)
    }
}

/// The least default expiry margin: the time between our admission and the server's booking
/// (waking the admitted task, connection set-up, transmission, scheduling) that admissions
/// count beyond the window. Measured with the goodput benchmark on loopback on a 2-core machine
/// under load (release build, thousands of calls): from admission to the hand-off to the
/// transport at most 6.5 ms (p99 under 2 ms), from the hand-off to the emulator's booking at
/// most 18.3 ms (p99 under 6 ms).
///
/// (An earlier floor of 100 ms hid a different cause: settling a call whose usage exceeded
/// Bedrock's reservation but not ours kept the difference at the admission instant, where it
/// expired before Bedrock's debt did. Settlement now mirrors Bedrock's split; see
/// [`Permit::settle_as`](crate::budget::Permit::settle_as).)
const MIN_EXPIRY_MARGIN: Duration = Duration::from_millis(25);

/// The most time a request may spend inside the stack: the signature window less its margin.
const MAX_HOLD: Duration = Duration::from_secs(300 - 30);

/// Builds a [`BedrockThrottle`]: per-model quotas and the few knobs that matter.
#[derive(Debug, Clone)]
pub struct BedrockThrottleBuilder {
    bedrock: Bedrock,
    quotas: HashMap<String, Quota>,
    default_quota: Quota,
    window: Duration,
    max_wait: Duration,
    expiry_margin: Option<Duration>,
    max_attempts: NonZeroU32,
    backoff: Backoff,
    retry_budget: Option<RetryBudget>,
    retry_deadline: Duration,
    sdk_max_attempts: u32,
    inner: Option<SharedHttpClient>,
}

impl Default for BedrockThrottleBuilder {
    fn default() -> Self {
        Self {
            bedrock: Bedrock::new(),
            quotas: HashMap::new(),
            default_quota: Quota::default(),
            window: Duration::from_secs(60),
            max_wait: Duration::from_secs(120),
            expiry_margin: None,
            max_attempts: NonZeroU32::new(3).expect("3 is not zero"),
            backoff: Backoff::default(),
            retry_budget: None,
            retry_deadline: Duration::from_secs(240),
            sdk_max_attempts: 1,
            inner: None,
        }
    }
}

impl BedrockThrottleBuilder {
    /// The protocol knowledge to use: region for custom endpoints, model table, burndown
    /// overrides, estimator settings. Default: [`Bedrock::new()`].
    pub fn bedrock(mut self, bedrock: Bedrock) -> Self {
        self.bedrock = bedrock;
        self
    }

    /// The quota of one model id, inference profile id or ARN, exactly as the client sends it
    /// (`us.anthropic.claude-sonnet-4-5-20250929-v1:0` and `anthropic.claude-...` are different
    /// quotas). Applies in every region the client talks to (one SDK client talks to one).
    pub fn quota(mut self, model_id: impl Into<String>, quota: Quota) -> Self {
        self.quotas.insert(model_id.into(), quota);
        self
    }

    /// The quota of every model without its own [`quota`](Self::quota). Default: none (such
    /// models pass unlimited; the retry layer still handles their throttles).
    pub fn default_quota(mut self, quota: Quota) -> Self {
        self.default_quota = quota;
        self
    }

    /// The quota window: 60 s for real Bedrock (the default); shorter for a scaled emulator.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The longest a request may wait for admission before it fails with a throttling error the
    /// SDK can see (default 120 s; must fit in the signature window).
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Extra time each admission counts against the window, to cover the delay between our
    /// admission and the server's (network, queues). Default: 1/60 of the window (1 s per minute),
    /// at least 25 ms.
    pub fn expiry_margin(mut self, margin: Duration) -> Self {
        self.expiry_margin = Some(margin);
        self
    }

    /// Attempts per call inside the stack, first included (default 3).
    pub fn max_attempts(mut self, attempts: NonZeroU32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The backoff between attempts inside the stack (default: full jitter, 1 s × 2ⁿ, ≤ 20 s).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The retry budget shared by every request of the client (default: [`RetryBudget::default`]).
    pub fn retry_budget(mut self, budget: RetryBudget) -> Self {
        self.retry_budget = Some(budget);
        self
    }

    /// No retry starts inside the stack after this long from the first attempt (default 240 s).
    pub fn retry_deadline(mut self, deadline: Duration) -> Self {
        self.retry_deadline = deadline;
        self
    }

    /// Attempts of the SDK's own retry loop around the stack (default 1: the stack retries, the
    /// SDK does not, so attempts do not multiply). Raise it to let the SDK re-sign and resend a
    /// request that could not be admitted in time.
    pub fn sdk_max_attempts(mut self, attempts: u32) -> Self {
        self.sdk_max_attempts = attempts.max(1);
        self
    }

    /// The HTTP client that sends the requests (default: the SDK's hyper 1 HTTPS client with
    /// rustls, which also speaks plain `http://`).
    pub fn http_client(mut self, client: SharedHttpClient) -> Self {
        self.inner = Some(client);
        self
    }

    /// Validates the configuration and builds the limiters and the layered HTTP client.
    pub fn build(self) -> Result<BedrockThrottle, SetupError> {
        let hold = self.max_wait.max(self.retry_deadline);
        if hold > MAX_HOLD {
            return Err(SetupError::WaitsExceedSignatureWindow {
                wait: hold,
                limit: MAX_HOLD,
            });
        }
        let zero = |q: &Quota| q.tokens == Some(0) || q.requests == Some(0);
        if zero(&self.default_quota) || self.quotas.values().any(zero) {
            return Err(SetupError::Budget(ConfigError::ZeroLimit));
        }
        let margin = self
            .expiry_margin
            .unwrap_or((self.window / 60).max(MIN_EXPIRY_MARGIN));
        let quotas = Arc::new(self.quotas);
        let limit = |pick: fn(&Quota) -> Option<u64>| {
            let quotas = Arc::clone(&quotas);
            let default = pick(&self.default_quota);
            move |key: &BedrockKey| quotas.get(key.model()).map_or(default, pick)
        };
        let budget = |pick: fn(&Quota) -> Option<u64>| {
            Budget::<BedrockKey>::builder()
                .window(self.window)
                .max_wait(self.max_wait)
                .expiry_margin(margin)
                .limit_fn(limit(pick))
                .build()
        };
        let requests = budget(|q| q.requests)?;
        let tokens = budget(|q| q.tokens)?;

        let mut retry = ThrottleRetryLayer::new(self.bedrock.clone())
            .clone_with(self.bedrock.clone())
            .max_attempts(self.max_attempts)
            .backoff(self.backoff)
            .deadline(self.retry_deadline);
        if let Some(budget) = self.retry_budget {
            retry = retry.budget(budget);
        }
        let stack = ServiceBuilder::new()
            .layer(retry)
            .layer(
                RateLimitLayer::new(requests.clone(), self.bedrock.clone())
                    .classify(self.bedrock.clone()),
            )
            .layer(
                TokenBudgetLayer::new(
                    tokens.clone(),
                    self.bedrock.clone(),
                    self.bedrock.clone(),
                    self.bedrock.clone(),
                )
                .classify(self.bedrock.clone()),
            )
            .layer(self.bedrock.response_layer())
            .into_inner();
        let inner = self.inner.unwrap_or_else(default_https_client);
        let http_client = SharedHttpClient::new(
            LayeredHttpClient::new(inner, stack).signature_margin(DEFAULT_SIGNATURE_MARGIN),
        );
        Ok(BedrockThrottle {
            http_client,
            retry_config: RetryConfig::standard().with_max_attempts(self.sdk_max_attempts),
            requests,
            tokens,
        })
    }
}

/// The layer stack the setup lays over the inner client, outermost first: retry, requests
/// limit, token budget, Bedrock response handling.
pub type BedrockStack = Stack<
    BedrockResponseLayer,
    Stack<
        TokenBudgetLayer<BedrockKey, Bedrock, Bedrock, Bedrock, Bedrock>,
        Stack<
            RateLimitLayer<BedrockKey, Bedrock, Bedrock>,
            Stack<ThrottleRetryLayer<Bedrock, Bedrock>, Identity>,
        >,
    >,
>;

/// The SDK's own hyper 1 HTTPS client (rustls with ring), which also speaks plain `http://`.
pub fn default_https_client() -> SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// A configured throttle for one Bedrock client: the layered HTTP client, the SDK retry
/// configuration that goes with it, and the limiters (for inspection).
#[derive(Debug, Clone)]
pub struct BedrockThrottle {
    http_client: SharedHttpClient,
    retry_config: RetryConfig,
    requests: Budget<BedrockKey>,
    tokens: Budget<BedrockKey>,
}

impl BedrockThrottle {
    /// Starts a configuration.
    pub fn builder() -> BedrockThrottleBuilder {
        BedrockThrottleBuilder::default()
    }

    /// The layered HTTP client to give the SDK (`Config::builder().http_client(..)`).
    pub fn http_client(&self) -> SharedHttpClient {
        self.http_client.clone()
    }

    /// The SDK retry configuration that goes with the stack: standard mode with
    /// [`sdk_max_attempts`](BedrockThrottleBuilder::sdk_max_attempts) attempts (1 by default),
    /// so the SDK's retries do not multiply the stack's.
    pub fn retry_config(&self) -> RetryConfig {
        self.retry_config.clone()
    }

    /// Sets the HTTP client and the retry configuration on a Bedrock Runtime config builder.
    pub fn configure(
        &self,
        builder: aws_sdk_bedrockruntime::config::Builder,
    ) -> aws_sdk_bedrockruntime::config::Builder {
        builder
            .http_client(self.http_client())
            .retry_config(self.retry_config())
    }

    /// The requests-per-window limiter (shared by every attempt of every clone).
    pub fn requests_budget(&self) -> &Budget<BedrockKey> {
        &self.requests
    }

    /// The tokens-per-window limiter (shared by every attempt of every clone).
    pub fn tokens_budget(&self) -> &Budget<BedrockKey> {
        &self.tokens
    }
}
