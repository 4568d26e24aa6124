//! A load driver shared by the quickstart and the goodput benchmark: a reproducible mix of
//! Converse calls sent through a real `aws_sdk_bedrockruntime::Client`, with per-call outcomes,
//! wire-level attempt counting and the figures both programs print.
//!
//! It is example code, not part of the library API.

#![allow(dead_code)]

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::error::ProvideErrorMetadata;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, InferenceConfiguration, Message,
};
use aws_smithy_runtime_api::client::http::{HttpConnectorFuture, SharedHttpClient};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use bedrock_throttle::sdk::{ConnectorService, LayeredHttpClient};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tower::{Layer, Service};

/// One call of the workload.
#[derive(Debug, Clone)]
pub struct Call {
    /// When to send it, from the start of the run.
    pub at: Duration,
    /// The user prompt.
    pub prompt: String,
    /// `inferenceConfig.maxTokens`.
    pub max_tokens: i32,
}

/// A reproducible mix of prompt sizes and `max_tokens` (xorshift from `seed`): prompts of
/// 300 to 3,000 characters (about 75 to 750 tokens), `max_tokens` of 256, 512 or 1,024.
pub fn mixed_calls(seed: u64, count: usize, spread: Duration) -> Vec<Call> {
    let mut rng = fastrand::Rng::with_seed(seed);
    const WORDS: &[&str] = &[
        "quota", "token", "bedrock", "window", "claude", "stream", "budget", "retry", "latency",
        "region", "model", "throttle", "request", "settle", "reserve", "burst",
    ];
    (0..count)
        .map(|i| {
            let chars = rng.usize(300..=3_000);
            let mut prompt = String::with_capacity(chars + 16);
            prompt.push_str(&format!("Request {i}: summarise "));
            while prompt.len() < chars {
                prompt.push_str(WORDS[rng.usize(..WORDS.len())]);
                prompt.push(' ');
            }
            let at = if count <= 1 {
                Duration::ZERO
            } else {
                spread.mul_f64(i as f64 / count as f64)
            };
            Call {
                at,
                prompt,
                max_tokens: [256, 512, 1024][rng.usize(..3)],
            }
        })
        .collect()
}

/// What became of one call.
#[derive(Debug, Clone)]
pub struct CallOutcome {
    /// When it was sent, from the start of the run.
    pub sent: Duration,
    /// When it ended, from the start of the run.
    pub ended: Duration,
    /// `Ok((input tokens, output tokens))` or `Err(error code or kind)`.
    pub result: Result<(u64, u64), String>,
}

/// Sends every call through `client` at its time and waits for them all.
pub async fn run(client: &Client, model: &str, calls: &[Call]) -> Vec<CallOutcome> {
    run_split(std::slice::from_ref(client), model, calls).await
}

/// Sends call `i` through `clients[i % clients.len()]` at its time (one clock for all) and
/// waits for them all: several client instances sharing one workload.
///
/// # Panics
///
/// If `clients` is empty.
pub async fn run_split(clients: &[Client], model: &str, calls: &[Call]) -> Vec<CallOutcome> {
    assert!(!clients.is_empty(), "run_split needs at least one client");
    let start = tokio::time::Instant::now();
    let tasks: Vec<_> = calls
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, call)| {
            let client = clients[i % clients.len()].clone();
            let model = model.to_owned();
            tokio::spawn(async move {
                tokio::time::sleep_until(start + call.at).await;
                let sent = start.elapsed();
                let result = converse(&client, &model, &call).await;
                CallOutcome {
                    sent,
                    ended: start.elapsed(),
                    result,
                }
            })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        match task.await {
            Ok(outcome) => outcomes.push(outcome),
            Err(e) => outcomes.push(CallOutcome {
                sent: Duration::ZERO,
                ended: start.elapsed(),
                result: Err(format!("task failed: {e}")),
            }),
        }
    }
    outcomes
}

async fn converse(client: &Client, model: &str, call: &Call) -> Result<(u64, u64), String> {
    let message = Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text(call.prompt.clone()))
        .build()
        .map_err(|e| e.to_string())?;
    let output = client
        .converse()
        .model_id(model)
        .messages(message)
        .inference_config(
            InferenceConfiguration::builder()
                .max_tokens(call.max_tokens)
                .build(),
        )
        .send()
        .await
        .map_err(|e| match e.code() {
            Some(code) => code.to_owned(),
            None => match e.as_service_error() {
                Some(_) => "UnknownServiceError".to_owned(),
                None => sdk_error_kind(&e).to_string(),
            },
        })?;
    let usage = output.usage().ok_or("response without usage")?;
    Ok((
        usage.input_tokens().max(0) as u64,
        usage.output_tokens().max(0) as u64,
    ))
}

fn sdk_error_kind<E, R>(e: &aws_sdk_bedrockruntime::error::SdkError<E, R>) -> &'static str {
    use aws_sdk_bedrockruntime::error::SdkError;
    match e {
        SdkError::ConstructionFailure(_) => "ConstructionFailure",
        SdkError::TimeoutError(_) => "Timeout",
        SdkError::DispatchFailure(f)
            if f.as_other() == Some(aws_smithy_types::retry::ErrorKind::ThrottlingError) =>
        {
            "DispatchFailure(throttling)"
        }
        SdkError::DispatchFailure(f) => {
            if std::env::var_os("QUICKSTART_DEBUG").is_some() {
                eprintln!("dispatch failure: {:?}", f.as_connector_error());
            }
            "DispatchFailure"
        }
        SdkError::ResponseError(_) => "ResponseError",
        _ => "SdkError",
    }
}

/// Wire-level counts: every attempt that reached the transport, and those answered 429.
#[derive(Debug, Default)]
pub struct WireCounts {
    attempts: AtomicU64,
    throttled: AtomicU64,
}

impl WireCounts {
    /// Attempts sent so far.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }
    /// Attempts answered with HTTP 429 so far.
    pub fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }
}

/// An HTTP client that counts attempts on the wire, around `inner`.
pub fn counting_client(inner: SharedHttpClient) -> (SharedHttpClient, Arc<WireCounts>) {
    let counts = Arc::new(WireCounts::default());
    let layer = CountLayer(Arc::clone(&counts));
    (
        SharedHttpClient::new(LayeredHttpClient::new(inner, layer)),
        counts,
    )
}

#[derive(Debug, Clone)]
struct CountLayer(Arc<WireCounts>);

impl Layer<ConnectorService> for CountLayer {
    type Service = Count;
    fn layer(&self, inner: ConnectorService) -> Count {
        Count(inner, Arc::clone(&self.0))
    }
}

#[derive(Debug, Clone)]
struct Count(ConnectorService, Arc<WireCounts>);

impl Service<HttpRequest> for Count {
    type Response = HttpResponse;
    type Error = ConnectorError;
    type Future = BoxFuture<'static, Result<HttpResponse, ConnectorError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectorError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequest) -> Self::Future {
        let counts = Arc::clone(&self.1);
        counts.attempts.fetch_add(1, Ordering::Relaxed);
        let future: HttpConnectorFuture = self.0.call(request);
        async move {
            let response = future.await?;
            if response.status().as_u16() == 429 {
                counts.throttled.fetch_add(1, Ordering::Relaxed);
            }
            Ok(response)
        }
        .boxed()
    }
}

/// The figures of one client's run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// Which client.
    pub client: String,
    /// Calls made.
    pub requests: usize,
    /// Calls that returned a response.
    pub succeeded: usize,
    /// Calls that returned an error.
    pub failed: usize,
    /// Attempts refused with a throttle (from the emulator's stats when embedded, else 429s
    /// counted on the wire).
    pub throttled_attempts: u64,
    /// Every attempt that reached the server.
    pub attempts: u64,
    /// Settled tokens per full window ÷ the quota (see [`utilization`]).
    pub quota_utilization: f64,
    /// Median call latency, ms.
    pub p50_ms: f64,
    /// 99th percentile call latency, ms.
    pub p99_ms: f64,
    /// Quota tokens settled by successful calls (input + output × burndown).
    pub settled_tokens: u64,
    /// From the first send to the last answer, s.
    pub elapsed_s: f64,
    /// Errors by code.
    pub errors: std::collections::BTreeMap<String, usize>,
}

/// Quota utilisation: quota tokens settled by successful calls per window, divided by the
/// quota, over the saturated part of the run. Calls are bucketed by the time they ended. The
/// first window is left out (it starts on an empty quota, and reservation-based admission lets
/// its settled tokens exceed the quota when output burns down 5x), and so is the last, partial
/// window (the run ends inside it). A run shorter than three windows is measured over all of
/// its full windows, or as one window if it has none.
pub fn utilization(outcomes: &[CallOutcome], burndown: u64, quota: u64, window: Duration) -> f64 {
    utilization_split(outcomes, 1, burndown, quota, window)
}

/// [`utilization`] for calls dealt round-robin between `instances` clients (call `i` went to
/// client `i % instances`, as [`run_split`] does): the run is saturated only while every client
/// still has calls to answer, so it is measured up to the moment the first client answered its
/// last call. (After that the remaining clients' demand is below the quota: their quotas are
/// static shares.)
pub fn utilization_split(
    outcomes: &[CallOutcome],
    instances: usize,
    burndown: u64,
    quota: u64,
    window: Duration,
) -> f64 {
    let instances = instances.max(1);
    let end = (0..instances)
        .filter_map(|k| {
            outcomes
                .iter()
                .skip(k)
                .step_by(instances)
                .map(|o| o.ended)
                .max()
        })
        .min()
        .unwrap_or_default();
    let full = (end.as_secs_f64() / window.as_secs_f64()).floor() as u32;
    let (from, to) = match full {
        0 => (Duration::ZERO, end),
        1 | 2 => (Duration::ZERO, window * full),
        _ => (window, window * full),
    };
    let windows = ((to - from).as_secs_f64() / window.as_secs_f64()).max(1.0);
    let settled: u64 = outcomes
        .iter()
        .filter(|o| o.ended > from && o.ended <= to)
        .filter_map(|o| o.result.as_ref().ok())
        .map(|(input, output)| input + output * burndown)
        .sum();
    settled as f64 / (quota as f64 * windows)
}

/// Summarises one run.
pub fn report(
    client: &str,
    outcomes: &[CallOutcome],
    throttled_attempts: u64,
    attempts: u64,
    burndown: u64,
    quota: u64,
    window: Duration,
) -> Report {
    report_split(
        client,
        outcomes,
        1,
        throttled_attempts,
        attempts,
        burndown,
        quota,
        window,
    )
}

/// Summarises one run of [`run_split`] over `instances` clients (utilisation as
/// [`utilization_split`]).
#[allow(clippy::too_many_arguments)]
pub fn report_split(
    client: &str,
    outcomes: &[CallOutcome],
    instances: usize,
    throttled_attempts: u64,
    attempts: u64,
    burndown: u64,
    quota: u64,
    window: Duration,
) -> Report {
    let mut latencies: Vec<f64> = outcomes
        .iter()
        .map(|o| (o.ended.saturating_sub(o.sent)).as_secs_f64() * 1e3)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let rank = ((p * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
        latencies[rank - 1]
    };
    let mut errors = std::collections::BTreeMap::new();
    for o in outcomes {
        if let Err(code) = &o.result {
            *errors.entry(code.clone()).or_insert(0) += 1;
        }
    }
    let succeeded = outcomes.iter().filter(|o| o.result.is_ok()).count();
    Report {
        client: client.to_owned(),
        requests: outcomes.len(),
        succeeded,
        failed: outcomes.len() - succeeded,
        throttled_attempts,
        attempts,
        quota_utilization: utilization_split(outcomes, instances, burndown, quota, window),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        settled_tokens: outcomes
            .iter()
            .filter_map(|o| o.result.as_ref().ok())
            .map(|(i, o)| i + o * burndown)
            .sum(),
        elapsed_s: outcomes
            .iter()
            .map(|o| o.ended)
            .max()
            .unwrap_or_default()
            .as_secs_f64(),
        errors,
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  {}", self.client)?;
        writeln!(
            f,
            "    requests {:>5}   succeeded {:>5}   failed {:>5}",
            self.requests, self.succeeded, self.failed
        )?;
        let pct = if self.attempts == 0 {
            0.0
        } else {
            100.0 * self.throttled_attempts as f64 / self.attempts as f64
        };
        writeln!(
            f,
            "    attempts {:>5}   throttled {:>5} ({pct:.1}%)",
            self.attempts, self.throttled_attempts
        )?;
        writeln!(
            f,
            "    quota used per window {:>5.1}%   settled tokens {}   elapsed {:.1}s",
            self.quota_utilization * 100.0,
            self.settled_tokens,
            self.elapsed_s
        )?;
        writeln!(
            f,
            "    latency p50 {:.0} ms   p99 {:.0} ms",
            self.p50_ms, self.p99_ms
        )?;
        if !self.errors.is_empty() {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(code, n)| format!("{code} ×{n}"))
                .collect();
            writeln!(f, "    errors: {}", list.join(", "))?;
        }
        Ok(())
    }
}

/// Waits until `at` (for pacing between clients).
pub async fn pause(d: Duration) {
    let until = Instant::now() + d;
    tokio::time::sleep_until(until.into()).await;
}
