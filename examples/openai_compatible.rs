//! OpenAI-compatible Chat Completions on bedrock-runtime (`/openai/v1/chat/completions`),
//! through the crate's Tower stack on hyper's own HTTP client, against the embedded emulator.
//!
//! ```text
//! cargo run --features emulator --example openai_compatible
//! ```
//!
//! The model id is in the JSON body, not the path; the crate reads it for the quota key,
//! reserves input + `max_completion_tokens`, settles `usage` with the model's burndown (10x for
//! GPT-5.6 in the December 2026 table), and classifies the server's 429s by cause. Sixty
//! calls sent at once, about six times what a 20,000-token window settles: every call
//! completes, waiting for room in line. The few the server may still refuse (calls admitted
//! together whose 10x debts land on the server before the client reads them) are retried by
//! the stack.
//!
//! Any HTTP client works the same way: the stack needs a `tower::Service` of
//! `http::Request<Bytes>` whose response body is an `http_body::Body`.

use std::time::{Duration, Instant};

use bedrock_throttle::BoxError;
use bedrock_throttle::admit::AdmissionLayer;
use bedrock_throttle::bedrock::{Bedrock, BedrockKey};
use bedrock_throttle::budget::{Budget, Quota};
use bedrock_throttle::emulator::{Emulator, OutputLength};
use bedrock_throttle::retry::ThrottleRetryLayer;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tower::{ServiceBuilder, ServiceExt, service_fn};

const MODEL: &str = "openai.gpt-5.6-sol-v1:0";
const TPM: u64 = 20_000;
const WINDOW: Duration = Duration::from_secs(2);

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let emulator = Emulator::builder()
        .model_quota(MODEL, Quota::tokens(TPM))
        .window(WINDOW)
        .output_length(OutputLength::Uniform { min: 50, max: 300 })
        .time_to_first_token(Duration::from_millis(150))
        .tokens_per_second(2_000.0)
        .start()
        .await?;
    let addr = emulator.addr();

    // Any HTTP client as a Tower service: here hyper's, one connection per request.
    let http = service_fn(move |request: http::Request<Bytes>| async move {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok::<_, BoxError>(sender.send_request(request.map(Full::new)).await?)
    });

    // The region comes from the host on AWS (`bedrock-runtime.us-east-1.amazonaws.com`); the
    // emulator's host names none.
    let bedrock = Bedrock::new().with_region("us-east-1");
    let budget: Budget<BedrockKey> = Budget::builder().tokens(TPM).window(WINDOW).build()?;
    let stack = ServiceBuilder::new()
        .layer(ThrottleRetryLayer::new(bedrock.clone()).clone_with(bedrock.clone()))
        .layer(AdmissionLayer::new(budget, bedrock.clone()))
        .layer(bedrock.response_layer())
        .service(http);

    let start = Instant::now();
    let calls: Vec<_> = (0..60)
        .map(|i| {
            let body = serde_json::json!({
                "model": MODEL,
                "max_completion_tokens": 400,
                "messages": [{"role": "user", "content": format!("Call {i}: {}", "summarise the quota ".repeat(20))}],
            });
            let request = http::Request::post(format!("http://{addr}/openai/v1/chat/completions"))
                .header("content-type", "application/json")
                .header("authorization", "Bearer <a Bedrock API key>")
                .body(Bytes::from(body.to_string()))
                .expect("a valid request");
            tokio::spawn(stack.clone().oneshot(request))
        })
        .collect();
    let (mut ok, mut failed) = (0, 0);
    for call in calls {
        match call.await? {
            Ok(response) if response.status().is_success() => {
                response.into_body().collect().await?;
                ok += 1;
            }
            Ok(response) => {
                println!("failed: HTTP {}", response.status());
                failed += 1;
            }
            Err(e) => {
                println!("failed: {e}");
                failed += 1;
            }
        }
    }
    let stats = emulator.stats().model(MODEL);
    println!(
        "{ok} calls completed, {failed} failed, in {:.1}s; the server refused {} attempts \
         and settled {} tokens (output at {}x)",
        start.elapsed().as_secs_f64(),
        stats.counters.throttled_tokens,
        stats.counters.tokens_settled,
        bedrock.output_burndown(MODEL),
    );
    emulator.shutdown().await;
    Ok(())
}
