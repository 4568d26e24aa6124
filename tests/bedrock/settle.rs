//! Settlement: what a response settles (usage headers, JSON bodies, event streams), with the
//! plan's memo; Bedrock's own reservation mirrored; the worst case when the usage never
//! arrives.

use std::convert::Infallible;

use bedrock_throttle::admit::Protocol;
use bedrock_throttle::bedrock::{Bedrock, BedrockKey, Operation};
use bedrock_throttle::budget::Budget;
use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::json;
use tower::{Service, ServiceBuilder, ServiceExt};

use crate::eventstream::{chunk, converse_stream, exception, frames};
use crate::support::*;

fn invoke_usage_response() -> http::Response<Full<Bytes>> {
    http::Response::builder()
        .status(200)
        .header("x-amzn-bedrock-input-token-count", "1000")
        .header("x-amzn-bedrock-output-token-count", "100")
        .header("x-amzn-bedrock-cache-read-input-token-count", "5000")
        .header("x-amzn-bedrock-cache-write-input-token-count", "200")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap()
}

fn converse_answer() -> String {
    json!({
        "output": {"message": {"role": "assistant", "content": [{"text": "Hi!"}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 1000, "outputTokens": 100, "totalTokens": 1100},
        "metrics": {"latencyMs": 100}
    })
    .to_string()
}

#[tokio::test]
async fn invoke_headers_settle_at_once_with_burndown_and_cache_rules() {
    let bedrock = Bedrock::new();
    let probe = Probe::new(9_999);
    let response = bedrock.settle_with(
        invoke_usage_response(),
        probe.clone(),
        memo(&bedrock, SONNET_4_ENCODED, "invoke"),
    );
    // input + cache_write + output x 5; cache reads are not counted.
    assert_eq!(probe.settled(), vec![1000 + 200 + 500]);
    assert!(!response.body().is_pending());
    assert_eq!(drain(response.into_body()).await, b"{}");
    assert_eq!(probe.settled().len(), 1, "settles exactly once");
}

#[tokio::test]
async fn converse_body_settles_at_end() {
    let bedrock = Bedrock::new();
    let body = converse_answer();
    for size in [1, 7, 64, 4096] {
        let probe = Probe::new(5_000);
        let response = http::Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(chunked(body.as_bytes(), size))
            .unwrap();
        let response = bedrock.settle_with(
            response,
            probe.clone(),
            memo(&bedrock, SONNET_4_ENCODED, "converse"),
        );
        assert!(probe.settled().is_empty(), "waits for the body");
        assert!(response.body().is_pending());
        let seen = drain(response.into_body()).await;
        assert_eq!(seen, body.as_bytes(), "bytes pass through unchanged");
        // Claude Sonnet 4: 1,000 in + 100 out settles 1,500.
        assert_eq!(probe.settled(), vec![1_500]);
    }
    let settle = |memo| {
        let probe = Probe::new(5_000);
        let response = http::Response::new(Full::new(Bytes::from(body.clone())));
        let body = bedrock
            .settle_with(response, probe.clone(), memo)
            .into_body();
        async move {
            drain(body).await;
            probe.settled()
        }
    };
    // A non-Claude model burns output at 1x; a burndown override wins.
    assert_eq!(
        settle(memo(&bedrock, NOVA_LITE_ENCODED, "converse")).await,
        vec![1_100]
    );
    let overridden = bedrock
        .clone()
        .with_burndown("amazon.nova-lite-v1:0", 3)
        .unwrap();
    // The burndown travels in the memo: the plan decided it, whichever value settles (the old
    // "untagged response" fallback to 5 is gone with the response extension it read).
    assert_eq!(
        settle(memo(&overridden, NOVA_LITE_ENCODED, "converse")).await,
        vec![1_300]
    );
}

/// Was "settlement learns Bedrock's own reservation from the marked request": the max output
/// the plan reserved now travels in its memo, so the settlement with the plan's memo mirrors
/// Bedrock's own reservation (its exact input + the reserved output), whatever the response
/// layer did in between.
#[tokio::test]
async fn settlement_with_the_plans_memo_mirrors_bedrocks_own_reservation() {
    let bedrock = Bedrock::new();
    let body = r#"{"messages":[{"role":"user","content":[{"text":"Hello there, how are you today?"}]}],
                  "inferenceConfig":{"maxTokens":256}}"#;
    let req = request(&format!("{HOST}/model/{SONNET_4_ENCODED}/converse"), body);
    let plan = bedrock.plan_of(&req);
    assert_eq!(plan.memo.max_output(), 256);
    let answer =
        json!({"usage": {"inputTokens": 12, "outputTokens": 100, "totalTokens": 112}}).to_string();
    let transport = tower::service_fn(move |_req: http::Request<Bytes>| {
        let answer = answer.clone();
        async move { Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(answer)))) }
    });
    let mut service = ServiceBuilder::new()
        .layer(bedrock.response_layer())
        .service(transport);
    let response = service.ready().await.unwrap().call(req).await.unwrap();
    let probe = Probe::of(&plan);
    drain(
        bedrock
            .settle_with(response, probe.clone(), plan.memo)
            .into_body(),
    )
    .await;
    // Bedrock reserved its exact input (12) + 256 and settles 12 + 100 x 5.
    assert_eq!(probe.settled(), vec![512]);
    assert_eq!(probe.server_reserved(), vec![12 + 256]);

    // InvokeModel headers: Bedrock's reservation counts cache reads and writes too.
    let plan = plan_for(
        &bedrock,
        SONNET_4_ENCODED,
        "invoke",
        r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":300,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert_eq!(plan.memo.max_output(), 300);
    let probe = Probe::of(&plan);
    drop(bedrock.settle_with(invoke_usage_response(), probe.clone(), plan.memo));
    assert_eq!(probe.settled(), vec![1000 + 200 + 500]);
    assert_eq!(probe.server_reserved(), vec![1000 + 5000 + 200 + 300]);
    // (The old third case, a request estimated without the mark settling plainly, is gone:
    // every plan carries its max output now. Plain settlements remain for errors and unknown
    // usage, checked below.)
}

#[tokio::test]
async fn converse_cache_tokens() {
    let body = json!({"usage": {"inputTokens": 10, "outputTokens": 20, "totalTokens": 30,
                               "cacheReadInputTokens": 4000, "cacheWriteInputTokens": 300}})
    .to_string();
    let bedrock = Bedrock::new();
    let probe = Probe::new(1);
    let response = http::Response::new(Full::new(Bytes::from(body)));
    let memo = memo(&bedrock, SONNET_4_ENCODED, "converse");
    drain(
        bedrock
            .settle_with(response, probe.clone(), memo)
            .into_body(),
    )
    .await;
    assert_eq!(probe.settled(), vec![10 + 300 + 100]);
}

#[tokio::test]
async fn errors_and_uncharged_operations_settle_zero() {
    let bedrock = Bedrock::new();
    let probe = Probe::new(700).with_if_unknown(7_000);
    let response = http::Response::builder()
        .status(429)
        .header("x-amzn-ErrorType", "ThrottlingException")
        .body(Full::new(Bytes::from_static(
            b"{\"message\":\"Too many tokens\"}",
        )))
        .unwrap();
    let response = bedrock.settle_with(
        response,
        probe.clone(),
        memo(&bedrock, SONNET_4_ENCODED, "converse"),
    );
    // Bedrock rejects before it reserves: nothing, not the worst case.
    assert_eq!(probe.settled(), vec![0]);
    assert!(probe.server_reserved().is_empty(), "a plain settlement");
    assert!(!response.body().is_pending());

    // CountTokens and ApplyGuardrail draw on no token quota.
    for (path, operation) in [
        (
            format!("/model/{SONNET_4_ENCODED}/count-tokens"),
            Operation::CountTokens,
        ),
        (
            "/guardrail/gr-1/version/1/apply".to_owned(),
            Operation::Other,
        ),
    ] {
        let memo = bedrock
            .plan_of(&request(&format!("{HOST}{path}"), "{}"))
            .memo;
        assert_eq!(memo.operation(), operation);
        let probe = Probe::new(0);
        let response = http::Response::new(Full::new(Bytes::from_static(b"{\"inputTokens\":12}")));
        let _ = bedrock.settle_with(response, probe.clone(), memo);
        assert_eq!(probe.settled(), vec![0], "{path}");
    }
}

/// Changed with the unknown-usage rule: a body that ends without usage, or is dropped before
/// it, settles the permit's `if_unknown` (the most the server can have booked), no longer the
/// reservation.
#[tokio::test]
async fn body_without_usage_settles_the_worst_case() {
    let bedrock = Bedrock::new();
    let memo = memo(&bedrock, SONNET_4_ENCODED, "invoke");
    let probe = Probe::new(321).with_if_unknown(1_921);
    let response = http::Response::new(Full::new(Bytes::from_static(b"{\"completion\":\"hi\"}")));
    drain(
        bedrock
            .settle_with(response, probe.clone(), memo)
            .into_body(),
    )
    .await;
    assert_eq!(probe.settled(), vec![1_921]);
    assert!(probe.server_reserved().is_empty());
    // Dropped before the end: the worst case too.
    let probe = Probe::new(321).with_if_unknown(1_921);
    let body = json!({"usage": {"inputTokens": 1, "outputTokens": 1}}).to_string();
    let response = http::Response::new(chunked(body.as_bytes(), 5));
    let memo = crate::support::memo(&bedrock, SONNET_4_ENCODED, "converse");
    let mut body = bedrock
        .settle_with(response, probe.clone(), memo)
        .into_body();
    body.frame().await.unwrap().unwrap();
    assert!(probe.settled().is_empty());
    drop(body);
    assert_eq!(probe.settled(), vec![1_921]);
}

/// A caller that leaves before the usage arrives may have cost the server its whole output,
/// at the model's burndown: the plan's `if_unknown` is `input + burndown x max_output`, and
/// that is what a dropped body settles.
#[tokio::test]
async fn body_dropped_before_its_usage_settles_input_plus_burndown_times_max_output() {
    let bedrock = Bedrock::new();
    let body = r#"{"messages":[{"role":"user","content":[{"text":"Hello"}]}],"inferenceConfig":{"maxTokens":200}}"#;
    let plan = plan_for(&bedrock, SONNET_4_ENCODED, "converse", body);
    let (key, operation) = bedrock.target(None, &format!("/model/{SONNET_4_ENCODED}/converse"));
    let input = bedrock
        .estimate(&key, operation, Some(body.as_bytes()))
        .input_tokens;
    let worst = input + 5 * 200;
    assert_eq!(plan.if_unknown, worst);
    let answer = converse_answer();

    // Dropped after the first chunk.
    let probe = Probe::of(&plan);
    let response = http::Response::new(chunked(answer.as_bytes(), 16));
    let mut settling = bedrock
        .settle_with(response, probe.clone(), plan.memo.clone())
        .into_body();
    settling.frame().await.unwrap().unwrap();
    drop(settling);
    assert_eq!(probe.settled(), vec![worst]);

    // Dropped with its response, before the body was polled.
    let probe = Probe::of(&plan);
    let response = http::Response::new(chunked(answer.as_bytes(), 16));
    drop(bedrock.settle_with(response, probe.clone(), plan.memo.clone()));
    assert_eq!(probe.settled(), vec![worst]);

    // Unwrapped with `into_inner`: settled as if dropped.
    let probe = Probe::of(&plan);
    let response = http::Response::new(chunked(answer.as_bytes(), 16));
    let inner = bedrock
        .settle_with(response, probe.clone(), plan.memo.clone())
        .into_body()
        .into_inner();
    assert_eq!(probe.settled(), vec![worst]);
    assert_eq!(drain(inner).await, answer.as_bytes(), "the body is intact");

    // A whole stream dropped before its metadata: the same worst case (nothing seen above it).
    let probe = Probe::of(&plan);
    let bytes = frames(&converse_stream(1000, 100));
    let response = event_stream_response(chunked(&bytes, 40));
    let memo = crate::support::memo(&bedrock, SONNET_4_ENCODED, "converse-stream");
    let mut settling = bedrock
        .settle_with(response, probe.clone(), memo)
        .into_body();
    settling.frame().await.unwrap().unwrap();
    drop(settling);
    assert_eq!(probe.settled(), vec![worst]);
}

/// The same through the admission's own path: `Protocol::settle` with the engine's permit, whose
/// `if_unknown` the ledger books when the body is dropped.
#[tokio::test(start_paused = true)]
async fn a_permit_settles_through_the_protocol() {
    type Http = http::Request<Bytes>;
    let bedrock = Bedrock::new();
    let budget: Budget<BedrockKey> = Budget::builder().tokens(1_000_000).build().unwrap();
    let body = r#"{"messages":[{"role":"user","content":[{"text":"Hello"}]}],"inferenceConfig":{"maxTokens":200}}"#;
    let plan = plan_for(&bedrock, SONNET_4_ENCODED, "converse", body);
    let used = || {
        let stats = budget.stats(&plan.key).unwrap();
        (stats.tokens.unwrap().used, stats.outstanding)
    };

    let permit = budget
        .acquire(plan.key.clone(), plan.tokens)
        .await
        .unwrap()
        .with_if_unknown(plan.if_unknown);
    let response = http::Response::new(chunked(converse_answer().as_bytes(), 16));
    let response = <Bedrock as Protocol<Http, _, Infallible>>::settle(
        &bedrock,
        response,
        permit,
        plan.memo.clone(),
    );
    assert_eq!(used(), (plan.tokens, 1), "reserved until the body ends");
    drain(response.into_body()).await;
    assert_eq!(used(), (1_500, 0));

    let permit = budget
        .acquire(plan.key.clone(), plan.tokens)
        .await
        .unwrap()
        .with_if_unknown(plan.if_unknown);
    let response = http::Response::new(chunked(converse_answer().as_bytes(), 16));
    let mut settling = <Bedrock as Protocol<Http, _, Infallible>>::settle(
        &bedrock,
        response,
        permit,
        plan.memo.clone(),
    )
    .into_body();
    settling.frame().await.unwrap().unwrap();
    drop(settling);
    assert_eq!(used(), (1_500 + plan.if_unknown, 0));
}

#[tokio::test]
async fn converse_stream_settles_from_metadata_whatever_the_chunking() {
    let bedrock = Bedrock::new();
    let bytes = frames(&converse_stream(1000, 100));
    for size in [1, 3, 13, 100, bytes.len()] {
        let probe = Probe::new(2_000);
        let response = event_stream_response(chunked(&bytes, size));
        let memo = memo(&bedrock, SONNET_4_ENCODED, "converse-stream");
        let response = bedrock.settle_with(response, probe.clone(), memo);
        assert_eq!(drain(response.into_body()).await, bytes);
        assert_eq!(probe.settled(), vec![1_500], "chunks of {size}");
    }
}

#[tokio::test]
async fn invoke_stream_settles_from_invocation_metrics() {
    let messages = vec![
        chunk(
            json!({"type":"message_start","message":{"id":"m","usage":{"input_tokens":1000,"output_tokens":1}}}),
        ),
        chunk(
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}),
        ),
        chunk(
            json!({"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":100}}),
        ),
        chunk(
            json!({"type":"message_stop","amazon-bedrock-invocationMetrics":{
            "inputTokenCount":1000,"outputTokenCount":100,"invocationLatency":900,"firstByteLatency":300}}),
        ),
    ];
    let bytes = frames(&messages);
    let bedrock = Bedrock::new();
    for size in [2, 50, bytes.len()] {
        let probe = Probe::new(70_000);
        let response = event_stream_response(chunked(&bytes, size));
        let memo = memo(&bedrock, SONNET_4_ENCODED, "invoke-with-response-stream");
        let response = bedrock.settle_with(response, probe.clone(), memo);
        assert_eq!(drain(response.into_body()).await, bytes);
        assert_eq!(probe.settled(), vec![1_500]);
    }
}

/// Changed with the unknown-usage rule: a stream dropped midway settles
/// `max(if_unknown, seen)`, no longer `max(reservation, seen)`.
#[tokio::test]
async fn stream_dropped_midway_settles_max_of_worst_case_and_seen() {
    let bedrock = Bedrock::new();
    // Anthropic invoke stream: 1,000 input and 300 output reported before the drop.
    let messages = vec![
        chunk(
            json!({"type":"message_start","message":{"usage":{"input_tokens":1000,"output_tokens":1}}}),
        ),
        chunk(json!({"type":"message_delta","usage":{"output_tokens":300}})),
        chunk(
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"more"}}),
        ),
    ];
    let bytes = frames(&messages);
    let first_two = frames(&messages[..2]).len();
    for (if_unknown, expected) in [(100, 1000 + 300 * 5), (10_000, 10_000)] {
        let probe = Probe::new(50).with_if_unknown(if_unknown);
        let response = event_stream_response(StreamBody::new(futures_util::stream::iter(vec![
            Ok::<_, Infallible>(Frame::data(Bytes::copy_from_slice(&bytes[..first_two]))),
            Ok(Frame::data(Bytes::copy_from_slice(&bytes[first_two..]))),
        ])));
        let memo = memo(&bedrock, SONNET_4_ENCODED, "invoke-with-response-stream");
        let mut body = bedrock
            .settle_with(response, probe.clone(), memo)
            .into_body();
        body.frame().await.unwrap().unwrap();
        assert!(probe.settled().is_empty());
        drop(body);
        assert_eq!(probe.settled(), vec![expected], "if_unknown {if_unknown}");
    }

    // ConverseStream: no usage before `metadata`, output counted from the deltas seen.
    let all = converse_stream(50, 5);
    let bytes = frames(&all[..3]); // messageStart and two deltas ("Hello", " world!")
    let probe = Probe::new(1);
    let response = event_stream_response(Full::new(Bytes::from(bytes)));
    let memo = memo(&bedrock, SONNET_4_ENCODED, "converse-stream");
    let body = bedrock
        .settle_with(response, probe.clone(), memo)
        .into_body();
    drain(body).await; // ends without metadata
    // ceil(5/3) + ceil(7/3) = 2 + 3 output tokens, x5.
    assert_eq!(probe.settled(), vec![25]);
}

#[tokio::test]
async fn stream_with_a_later_exception_settles_what_was_seen() {
    let bedrock = Bedrock::new();
    let mut messages = converse_stream(10, 10);
    messages.truncate(2);
    messages.push(exception("modelStreamErrorException", "boom"));
    let bytes = frames(&messages);
    let probe = Probe::new(10);
    let response = event_stream_response(Full::new(Bytes::from(bytes.clone())));
    let memo = memo(&bedrock, NOVA_LITE_ENCODED, "converse-stream");
    let body = bedrock
        .settle_with(response, probe.clone(), memo)
        .into_body();
    assert_eq!(drain(body).await, bytes);
    assert_eq!(probe.settled(), vec![10], "max(if_unknown 10, seen 2)");
}

/// Changed with the unknown-usage rule: an undecodable stream settles `if_unknown`, no longer
/// the reservation.
#[tokio::test]
async fn garbage_streams_never_panic_and_settle_the_worst_case() {
    let bedrock = Bedrock::new();
    let probe = Probe::new(42).with_if_unknown(420);
    let mut garbage = vec![0u8, 0, 0, 40, 0, 0, 0, 0, 1, 2, 3, 4];
    garbage.extend(std::iter::repeat_n(7u8, 100));
    let response = event_stream_response(chunked(&garbage, 5));
    let memo = memo(&bedrock, SONNET_4_ENCODED, "converse-stream");
    let body = bedrock
        .settle_with(response, probe.clone(), memo)
        .into_body();
    assert_eq!(drain(body).await, garbage);
    assert_eq!(probe.settled(), vec![420]);
}
