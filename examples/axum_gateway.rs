//! An axum gateway that forwards chat requests to Bedrock through the SDK, sharing the model's
//! quota between tenants by weight on the axum side.
//!
//! ```text
//! cargo run --features emulator,metrics --example axum_gateway                         # demo: embedded emulator, two tenants
//! cargo run --features emulator,metrics --example axum_gateway -- --listen 127.0.0.1:3000   # serve; try:
//! curl -s localhost:3000/chat -H 'x-tenant: acme' -d '{"prompt":"Hello","max_tokens":200}'
//! curl -s localhost:3000/metrics   # the SDK side's admission metrics, Prometheus text
//! ```
//!
//! Two levels of limits, both from this crate:
//! - **Fair shares of the model's quota (axum side):** an `AdmissionLayer` over one budget with
//!   the model's tokens per window and [`Fairness`]: the tenant is the `x-tenant` header, and
//!   when the quota is saturated the backlogged tenants share its tokens in proportion to their
//!   weights (`gold` 2, everyone else 1), so one noisy tenant cannot starve the others and
//!   nobody's idle share is wasted. The estimate is the prompt's size plus `max_tokens`; the
//!   settlement is the `x-quota-tokens` header the handler sets from Bedrock's reported usage
//!   (it corrects the tenant's account as well as the window).
//! - **Per model (SDK side):** the Bedrock client is configured by `BedrockThrottle`, so the
//!   gateway as a whole stays inside the model's quota and retries what Bedrock throttles.
//!
//! By default it starts the emulator in-process and sends a burst from three tenants through
//! the router, printing what each got. With `--listen ADDR` it serves until Ctrl-C instead.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::{BehaviorVersion, Region};
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, InferenceConfiguration, Message,
};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::error_handling::HandleErrorLayer;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bedrock_throttle::BoxError;
use bedrock_throttle::admit::{AdmissionLayer, Closures};
use bedrock_throttle::bedrock::Bedrock;
use bedrock_throttle::budget::Quota;
use bedrock_throttle::budget::{AdmissionError, Budget, Class, Fairness};
use bedrock_throttle::classify::{Classification, ThrottleCause};
use bedrock_throttle::emulator::{Emulator, OutputLength};
use bedrock_throttle::sdk::BedrockThrottle;
use serde::Deserialize;
use tower::{ServiceBuilder, ServiceExt};

const MODEL: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";
const WINDOW: Duration = Duration::from_secs(2);
/// The model's quota, shared by the tenants.
const MODEL_TPM: u64 = 40_000;
/// The largest chat body the gateway reads.
const MAX_BODY: usize = 1 << 20;

#[derive(Clone)]
struct App {
    client: Client,
    burndown: u64,
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

/// A 429 from the handler means Bedrock throttled the call even after the SDK-side retries.
fn classify(result: Result<&Response, &Infallible>) -> Classification {
    match result {
        Ok(r) if r.status() == StatusCode::TOO_MANY_REQUESTS => {
            Classification::throttled(ThrottleCause::Tokens)
        }
        Ok(r) if r.status().is_server_error() => Classification::transient(),
        Ok(_) => Classification::success(),
        Err(never) => match *never {},
    }
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
            let (input, output) = out
                .usage()
                .map(|u| {
                    (
                        u.input_tokens().max(0) as u64,
                        u.output_tokens().max(0) as u64,
                    )
                })
                .unwrap_or_default();
            let text = out
                .output()
                .and_then(|o| o.as_message().ok())
                .and_then(|m| m.content().first())
                .and_then(|c| c.as_text().ok())
                .map(|t| t.chars().take(40).collect::<String>())
                .unwrap_or_default();
            let mut headers = HeaderMap::new();
            let quota_tokens = input + output * app.burndown;
            headers.insert("x-quota-tokens", quota_tokens.into());
            (
                headers,
                format!(
                    "{{\"input_tokens\":{input},\"output_tokens\":{output},\"text\":{text:?}}}"
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

/// Turns a refusal of the tenant limiters into an HTTP answer.
async fn limiter_error(error: BoxError) -> (StatusCode, String) {
    match error.downcast_ref::<AdmissionError>() {
        Some(e @ AdmissionError::CostAboveLimit { .. }) => {
            (StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
        }
        Some(e) => (StatusCode::TOO_MANY_REQUESTS, e.to_string()),
        None => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    }
}

fn router(client: Client, burndown: u64) -> Result<Router, BoxError> {
    // One key (the gateway serves one model): its quota, shared fairly between tenants.
    let shared = Budget::builder()
        .tokens(MODEL_TPM)
        .window(WINDOW)
        .max_wait(WINDOW * 20)
        .fairness(
            Fairness::new()
                .weight("gold", 2.0)
                .default_weight(1.0)
                .max_tenants(1_000),
        )
        .build()?;
    let protocol = Closures::new(|_: &Request| MODEL)
        .tokens(estimate, settle)
        .classify(classify)
        .class(tenant);
    let tenant_limits = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(limiter_error))
        .layer(AdmissionLayer::new(shared, protocol));
    Ok(Router::new()
        .route("/chat", post(chat))
        .route_layer(tenant_limits)
        .route_layer(middleware::from_fn(buffer_body))
        .with_state(App { client, burndown }))
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
        .quota(MODEL, bedrock_throttle::budget::Quota::tokens(MODEL_TPM))
        .window(WINDOW)
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
    let burndown = Bedrock::new().output_burndown(MODEL);
    let app = router(client, burndown)?.route(
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
