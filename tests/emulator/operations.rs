//! Every operation through the real SDK client: responses and errors parse.

use aws_sdk_bedrockruntime::error::ProvideErrorMetadata;
use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, ConverseStreamOutput, ConverseTokensRequest, CountTokensInput,
    InferenceConfiguration, InvokeModelTokensRequest, Message, ResponseStream, StopReason,
};
use bedrock_throttle::emulator::{Emulator, Fault, OutputLength, StreamException};
use serde_json::{Value, json};

use crate::common::*;

fn user(text: &str) -> Message {
    Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text(text.into()))
        .build()
        .unwrap()
}

fn max(n: i32) -> InferenceConfiguration {
    InferenceConfiguration::builder().max_tokens(n).build()
}

#[tokio::test]
async fn converse_parses_with_usage_and_metrics() {
    let emulator = Emulator::builder()
        .output_length(OutputLength::Fixed(20))
        .start()
        .await
        .unwrap();
    let client = client(&emulator);
    let out = client
        .converse()
        .model_id(SONNET4)
        .messages(user("abcdefgh"))
        .inference_config(max(100))
        .send()
        .await
        .unwrap();
    let usage = out.usage().unwrap();
    assert_eq!(
        (
            usage.input_tokens(),
            usage.output_tokens(),
            usage.total_tokens()
        ),
        (5, 20, 25)
    );
    assert_eq!(out.stop_reason(), &StopReason::EndTurn);
    let text = out.output().unwrap().as_message().unwrap().content()[0]
        .as_text()
        .unwrap();
    assert_eq!(text.split(' ').count(), 20);

    // Capped by maxTokens: stop reason max_tokens.
    let out = client
        .converse()
        .model_id(SONNET4)
        .messages(user("x"))
        .inference_config(max(7))
        .send()
        .await
        .unwrap();
    assert_eq!(out.usage().unwrap().output_tokens(), 7);
    assert_eq!(out.stop_reason(), &StopReason::MaxTokens);
}

#[tokio::test]
async fn converse_stream_events_in_order() {
    let emulator = Emulator::builder()
        .output_length(OutputLength::Fixed(20))
        .start()
        .await
        .unwrap();
    let client = client(&emulator);
    let mut out = client
        .converse_stream()
        .model_id(SONNET4)
        .messages(user("abcd"))
        .inference_config(max(50))
        .send()
        .await
        .unwrap();
    let mut kinds = Vec::new();
    let mut text = String::new();
    let mut usage = None;
    while let Some(event) = out.stream.recv().await.unwrap() {
        match &event {
            ConverseStreamOutput::MessageStart(_) => kinds.push("start"),
            ConverseStreamOutput::ContentBlockDelta(d) => {
                kinds.push("delta");
                text.push_str(d.delta().unwrap().as_text().unwrap());
            }
            ConverseStreamOutput::ContentBlockStop(_) => kinds.push("block_stop"),
            ConverseStreamOutput::MessageStop(s) => {
                assert_eq!(s.stop_reason(), &StopReason::EndTurn);
                kinds.push("stop");
            }
            ConverseStreamOutput::Metadata(m) => {
                kinds.push("metadata");
                usage = m.usage().cloned();
                assert!(m.metrics().is_some());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // 20 tokens in deltas of 8.
    assert_eq!(
        kinds,
        [
            "start",
            "delta",
            "delta",
            "delta",
            "block_stop",
            "stop",
            "metadata"
        ]
    );
    assert_eq!(text.split(' ').count(), 20);
    let usage = usage.unwrap();
    assert_eq!((usage.input_tokens(), usage.output_tokens()), (4, 20));
    let stats = emulator.stats().model(SONNET4);
    assert_eq!(stats.counters.tokens_settled, 4 + 20 * 5);
    assert_eq!(stats.counters.settled, 1);
}

async fn invoke(client: &aws_sdk_bedrockruntime::Client, model: &str, body: Value) -> Value {
    let out = client
        .invoke_model()
        .model_id(model)
        .content_type("application/json")
        .body(Blob::new(body.to_string()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{model}: {:?}", e.into_service_error()));
    assert_eq!(out.content_type(), "application/json");
    serde_json::from_slice(out.body().as_ref()).unwrap()
}

#[tokio::test]
async fn invoke_model_native_bodies() {
    let emulator = Emulator::builder()
        .output_length(OutputLength::Fixed(12))
        .start()
        .await
        .unwrap();
    let client = client(&emulator);

    let claude = invoke(
        &client,
        SONNET4,
        json!({
            "anthropic_version": "bedrock-2023-05-31", "max_tokens": 100,
            "system": "abcd", "messages": [{"role": "user", "content": "abcdefgh"}]
        }),
    )
    .await;
    assert_eq!(claude["type"], "message");
    assert_eq!(claude["role"], "assistant");
    assert_eq!(claude["content"][0]["type"], "text");
    assert_eq!(claude["stop_reason"], "end_turn");
    assert_eq!(
        claude["usage"],
        json!({"input_tokens": 1 + 3 + 2, "output_tokens": 12})
    );

    let titan = invoke(
        &client,
        TITAN_TEXT,
        json!({"inputText": "abcd", "textGenerationConfig": {"maxTokenCount": 5}}),
    )
    .await;
    assert_eq!(titan["inputTextTokenCount"], 1);
    assert_eq!(titan["results"][0]["tokenCount"], 5);
    assert_eq!(titan["results"][0]["completionReason"], "LENGTH");

    let nova = invoke(
        &client,
        NOVA,
        json!({"messages": [{"role": "user", "content": [{"text": "abcd"}]}]}),
    )
    .await;
    assert_eq!(nova["output"]["message"]["role"], "assistant");
    assert_eq!(
        nova["usage"],
        json!({"inputTokens": 4, "outputTokens": 12, "totalTokens": 16})
    );
    assert_eq!(nova["stopReason"], "end_turn");

    let llama = invoke(
        &client,
        LLAMA,
        json!({"prompt": "abcdefgh", "max_gen_len": 50}),
    )
    .await;
    assert_eq!(llama["prompt_token_count"], 2);
    assert_eq!(llama["generation_token_count"], 12);
    assert_eq!(llama["stop_reason"], "stop");
    assert!(llama["generation"].is_string());

    let embed = invoke(
        &client,
        TITAN_EMBED,
        json!({"inputText": "abcdefgh", "dimensions": 256}),
    )
    .await;
    assert_eq!(embed["embedding"].as_array().unwrap().len(), 256);
    assert_eq!(embed["inputTextTokenCount"], 2);

    // The usage headers, on the wire.
    let raw = send(
        emulator.addr(),
        "POST",
        &path(SONNET4, "invoke"),
        json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(raw.status, 200);
    assert_eq!(raw.header("x-amzn-bedrock-input-token-count"), Some("4"));
    assert_eq!(raw.header("x-amzn-bedrock-output-token-count"), Some("5"));
    assert!(raw.header("x-amzn-bedrock-invocation-latency").is_some());
    assert_eq!(raw.header("x-amzn-RequestId").map(str::len), Some(36));
}

#[tokio::test]
async fn invoke_stream_chunks_end_with_metrics() {
    let emulator = Emulator::builder()
        .output_length(OutputLength::Fixed(10))
        .start()
        .await
        .unwrap();
    let client = client(&emulator);
    for (model, body) in [
        (
            SONNET4,
            json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 100, "messages": [{"role": "user", "content": "abcd"}]}),
        ),
        (TITAN_TEXT, json!({"inputText": "abcd"})),
        (
            NOVA,
            json!({"messages": [{"role": "user", "content": [{"text": "abcd"}]}]}),
        ),
        (LLAMA, json!({"prompt": "abcd"})),
    ] {
        let mut out = client
            .invoke_model_with_response_stream()
            .model_id(model)
            .content_type("application/json")
            .body(Blob::new(body.to_string()))
            .send()
            .await
            .unwrap();
        assert_eq!(out.content_type(), "application/json");
        let mut chunks = Vec::new();
        while let Some(event) = out.body.recv().await.unwrap() {
            let ResponseStream::Chunk(part) = event else {
                panic!("{event:?}")
            };
            chunks.push(serde_json::from_slice::<Value>(part.bytes().unwrap().as_ref()).unwrap());
        }
        let last = chunks.last().unwrap();
        let metrics = &last["amazon-bedrock-invocationMetrics"];
        assert_eq!(metrics["outputTokenCount"], 10, "{model}");
        assert!(metrics["inputTokenCount"].as_u64().unwrap() >= 1, "{model}");
        assert_eq!(
            chunks
                .iter()
                .filter(|c| c.get("amazon-bedrock-invocationMetrics").is_some())
                .count(),
            1
        );
        if model == SONNET4 {
            let types: Vec<&str> = chunks.iter().map(|c| c["type"].as_str().unwrap()).collect();
            assert_eq!(
                types,
                [
                    "message_start",
                    "content_block_start",
                    "content_block_delta",
                    "content_block_delta",
                    "content_block_stop",
                    "message_delta",
                    "message_stop"
                ]
            );
            assert_eq!(chunks[5]["usage"]["output_tokens"], 10);
        }
    }
    // Every stream settled when its last frame was produced.
    assert_eq!(emulator.stats().totals.settled, 4);
}

#[tokio::test]
async fn count_tokens_both_inputs() {
    let emulator = Emulator::builder().start().await.unwrap();
    let client = client(&emulator);
    let converse = ConverseTokensRequest::builder()
        .messages(user("abcdefgh"))
        .build();
    let out = client
        .count_tokens()
        .model_id(SONNET4_BASE)
        .input(CountTokensInput::Converse(converse))
        .send()
        .await
        .unwrap();
    assert_eq!(out.input_tokens(), 5);
    let body = json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 1, "messages": [{"role": "user", "content": "abcdefgh"}]});
    let invoke = InvokeModelTokensRequest::builder()
        .body(Blob::new(body.to_string()))
        .build()
        .unwrap();
    let out = client
        .count_tokens()
        .model_id(SONNET4_BASE)
        .input(CountTokensInput::InvokeModel(invoke))
        .send()
        .await
        .unwrap();
    assert_eq!(out.input_tokens(), 5);
    let stats = emulator.stats().model(SONNET4_BASE);
    assert_eq!(stats.counters.count_tokens_requests, 2);
    assert_eq!(stats.counters.requests, 0);
    assert_eq!(stats.window.tokens, 0, "CountTokens uses no quota");
}

#[tokio::test]
async fn http_faults_parse_as_modeled_errors() {
    let emulator = Emulator::builder()
        .fault_at(0, Fault::ServiceUnavailable)
        .fault_at(1, Fault::TooManyConnections)
        .fault_at(2, Fault::InternalServer)
        .fault_at(3, Fault::ModelTimeout)
        .fault_at(4, Fault::ModelNotReady)
        .default_quota(bedrock_throttle::budget::Quota::tokens(1_000))
        .start()
        .await
        .unwrap();
    let client = client(&emulator);
    let mut errors = Vec::new();
    for _ in 0..5 {
        let err = client
            .converse()
            .model_id(SONNET4)
            .messages(user("hi"))
            .inference_config(max(10))
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        errors.push((
            err.code().unwrap().to_owned(),
            err.message().unwrap().to_owned(),
            err,
        ));
    }
    use aws_sdk_bedrockruntime::operation::converse::ConverseError as E;
    assert!(matches!(errors[0].2, E::ServiceUnavailableException(_)));
    assert_eq!(errors[0].1, "Bedrock is unable to process your request.");
    assert!(matches!(errors[1].2, E::ServiceUnavailableException(_)));
    assert_eq!(
        errors[1].1,
        "Too many connections, please wait before trying again."
    );
    assert!(matches!(errors[2].2, E::InternalServerException(_)));
    assert!(matches!(errors[3].2, E::ModelTimeoutException(_)));
    assert!(matches!(errors[4].2, E::ModelNotReadyException(_)));
    // The sixth request is normal; faulted ones were not charged.
    client
        .converse()
        .model_id(SONNET4)
        .messages(user("hi"))
        .inference_config(max(10))
        .send()
        .await
        .unwrap();
    let c = emulator.stats().model(SONNET4).counters;
    assert_eq!(
        c.faults.service_unavailable + c.faults.too_many_connections,
        2
    );
    assert_eq!(c.faults.total(), 5);
    assert_eq!((c.requests, c.admitted), (6, 1));
    assert_eq!(c.tokens_reserved, 4 + 10);
}

#[tokio::test]
async fn mid_stream_exceptions_surface_from_the_receiver() {
    let throttle = |after_events| Fault::StreamException {
        exception: StreamException::Throttling,
        after_events,
    };
    let emulator = Emulator::builder()
        .output_length(OutputLength::Fixed(20))
        .fault_at(0, throttle(0))
        .fault_at(1, throttle(2))
        .fault_at(2, throttle(0))
        .fault_at(
            3,
            Fault::StreamException {
                exception: StreamException::ServiceUnavailable,
                after_events: 1,
            },
        )
        .start()
        .await
        .unwrap();
    let client = client(&emulator);
    let stream = || {
        client
            .converse_stream()
            .model_id(SONNET4)
            .messages(user("abcd"))
            .inference_config(max(100))
            .send()
    };

    // Before the first event.
    let mut out = stream().await.unwrap();
    let err = out.stream.recv().await.unwrap_err().into_service_error();
    assert!(err.is_throttling_exception(), "{err:?}");
    assert_eq!(
        err.message(),
        Some("Too many tokens, please wait before trying again.")
    );

    // After two events.
    let mut out = stream().await.unwrap();
    assert!(matches!(
        out.stream.recv().await.unwrap(),
        Some(ConverseStreamOutput::MessageStart(_))
    ));
    assert!(matches!(
        out.stream.recv().await.unwrap(),
        Some(ConverseStreamOutput::ContentBlockDelta(_))
    ));
    let err = out.stream.recv().await.unwrap_err().into_service_error();
    assert!(err.is_throttling_exception(), "{err:?}");

    // InvokeModelWithResponseStream, before the first chunk.
    let body = json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 100, "messages": [{"role": "user", "content": "abcd"}]});
    let mut out = client
        .invoke_model_with_response_stream()
        .model_id(SONNET4)
        .body(Blob::new(body.to_string()))
        .send()
        .await
        .unwrap();
    let err = out.body.recv().await.unwrap_err().into_service_error();
    assert!(err.is_throttling_exception(), "{err:?}");

    // Another exception type after one event.
    let mut out = stream().await.unwrap();
    assert!(out.stream.recv().await.unwrap().is_some());
    let err = out.stream.recv().await.unwrap_err().into_service_error();
    assert!(err.is_service_unavailable_exception(), "{err:?}");

    let c = emulator.stats().model(SONNET4).counters;
    assert_eq!(c.faults.stream_exception_before_events, 2);
    assert_eq!(c.faults.stream_exception_after_events, 2);
    // Before any event: not charged. After the message start and one 8-token delta: 4 + 8 × 5.
    // After the message start only: input only.
    assert_eq!(c.tokens_settled, (4 + 8 * 5) + 4);
    assert_eq!(c.output_tokens, 8);
    assert_eq!(c.settled, 4);
}

#[tokio::test]
async fn validation_and_not_found_parse() {
    let emulator = Emulator::builder()
        .strict_models(true)
        .start()
        .await
        .unwrap();
    let client = client(&emulator);
    let err = client
        .converse()
        .model_id(SONNET4)
        .messages(user("hi"))
        .inference_config(max(64_001))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_validation_exception(), "{err:?}");
    assert!(err.message().unwrap().contains("64000"));

    let err = client
        .converse()
        .model_id("vendor.no-such-model-v1:0")
        .messages(user("hi"))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_validation_exception(), "{err:?}");
    assert_eq!(
        err.message(),
        Some("The provided model identifier is invalid.")
    );

    // An ARN declared with its model info is known.
    let arn = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc";
    let emulator = Emulator::builder()
        .strict_models(true)
        .model_info(
            arn,
            bedrock_throttle::bedrock::ModelInfo::new(
                bedrock_throttle::bedrock::ModelFamily::AnthropicClaude,
                1_000,
                5,
            ),
        )
        .start()
        .await
        .unwrap();
    let out = crate::common::client(&emulator)
        .converse()
        .model_id(arn)
        .messages(user("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(out.usage().unwrap().output_tokens(), 32);
    let stats = emulator.stats().model(arn);
    assert_eq!(stats.counters.tokens_reserved, 4 + 1_000);
    assert_eq!(stats.counters.tokens_settled, 4 + 32 * 5);
}

#[tokio::test]
async fn throttles_parse_with_the_message_of_each_dimension() {
    use bedrock_throttle::budget::Quota;
    // A long window: nothing expires during the test, whatever the machine's speed.
    for (quota, message) in [
        (
            Quota::requests(1),
            "Too many requests, please wait before trying again.",
        ),
        (
            Quota::tokens(200),
            "Too many tokens, please wait before trying again.",
        ),
        (
            Quota::unlimited().with_tokens_per_day(200),
            "Too many tokens per day, please wait before trying again.",
        ),
    ] {
        let emulator = Emulator::builder()
            .default_quota(quota)
            .output_length(OutputLength::Fixed(30))
            .start()
            .await
            .unwrap();
        let client = client(&emulator);
        // Reserves 4 + 100, settles 4 + 30 × 5 = 154; then 154 + 104 > 200.
        let call = || {
            client
                .converse()
                .model_id(SONNET4)
                .messages(user("abcd"))
                .inference_config(max(100))
                .send()
        };
        call().await.unwrap();
        let err = call().await.unwrap_err().into_service_error();
        assert!(err.is_throttling_exception(), "{err:?}");
        assert_eq!(err.message(), Some(message));
        assert_eq!(err.code(), Some("ThrottlingException"));
    }
}

#[tokio::test]
async fn shutdown_and_drop_stop_the_server() {
    let emulator = Emulator::builder().start().await.unwrap();
    let addr = emulator.addr();
    assert_eq!(emulator.endpoint_url(), format!("http://{addr}"));
    emulator.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    let emulator = Emulator::builder().start().await.unwrap();
    let addr = emulator.addr();
    drop(emulator);
    // The server task notices the drop on its next poll.
    let mut stopped = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            stopped = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(stopped);
}
