//! An axum gateway that forwards chat requests to Bedrock through the SDK, with per-tenant
//! fairness on the axum side.
//!
//! ```text
//! cargo run --features emulator,metrics --example axum_gateway                         # demo: embedded emulator, two tenants
//! cargo run --features emulator,metrics --example axum_gateway -- --listen 127.0.0.1:3000   # serve; try:
//! curl -s localhost:3000/chat -H 'x-tenant: acme' -d '{"prompt":"Hello","max_tokens":200}'
//! curl -s localhost:3000/metrics   # the SDK side's admission metrics, Prometheus text
//! ```
//!
//! Two levels of limits, both from this crate:
//! - **Per tenant (axum side):** a `TokenBudgetLayer` over one budget with a requests and a
//!   tokens limit per window (admitted together), keyed by the `x-tenant` header, so one noisy
//!   tenant cannot eat the model's quota. The estimate is the prompt's size plus `max_tokens`; the settlement is the
//!   `x-quota-tokens` header the handler sets from Bedrock's reported usage.
//! - **Per model (SDK side):** the Bedrock client is configured by `BedrockThrottle`, so the
//!   gateway as a whole stays inside the model's quota and retries what Bedrock throttles.
//!
//! By default it starts the emulator in-process and sends a burst from two tenants through the
//! router, printing what each got. With `--listen ADDR` it serves until Ctrl-C instead.

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
use bedrock_throttle::admit::TokenBudgetLayer;
use bedrock_throttle::bedrock::Bedrock;
use bedrock_throttle::budget::Quota;
use bedrock_throttle::budget::{AdmissionError, Budget};
use bedrock_throttle::classify::{Classification, ThrottleCause};
use bedrock_throttle::emulator::{Emulator, OutputLength};
use bedrock_throttle::sdk::BedrockThrottle;
use serde::Deserialize;
use tower::{ServiceBuilder, ServiceExt};

const MODEL: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";
const WINDOW: Duration = Duration::from_secs(2);
/// The model's quota, and each tenant's share of it.
const MODEL_TPM: u64 = 40_000;
const TENANT_TPM: u64 = 20_000;
const TENANT_RPM: u64 = 40;
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

fn tenant(request: &Request) -> String {
    request
        .headers()
        .get("x-tenant")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("anonymous")
        .to_owned()
}

/// The reservation of a chat request, the way Bedrock reserves: the prompt's bytes / 3 (a
/// conservative token count) plus `max_tokens` at 1x. Settlement corrects it afterwards.
fn estimate(request: &Request) -> u64 {
    let Some(ChatBytes(bytes)) = request.extensions().get::<ChatBytes>() else {
        return TENANT_TPM; // not buffered: assume the worst
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
    let per_tenant = Budget::builder()
        .requests(TENANT_RPM)
        .tokens(TENANT_TPM)
        .window(WINDOW)
        .max_wait(WINDOW * 10)
        .build()?;
    let tenant_limits = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(limiter_error))
        .layer(TokenBudgetLayer::new(per_tenant, tenant, estimate, settle).classify(classify));
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

    // Demo: tenant "big" sends 3x its share, tenant "small" a little; both get served, in
    // order, and "big" cannot starve "small".
    let app = Arc::new(app);
    let mut tasks = Vec::new();
    for (tenant, count, prompt_len) in [("big", 60, 2_000), ("small", 6, 400)] {
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
                (tenant, response.status(), started.elapsed())
            }));
        }
    }
    let mut summary = std::collections::BTreeMap::<(&str, u16), (usize, Duration)>::new();
    for task in tasks {
        let (tenant, status, took) = task.await?;
        let entry = summary.entry((tenant, status.as_u16())).or_default();
        entry.0 += 1;
        entry.1 = entry.1.max(took);
    }
    println!("tenant  status  calls  slowest");
    for ((tenant, status), (calls, slowest)) in summary {
        println!(
            "{tenant:<7} {status:<7} {calls:<6} {:.1}s",
            slowest.as_secs_f64()
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
