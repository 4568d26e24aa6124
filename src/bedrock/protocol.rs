//! [`Bedrock`]: all the protocol knowledge the layers need, in one cheap-to-clone value.

use std::sync::Arc;

use super::debt::OutputShare;
use super::error::{BedrockError, classify_error, retry_after};
use super::estimate::{Estimator, RequestEstimate};
use super::key::{
    BedrockKey, BedrockRequest, BodyBytes, Operation, percent_decode, region_from_host, split_path,
};
use super::model_table::ModelTableError;
use super::models::{ModelInfo, ModelTable};
use super::seen_cache::{SeenCache, SeenModel};
use super::settle::{Amount, Observer, Reservation, SettlingBody};
use super::stream::{BedrockResponseLayer, EVENT_STREAM_CONTENT_TYPE};
use super::usage::Usage;
use crate::admit::{Plan, Protocol};
use crate::budget::{Class, Permit};
use crate::classify::{Classification, Classify, CloneRequest};

/// What the settlement of one Bedrock attempt needs from its plan: the operation, the model's
/// output burndown and the max output tokens the reservation included (from which it tells
/// Bedrock's own reservation from this crate's conservative one), and where the model's share of
/// output is learned (see [`Plan::expected_debt`]).
#[derive(Debug, Clone)]
pub struct Memo {
    operation: Operation,
    burndown: u64,
    max_output: u64,
    share: Option<Arc<OutputShare>>,
}

/// Two memos are equal when they settle alike (the learning record is not compared).
impl PartialEq for Memo {
    fn eq(&self, other: &Self) -> bool {
        (self.operation, self.burndown, self.max_output)
            == (other.operation, other.burndown, other.max_output)
    }
}

impl Eq for Memo {}

impl Memo {
    /// The memo of an attempt of `operation` on a model of output `burndown` that reserved
    /// `max_output` output tokens.
    pub fn new(operation: Operation, burndown: u64, max_output: u64) -> Self {
        Memo {
            operation,
            burndown,
            max_output,
            share: None,
        }
    }

    fn learning(mut self, share: Option<Arc<OutputShare>>) -> Self {
        self.share = share;
        self
    }
    /// The operation.
    pub fn operation(&self) -> Operation {
        self.operation
    }
    /// The output burndown of the request's model.
    pub fn burndown(&self) -> u64 {
        self.burndown
    }
    /// The max output tokens the reservation included.
    pub fn max_output(&self) -> u64 {
        self.max_output
    }
}

/// When the debt of a call in flight (what it will settle above its reservation: Bedrock
/// reserves `input + max_tokens` when a call starts and books `input + output × burndown` when it
/// ends) counts against later admissions, before the call's usage is read. See
/// [`Bedrock::with_debt_in_flight`].
///
/// Between the end of a call on the server and the reading of its usage by the client, the
/// server is already short of the call's debt; an admission in between can be throttled. With a
/// burndown of 10x or 15x that debt is large.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DebtInFlight {
    /// Not counted: a call's debt counts once its usage is read (before this setting existed).
    Off,
    /// From the response (the default): a JSON answer counts its expected debt (from the
    /// model's learned share of output, [`Bedrock::output_share`]) from its response head,
    /// which the server sends once it has generated, and booked, the whole answer; a stream
    /// counts the debt it has run up above its reservation as its output arrives. It closes the
    /// gap without holding back admissions while the server still has the room.
    #[default]
    FromResponse,
    /// From admission: each call counts its expected debt for its whole flight. The most
    /// cautious: it holds back admissions the server would still accept while calls generate
    /// (more so the longer calls last against the window), for servers that book debt as the
    /// output is generated.
    FromAdmission,
}

/// Bedrock Runtime protocol knowledge for the layers: quota keys, token estimates, settlement
/// and classification, for `http::Request`/`http::Response` and (feature `sdk`) the AWS SDK's
/// `HttpRequest`/`HttpResponse`.
///
/// Cheap to clone (one `Arc`); built with consuming setters:
///
/// ```
/// use bedrock_throttle::bedrock::Bedrock;
/// use bedrock_throttle::bedrock::{ModelFamily, ModelInfo, ModelTable};
/// use bytes::Bytes;
///
/// let profile = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc";
/// let bedrock = Bedrock::new()
///     .with_region("eu-west-1") // for custom endpoints (an emulator on 127.0.0.1)
///     .with_models(ModelTable::new().with_model(profile, ModelInfo::new(ModelFamily::AnthropicClaude, 64_000, 5))?);
///
/// let request = http::Request::post("http://127.0.0.1:8080/model/amazon.nova-lite-v1%3A0/converse")
///     .body(Bytes::from_static(br#"{"messages":[{"role":"user","content":[{"text":"Hi"}]}],"inferenceConfig":{"maxTokens":100}}"#))
///     .unwrap();
/// let plan = bedrock.plan_of(&request);
/// assert_eq!(plan.key.to_string(), "eu-west-1/amazon.nova-lite-v1:0");
/// assert_eq!(plan.tokens, 8 + 1 + 100);
/// # Ok::<(), bedrock_throttle::bedrock::ModelTableError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Bedrock {
    inner: Arc<Config>,
}

#[derive(Debug, Clone)]
struct Config {
    region: Arc<str>,
    no_model: Arc<str>,
    models: ModelTable,
    estimator: Estimator,
    /// Derived from the fields above: model ids by encoded path segment, regions by host.
    /// Cleared by every setter.
    models_seen: SeenCache<SeenModel>,
    /// Model ids read from OpenAI-compatible bodies (not percent-encoded: a cache of its own).
    body_models_seen: SeenCache<SeenModel>,
    regions_seen: SeenCache<Arc<str>>,
    /// The share of `max_tokens` each model's calls produce, learned from settlements (see
    /// [`Plan::expected_debt`]): shared by the clones of one configuration.
    output_shares: SeenCache<Arc<OutputShare>>,
    /// When the debt of calls in flight counts (from the response by default).
    debt_in_flight: DebtInFlight,
    /// Fair shares: where a request's tenant and lane come from (see [`Bedrock::tenant_header`]).
    classes: ClassSource,
    /// The account whose account-and-region scope every request is also charged to.
    account: Option<Arc<str>>,
}

/// Where the class of a Bedrock request comes from. All off by default: no class, nothing read.
#[derive(Debug, Clone, Default)]
struct ClassSource {
    tenant_header: Option<Arc<str>>,
    lane_header: Option<Arc<str>>,
    service_tier: bool,
}

impl ClassSource {
    fn is_off(&self) -> bool {
        self.tenant_header.is_none() && self.lane_header.is_none() && !self.service_tier
    }
}

/// The value of the body's top-level-looking `"serviceTier"` field, as a string
/// (`"serviceTier": "flex"`) or an object with a type (`"serviceTier": {"type": "flex"}`), if it
/// is one of Bedrock's tiers. A byte search, not a parse: the key inside a JSON string would be
/// escaped (`\"serviceTier\"`), so it does not match.
fn service_tier(body: &[u8]) -> Option<&'static str> {
    let at = memchr::memmem::find(body, b"\"serviceTier\"")? + b"\"serviceTier\"".len();
    let rest = &body[at..];
    let skip = |b: &[u8], i: usize| {
        i + b[i..]
            .iter()
            .take_while(|c| c.is_ascii_whitespace())
            .count()
    };
    let mut i = skip(rest, 0);
    if rest.get(i) != Some(&b':') {
        return None;
    }
    i = skip(rest, i + 1);
    if rest.get(i) == Some(&b'{') {
        let inner = &rest[i..];
        let t = memchr::memmem::find(inner, b"\"type\"")? + b"\"type\"".len();
        let mut j = skip(inner, t);
        if inner.get(j) != Some(&b':') {
            return None;
        }
        j = skip(inner, j + 1);
        return tier_name(&inner[j..]);
    }
    tier_name(&rest[i..])
}

/// Warns once (per process) about a `serviceTier` that is not one of Bedrock's four.
fn warn_unknown_tier(body: &[u8]) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if memchr::memmem::find(body, b"\"serviceTier\"").is_some()
        && !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        tracing::warn!(
            "a request's serviceTier is not priority, default, flex or reserved: it goes to the \
             default lane (warned once)"
        );
    }
}

fn tier_name(value: &[u8]) -> Option<&'static str> {
    ["priority", "default", "flex", "reserved"]
        .into_iter()
        .find(|t| {
            value.len() > t.len() + 1
                && value[0] == b'"'
                && &value[1..=t.len()] == t.as_bytes()
                && value[t.len() + 1] == b'"'
        })
}

impl Default for Bedrock {
    fn default() -> Self {
        Self {
            inner: Arc::new(Config {
                region: Arc::from("us-east-1"),
                no_model: Arc::from(""),
                models: ModelTable::default(),
                estimator: Estimator::default(),
                models_seen: SeenCache::default(),
                body_models_seen: SeenCache::default(),
                regions_seen: SeenCache::default(),
                output_shares: SeenCache::default(),
                debt_in_flight: DebtInFlight::default(),
                classes: ClassSource::default(),
                account: None,
            }),
        }
    }
}

impl Bedrock {
    /// The built-in knowledge: default region `us-east-1`, the built-in model table, the default
    /// estimator.
    pub fn new() -> Self {
        Self::default()
    }

    fn config(&mut self) -> &mut Config {
        let config = Arc::make_mut(&mut self.inner);
        config.models_seen.clear();
        config.body_models_seen.clear();
        config.regions_seen.clear();
        config
    }

    /// The region of requests whose host does not name one (custom endpoints, emulators).
    pub fn with_region(mut self, region: impl Into<Arc<str>>) -> Self {
        self.config().region = region.into();
        self
    }

    /// The model table (family, maximum output, default max tokens, burndown per model
    /// pattern, id or ARN): the built-in one by default, or a newer one
    /// ([`ModelTable::from_file`]).
    pub fn with_models(mut self, models: ModelTable) -> Self {
        self.config().models = models;
        self
    }

    /// Overrides the output burndown of one model id or ARN (exact, decoded), or with `*` or
    /// `?` of every model a pattern matches ([`ModelTable::with_burndown`]).
    ///
    /// # Errors
    ///
    /// [`ModelTableError`]: a burndown of 0, a bad pattern, a pattern that matches no row.
    pub fn with_burndown(
        mut self,
        id_or_pattern: &str,
        burndown: u64,
    ) -> Result<Self, ModelTableError> {
        let models = self
            .inner
            .models
            .clone()
            .with_burndown(id_or_pattern, burndown)?;
        self.config().models = models;
        Ok(self)
    }

    /// The input-token heuristic.
    pub fn with_estimator(mut self, config: Estimator) -> Self {
        self.config().estimator = config;
        self
    }

    /// Fair shares: the tenant of a request is the value of header `name` (for a budget with
    /// [`Fairness`](crate::budget::Fairness); requests without it are the anonymous tenant).
    /// Header values are trusted as given: map untrusted ones upstream, or bound them with
    /// [`Fairness::max_tenants`](crate::budget::Fairness::max_tenants).
    pub fn tenant_header(mut self, name: impl Into<Arc<str>>) -> Self {
        self.config().classes.tenant_header = Some(name.into());
        self
    }

    /// Fair shares: the lane of a request is the value of header `name` (it wins over the
    /// service tier).
    pub fn lane_header(mut self, name: impl Into<Arc<str>>) -> Self {
        self.config().classes.lane_header = Some(name.into());
        self
    }

    /// Fair shares: a request's lane defaults to its body's `serviceTier` (`priority`,
    /// `default`, `flex`, `reserved`): configure lanes of those names
    /// ([`Lane`](crate::budget::Lane)); a tier without a lane goes to the default lane, and a
    /// tier name Bedrock does not have gets one `tracing` warning. The tier does not change the
    /// quota key: on-demand tiers share one quota, which is exactly what the lanes share.
    ///
    /// Assumption for `reserved`: reserved capacity has its own input and output
    /// tokens-per-minute and overflows to on-demand, but this crate does not key it apart (that
    /// needs the engine's scopes): a reserved call is charged to the model's on-demand key.
    /// That over-counts on-demand use (less throughput, never a throttle).
    pub fn service_tier_lanes(mut self) -> Self {
        self.config().classes.service_tier = true;
        self
    }

    /// The class of a request from its headers and body, as configured.
    fn class_of<'a>(&self, header: impl Fn(&str) -> Option<&'a str>, body: Option<&[u8]>) -> Class {
        let source = &self.inner.classes;
        if source.is_off() {
            return Class::default();
        }
        let mut class = Class::default();
        if let Some(tenant) = source.tenant_header.as_deref().and_then(&header) {
            class = class.with_tenant(tenant);
        }
        let lane = source.lane_header.as_deref().and_then(&header);
        if let Some(lane) = lane {
            class = class.with_lane(lane);
        } else if source.service_tier
            && let Some(body) = body
        {
            match service_tier(body) {
                Some(tier) => class = class.with_lane(tier),
                None => warn_unknown_tier(body),
            }
        }
        class
    }

    /// Charges every request that names a model to its account-and-region scope too
    /// ([`BedrockKey::account`] of the request's region and `account_id`), besides its model's
    /// key: the scope of the account's daily quota, shared by every model. The store must give
    /// that key a quota (the SDK setup's `account_daily_quota` does).
    pub fn with_account(mut self, account_id: impl Into<Arc<str>>) -> Self {
        self.config().account = Some(account_id.into());
        self
    }

    /// The account of [`with_account`](Self::with_account), if any.
    pub fn account(&self) -> Option<&str> {
        self.inner.account.as_deref()
    }

    /// The default region.
    pub fn region(&self) -> &str {
        &self.inner.region
    }

    /// The model table.
    pub fn models(&self) -> &ModelTable {
        &self.inner.models
    }

    /// The estimator configuration.
    pub fn estimator(&self) -> &Estimator {
        &self.inner.estimator
    }

    /// What the model table says of `model` (with one warning for a model it does not know:
    /// see [`ModelTable::lookup`]).
    pub fn model_info(&self, model: &str) -> ModelInfo {
        self.inner.models.lookup(model)
    }

    /// When a call's debt (what it settles above its reservation: Bedrock books
    /// `output × burndown` when the call ends) counts against later admissions before the call
    /// settles: see [`DebtInFlight`]. Default: [`DebtInFlight::FromResponse`].
    pub fn with_debt_in_flight(mut self, debt: DebtInFlight) -> Self {
        self.config().debt_in_flight = debt;
        self
    }

    /// The share of its `max_tokens` that `model`'s calls produce, as learned from their
    /// settlements through this `Bedrock` and its clones: the 95th percentile of
    /// `output / max_tokens` among its recent calls. `None` until 20 calls of a model whose
    /// burndown is above 1 have settled with a usage; until then each call in flight counts the
    /// worst case (its whole output at the burndown) as [expected debt](Plan::expected_debt).
    pub fn output_share(&self, model: &str) -> Option<f64> {
        self.inner.output_shares.get(model)?.quantile()
    }

    /// The output burndown of `model`.
    pub fn output_burndown(&self, model: &str) -> u64 {
        self.model_info(model).output_burndown
    }

    /// The quota key and operation of a request to `host` (if known) and `path`.
    pub fn target(&self, host: Option<&str>, path: &str) -> (BedrockKey, Operation) {
        let (key, operation, _) = self.target_and_model(host, path);
        (key, operation)
    }

    /// The key and operation, and what the model table says of the model (`None` for paths
    /// that name no model). Hosts and model ids already seen are answered from caches
    /// (`seen_cache`).
    fn target_and_model(
        &self,
        host: Option<&str>,
        path: &str,
    ) -> (BedrockKey, Operation, Option<ModelInfo>) {
        let region =
            match host {
                Some(host) => self.inner.regions_seen.get_or_insert_with(host, || {
                    match region_from_host(host) {
                        Some(region) if region != &*self.inner.region => Arc::from(region),
                        _ => self.inner.region.clone(),
                    }
                }),
                None => self.inner.region.clone(),
            };
        let (operation, encoded) = split_path(path);
        let (model, info) = match encoded {
            Some(encoded) => {
                let seen = self.inner.models_seen.get_or_insert_with(encoded, || {
                    let model: Arc<str> = Arc::from(percent_decode(encoded).as_ref());
                    let info = self.model_info(&model);
                    SeenModel { model, info }
                });
                (seen.model, Some(seen.info))
            }
            None => (self.inner.no_model.clone(), None),
        };
        (BedrockKey { region, model }, operation, info)
    }

    /// The reservation for a request of `operation` on `key` with `body` (`None` when it is not
    /// in memory).
    pub fn estimate(
        &self,
        key: &BedrockKey,
        operation: Operation,
        body: Option<&[u8]>,
    ) -> RequestEstimate {
        let info = self.model_info(key.model());
        self.inner.estimator.estimate(operation, info, body)
    }

    /// The plan of an attempt: key, tokens to reserve, the worst case if the usage never
    /// arrives (`input + burndown × max output`), and the memo for its settlement. The one
    /// parse of the request per attempt.
    fn plan_request<Req: BedrockRequest>(
        &self,
        request: &Req,
        body: Option<&[u8]>,
    ) -> Plan<BedrockKey, Memo> {
        let (mut key, operation, mut info) = self.target_and_model(request.host(), request.path());
        if operation.is_openai() {
            // The model is the body's `model` (OpenAI-compatible APIs).
            match body.map(super::openai::openai_model) {
                Some(Ok(model)) => {
                    let seen = self.inner.body_models_seen.get_or_insert_with(&model, || {
                        let info = self.model_info(&model);
                        SeenModel {
                            model: Arc::from(model.as_str()),
                            info,
                        }
                    });
                    key.model = seen.model;
                    info = Some(seen.info);
                }
                outcome => {
                    // No model: no model quota (the server refuses the body with a 400).
                    tracing::debug!(
                        error = ?outcome.map(|r| r.err()),
                        "an OpenAI-compatible request without a readable `model`: not charged"
                    );
                    return Plan::new(key, 0).with_memo(Memo::new(operation, 1, 0));
                }
            }
        }
        let info = info.unwrap_or_else(|| self.model_info(key.model()));
        let estimate = self.inner.estimator.estimate(operation, info, body);
        let burndown = info.output_burndown;
        let worst = estimate
            .input_tokens
            .saturating_add(estimate.max_output_tokens.saturating_mul(burndown));
        let account = match &self.inner.account {
            Some(account) if key.has_model() => {
                Some(BedrockKey::account(key.region.clone(), account))
            }
            _ => None,
        };
        // Debt in flight: what the call will most likely settle above its reservation.
        let debt = self.inner.debt_in_flight;
        let (share, expected_debt) =
            if debt != DebtInFlight::Off && burndown > 1 && estimate.max_output_tokens > 0 {
                let share = self
                    .inner
                    .output_shares
                    .get_or_insert_with(key.model(), || Arc::new(OutputShare::new()));
                let expected = match debt {
                    DebtInFlight::FromAdmission => {
                        share.expected_debt(estimate.max_output_tokens, burndown)
                    }
                    DebtInFlight::FromResponse | DebtInFlight::Off => 0,
                };
                (Some(share), expected)
            } else {
                (None, 0)
            };
        let plan = Plan::new(key, estimate.total())
            .with_if_unknown(worst)
            .with_expected_debt(expected_debt)
            .with_memo(Memo::new(operation, burndown, estimate.max_output_tokens).learning(share));
        match account {
            Some(account) => plan.with_scope(account),
            None => plan,
        }
    }

    /// The plan [`Protocol::plan`] makes for `request`, without marking it.
    pub fn plan_of<B: BodyBytes>(&self, request: &http::Request<B>) -> Plan<BedrockKey, Memo> {
        let body = request.body().body_bytes();
        let class = self.class_of(
            |name| request.headers().get(name).and_then(|v| v.to_str().ok()),
            body,
        );
        self.plan_request(request, body).with_class(class)
    }

    /// The layer that buffers error bodies and rewrites first-frame stream exceptions; it
    /// belongs innermost, under the admission layer.
    pub fn response_layer(&self) -> BedrockResponseLayer {
        BedrockResponseLayer::new()
    }

    /// Settles `reservation` from `response` with the plan's `memo`, now or when its body
    /// ends; [`Protocol::settle`] calls this with a [`Permit`]. Any other [`Reservation`]
    /// works, to observe settlements.
    pub fn settle_with<Res, R>(&self, response: Res, reservation: R, memo: Memo) -> Res::Output
    where
        Res: SettleResponse<R>,
        R: Reservation,
    {
        response.settle_response(self, reservation, memo)
    }

    fn settlement<'a>(
        &self,
        status: u16,
        header: impl Fn(&str) -> Option<&'a str>,
        memo: Memo,
    ) -> Settlement {
        if !(200..300).contains(&status) {
            // Bedrock rejects before it reserves; throttles are fed back by the classifier.
            return Settlement::Now(Amount::plain(0));
        }
        if !memo.operation.uses_token_quota() {
            return Settlement::Now(Amount::plain(0));
        }
        let reserved_output = Some(memo.max_output);
        let burndown = memo.burndown;
        if let Some(usage) = Usage::from_headers(&header) {
            if let Some(share) = &memo.share {
                share.observe(usage.output_tokens, memo.max_output);
            }
            return Settlement::Now(Amount::of_usage(&usage, burndown, reserved_output));
        }
        let observer =
            if header("content-type").is_some_and(|ct| ct.starts_with(EVENT_STREAM_CONTENT_TYPE)) {
                let bytes_per_token = u64::from(self.inner.estimator.bytes_per_token().get());
                Observer::events(bytes_per_token)
            } else {
                Observer::json()
            };
        // Debt in flight from the response: the answer is generated (a JSON body) or being
        // generated (a stream), and the server books its debt when it ends.
        let debt = match (&memo.share, self.inner.debt_in_flight) {
            (Some(share), DebtInFlight::FromResponse) => {
                Some(share.expected_debt(memo.max_output, burndown))
            }
            _ => None,
        };
        Settlement::Observe(Observed {
            observer,
            burndown,
            reserved_output,
            share: memo.share,
            debt,
        })
    }
}

/// How a response settles: now, or by watching its body.
enum Settlement {
    Now(Amount),
    Observe(Observed),
}

/// A body to watch until it ends, and what its settlement needs.
struct Observed {
    observer: Observer,
    burndown: u64,
    reserved_output: Option<u64>,
    share: Option<Arc<OutputShare>>,
    /// With debt in flight counted from the response: the expected debt of a JSON body.
    debt: Option<u64>,
}

impl Observed {
    fn body<B, R: Reservation>(self, body: B, reservation: R) -> SettlingBody<B, R> {
        let body = SettlingBody::observing(
            body,
            reservation,
            self.burndown,
            self.reserved_output,
            self.observer,
        )
        .learning(self.share);
        match self.debt {
            Some(expected) => body.counting_debt(expected),
            None => body,
        }
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A response type [`Bedrock::settle_with`] can settle from: `http::Response<B>` and (feature
/// `sdk`) the SDK's `HttpResponse`. Sealed.
pub trait SettleResponse<R: Reservation>: sealed::Sealed + Sized {
    /// The response handed on (its body wrapped when settlement must wait for it).
    type Output;
    /// Settles `reservation` from this response, with the plan's `memo`.
    fn settle_response(self, bedrock: &Bedrock, reservation: R, memo: Memo) -> Self::Output;
}

impl<B> sealed::Sealed for http::Response<B> {}

impl<B, R: Reservation> SettleResponse<R> for http::Response<B> {
    type Output = http::Response<SettlingBody<B, R>>;

    fn settle_response(self, bedrock: &Bedrock, reservation: R, memo: Memo) -> Self::Output {
        let settlement = bedrock.settlement(
            self.status().as_u16(),
            |name| self.headers().get(name).and_then(|v| v.to_str().ok()),
            memo,
        );
        match settlement {
            Settlement::Now(amount) => {
                amount.settle(reservation);
                self.map(SettlingBody::settled)
            }
            Settlement::Observe(observed) => self.map(|body| observed.body(body, reservation)),
        }
    }
}

fn classify_parts<'a>(
    status: u16,
    header: impl Fn(&str) -> Option<&'a str>,
    error: Option<&BedrockError>,
    body: Option<&[u8]>,
) -> Classification {
    if (200..300).contains(&status) {
        return Classification::success();
    }
    let parsed;
    let error = match error {
        Some(error) => error,
        None => {
            parsed = BedrockError::from_parts(header("x-amzn-errortype"), body.unwrap_or_default());
            &parsed
        }
    };
    Classification::new(classify_error(status, error)).with_retry_after(retry_after(
        header("x-amz-retry-after"),
        header("retry-after"),
    ))
}

/// Bedrock for `http` requests and responses: one plan per attempt from the request's URI and
/// in-memory body; settlement from the response with the plan's memo; classification as
/// [`Classify`] does (inner errors are transient).
impl<B, RB, E> Protocol<http::Request<B>, http::Response<RB>, E> for Bedrock
where
    B: BodyBytes,
{
    type Key = BedrockKey;
    type Memo = Memo;
    type Output = http::Response<SettlingBody<RB>>;

    fn plan(&self, request: &http::Request<B>) -> Plan<BedrockKey, Memo> {
        self.plan_of(request)
    }

    fn settle(&self, response: http::Response<RB>, permit: Permit, memo: Memo) -> Self::Output {
        self.settle_with(response, permit, memo)
    }

    fn classify(&self, result: Result<&http::Response<RB>, &E>) -> Classification {
        Classify::classify(self, result)
    }
}

impl<B: Clone> CloneRequest<http::Request<B>> for Bedrock {
    fn clone_request(&self, request: &http::Request<B>) -> Option<http::Request<B>> {
        Some(request.clone())
    }
}

/// Responses: from the status, `x-amzn-ErrorType`, retry-after headers and the
/// [`BedrockError`] extension ([`BedrockResponseLayer`] attaches it; without it only the status
/// and header count, so throttles are `Unknown`). Errors of the inner service are `Transient`.
impl<B, E> Classify<http::Response<B>, E> for Bedrock {
    fn classify(&self, result: Result<&http::Response<B>, &E>) -> Classification {
        match result {
            Ok(response) => classify_parts(
                response.status().as_u16(),
                |name| response.headers().get(name).and_then(|v| v.to_str().ok()),
                response.extensions().get::<BedrockError>(),
                None,
            ),
            Err(_) => Classification::transient(),
        }
    }
}

/// The classification of a response from its status, a header lookup (lower-case names) and its
/// error body in memory: what the [`Classify`] implementations compute when no
/// [`BedrockError`] extension is present.
///
/// ```
/// use bedrock_throttle::bedrock::classify_response_parts;
/// use bedrock_throttle::classify::ThrottleCause;
/// use std::time::Duration;
///
/// let c = classify_response_parts(
///     429,
///     |name| (name == "x-amz-retry-after").then_some("250"),
///     br#"{"__type":"ThrottlingException","message":"Too many requests, please wait before trying again."}"#,
/// );
/// assert_eq!(c.throttle_cause(), Some(ThrottleCause::Requests));
/// assert_eq!(c.retry_after, Some(Duration::from_millis(250)));
/// ```
pub fn classify_response_parts<'a>(
    status: u16,
    header: impl Fn(&str) -> Option<&'a str>,
    body: &[u8],
) -> Classification {
    classify_parts(status, header, None, Some(body))
}

#[cfg(feature = "sdk")]
mod sdk {
    use std::sync::Arc;

    use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
    use aws_smithy_runtime_api::client::result::ConnectorError;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::retry::ErrorKind;
    use bytes::Bytes;

    use super::{Bedrock, Memo, Settlement, classify_parts};
    use crate::BoxError;
    use crate::admit::LeaveBy;
    use crate::admit::{Plan, Protocol};
    use crate::bedrock::error::BedrockError;
    use crate::bedrock::key::BedrockKey;
    use crate::bedrock::settle::Reservation;
    use crate::budget::Permit;
    use crate::classify::{Classification, Classify, CloneRequest, ThrottleCause};

    /// The header the AWS SDK sends with the same value on every attempt of one operation.
    const INVOCATION_ID: &str = "amz-sdk-invocation-id";

    /// Bedrock for the AWS SDK's requests: the plan from the in-memory body
    /// (`SdkBody::bytes()`; a streaming body is estimated at the configured allowance plus the
    /// model's maximum output), the attempt's deadline from the signature
    /// ([`LeaveBy`], set by the SDK adapter from the signature's expiry) and its arrival from the
    /// `amz-sdk-invocation-id` header, so a re-signed attempt keeps its place in line.
    impl Protocol<HttpRequest, HttpResponse, ConnectorError> for Bedrock {
        type Key = BedrockKey;
        type Memo = Memo;
        type Output = HttpResponse;

        fn plan(&self, request: &HttpRequest) -> Plan<BedrockKey, Memo> {
            let leave_by = request.extension::<LeaveBy>().map(|d| d.0);
            let arrival = request.headers().get(INVOCATION_ID).map(Arc::from);
            let body = request.body().bytes();
            let class = self.class_of(|name| request.headers().get(name), body);
            self.plan_request(request, body)
                .with_leave_by(leave_by)
                .with_arrival(arrival)
                .with_class(class)
        }

        fn settle(&self, response: HttpResponse, permit: Permit, memo: Memo) -> HttpResponse {
            self.settle_with(response, permit, memo)
        }

        fn classify(&self, result: Result<&HttpResponse, &ConnectorError>) -> Classification {
            Classify::classify(self, result)
        }
    }

    /// `HttpRequest::try_clone`: in-memory bodies only (extensions are not copied).
    impl CloneRequest<HttpRequest> for Bedrock {
        fn clone_request(&self, request: &HttpRequest) -> Option<HttpRequest> {
            request.try_clone()
        }
    }

    impl super::sealed::Sealed for HttpResponse {}

    impl<R: Reservation + Sync> super::SettleResponse<R> for HttpResponse {
        type Output = HttpResponse;

        fn settle_response(
            mut self,
            bedrock: &Bedrock,
            reservation: R,
            memo: Memo,
        ) -> HttpResponse {
            let settlement = bedrock.settlement(
                self.status().as_u16(),
                |name| self.headers().get(name),
                memo,
            );
            match settlement {
                Settlement::Now(amount) => amount.settle(reservation),
                Settlement::Observe(mut observed) => match self.body().bytes() {
                    Some(bytes) => {
                        // Already in memory: settle now, leave the body as it is.
                        observed.observer.observe(&Bytes::copy_from_slice(bytes));
                        let unknown = reservation.if_unknown();
                        observed
                            .observer
                            .amount(unknown, observed.burndown, true, observed.reserved_output)
                            .settle(reservation);
                    }
                    None => {
                        let body = observed.body(self.take_body(), reservation);
                        *self.body_mut() = SdkBody::from_body_1_x(body);
                    }
                },
            }
            self
        }
    }

    /// The classification of a connector error, as the SDK would retry it: timeouts and I/O
    /// errors are transient, `other(_, Some(kind))` follows the kind (a throttling kind is a
    /// throttle of unknown cause), user errors and unclassified ones are fatal.
    pub fn classify_connector_error(error: &ConnectorError) -> Classification {
        if error.is_timeout() || error.is_io() {
            return Classification::transient();
        }
        match error.as_other() {
            Some(ErrorKind::ThrottlingError) => Classification::throttled(ThrottleCause::Unknown),
            Some(ErrorKind::TransientError | ErrorKind::ServerError) => Classification::transient(),
            _ => Classification::fatal(),
        }
    }

    fn classify_sdk_response(response: &HttpResponse) -> Classification {
        classify_parts(
            response.status().as_u16(),
            |name| response.headers().get(name),
            response.extension::<BedrockError>(),
            response.body().bytes(),
        )
    }

    impl Classify<HttpResponse, ConnectorError> for Bedrock {
        fn classify(&self, result: Result<&HttpResponse, &ConnectorError>) -> Classification {
            match result {
                Ok(response) => classify_sdk_response(response),
                Err(error) => classify_connector_error(error),
            }
        }
    }

    /// Errors: a [`ConnectorError`] as in [`classify_connector_error`]; the crate's own
    /// [`AdmissionError`](crate::budget::AdmissionError) is fatal (the limiter already decided
    /// the request cannot be admitted in time: retrying would only wait again), and so is
    /// [`LeftQueue`](crate::admit::LeftQueue) (the signature is about to expire: only a re-signed
    /// attempt can go on, which is the SDK's job); anything else is transient.
    impl Classify<HttpResponse, BoxError> for Bedrock {
        fn classify(&self, result: Result<&HttpResponse, &BoxError>) -> Classification {
            match result {
                Ok(response) => classify_sdk_response(response),
                Err(error) => {
                    if let Some(error) = error.downcast_ref::<ConnectorError>() {
                        classify_connector_error(error)
                    } else if error.is::<crate::budget::AdmissionError>()
                        || error.is::<crate::admit::LeftQueue>()
                    {
                        Classification::fatal()
                    } else {
                        Classification::transient()
                    }
                }
            }
        }
    }
}

#[cfg(feature = "sdk")]
pub use sdk::classify_connector_error;

#[cfg(test)]
mod class_tests {
    use super::{Bedrock, service_tier};

    fn request(body: &'static str) -> http::Request<&'static str> {
        http::Request::builder()
            .uri("https://bedrock-runtime.us-east-1.amazonaws.com/model/amazon.nova-lite-v1:0/converse")
            .header("x-tenant", "acme")
            .body(body)
            .unwrap()
    }

    #[test]
    fn the_service_tier_is_read_as_a_string_or_a_typed_object() {
        assert_eq!(service_tier(br#"{"serviceTier": "flex"}"#), Some("flex"));
        assert_eq!(
            service_tier(br#"{"a":1,"serviceTier" : { "type" : "priority" }}"#),
            Some("priority")
        );
        assert_eq!(service_tier(br#"{"serviceTier": "gold"}"#), None);
        // Inside a prompt the key is escaped: not a tier.
        assert_eq!(
            service_tier(br#"{"messages":[{"text":"\"serviceTier\": \"flex\""}]}"#),
            None
        );
    }

    #[test]
    fn the_class_comes_from_headers_and_the_tier_only_when_configured() {
        let body = r#"{"messages":[],"serviceTier":{"type":"flex"}}"#;
        let plain = Bedrock::new().plan_of(&request(body));
        assert!(plain.class.is_empty(), "nothing configured, nothing read");
        let bedrock = Bedrock::new()
            .tenant_header("x-tenant")
            .service_tier_lanes();
        let plan = bedrock.plan_of(&request(body));
        assert_eq!(plan.class.tenant_name(), Some("acme"));
        assert_eq!(plan.class.lane_name(), Some("flex"));
        let mut with_lane = request(body);
        with_lane
            .headers_mut()
            .insert("x-lane", http::HeaderValue::from_static("interactive"));
        let plan = bedrock.lane_header("x-lane").plan_of(&with_lane);
        assert_eq!(
            plan.class.lane_name(),
            Some("interactive"),
            "the header wins"
        );
    }
}
