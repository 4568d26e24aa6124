//! An OpenAI-compatible Chat Completions call through a Tower stack (retry, admission, the
//! Bedrock response layer) over plain HTTP (hyper's client) to the emulator: admitted, settled
//! with the model's burndown, and a 429 classified by its cause.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bedrock_throttle::BoxError;
use bedrock_throttle::admit::{AdmissionLayer, Event};
use bedrock_throttle::bedrock::{Bedrock, BedrockKey};
use bedrock_throttle::budget::{Budget, Quota};
use bedrock_throttle::classify::ThrottleCause;
use bedrock_throttle::emulator::{Emulator, OutputLength};
use bedrock_throttle::retry::ThrottleRetryLayer;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tower::{ServiceBuilder, ServiceExt, service_fn};

const GPT56: &str = "openai.gpt-5.6-sol-v1:0";

/// One HTTP/1.1 connection per request, through hyper's client.
fn hyper_service(
    addr: std::net::SocketAddr,
    sent: Arc<AtomicUsize>,
) -> impl tower::Service<
    http::Request<Bytes>,
    Response = http::Response<hyper::body::Incoming>,
    Error = BoxError,
    Future = impl Send,
> + Clone {
    service_fn(move |request: http::Request<Bytes>| {
        let sent = sent.clone();
        async move {
            sent.fetch_add(1, Ordering::Relaxed);
            let stream = tokio::net::TcpStream::connect(addr).await?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            let response = sender.send_request(request.map(Full::new)).await?;
            Ok::<_, BoxError>(response)
        }
    })
}

fn chat(emulator: std::net::SocketAddr, max_tokens: u64) -> http::Request<Bytes> {
    let body = json!({"model": GPT56, "max_completion_tokens": max_tokens,
        "messages": [{"role": "user", "content": "abcdefgh"}]});
    http::Request::post(format!("http://{emulator}/openai/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer test-key")
        .body(Bytes::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn chat_completions_through_a_tower_stack() {
    let window = Duration::from_secs(60);
    let emulator = Emulator::builder()
        .model_quota(GPT56, Quota::tokens(1_000))
        .output_length(OutputLength::Fixed(10))
        .window(window)
        .start()
        .await
        .unwrap();
    let addr = emulator.addr();
    let bedrock = Bedrock::new().with_region("us-east-1");
    // The limiter is told more than the server has: its 429 must come back classified.
    let budget: Budget<BedrockKey> = Budget::builder()
        .tokens(100_000)
        .window(window)
        .build()
        .unwrap();
    let causes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let settled = Arc::new(std::sync::Mutex::new(Vec::new()));
    let observer = {
        let (causes, settled) = (causes.clone(), settled.clone());
        move |_: &BedrockKey, event: Event<'_>| match event {
            Event::Completed { classification } => {
                causes.lock().unwrap().push(classification.throttle_cause())
            }
            Event::Settled { settled: n, .. } => settled.lock().unwrap().push(n),
            _ => {}
        }
    };
    let sent = Arc::new(AtomicUsize::new(0));
    let stack = ServiceBuilder::new()
        .layer(
            ThrottleRetryLayer::new(bedrock.clone())
                .clone_with(bedrock.clone())
                .max_attempts(std::num::NonZeroU32::new(1).unwrap()),
        )
        .layer(AdmissionLayer::new(budget.clone(), bedrock.clone()).observe(observer))
        .layer(bedrock.response_layer())
        .service(hyper_service(addr, sent.clone()));

    // Admitted on the key of the body's model, settled with GPT-5.6's 10x burndown.
    let plan = bedrock.plan_of(&chat(addr, 100));
    assert_eq!(plan.key, BedrockKey::new("us-east-1", GPT56));
    assert_eq!(plan.memo.burndown(), 10);
    let response = stack.clone().oneshot(chat(addr, 100)).await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let (input, output) = (
        body["usage"]["prompt_tokens"].as_u64().unwrap(),
        body["usage"]["completion_tokens"].as_u64().unwrap(),
    );
    assert_eq!(output, 10);
    assert_eq!(*settled.lock().unwrap(), vec![input + 10 * output]);
    assert_eq!(
        emulator.stats().model(GPT56).counters.tokens_settled,
        input + 10 * output,
        "the crate settled what the server booked"
    );

    // Over the server's 1,000: a 429, classified as a token throttle.
    let response = stack.clone().oneshot(chat(addr, 950)).await.unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(
        causes.lock().unwrap().last().copied().flatten(),
        Some(ThrottleCause::Tokens)
    );
    assert_eq!(sent.load(Ordering::Relaxed), 2);

    // A body without a model: no model quota, refused by the server, never a panic.
    let bad = http::Request::post(format!("http://{addr}/openai/v1/chat/completions"))
        .body(Bytes::from_static(br#"{"messages":[]}"#))
        .unwrap();
    assert!(!bedrock.plan_of(&bad).key.has_model());
    let response = stack.oneshot(bad).await.unwrap();
    assert_eq!(response.status(), 400);
}
