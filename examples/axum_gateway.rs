//! An axum gateway that forwards chat requests to Bedrock through the SDK, sharing the model's
//! quota between tenants by weight on the axum side.
//!
//! ```text
//! cargo run --features emulator,metrics --example axum_gateway                         # demo: embedded emulator, three tenants
//! cargo run --features emulator,metrics --example axum_gateway -- --listen 127.0.0.1:3000   # serve; try:
//! curl -s localhost:3000/chat -H 'x-tenant: acme' -d '{"prompt":"Hello","max_tokens":200}'
//! curl -s localhost:3000/metrics   # the SDK side's admission metrics, Prometheus text
//! cargo test --features emulator,metrics --example axum_gateway   # its refusal path
//! ```
//!
//! **Three concepts of the crate**, and nothing else of it:
//! 1. **`BedrockThrottle`** (SDK side): the Bedrock client is configured by it, so the gateway
//!    as a whole stays inside the model's quota and retries what Bedrock throttles; it also
//!    says what a response cost the quota (`quota_tokens`: usage with the output burndown),
//!    and records the metrics served at `/metrics`.
//! 2. **`Budget`** (axum side): the model's tokens per window, shared fairly between tenants
//!    (`Fairness`): when the quota is saturated the backlogged tenants share its tokens in
//!    proportion to their weights (`gold` 2, everyone else 1), so one noisy tenant cannot
//!    starve the others and nobody's idle share is wasted.
//! 3. **`TokenBudgetLayer`** on the route: the tenant from the `x-tenant` header, the estimate
//!    from the body (the prompt's size plus `max_tokens`), the settlement from the
//!    `x-quota-tokens` header the handler sets; a refusal is answered by the layer itself
//!    (`respond_to_refusals`: 429 with `Retry-After`, or 413 for a request larger than the
//!    whole quota), so the route needs no `HandleErrorLayer` and no downcast.
//!
//! By default it starts the emulator in-process and sends a burst from three tenants through
//! the router, printing what each got. With `--listen ADDR` it serves until Ctrl-C instead.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, InferenceConfiguration, Message,
};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bedrock_throttle::BoxError;
use bedrock_throttle::admit::TokenBudgetLayer;
use bedrock_throttle::bedrock::Bedrock;
use bedrock_throttle::budget::{Budget, Class, Fairness, Quota, Settings};
use bedrock_throttle::emulator::{Emulator, OutputLength};
use bedrock_throttle::sdk::BedrockThrottle;
use serde::Deserialize;
use tower::ServiceExt;

const MODEL: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";
const WINDOW: Duration = Duration::from_secs(2);
/// The model's quota, shared by the tenants.
const MODEL_TPM: u64 = 40_000;
/// The largest chat body the gateway reads.
const MAX_BODY: usize = 1 << 20;

#[derive(Clone)]
struct App {
    client: Client,
    throttle: BedrockThrottle,
}

#[derive(Deserialize)]
struct Chat {
    prompt: String,
    max_tokens: u32,
}

/// The request body, read once by [`buffer_body`] so the token estimate can see it.
#[derive(Clone)]
struct ChatBytes(Bytes);

/// Reads the body into memory (bounded) and keeps a copy as an extension.
async fn buffer_body(request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => bytes,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response(),
    };
    parts.extensions.insert(ChatBytes(bytes.clone()));
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// The tenant of a request, from the `x-tenant` header. The budget tracks at most
/// `max_tenants` at a time, so made-up tenant names cannot grow its memory.
fn tenant(request: &Request) -> Class {
    match request
        .headers()
        .get("x-tenant")
        .and_then(|v| v.to_str().ok())
    {
        Some(tenant) => Class::tenant(tenant),
        None => Class::default(),
    }
}

/// The reservation of a chat request, the way Bedrock reserves: the prompt's bytes / 3 (a
/// conservative token count) plus `max_tokens` at 1x. Settlement corrects it afterwards.
fn estimate(request: &Request) -> u64 {
    let Some(ChatBytes(bytes)) = request.extensions().get::<ChatBytes>() else {
        return MODEL_TPM; // not buffered: assume the worst
    };
    match serde_json::from_slice::<Chat>(bytes) {
        Ok(chat) => chat.prompt.len().div_ceil(3) as u64 + u64::from(chat.max_tokens),
        Err(_) => 1, // refused by the handler, costs nothing upstream
    }
}

/// The real usage, as the handler reports it.
fn settle(response: &Response) -> Option<u64> {
    response
        .headers()
        .get("x-quota-tokens")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

async fn chat(State(app): State<App>, body: Bytes) -> Response {
    let chat: Chat = match serde_json::from_slice(&body) {
        Ok(chat) => chat,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("bad chat request: {e}")).into_response();
        }
    };
    let message = Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text(chat.prompt))
        .build()
        .expect("role and content are set");
    let max_tokens = i32::try_from(chat.max_tokens).unwrap_or(i32::MAX);
    match app
        .client
        .converse()
        .model_id(MODEL)
        .messages(message)
        .inference_config(
            InferenceConfiguration::builder()
                .max_tokens(max_tokens)
                .build(),
        )
        .send()
        .await
    {
        Ok(out) => {
            let Some(usage) = out.usage() else {
                return (StatusCode::BAD_GATEWAY, "bedrock: no usage").into_response();
            };
            let text = out
                .output()
                .and_then(|o| o.as_message().ok())
                .and_then(|m| m.content().first())
                .and_then(|c| c.as_text().ok())
                .map(|t| t.chars().take(40).collect::<String>())
                .unwrap_or_default();
            let mut headers = HeaderMap::new();
            // What the call cost the quota, output burndown included: the tenant's settlement.
            headers.insert(
                "x-quota-tokens",
                app.throttle.quota_tokens(MODEL, usage).into(),
            );
            (
                headers,
                format!(
                    "{{\"input_tokens\":{},\"output_tokens\":{},\"text\":{text:?}}}",
                    usage.input_tokens(),
                    usage.output_tokens()
                ),
            )
                .into_response()
        }
        Err(e) => {
            use aws_sdk_bedrockruntime::error::ProvideErrorMetadata;
            let status = match e.code() {
                Some("ThrottlingException") => StatusCode::TOO_MANY_REQUESTS,
                Some("ValidationException") => StatusCode::BAD_REQUEST,
                _ => StatusCode::BAD_GATEWAY,
            };
            (status, format!("bedrock: {}", e.code().unwrap_or("error"))).into_response()
        }
    }
}

/// The model's quota on the axum side, shared fairly between tenants.
fn tenant_budget() -> Result<Budget<&'static str>, BoxError> {
    Ok(Budget::builder()
        .tokens(MODEL_TPM)
        .window(WINDOW)
        .max_wait(WINDOW * 20)
        .fairness(
            Fairness::new()
                .weight("gold", 2.0)
                .default_weight(1.0)
                .max_tenants(1_000),
        )
        .build()?)
}

fn router(client: Client, throttle: BedrockThrottle, budget: Budget<&'static str>) -> Router {
    // One key (the gateway serves one model), its tenants by the `x-tenant` header; a refusal
    // is a 429 (or 413) response with `Retry-After`.
    let tenants = TokenBudgetLayer::new(budget, |_: &Request| MODEL, estimate, settle)
        .class(tenant)
        .respond_to_refusals();
    Router::new()
        .route("/chat", post(chat))
        .route_layer(tenants)
        .route_layer(middleware::from_fn(buffer_body))
        .with_state(App { client, throttle })
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let listen = std::env::args().skip_while(|a| a != "--listen").nth(1);
    let emulator = Emulator::builder()
        .model_quota(MODEL, Quota::tokens(MODEL_TPM))
        .window(WINDOW)
        .output_length(OutputLength::Uniform { min: 20, max: 200 })
        .start()
        .await?;
    // Metrics: the application picks the exporter; histograms get explicit buckets.
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(bedrock_throttle::metrics::WAIT_BUCKETS)?
        .install_recorder()?;
    let throttle = BedrockThrottle::builder()
        .bedrock(Bedrock::new().with_region("us-east-1"))
        .quota(MODEL, Quota::tokens(MODEL_TPM))
        .settings(Settings::new().window(WINDOW))
        .metrics(true)
        .build()?;
    let config = throttle.configure(
        aws_sdk_bedrockruntime::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("AK", "SK", None, None, "gateway"))
            .endpoint_url(emulator.endpoint_url()),
    );
    let client = Client::from_conf(config.build());
    let app = router(client, throttle, tenant_budget()?).route(
        "/metrics",
        axum::routing::get(move || std::future::ready(prometheus.render())),
    );

    if let Some(addr) = listen {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        println!(
            "gateway on http://{} (emulated Bedrock at {})",
            listener.local_addr()?,
            emulator.endpoint_url()
        );
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        return Ok(());
    }

    // Demo: "big" and "gold" each send far more than the quota at once, "small" a little. While
    // both floods are backlogged, gold gets about twice big's tokens; small is served within a
    // few windows instead of behind both floods.
    let app = Arc::new(app);
    let mut tasks = Vec::new();
    for (tenant, count, prompt_len) in [("big", 60, 2_000), ("gold", 60, 2_000), ("small", 6, 400)]
    {
        for i in 0..count {
            let app = Arc::clone(&app);
            tasks.push(tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                let body = format!(
                    "{{\"prompt\":\"{}\",\"max_tokens\":256}}",
                    "x".repeat(prompt_len + i)
                );
                let request = Request::post("/chat")
                    .header("x-tenant", tenant)
                    .body(Body::from(body))
                    .expect("valid request");
                let response = (*app).clone().oneshot(request).await.expect("infallible");
                let tokens: u64 = response
                    .headers()
                    .get("x-quota-tokens")
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(0);
                (tenant, response.status(), started.elapsed(), tokens)
            }));
        }
    }
    // Per tenant and status: calls, median and slowest answer, quota tokens in all and in the
    // first two windows after the first (when the floods are both backlogged, and the first
    // window, admitted before anyone waited, is behind).
    const FROM: Duration = WINDOW;
    const TO: Duration = Duration::from_secs(6);
    let mut summary = std::collections::BTreeMap::<(&str, u16), (Vec<Duration>, u64, u64)>::new();
    for task in tasks {
        let (tenant, status, took, tokens) = task.await?;
        let entry = summary.entry((tenant, status.as_u16())).or_default();
        entry.0.push(took);
        entry.1 += tokens;
        if (FROM..TO).contains(&took) {
            entry.2 += tokens;
        }
    }
    println!(
        "tenant  status  calls  median  slowest  quota tokens  of them answered {}-{} s",
        FROM.as_secs(),
        TO.as_secs()
    );
    for ((tenant, status), (mut took, tokens, contended)) in summary {
        took.sort();
        println!(
            "{tenant:<7} {status:<7} {:<6} {:<7} {:<8} {tokens:<13} {contended}",
            took.len(),
            format!("{:.1}s", took[took.len() / 2].as_secs_f64()),
            format!("{:.1}s", took[took.len() - 1].as_secs_f64()),
        );
    }
    let stats = emulator.stats().model(MODEL).counters;
    println!(
        "Bedrock (emulated) saw {} requests, throttled {}",
        stats.requests,
        stats.throttled_tokens + stats.throttled_requests
    );
    let scrape = (*app)
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty())?)
        .await?;
    let text = axum::body::to_bytes(scrape.into_body(), MAX_BODY).await?;
    let admitted = String::from_utf8_lossy(&text)
        .lines()
        .filter(|l| l.starts_with("bedrock_throttle_admissions{"))
        .map(str::to_owned)
        .collect::<Vec<_>>();
    println!("GET /metrics (admissions):\n  {}", admitted.join("\n  "));
    emulator.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tenant that finds the quota spent beyond its longest wait gets a 429 with
    /// `Retry-After` from the layer itself, through the router, without a server (and without
    /// the handler: the SDK client points nowhere).
    #[tokio::test(start_paused = true)]
    async fn a_refusal_is_a_429_with_retry_after() {
        let throttle = BedrockThrottle::builder().build().unwrap();
        let client = Client::from_conf(
            throttle
                .configure(
                    aws_sdk_bedrockruntime::config::Builder::new()
                        .behavior_version(BehaviorVersion::latest())
                        .region(Region::new("us-east-1"))
                        .credentials_provider(Credentials::new("AK", "SK", None, None, "test"))
                        .endpoint_url("http://127.0.0.1:9"),
                )
                .build(),
        );
        // The gateway's budget, with a short longest wait; another tenant holds the whole
        // window, unsettled: the next request would wait for the window to slide (2 s).
        let budget = Budget::builder()
            .tokens(MODEL_TPM)
            .window(WINDOW)
            .max_wait(Duration::from_millis(100))
            .fairness(Fairness::new())
            .build()
            .unwrap();
        let _held = budget.try_acquire(MODEL, MODEL_TPM).unwrap();
        let app = router(client, throttle, budget);
        let request = Request::post("/chat")
            .header("x-tenant", "acme")
            .body(Body::from(r#"{"prompt":"hello","max_tokens":200}"#))
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry_after: u64 = response
            .headers()
            .get("retry-after")
            .expect("Retry-After")
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry_after >= WINDOW.as_secs(), "{retry_after}");
        let body = axum::body::to_bytes(response.into_body(), MAX_BODY)
            .await
            .unwrap();
        assert!(!body.is_empty());
    }

    /// A request larger than the whole quota could never pass: 413, no `Retry-After`.
    #[tokio::test(start_paused = true)]
    async fn a_request_larger_than_the_quota_is_a_413() {
        let throttle = BedrockThrottle::builder().build().unwrap();
        let client = Client::from_conf(
            throttle
                .configure(
                    aws_sdk_bedrockruntime::config::Builder::new()
                        .behavior_version(BehaviorVersion::latest())
                        .region(Region::new("us-east-1"))
                        .credentials_provider(Credentials::new("AK", "SK", None, None, "test"))
                        .endpoint_url("http://127.0.0.1:9"),
                )
                .build(),
        );
        let app = router(client, throttle, tenant_budget().unwrap());
        let body = format!(r#"{{"prompt":"hello","max_tokens":{}}}"#, MODEL_TPM + 1);
        let request = Request::post("/chat").body(Body::from(body)).unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(response.headers().get("retry-after").is_none());
    }
}
