//! The one-call setup: quotas in, a coherently configured Bedrock client out.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use aws_smithy_runtime::client::retries::{RetryPartition, TokenBucket};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_runtime_api::client::interceptors::context::InterceptorContext;
use aws_smithy_runtime_api::client::retries::classifiers::{
    ClassifyRetry, RetryAction, RetryClassifierPriority,
};
use aws_smithy_types::retry::{ErrorKind, RetryConfig};
use tower::ServiceBuilder;
use tower::layer::util::{Identity, Stack};

use super::connector::{DEFAULT_SIGNATURE_MARGIN, LayeredHttpClient, SIGNATURE_VALIDITY};
use super::observe::{ResignHandBack, RetryCounts, ThrottleObserver};
use crate::admit::{AdmissionLayer, LeftQueue};
use crate::bedrock::{Bedrock, BedrockKey, BedrockResponseLayer};
use crate::budget::{Budget, ConfigError, Quota, Settings};
use crate::quotas::AppliedQuotas;
use crate::report::CapacityRecorder;
use crate::retry::{Backoff, RetryBudget, ThrottleRetryLayer};
use crate::store::Store;

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
    /// The shared store's URL or prefix is invalid.
    #[cfg(feature = "redis")]
    Store(crate::store::StoreError),
    /// An account-wide daily quota was given without the account it belongs to (or with an
    /// empty account id): see [`BedrockThrottleBuilder::account_daily_quota`].
    DailyQuotaWithoutAccount,
    /// An account-wide daily quota with the shared store: the Redis store does not enforce
    /// scopes yet, so it would admit against the model's key alone and overrun the account's
    /// day silently. Keep the account's daily quota on one process, or leave it to the server.
    #[cfg(feature = "redis")]
    ScopesOnSharedStore,
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
            #[cfg(feature = "redis")]
            SetupError::Store(e) => write!(f, "invalid shared store: {e}"),
            SetupError::DailyQuotaWithoutAccount => f.write_str(
                "an account-wide daily quota needs the account id it belongs to (the 12 digits \
                 of the AWS account): give it with `account_daily_quota(account_id, tokens)`",
            ),
            #[cfg(feature = "redis")]
            SetupError::ScopesOnSharedStore => f.write_str(
                "an account-wide daily quota cannot be enforced through the shared (Redis) store \
                 yet: it admits on the model's key alone; drop `account_daily_quota`/`account` \
                 or the `redis` store",
            ),
        }
    }
}

impl std::error::Error for SetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SetupError::Budget(e) => Some(e),
            SetupError::Retry(e) => Some(e),
            SetupError::WaitsExceedSignatureWindow { .. }
            | SetupError::DailyQuotaWithoutAccount => None,
            #[cfg(feature = "redis")]
            SetupError::Store(e) => Some(e),
            #[cfg(feature = "redis")]
            SetupError::ScopesOnSharedStore => None,
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
/// count beyond the window. It covers the worst delays the goodput benchmark saw on loopback on
/// a loaded 2-core machine (BENCHMARKS.md, "Expiry margin").
///
/// (An earlier, larger floor hid a different cause: settling a call whose usage exceeded
/// Bedrock's reservation but not ours kept the difference at the admission instant, where it
/// expired before Bedrock's debt did. Settlement now mirrors Bedrock's split; see
/// [`Permit::settle_against`](crate::budget::Permit::settle_against).)
const MIN_EXPIRY_MARGIN: Duration = Duration::from_millis(25);

/// The SDK attempts the setup allows by default: the first, and re-signed attempts of a request
/// that waits longer than one signature's validity (each keeps its place in line). Fifteen
/// re-signs cover more than an hour of waiting; the operation timeout, if set, ends it sooner.
const DEFAULT_SDK_ATTEMPTS: u32 = 16;

/// The windows the capacity report covers by default (an hour of one-minute windows).
const DEFAULT_REPORT_WINDOWS: usize = 60;

/// The configured quotas over the applied ones, dimension by dimension; warns where a
/// configured limit is above the applied one.
fn merge_applied(
    mut configured: HashMap<String, Quota>,
    applied: Option<&AppliedQuotas>,
) -> HashMap<String, Quota> {
    let Some(applied) = applied else {
        return configured;
    };
    applied.warn_issues();
    for (model, applied_quota) in applied.quotas() {
        let entry = configured.entry(model.to_owned()).or_default();
        for (dimension, limit) in applied_quota.limits() {
            match entry.get(dimension) {
                None => *entry = entry.with(dimension, Some(limit)),
                Some(mine) if mine > limit => tracing::warn!(
                    model,
                    region = applied.region(),
                    %dimension,
                    configured = mine,
                    applied = limit,
                    "the configured quota is above the applied one: the server will throttle                      what the limiter admits"
                ),
                Some(_) => {}
            }
        }
    }
    configured
}

/// Warns, once per model id, that traffic uses a model with no applied quota.
fn warn_unquoted(
    applied: &AppliedQuotas,
    key: &BedrockKey,
    warned: &std::sync::Mutex<std::collections::HashSet<String>>,
) {
    if applied.quota(key.model()).is_some() || !key.has_model() {
        return;
    }
    let mut warned = warned.lock().unwrap_or_else(|e| e.into_inner());
    // Bounded: model ids come from requests.
    if warned.len() < 1024 && warned.insert(key.model().to_owned()) {
        tracing::warn!(
            model = key.model(),
            region = key.region(),
            "no applied quota in Service Quotas for this model id: its limit is configuration only"
        );
    }
}

/// Builds a [`BedrockThrottle`]: per-model quotas and the few knobs that matter.
#[derive(Debug, Clone)]
pub struct BedrockThrottleBuilder {
    bedrock: Bedrock,
    quotas: HashMap<String, Quota>,
    /// What every store shares: window, day, margin, max wait, feedback, fairness, and the
    /// quotas of models without a quota of their own.
    settings: Settings<BedrockKey>,
    max_attempts: NonZeroU32,
    backoff: Backoff,
    retry_budget: Option<RetryBudget>,
    retry_deadline: Duration,
    sdk_max_attempts: u32,
    signature_margin: Duration,
    inner: Option<SharedHttpClient>,
    applied: Option<AppliedQuotas>,
    report_windows: usize,
    metrics: bool,
    observed: Vec<String>,
    /// The account and its daily tokens across every model (`None`: the applied quota's).
    account: Option<(Arc<str>, Option<u64>)>,
    #[cfg(feature = "redis")]
    redis: Option<RedisSettings>,
    /// What the shared store does in an outage, whenever it was set.
    #[cfg(feature = "redis")]
    redis_outage: Option<crate::store::Outage>,
}

/// Where the shared store is.
#[cfg(feature = "redis")]
#[derive(Debug, Clone, PartialEq)]
struct RedisSettings {
    urls: Vec<String>,
    cluster: bool,
}

impl Default for BedrockThrottleBuilder {
    fn default() -> Self {
        Self {
            bedrock: Bedrock::new(),
            quotas: HashMap::new(),
            settings: Settings::new(),
            max_attempts: crate::bedrock::error::RECOMMENDED_ATTEMPTS,
            backoff: Backoff::default(),
            retry_budget: None,
            retry_deadline: Duration::from_secs(240),
            sdk_max_attempts: DEFAULT_SDK_ATTEMPTS,
            signature_margin: DEFAULT_SIGNATURE_MARGIN,
            inner: None,
            applied: None,
            report_windows: DEFAULT_REPORT_WINDOWS,
            metrics: false,
            observed: Vec::new(),
            #[cfg(feature = "redis")]
            redis: None,
            #[cfg(feature = "redis")]
            redis_outage: None,
            account: None,
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

    /// What every store of the setup shares, in one value (as [`Budget::new`] and the shared
    /// store take it): the [window](Settings::window) (60 s for real Bedrock; shorter for a
    /// scaled emulator), the [day](Settings::day), the [expiry margin](Settings::expiry_margin),
    /// the [longest wait](Settings::max_wait), the [feedback policy](Settings::aimd),
    /// [fair shares](Settings::fairness) (in-process store only), and the quota of every model without a
    /// [`quota`](Self::quota) of its own or an applied one ([`Settings::quota`],
    /// [`Settings::quota_for`] or [`Settings::quota_fn`] on its [`BedrockKey`]; default: none,
    /// such models pass unlimited and the retry layer still handles their throttles).
    ///
    /// Setup defaults where the settings say nothing: no bound on waiting, so a long backlog
    /// completes (the caller's own deadline, the SDK's operation timeout, ends a wait; a wait
    /// longer than a signature's validity is fine: the request is re-signed and keeps its
    /// place); an expiry margin of 1/60 of the window (1 s per minute), at least 25 ms, to
    /// cover the delay between our admission and the server's. The account's daily quota is
    /// [`account_daily_quota`](Self::account_daily_quota)'s, not the settings'. A request's
    /// fair-share class comes from the [`Bedrock`] protocol ([`Bedrock::tenant_header`],
    /// [`Bedrock::lane_header`], [`Bedrock::service_tier_lanes`]); weights and minimums change
    /// at run time through [`BedrockThrottle::budget`].
    ///
    /// Replaces the settings given before; it does not touch any other setter of this builder.
    ///
    /// ```
    /// use std::time::Duration;
    /// use bedrock_throttle::budget::{Quota, Settings};
    /// use bedrock_throttle::sdk::BedrockThrottle;
    ///
    /// let throttle = BedrockThrottle::builder()
    ///     .quota("anthropic.claude-3-haiku-20240307-v1:0", Quota::tokens(200_000))
    ///     .settings(
    ///         Settings::new()
    ///             .quota(Quota::tokens(50_000))
    ///             .max_wait(Duration::from_secs(30)),
    ///     )
    ///     .build()?;
    /// # let _ = throttle;
    /// # Ok::<(), bedrock_throttle::sdk::SetupError>(())
    /// ```
    pub fn settings(mut self, settings: Settings<BedrockKey>) -> Self {
        self.settings = settings;
        self
    }

    /// The account-wide daily quota: `tokens_per_day` across every model of `account_id` (the
    /// 12 digits of the AWS account) in the client's region, Bedrock's "Cross-Model Max Tokens
    /// Per Day" (since 2026-09). Every request is charged to the account's scope
    /// ([`BedrockKey::account`]) besides its model's key, admitted when both fit (see
    /// [scopes](crate::budget#scopes)): a user of three models spends the account's day once,
    /// and "Too many tokens per day" on one model holds back the others. Per-model daily
    /// quotas ([`Quota::with_tokens_per_day`] in [`quota`](Self::quota)) keep working beside
    /// it. A limit of 0 refuses every request at once on tokens per day.
    ///
    /// With [`applied_quotas`](Self::applied_quotas) listing the account's daily quota, use
    /// [`account`](Self::account) instead to take the applied value. The shared store
    /// (`redis`) does not implement scopes yet: with it, [`build`](Self::build) fails with
    /// `SetupError::ScopesOnSharedStore` rather than enforce the model's key alone.
    pub fn account_daily_quota(
        mut self,
        account_id: impl Into<Arc<str>>,
        tokens_per_day: u64,
    ) -> Self {
        self.account = Some((account_id.into(), Some(tokens_per_day)));
        self
    }

    /// The account the client's requests are charged to (see
    /// [`account_daily_quota`](Self::account_daily_quota)), with the daily quota read from the
    /// [`applied_quotas`](Self::applied_quotas) (its account-level tokens per day). Without
    /// an applied daily quota, requests are not charged to the account.
    pub fn account(mut self, account_id: impl Into<Arc<str>>) -> Self {
        self.account = Some((account_id.into(), None));
        self
    }

    /// Attempts per call inside the stack, first included (default 6: the first and five
    /// retries, as AWS advises for Bedrock since late 2026).
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

    /// No retry starts inside the stack after this long from the first attempt (default 240 s),
    /// not counting the time attempts waited for admission: a call that waited its turn and
    /// then met one throttle is still retried (the waits have their own bounds:
    /// [`max_wait`](Settings::max_wait) in the [`settings`](Self::settings), and the signature
    /// window).
    pub fn retry_deadline(mut self, deadline: Duration) -> Self {
        self.retry_deadline = deadline;
        self
    }

    /// Attempts of the SDK's own retry loop around the stack (default 16). The SDK retries
    /// nothing but a request that left the queue before its signature expired
    /// ([`LeftQueue`]): it re-signs it, and the new attempt takes its old place in line. Every
    /// other retry is the stack's, so attempts do not multiply. Each attempt may wait up to
    /// the signature's validity less its [margin](Self::signature_margin) (4.5 minutes by
    /// default).
    pub fn sdk_max_attempts(mut self, attempts: NonZeroU32) -> Self {
        self.sdk_max_attempts = attempts.get();
        self
    }

    /// How long before its signature expires an attempt must have left the stack (default
    /// 30 s: the request still has to reach AWS). An attempt still waiting for admission then
    /// leaves the queue and is re-signed by the SDK, keeping its place; the retry deadline must
    /// fit in what remains of the 5-minute signature window.
    pub fn signature_margin(mut self, margin: Duration) -> Self {
        self.signature_margin = margin;
        self
    }

    /// The HTTP client that sends the requests (default: the SDK's hyper 1 HTTPS client with
    /// rustls, which also speaks plain `http://`).
    pub fn http_client(mut self, client: SharedHttpClient) -> Self {
        self.inner = Some(client);
        self
    }

    /// The quotas applied to the account (read from Service Quotas with
    /// [`AppliedQuotas::fetch`], feature `service-quotas`): every model id they name gets its
    /// applied quota, dimension by dimension, unless [`quota`](Self::quota) set that
    /// dimension. A configured limit above the applied one, a listing entry that could not be
    /// used, and (at its first request) a model id with no applied quota are logged as
    /// `tracing` warnings and shown in [`BedrockThrottle::report`].
    pub fn applied_quotas(mut self, applied: AppliedQuotas) -> Self {
        self.applied = Some(applied);
        self
    }

    /// How many windows [`BedrockThrottle::report`] covers (default 60).
    pub fn report_windows(mut self, windows: usize) -> Self {
        self.report_windows = windows;
        self
    }

    /// Model ids the report and the metrics show apart even without a quota of their own
    /// (beside every model with a configured or applied quota). Other model ids are counted
    /// together as `other`, so ids chosen by callers cannot grow them without bound (see
    /// [`crate::report`]).
    pub fn observe_models<I: IntoIterator<Item = S>, S: Into<String>>(mut self, ids: I) -> Self {
        self.observed.extend(ids.into_iter().map(Into::into));
        self
    }

    /// Records admission, throttle and retry metrics through the `metrics` facade (feature
    /// `metrics`; default off). See [`crate::metrics`].
    #[cfg(feature = "metrics")]
    pub fn metrics(mut self, enabled: bool) -> Self {
        self.metrics = enabled;
        self
    }

    /// Shares every model's quota with the other processes that use the same Redis (or Valkey)
    /// at `url` (`redis://host:port`): the store is a [`RedisStore`](crate::store::RedisStore)
    /// instead of the in-process budget, with the same quotas and [`settings`](Self::settings)
    /// (those only the in-process store implements, such as fair shares, are refused at
    /// [`build`](Self::build)). It connects at the first request; [`BedrockThrottle::store`]
    /// gives it, to check it at start
    /// ([`RedisStore::ready`](crate::store::RedisStore::ready)) or read its health. It says
    /// where the shared store is, as [`redis_cluster`](Self::redis_cluster) does: the later of
    /// the two replaces the earlier.
    #[cfg(feature = "redis")]
    pub fn redis(mut self, url: impl Into<String>) -> Self {
        self.redis = Some(RedisSettings {
            urls: vec![url.into()],
            cluster: false,
        });
        self
    }

    /// As [`redis`](Self::redis), for a Redis Cluster given by its seed nodes (the later of
    /// `redis` and `redis_cluster` replaces the earlier).
    #[cfg(feature = "redis")]
    pub fn redis_cluster<I: IntoIterator<Item = S>, S: Into<String>>(mut self, nodes: I) -> Self {
        self.redis = Some(RedisSettings {
            urls: nodes.into_iter().map(Into::into).collect(),
            cluster: true,
        });
        self
    }

    /// What the shared store does while Redis is down or slow (default
    /// [`Outage::FailClosed`](crate::store::Outage::FailClosed)), before or after
    /// [`redis`](Self::redis) (without it, there is no shared store to apply it to).
    #[cfg(feature = "redis")]
    pub fn redis_outage(mut self, outage: crate::store::Outage) -> Self {
        self.redis_outage = Some(outage);
        self
    }

    /// Validates the configuration and builds the limiters and the layered HTTP client.
    ///
    /// # Errors
    ///
    /// [`SetupError::Budget`] for a zero limit, window or day, or a window too long, or a
    /// fairness configuration refused (weights, minimums), or, with the shared store, a
    /// setting it does not implement ([`ConfigError::Unsupported`]);
    /// [`SetupError::WaitsExceedSignatureWindow`] for a retry deadline that one signature
    /// cannot cover (with the [`signature_margin`](Self::signature_margin)).
    pub fn build(self) -> Result<BedrockThrottle, SetupError> {
        let hold = SIGNATURE_VALIDITY.saturating_sub(self.signature_margin);
        if self.retry_deadline > hold {
            return Err(SetupError::WaitsExceedSignatureWindow {
                wait: self.retry_deadline,
                limit: hold,
            });
        }
        let window = self.settings.get_window();
        let margin = self
            .settings
            .expiry_margin_if_set()
            .unwrap_or((window / 60).max(MIN_EXPIRY_MARGIN));
        if self.quotas.values().any(|q| q.zero_dimension().is_some()) {
            return Err(SetupError::Budget(ConfigError::ZeroLimit));
        }
        self.settings.check_quotas()?;
        let account_daily = match &self.account {
            Some((id, _)) if id.is_empty() => return Err(SetupError::DailyQuotaWithoutAccount),
            Some((_, Some(tokens))) => Some(*tokens),
            Some((_, None)) => self
                .applied
                .as_ref()
                .and_then(AppliedQuotas::account_tokens_per_day),
            None => None,
        };
        #[cfg(feature = "redis")]
        if self.redis.is_some() && account_daily.is_some() {
            return Err(SetupError::ScopesOnSharedStore);
        }
        let bedrock = match (&self.account, account_daily) {
            (Some((id, _)), Some(_)) => self.bedrock.clone().with_account(Arc::clone(id)),
            _ => self.bedrock.clone(),
        };
        let account_quota =
            account_daily.map(|tokens| Quota::unlimited().with_tokens_per_day(tokens));
        let quotas = merge_applied(self.quotas.clone(), self.applied.as_ref());
        // The models the observers show apart: a set fixed at build, so they stay bounded.
        let observed: Arc<std::collections::HashSet<String>> = Arc::new(
            quotas
                .keys()
                .cloned()
                .chain(self.observed.iter().cloned())
                .collect(),
        );
        let track = move |key: &BedrockKey| observed.contains(key.model());
        let applied = self.applied.clone().map(Arc::new);
        let unquoted = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
        let check = applied.clone();
        let fallback = Arc::new(self.settings.clone());
        // The quota of a key, for whichever store serves it (the shared store asks too): the
        // account's daily quota, a model's own or applied quota, else the settings'.
        let quota_of = move |key: &BedrockKey| {
            if key.is_account() {
                return account_quota;
            }
            if let Some(applied) = &check {
                warn_unquoted(applied, key, &unquoted);
            }
            match quotas.get(key.model()) {
                Some(quota) => Some(*quota),
                None => fallback.quota_of(key),
            }
        };
        // The one settings value of every store: the user's, with the setup's margin and
        // quota function.
        let settings = self
            .settings
            .clone()
            .expiry_margin(margin)
            .with_quota_source(quota_of);
        let store: Store<BedrockKey> = self.store(settings)?;

        let mut retry = ThrottleRetryLayer::new(ResignHandBack(bedrock.clone()))
            .clone_with(bedrock.clone())
            .max_attempts(self.max_attempts)
            .backoff(self.backoff)
            .deadline(self.retry_deadline);
        if let Some(retry_budget) = self.retry_budget {
            retry = retry.budget(retry_budget);
        }
        let retry_counts = Arc::new(RetryCounts::default());
        let retry = retry.on_decision(retry_counts.observer(self.metrics));
        let observer = ThrottleObserver {
            burndown: super::observe::BurndownCheck::new(self.bedrock.clone()),
            recorder: CapacityRecorder::new(window, self.report_windows).track(track.clone()),
            counts: Arc::clone(&retry_counts),
            #[cfg(feature = "metrics")]
            metrics: self.metrics.then(|| {
                crate::metrics::Metrics::bedrock()
                    .store(store.clone())
                    .track(track)
            }),
        };
        let stack = ServiceBuilder::new()
            .layer(retry)
            .layer(AdmissionLayer::new(store.clone(), bedrock.clone()).observe(observer.clone()))
            .layer(bedrock.response_layer())
            .into_inner();
        let inner = self.inner.unwrap_or_else(default_https_client);
        let http_client = SharedHttpClient::new(
            LayeredHttpClient::new(inner, stack).signature_margin(self.signature_margin),
        );
        // The SDK's retries are only for re-signing: no backoff to speak of (the place in line
        // is kept, and waiting is the stack's job), and a retry quota of its own that cannot
        // run out, so a long backlog does not exhaust the process-wide one.
        let retry_config = RetryConfig::standard()
            .with_max_attempts(self.sdk_max_attempts)
            .with_initial_backoff(Duration::from_millis(1))
            .with_max_backoff(Duration::from_millis(10));
        let retry_partition = RetryPartition::custom("bedrock-throttle")
            .token_bucket(TokenBucket::unlimited())
            .build();
        Ok(BedrockThrottle {
            http_client,
            retry_config,
            retry_partition,
            store,
            observer,
            applied,
            bedrock: self.bedrock.clone(),
        })
    }

    /// The store of the stack: the in-process budget, or the shared one.
    #[cfg_attr(
        not(feature = "redis"),
        allow(clippy::unnecessary_wraps, unused_variables)
    )]
    fn store(&self, settings: Settings<BedrockKey>) -> Result<Store<BedrockKey>, SetupError> {
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis {
            let mut b = crate::store::RedisStore::<BedrockKey>::builder(
                redis.urls.first().cloned().unwrap_or_default(),
                settings,
            );
            if let Some(outage) = self.redis_outage {
                b = b.on_outage(outage);
            }
            if redis.cluster {
                b = b.cluster();
                for u in redis.urls.iter().skip(1) {
                    b = b.node(u.clone());
                }
            }
            return match b.build() {
                Ok(store) => Ok(Store::Redis(store)),
                Err(crate::store::BuildError::Config(e)) => Err(SetupError::Budget(e)),
                Err(crate::store::BuildError::Store(e)) => Err(SetupError::Store(e)),
            };
        }
        Ok(Store::Local(Budget::new(settings)?))
    }
}

/// The layer stack the setup lays over the inner client, outermost first: retry, admission,
/// Bedrock response handling.
pub type BedrockStack = Stack<
    BedrockResponseLayer,
    Stack<
        AdmissionLayer<Store<BedrockKey>, Bedrock, ThrottleObserver>,
        Stack<ThrottleRetryLayer<ResignHandBack, Bedrock>, Identity>,
    >,
>;

/// The SDK retry classifier of the setup: retries an attempt that left the queue before its
/// signature expired (it is re-signed and keeps its place), forbids every other retry (the
/// stack has made them already).
#[derive(Debug, Clone, Copy, Default)]
pub struct ResignOnly;

impl ClassifyRetry for ResignOnly {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        let Some(Err(error)) = ctx.output_or_error() else {
            return RetryAction::NoActionIndicated;
        };
        let left_queue = error
            .as_connector_error()
            .and_then(|e| std::error::Error::source(e))
            .is_some_and(|source| source.is::<LeftQueue>());
        if left_queue {
            RetryAction::retryable_error(ErrorKind::ThrottlingError)
        } else {
            RetryAction::RetryForbidden
        }
    }

    fn name(&self) -> &'static str {
        "bedrock-throttle: re-sign only"
    }

    fn priority(&self) -> RetryClassifierPriority {
        // Last, so that its verdict stands over the SDK's own classifiers.
        RetryClassifierPriority::run_after(RetryClassifierPriority::transient_error_classifier())
    }
}

/// The SDK's own hyper 1 HTTPS client (rustls with ring), which also speaks plain `http://`.
pub fn default_https_client() -> SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// A configured throttle for one Bedrock client: the layered HTTP client, the SDK retry
/// configuration that goes with it, and the budget (for inspection). Clones share the budget:
/// configure every client of one quota with the same throttle.
#[derive(Debug, Clone)]
pub struct BedrockThrottle {
    http_client: SharedHttpClient,
    retry_config: RetryConfig,
    retry_partition: RetryPartition,
    store: Store<BedrockKey>,
    pub(super) observer: ThrottleObserver,
    pub(super) applied: Option<Arc<AppliedQuotas>>,
    pub(super) bedrock: Bedrock,
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
    /// [`sdk_max_attempts`](BedrockThrottleBuilder::sdk_max_attempts) attempts, used only to
    /// re-sign ([`ResignOnly`]).
    pub fn retry_config(&self) -> RetryConfig {
        self.retry_config.clone()
    }

    /// Sets the HTTP client, the retry configuration, a retry partition of its own (with a
    /// retry quota that never runs out) and the [`ResignOnly`] classifier on a Bedrock Runtime
    /// config builder.
    pub fn configure(
        &self,
        builder: aws_sdk_bedrockruntime::config::Builder,
    ) -> aws_sdk_bedrockruntime::config::Builder {
        builder
            .http_client(self.http_client())
            .retry_config(self.retry_config())
            .retry_partition(self.retry_partition.clone())
            .retry_classifier(ResignOnly)
    }

    /// The in-process budget of every model's quota (shared by every attempt of every clone).
    /// With a [shared store](BedrockThrottleBuilder::redis), the local share it falls back on
    /// during an outage; the fleet's ledger is in [`store`](Self::store).
    pub fn budget(&self) -> &Budget<BedrockKey> {
        match &self.store {
            Store::Local(budget) => budget,
            #[cfg(feature = "redis")]
            Store::Redis(redis) => redis.local_share(),
        }
    }

    /// The store of the stack: the in-process budget, or the Redis store shared by a fleet.
    pub fn store(&self) -> &Store<BedrockKey> {
        &self.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(feature = "redis")]
    use crate::budget::Fairness;

    use crate::budget::tests::orders;

    type Setter = Box<dyn Fn(BedrockThrottleBuilder) -> BedrockThrottleBuilder>;

    /// Applies `setters` in every order; every order must give the same builder, and builds
    /// (or fails) the same way.
    fn same_in_every_order(setters: &[Setter]) -> Vec<String> {
        let mut seen = Vec::new();
        for order in orders(setters.len()) {
            let builder = order
                .iter()
                .fold(BedrockThrottle::builder(), |b, &i| setters[i](b));
            let state = format!("{builder:?}");
            let built = match builder.build() {
                Ok(throttle) => format!("{:?}", throttle.store()),
                Err(e) => format!("error: {e}"),
            };
            seen.push(format!("{state}\n{built}"));
        }
        assert!(seen.len() > 1);
        assert!(
            seen.iter().all(|s| *s == seen[0]),
            "the order of the setters changed the result:\n{}\nvs\n{}",
            seen[0],
            seen.iter().find(|s| **s != seen[0]).unwrap_or(&seen[0])
        );
        seen
    }

    /// Issue 16: no setter of the setup depends on another's order (the outage mode set
    /// before the store was once dropped).
    #[test]
    fn the_setters_do_not_depend_on_their_order() {
        let setters: Vec<Setter> = vec![
            Box::new(|b| {
                b.settings(
                    Settings::new()
                        .window(Duration::from_secs(10))
                        .max_wait(Duration::from_secs(20))
                        .quota(Quota::tokens(5_000)),
                )
            }),
            Box::new(|b| b.quota("m", Quota::tokens(1_000))),
            Box::new(|b| b.max_attempts(NonZeroU32::MIN)),
            Box::new(|b| b.report_windows(7)),
        ];
        same_in_every_order(&setters);
    }

    #[cfg(feature = "redis")]
    #[test]
    fn the_shared_store_setters_do_not_depend_on_their_order() {
        use crate::store::Outage;
        let setters: Vec<Setter> = vec![
            Box::new(|b| b.settings(Settings::new().window(Duration::from_secs(10)))),
            Box::new(|b| b.redis("redis://127.0.0.1:1")),
            Box::new(|b| b.redis_outage(Outage::LocalShare(0.5))),
            Box::new(|b| b.quota("m", Quota::tokens(1_000))),
        ];
        let seen = same_in_every_order(&setters);
        assert!(seen[0].contains("LocalShare(0.5)"), "{}", seen[0]);
        // A setting the shared store does not implement is refused whatever the order.
        let setters: Vec<Setter> = vec![
            Box::new(|b| b.settings(Settings::new().tokens(10).fairness(Fairness::new()))),
            Box::new(|b| b.redis("redis://127.0.0.1:1")),
            Box::new(|b| b.redis_outage(Outage::FailOpen)),
        ];
        let seen = same_in_every_order(&setters);
        assert!(
            seen[0].contains("does not implement `fairness`"),
            "{}",
            seen[0]
        );
    }
}
