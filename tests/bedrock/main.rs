//! Bedrock protocol knowledge: keys, reservations, settlement, classification, and the response
//! layer, on real-looking requests, bodies and event-stream frames.

#![cfg(feature = "bedrock")]

mod reference;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use base64::Engine;
use bedrock_throttle::bedrock::models::{ModelFamily, ModelInfo, ModelTable};
use bedrock_throttle::bedrock::{
    Bedrock, BedrockCall, BedrockError, BedrockKey, EstimateBasis, EstimatorConfig, Operation,
    Reservation, classify_response_parts,
};
use bedrock_throttle::classify::{
    Classify, CloneRequest, EstimateTokens, Outcome, QuotaKey, ThrottleCause,
};
use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use proptest::prelude::*;
use serde_json::json;
use tower::{Service, ServiceBuilder, ServiceExt};

// ---------------------------------------------------------------------------------------------
// helpers

const HOST: &str = "https://bedrock-runtime.us-east-1.amazonaws.com";
const SONNET_4: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";
const SONNET_4_ENCODED: &str = "us.anthropic.claude-sonnet-4-20250514-v1%3A0";

fn request(uri: &str, body: &'static str) -> http::Request<Bytes> {
    http::Request::post(uri)
        .body(Bytes::from_static(body.as_bytes()))
        .unwrap()
}

/// A reservation that records what it settled (and Bedrock's own reservation, when told).
#[derive(Debug, Clone)]
struct Probe {
    reserved: u64,
    settled: Arc<Mutex<Vec<u64>>>,
    server_reserved: Arc<Mutex<Vec<u64>>>,
}

impl Probe {
    fn new(reserved: u64) -> Self {
        Self {
            reserved,
            settled: Arc::default(),
            server_reserved: Arc::default(),
        }
    }
    fn settled(&self) -> Vec<u64> {
        self.settled.lock().unwrap().clone()
    }
    fn server_reserved(&self) -> Vec<u64> {
        self.server_reserved.lock().unwrap().clone()
    }
}

impl Reservation for Probe {
    fn reserved(&self) -> u64 {
        self.reserved
    }
    fn settle(self, actual: u64) {
        self.settled.lock().unwrap().push(actual);
    }
    fn settle_as(self, actual: u64, server_reserved: u64) {
        self.server_reserved.lock().unwrap().push(server_reserved);
        self.settle(actual);
    }
}

fn event(event_type: &str, payload: impl Into<Bytes>) -> Message {
    Message::new(payload)
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("event".to_owned().into()),
        ))
        .add_header(Header::new(
            ":event-type",
            HeaderValue::String(event_type.to_owned().into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".into()),
        ))
}

fn exception(kind: &str, message: &str) -> Message {
    Message::new(serde_json::to_vec(&json!({ "message": message })).unwrap())
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("exception".into()),
        ))
        .add_header(Header::new(
            ":exception-type",
            HeaderValue::String(kind.to_owned().into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".into()),
        ))
}

fn chunk(model_json: serde_json::Value) -> Message {
    let b64 = base64::engine::general_purpose::STANDARD.encode(model_json.to_string());
    event(
        "chunk",
        json!({ "bytes": b64, "p": "abcdefghij" }).to_string(),
    )
}

fn frames(messages: &[Message]) -> Vec<u8> {
    let mut out = Vec::new();
    for message in messages {
        write_message_to(message, &mut out).unwrap();
    }
    out
}

fn converse_stream(input: u64, output: u64) -> Vec<Message> {
    vec![
        event("messageStart", r#"{"role":"assistant","p":"abc"}"#),
        event(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":"Hello"},"p":"abcd"}"#,
        ),
        event(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":" world!"},"p":"ab"}"#,
        ),
        event("contentBlockStop", r#"{"contentBlockIndex":0,"p":"a"}"#),
        event("messageStop", r#"{"stopReason":"end_turn","p":"abcdef"}"#),
        event(
            "metadata",
            json!({"usage":{"inputTokens":input,"outputTokens":output,"totalTokens":input+output},
                   "metrics":{"latencyMs":42},"p":"abc"})
            .to_string(),
        ),
    ]
}

type ChunkStream =
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

/// A body that yields `bytes` in chunks of `size`.
fn chunked(bytes: &[u8], size: usize) -> ChunkStream {
    let frames: Vec<_> = bytes
        .chunks(size.max(1))
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    StreamBody::new(futures_util::stream::iter(frames))
}

fn event_stream_response<B>(body: B) -> http::Response<B> {
    http::Response::builder()
        .status(200)
        .header("content-type", "application/vnd.amazon.eventstream")
        .body(body)
        .unwrap()
}

fn tagged<B>(mut response: http::Response<B>, model: &str, op: Operation) -> http::Response<B> {
    response
        .extensions_mut()
        .insert(BedrockCall::new(BedrockKey::new("us-east-1", model), op));
    response
}

async fn drain<B: http_body::Body<Data = Bytes> + Unpin>(mut body: B) -> Vec<u8>
where
    B::Error: std::fmt::Debug,
{
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            out.extend_from_slice(&data);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// keys

#[test]
fn keys_from_real_looking_uris() {
    let bedrock = Bedrock::new().region("eu-north-1");
    let cases = [
        (
            format!("{HOST}/model/{SONNET_4_ENCODED}/converse"),
            "us-east-1",
            SONNET_4,
        ),
        (
            "https://bedrock-runtime-fips.us-gov-west-1.amazonaws.com/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke".into(),
            "us-gov-west-1",
            "anthropic.claude-3-haiku-20240307-v1:0",
        ),
        (
            "https://bedrock-runtime.ap-southeast-2.api.aws/model/amazon.nova-pro-v1%3A0/converse-stream".into(),
            "ap-southeast-2",
            "amazon.nova-pro-v1:0",
        ),
        (
            "https://bedrock-runtime.us-west-2.amazonaws.com/model/arn%3Aaws%3Abedrock%3Aus-west-2%3A123456789012%3Aapplication-inference-profile%2Fa1b2c3/invoke-with-response-stream".into(),
            "us-west-2",
            "arn:aws:bedrock:us-west-2:123456789012:application-inference-profile/a1b2c3",
        ),
        // A custom endpoint: the configured region.
        (
            "http://127.0.0.1:4566/model/meta.llama3-70b-instruct-v1%3A0/invoke".into(),
            "eu-north-1",
            "meta.llama3-70b-instruct-v1:0",
        ),
        // No model: an empty model, never a panic.
        (
            format!("{HOST}/guardrail/gr-1/version/1/apply"),
            "us-east-1",
            "",
        ),
    ];
    for (uri, region, model) in cases {
        let req = http::Request::post(uri.as_str()).body(()).unwrap();
        let key = bedrock.quota_key(&req);
        assert_eq!((key.region(), key.model()), (region, model), "{uri}");
        assert_eq!(key.has_model(), !model.is_empty());
    }
}

#[test]
fn cross_region_profiles_are_their_own_key_and_operations_share_one() {
    let bedrock = Bedrock::new();
    let key = |path: &str| bedrock.quota_key(&request(&format!("{HOST}{path}"), "{}"));
    let profile = key("/model/us.anthropic.claude-3-haiku-20240307-v1%3A0/converse");
    let in_region = key("/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse");
    assert_ne!(profile, in_region);
    for op in [
        "invoke",
        "invoke-with-response-stream",
        "converse",
        "converse-stream",
        "count-tokens",
    ] {
        assert_eq!(
            key(&format!(
                "/model/us.anthropic.claude-3-haiku-20240307-v1%3A0/{op}"
            )),
            profile
        );
    }
    assert_eq!(
        profile.to_string(),
        "us-east-1/us.anthropic.claude-3-haiku-20240307-v1:0"
    );
}

#[test]
fn host_header_is_used_for_relative_uris() {
    let req = http::Request::post("/model/amazon.titan-text-express-v1/invoke")
        .header("host", "bedrock-runtime.sa-east-1.amazonaws.com")
        .body(())
        .unwrap();
    let key = Bedrock::new().quota_key(&req);
    assert_eq!(key.region(), "sa-east-1");
    assert_eq!(key.model(), "amazon.titan-text-express-v1");
}

// ---------------------------------------------------------------------------------------------
// reservations

fn reserve(model: &str, op: &str, body: &'static str) -> (u64, u64) {
    let bedrock = Bedrock::new();
    let call = bedrock.call(None, &format!("/model/{model}/{op}"));
    let e = bedrock.estimate(&call, Some(body.as_bytes()));
    (e.input_tokens, e.max_output_tokens)
}

#[test]
fn reserve_per_family() {
    // Converse: inferenceConfig.maxTokens.
    let (_, out) = reserve(
        SONNET_4_ENCODED,
        "converse",
        r#"{"messages":[{"role":"user","content":[{"text":"hi"}]}],"inferenceConfig":{"maxTokens":500}}"#,
    );
    assert_eq!(out, 500);
    // Converse without maxTokens: the model's maximum.
    let (_, out) = reserve(
        "us.anthropic.claude-sonnet-4-5-20250929-v1%3A0",
        "converse-stream",
        r#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#,
    );
    assert_eq!(out, 64_000);
    // Anthropic messages.
    let (input, out) = reserve(
        "anthropic.claude-3-5-sonnet-20240620-v1%3A0",
        "invoke",
        r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":300,"system":"Be brief.",
            "messages":[{"role":"user","content":"Hello there"}]}"#,
    );
    assert_eq!((input, out), (3 + 8 + 4, 300));
    // Anthropic messages without max_tokens (invalid for Bedrock, but never under-reserve).
    let (_, out) = reserve(
        "anthropic.claude-opus-4-1-20250805-v1%3A0",
        "invoke",
        r#"{"anthropic_version":"bedrock-2023-05-31","messages":[{"role":"user","content":"x"}]}"#,
    );
    assert_eq!(out, 32_000);
    // Claude legacy text completions: `max_tokens_to_sample`; the prompt is not a `messages`
    // body, so the whole body counts as input.
    let legacy = r#"{"prompt":"\n\nHuman: Hello\n\nAssistant:","max_tokens_to_sample":200}"#;
    let (input, out) = reserve("anthropic.claude-v2%3A1", "invoke", legacy);
    assert_eq!((input, out), ((legacy.len() as u64).div_ceil(3), 200));
    // Titan text: 512 by default, else maxTokenCount.
    assert_eq!(
        reserve(
            "amazon.titan-text-express-v1",
            "invoke",
            r#"{"inputText":"Hello"}"#
        ),
        (2, 512)
    );
    assert_eq!(
        reserve(
            "amazon.titan-text-express-v1",
            "invoke",
            r#"{"inputText":"Hello","textGenerationConfig":{"maxTokenCount":100,"temperature":0}}"#
        ),
        (2, 100)
    );
    // Nova: maxTokens, or the legacy max_new_tokens.
    let nova = r#"{"schemaVersion":"messages-v1","system":[{"text":"abc"}],
                   "messages":[{"role":"user","content":[{"text":"abcdef"}]}],
                   "inferenceConfig":{"maxTokens":77}}"#;
    assert_eq!(
        reserve("us.amazon.nova-lite-v1%3A0", "invoke", nova),
        (1 + 8 + 2, 77)
    );
    assert_eq!(
        reserve(
            "amazon.nova-micro-v1%3A0",
            "invoke",
            r#"{"messages":[{"role":"user","content":[{"text":"a"}]}],"inferenceConfig":{"max_new_tokens":33}}"#
        ),
        (9, 33)
    );
    // Llama.
    assert_eq!(
        reserve(
            "meta.llama3-8b-instruct-v1%3A0",
            "invoke",
            r#"{"prompt":"abcdefghi","max_gen_len":128}"#
        ),
        (3, 128)
    );
    // Mistral (max_tokens family).
    assert_eq!(
        reserve(
            "mistral.mistral-large-2402-v1%3A0",
            "invoke",
            r#"{"prompt":"<s>[INST] hi [/INST]","max_tokens":64}"#
        ),
        (7, 64)
    );
    // Cohere Embed v4: max_tokens truncates INPUT, no output is reserved.
    assert_eq!(
        reserve(
            "cohere.embed-v4%3A0",
            "invoke",
            r#"{"texts":["abc","abcdef"],"input_type":"search_document","max_tokens":8000}"#
        ),
        (1 + 2, 0)
    );
    // Titan embeddings.
    assert_eq!(
        reserve(
            "amazon.titan-embed-text-v2%3A0",
            "invoke",
            r#"{"inputText":"abcdef","dimensions":256}"#
        ),
        (2, 0)
    );
    // CountTokens is not charged.
    assert_eq!(
        reserve(
            SONNET_4_ENCODED,
            "count-tokens",
            r#"{"input":{"converse":{"messages":[{"role":"user","content":[{"text":"hi"}]}]}}}"#
        ),
        (0, 0)
    );
}

#[test]
fn overrides_apply() {
    let arn = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/xyz";
    let body = r#"{"anthropic_version":"bedrock-2023-05-31","messages":[{"role":"user","content":"abc"}]}"#;
    let uri = format!(
        "{HOST}/model/{}/invoke",
        arn.replace(':', "%3A").replace('/', "%2F")
    );

    // Unknown family: the whole body at least, the unknown maximum.
    let plain = Bedrock::new();
    let call = plain.call_of(&request(&uri, body));
    let e = plain.estimate(&call, Some(body.as_bytes()));
    assert_eq!(e.basis, EstimateBasis::WholeBody);
    assert_eq!(e.input_tokens, (body.len() as u64).div_ceil(3));
    assert_eq!(e.max_output_tokens, 64_000);

    // Mapped to Claude with a smaller maximum: parsed, the mapped maximum.
    let mapped = Bedrock::new().models(
        ModelTable::new().with_model(arn, ModelInfo::new(ModelFamily::AnthropicClaude, 8_000, 5)),
    );
    let e = mapped.estimate(&call, Some(body.as_bytes()));
    assert_eq!(e.basis, EstimateBasis::Parsed);
    assert_eq!((e.input_tokens, e.max_output_tokens), (9, 8_000));
    assert_eq!(mapped.output_burndown(arn), 5);

    // Burndown override on top of the table.
    let overridden = mapped.clone().burndown(arn, 2);
    assert_eq!(overridden.output_burndown(arn), 2);
    assert_eq!(
        mapped.output_burndown(arn),
        5,
        "clones do not share later changes"
    );

    // A custom estimator.
    let frugal = Bedrock::new().estimator(
        EstimatorConfig::new()
            .with_bytes_per_token(std::num::NonZeroU32::new(4).unwrap())
            .with_per_message(3),
    );
    let req = request(
        &format!("{HOST}/model/{SONNET_4_ENCODED}/converse"),
        r#"{"messages":[{"role":"user","content":[{"text":"abcdefgh"}]}],"inferenceConfig":{"maxTokens":10}}"#,
    );
    assert_eq!(frugal.estimate_tokens(&req), 3 + 2 + 10);
}

/// The ids seen on request paths are cached per configuration: a setter called after requests
/// were seen (on the same, unshared value or on a clone) must not answer from the old table.
#[test]
fn setters_after_requests_are_not_answered_from_the_model_cache() {
    let arn = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/cached";
    let body = r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":100,"messages":[{"role":"user","content":"abc"}]}"#;
    let uri = format!(
        "{HOST}/model/{}/invoke",
        arn.replace(':', "%3A").replace('/', "%2F")
    );
    let req = request(&uri, body);

    let plain = Bedrock::new();
    let whole_body = plain.estimate_tokens(&req);
    assert_eq!(
        plain.estimate_tokens(&req),
        whole_body,
        "cached: same answer"
    );
    assert_eq!(plain.quota_key(&req).model(), arn);

    let claude = ModelInfo::new(ModelFamily::AnthropicClaude, 8_000, 5);
    let mapped = plain
        .clone()
        .models(ModelTable::new().with_model(arn, claude));
    assert_eq!(
        mapped.estimate_tokens(&req),
        9 + 100,
        "a clone with a new table"
    );
    assert_eq!(
        plain.estimate_tokens(&req),
        whole_body,
        "the original keeps its own"
    );

    // The same value, unshared, changed in place after its cache was filled.
    let only = Bedrock::new();
    assert_eq!(only.estimate_tokens(&req), whole_body);
    let only = only.models(ModelTable::new().with_model(arn, claude));
    assert_eq!(only.estimate_tokens(&req), 9 + 100);

    // Regions are cached by host: a custom endpoint's requests follow the configured region.
    let local = request(
        "http://127.0.0.1:8080/model/amazon.nova-lite-v1%3A0/converse",
        r#"{"messages":[]}"#,
    );
    let only = only.region("eu-west-1");
    assert_eq!(only.quota_key(&local).region(), "eu-west-1");
    let only = only.region("ap-south-1");
    assert_eq!(only.quota_key(&local).region(), "ap-south-1");
    assert_eq!(
        only.quota_key(&req).region(),
        "us-east-1",
        "a Bedrock host names its own"
    );
}

#[test]
fn estimate_tokens_for_body_types() {
    let bedrock = Bedrock::new();
    let uri = format!("{HOST}/model/meta.llama3-8b-instruct-v1%3A0/invoke");
    let body = r#"{"prompt":"abcdef","max_gen_len":10}"#;
    let as_bytes = request(&uri, body);
    let as_string = http::Request::post(uri.as_str())
        .body(body.to_owned())
        .unwrap();
    let as_vec = http::Request::post(uri.as_str())
        .body(body.as_bytes().to_vec())
        .unwrap();
    assert_eq!(bedrock.estimate_tokens(&as_bytes), 12);
    assert_eq!(bedrock.estimate_tokens(&as_string), 12);
    assert_eq!(bedrock.estimate_tokens(&as_vec), 12);
    let copy = bedrock.clone_request(&as_bytes).unwrap();
    assert_eq!(copy.body(), as_bytes.body());
    assert_eq!(copy.uri(), as_bytes.uri());
}

#[test]
fn bodies_edge_cases_give_conservative_defaults() {
    let bedrock = Bedrock::new();
    let call = bedrock.call(None, &format!("/model/{SONNET_4_ENCODED}/converse"));
    // Missing maxTokens: the model maximum.
    let e = bedrock.estimate(&call, Some(br#"{"messages":[]}"#));
    assert_eq!((e.input_tokens, e.max_output_tokens), (1, 64_000));
    // Invalid JSON.
    let e = bedrock.estimate(&call, Some(b"{\"messages\": [oops"));
    assert_eq!(e.basis, EstimateBasis::Unreadable);
    assert_eq!((e.input_tokens, e.max_output_tokens), (6, 64_000));
    // Wrong types: the whole body at least, maxTokens of the wrong type ignored.
    let body = br#"{"messages":{"role":"user"},"inferenceConfig":{"maxTokens":"10"}}"#;
    let e = bedrock.estimate(&call, Some(body));
    assert_eq!(e.basis, EstimateBasis::WholeBody);
    assert!(e.input_tokens >= (body.len() as u64).div_ceil(3));
    assert_eq!(e.max_output_tokens, 64_000);
}

// ---------------------------------------------------------------------------------------------
// the estimate is never below the emulator's counting rule

#[test]
fn estimate_dominates_reference_on_fixed_bodies() {
    let bedrock = Bedrock::new();
    for (model, op, body) in reference::fixed_bodies() {
        let call = bedrock.call(None, &format!("/model/{model}/{op}"));
        let family = bedrock.model_info(call.key().model()).family;
        let ours = bedrock.estimate(&call, Some(body.as_bytes())).input_tokens;
        let theirs = reference::max_over_readings(call.operation(), family, body.as_bytes());
        assert!(
            ours >= theirs,
            "{model} {op}: ours {ours} < reference {theirs}\n{body}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn estimate_dominates_reference_on_generated_converse(body in reference::converse_body()) {
        let bedrock = Bedrock::new();
        let call = bedrock.call(None, &format!("/model/{SONNET_4_ENCODED}/converse"));
        let bytes = serde_json::to_vec(&body).unwrap();
        let estimate = bedrock.estimate(&call, Some(&bytes));
        prop_assert_eq!(estimate.basis, EstimateBasis::Parsed, "a well-formed body is read field by field");
        let ours = estimate.input_tokens;
        let theirs = reference::max_over_readings(Operation::Converse, ModelFamily::AnthropicClaude, &bytes);
        prop_assert!(ours >= theirs, "ours {} < reference {}", ours, theirs);
        // Pretty-printing changes nothing but whitespace.
        let pretty = serde_json::to_vec_pretty(&body).unwrap();
        prop_assert_eq!(bedrock.estimate(&call, Some(&pretty)).input_tokens, ours);
    }

    #[test]
    fn estimate_dominates_reference_on_generated_anthropic(body in reference::anthropic_body()) {
        let bedrock = Bedrock::new();
        let call = bedrock.call(None, "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke");
        let bytes = serde_json::to_vec(&body).unwrap();
        let estimate = bedrock.estimate(&call, Some(&bytes));
        prop_assert_eq!(estimate.basis, EstimateBasis::Parsed);
        let ours = estimate.input_tokens;
        let theirs = reference::max_over_readings(Operation::InvokeModel, ModelFamily::AnthropicClaude, &bytes);
        prop_assert!(ours >= theirs, "ours {} < reference {}", ours, theirs);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), op in 0usize..5) {
        let bedrock = Bedrock::new();
        let ops = ["invoke", "invoke-with-response-stream", "converse", "converse-stream", "count-tokens"];
        for model in [SONNET_4_ENCODED, "amazon.titan-embed-text-v2%3A0", "arn%3Ax", "meta.llama3-8b-instruct-v1%3A0"] {
            let call = bedrock.call(None, &format!("/model/{model}/{}", ops[op]));
            let e = bedrock.estimate(&call, Some(&bytes));
            if call.operation() != Operation::CountTokens {
                prop_assert!(e.input_tokens >= 1);
            }
            let theirs = reference::max_over_readings(call.operation(), bedrock.model_info(call.key().model()).family, &bytes);
            prop_assert!(e.input_tokens >= theirs);
        }
        let _ = BedrockError::from_parts(std::str::from_utf8(&bytes).ok(), &bytes);
        let _ = bedrock_throttle::bedrock::Usage::from_json(&bytes);
    }

    #[test]
    fn json_like_garbage_never_panics(body in reference::json_like()) {
        let bedrock = Bedrock::new();
        for model in [SONNET_4_ENCODED, "cohere.embed-v4%3A0", "amazon.nova-pro-v1%3A0"] {
            for op in ["invoke", "converse"] {
                let call = bedrock.call(None, &format!("/model/{model}/{op}"));
                let family = bedrock.model_info(call.key().model()).family;
                let e = bedrock.estimate(&call, Some(body.as_bytes()));
                let theirs = reference::max_over_readings(call.operation(), family, body.as_bytes());
                prop_assert!(e.input_tokens >= theirs, "{} {}: {} < {}\n{}", model, op, e.input_tokens, theirs, body);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// settlement

#[tokio::test]
async fn invoke_headers_settle_at_once_with_burndown_and_cache_rules() {
    let bedrock = Bedrock::new();
    let response = http::Response::builder()
        .status(200)
        .header("x-amzn-bedrock-input-token-count", "1000")
        .header("x-amzn-bedrock-output-token-count", "100")
        .header("x-amzn-bedrock-cache-read-input-token-count", "5000")
        .header("x-amzn-bedrock-cache-write-input-token-count", "200")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let probe = Probe::new(9_999);
    let response = bedrock.settle_with(
        tagged(response, SONNET_4, Operation::InvokeModel),
        probe.clone(),
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
    let body = json!({
        "output": {"message": {"role": "assistant", "content": [{"text": "Hi!"}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 1000, "outputTokens": 100, "totalTokens": 1100},
        "metrics": {"latencyMs": 100}
    })
    .to_string();
    for size in [1, 7, 64, 4096] {
        let probe = Probe::new(5_000);
        let response = http::Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(chunked(body.as_bytes(), size))
            .unwrap();
        let response = bedrock.settle_with(
            tagged(response, SONNET_4, Operation::Converse),
            probe.clone(),
        );
        assert!(probe.settled().is_empty(), "waits for the body");
        let seen = drain(response.into_body()).await;
        assert_eq!(seen, body.as_bytes(), "bytes pass through unchanged");
        // Claude Sonnet 4: 1,000 in + 100 out settles 1,500.
        assert_eq!(probe.settled(), vec![1_500]);
    }
    // A non-Claude model burns output at 1x; a burndown override wins.
    let probe = Probe::new(5_000);
    let response = tagged(
        http::Response::new(Full::new(Bytes::from(body.clone()))),
        "amazon.nova-lite-v1:0",
        Operation::Converse,
    );
    drain(bedrock.settle_with(response, probe.clone()).into_body()).await;
    assert_eq!(probe.settled(), vec![1_100]);
    let probe = Probe::new(5_000);
    let response = tagged(
        http::Response::new(Full::new(Bytes::from(body.clone()))),
        "amazon.nova-lite-v1:0",
        Operation::Converse,
    );
    let overridden = bedrock.clone().burndown("amazon.nova-lite-v1:0", 3);
    drain(overridden.settle_with(response, probe.clone()).into_body()).await;
    assert_eq!(probe.settled(), vec![1_300]);
    // Untagged: the conservative burndown of 5.
    let probe = Probe::new(5_000);
    let response = http::Response::new(Full::new(Bytes::from(body.clone())));
    drain(bedrock.settle_with(response, probe.clone()).into_body()).await;
    assert_eq!(probe.settled(), vec![1_500]);
}

#[tokio::test]
async fn settlement_learns_bedrocks_own_reservation_from_the_marked_request() {
    let bedrock = Bedrock::new();
    let body = r#"{"messages":[{"role":"user","content":[{"text":"Hello there, how are you today?"}]}],
                  "inferenceConfig":{"maxTokens":256}}"#;
    let mut req = request(&format!("{HOST}/model/{SONNET_4_ENCODED}/converse"), body);
    let plain = bedrock.estimate_tokens(&req);
    let reserved = bedrock.estimate_tokens_mut(&mut req);
    assert_eq!(reserved, plain, "marking does not change the estimate");
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
    let call = response.extensions().get::<BedrockCall>().unwrap();
    assert_eq!(call.reserved_output(), Some(256));
    let probe = Probe::new(reserved);
    drain(bedrock.settle_with(response, probe.clone()).into_body()).await;
    // Bedrock reserved its exact input (12) + 256 and settles 12 + 100 x 5.
    assert_eq!(probe.settled(), vec![512]);
    assert_eq!(probe.server_reserved(), vec![12 + 256]);

    // InvokeModel headers: Bedrock's reservation counts cache reads and writes too.
    let response = http::Response::builder()
        .status(200)
        .header("x-amzn-bedrock-input-token-count", "1000")
        .header("x-amzn-bedrock-output-token-count", "100")
        .header("x-amzn-bedrock-cache-read-input-token-count", "5000")
        .header("x-amzn-bedrock-cache-write-input-token-count", "200")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let mut response = tagged(response, SONNET_4, Operation::InvokeModel);
    let call = response.extensions().get::<BedrockCall>().unwrap().clone();
    response
        .extensions_mut()
        .insert(call.with_reserved_output(300));
    let probe = Probe::new(9_999);
    drop(bedrock.settle_with(response, probe.clone()));
    assert_eq!(probe.settled(), vec![1000 + 200 + 500]);
    assert_eq!(probe.server_reserved(), vec![1000 + 5000 + 200 + 300]);

    // Without the mark (a request estimated with `estimate_tokens` only), a plain settle.
    let probe = Probe::new(5_000);
    let response = tagged(
        http::Response::new(Full::new(Bytes::from_static(
            br#"{"usage":{"inputTokens":10,"outputTokens":10,"totalTokens":20}}"#,
        ))),
        SONNET_4,
        Operation::Converse,
    );
    drain(bedrock.settle_with(response, probe.clone()).into_body()).await;
    assert_eq!(probe.settled(), vec![60]);
    assert!(probe.server_reserved().is_empty());
}

#[tokio::test]
async fn converse_cache_tokens() {
    let body = json!({"usage": {"inputTokens": 10, "outputTokens": 20, "totalTokens": 30,
                               "cacheReadInputTokens": 4000, "cacheWriteInputTokens": 300}})
    .to_string();
    let probe = Probe::new(1);
    let response = tagged(
        http::Response::new(Full::new(Bytes::from(body))),
        SONNET_4,
        Operation::Converse,
    );
    drain(
        Bedrock::new()
            .settle_with(response, probe.clone())
            .into_body(),
    )
    .await;
    assert_eq!(probe.settled(), vec![10 + 300 + 100]);
}

#[tokio::test]
async fn errors_and_uncharged_operations_settle_zero() {
    let bedrock = Bedrock::new();
    let probe = Probe::new(700);
    let response = http::Response::builder()
        .status(429)
        .header("x-amzn-ErrorType", "ThrottlingException")
        .body(Full::new(Bytes::from_static(
            b"{\"message\":\"Too many tokens\"}",
        )))
        .unwrap();
    let _ = bedrock.settle_with(
        tagged(response, SONNET_4, Operation::Converse),
        probe.clone(),
    );
    assert_eq!(probe.settled(), vec![0]);

    let probe = Probe::new(0);
    let response = http::Response::new(Full::new(Bytes::from_static(b"{\"inputTokens\":12}")));
    let _ = bedrock.settle_with(
        tagged(response, SONNET_4, Operation::CountTokens),
        probe.clone(),
    );
    assert_eq!(probe.settled(), vec![0]);
}

#[tokio::test]
async fn body_without_usage_keeps_the_reservation() {
    let probe = Probe::new(321);
    let response = tagged(
        http::Response::new(Full::new(Bytes::from_static(b"{\"completion\":\"hi\"}"))),
        SONNET_4,
        Operation::InvokeModel,
    );
    drain(
        Bedrock::new()
            .settle_with(response, probe.clone())
            .into_body(),
    )
    .await;
    assert_eq!(probe.settled(), vec![321]);
    // Dropped before the end: the reservation.
    let probe = Probe::new(321);
    let body = json!({"usage": {"inputTokens": 1, "outputTokens": 1}}).to_string();
    let response = tagged(
        http::Response::new(chunked(body.as_bytes(), 5)),
        SONNET_4,
        Operation::Converse,
    );
    let mut body = Bedrock::new()
        .settle_with(response, probe.clone())
        .into_body();
    body.frame().await.unwrap().unwrap();
    drop(body);
    assert_eq!(probe.settled(), vec![321]);
}

#[tokio::test]
async fn converse_stream_settles_from_metadata_whatever_the_chunking() {
    let bytes = frames(&converse_stream(1000, 100));
    for size in [1, 3, 13, 100, bytes.len()] {
        let probe = Probe::new(2_000);
        let response = tagged(
            event_stream_response(chunked(&bytes, size)),
            SONNET_4,
            Operation::ConverseStream,
        );
        let response = Bedrock::new().settle_with(response, probe.clone());
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
    for size in [2, 50, bytes.len()] {
        let probe = Probe::new(70_000);
        let response = tagged(
            event_stream_response(chunked(&bytes, size)),
            SONNET_4,
            Operation::InvokeModelWithResponseStream,
        );
        let response = Bedrock::new().settle_with(response, probe.clone());
        assert_eq!(drain(response.into_body()).await, bytes);
        assert_eq!(probe.settled(), vec![1_500]);
    }
}

#[tokio::test]
async fn stream_dropped_midway_settles_max_of_reservation_and_seen() {
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
    for (reserved, expected) in [(100, 1000 + 300 * 5), (10_000, 10_000)] {
        let probe = Probe::new(reserved);
        let response = tagged(
            event_stream_response(StreamBody::new(futures_util::stream::iter(vec![
                Ok::<_, Infallible>(Frame::data(Bytes::copy_from_slice(&bytes[..first_two]))),
                Ok(Frame::data(Bytes::copy_from_slice(&bytes[first_two..]))),
            ]))),
            SONNET_4,
            Operation::InvokeModelWithResponseStream,
        );
        let mut body = Bedrock::new()
            .settle_with(response, probe.clone())
            .into_body();
        body.frame().await.unwrap().unwrap();
        assert!(probe.settled().is_empty());
        drop(body);
        assert_eq!(probe.settled(), vec![expected], "reserved {reserved}");
    }

    // ConverseStream: no usage before `metadata`, output counted from the deltas seen.
    let all = converse_stream(50, 5);
    let bytes = frames(&all[..3]); // messageStart and two deltas ("Hello", " world!")
    let probe = Probe::new(1);
    let response = tagged(
        event_stream_response(Full::new(Bytes::from(bytes))),
        SONNET_4,
        Operation::ConverseStream,
    );
    let body = Bedrock::new()
        .settle_with(response, probe.clone())
        .into_body();
    drain(body).await; // ends without metadata
    // ceil(5/3) + ceil(7/3) = 2 + 3 output tokens, x5.
    assert_eq!(probe.settled(), vec![25]);
}

#[tokio::test]
async fn stream_with_a_later_exception_settles_what_was_seen() {
    let mut messages = converse_stream(10, 10);
    messages.truncate(2);
    messages.push(exception("modelStreamErrorException", "boom"));
    let bytes = frames(&messages);
    let probe = Probe::new(10);
    let response = tagged(
        event_stream_response(Full::new(Bytes::from(bytes.clone()))),
        "amazon.nova-lite-v1:0",
        Operation::ConverseStream,
    );
    let body = Bedrock::new()
        .settle_with(response, probe.clone())
        .into_body();
    assert_eq!(drain(body).await, bytes);
    assert_eq!(probe.settled(), vec![10], "max(reservation 10, seen 2)");
}

#[tokio::test]
async fn garbage_streams_never_panic_and_keep_the_reservation() {
    let probe = Probe::new(42);
    let mut garbage = vec![0u8, 0, 0, 40, 0, 0, 0, 0, 1, 2, 3, 4];
    garbage.extend(std::iter::repeat_n(7u8, 100));
    let response = tagged(
        event_stream_response(chunked(&garbage, 5)),
        SONNET_4,
        Operation::ConverseStream,
    );
    let body = Bedrock::new()
        .settle_with(response, probe.clone())
        .into_body();
    assert_eq!(drain(body).await, garbage);
    assert_eq!(probe.settled(), vec![42]);
}

// ---------------------------------------------------------------------------------------------
// classification

fn error_response(
    status: u16,
    error_type: Option<&str>,
    body: &str,
) -> http::Response<Full<Bytes>> {
    let mut builder = http::Response::builder().status(status);
    if let Some(error_type) = error_type {
        builder = builder.header("x-amzn-ErrorType", error_type);
    }
    builder
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

/// Every code/message pair of bedrock-facts §2, through the response layer and `Classify`.
#[tokio::test]
async fn classify_every_documented_error() {
    use Outcome::*;
    use ThrottleCause::*;
    let suffix = ":http://internal.amazon.com/coral/com.amazon.bedrock/";
    let cases: Vec<(u16, &str, &str, Outcome)> = vec![
        (
            429,
            "ThrottlingException",
            "Too many requests, please wait before trying again.",
            Throttled(Requests),
        ),
        (
            429,
            "ThrottlingException",
            "Too many requests, please wait before trying again. You have sent too many requests.  Wait before trying again.",
            Throttled(Requests),
        ),
        (
            429,
            "ThrottlingException",
            "Your request rate is too high. Reduce the frequency of requests.",
            Throttled(Requests),
        ),
        (
            429,
            "ThrottlingException",
            "Too many tokens, please wait before trying again.",
            Throttled(Tokens),
        ),
        (
            429,
            "ThrottlingException",
            "TOO MANY TOKENS, please wait before trying again.",
            Throttled(Tokens),
        ),
        (
            429,
            "ThrottlingException",
            "Too many tokens per day, please wait before trying again.",
            Throttled(TokensPerDay),
        ),
        (
            429,
            "ThrottlingException",
            "Rate exceeded",
            Throttled(Unknown),
        ),
        (
            429,
            "ModelNotReadyException",
            "Model is not ready for inference. Wait and try your request again.",
            Throttled(ModelNotReady),
        ),
        (
            503,
            "ServiceUnavailableException",
            "Bedrock is unable to process your request.",
            Throttled(Capacity),
        ),
        (
            503,
            "ServiceUnavailableException",
            "Too many connections, please wait before trying again.",
            Throttled(Capacity),
        ),
        (
            500,
            "InternalServerException",
            "An internal server error occurred.",
            Transient,
        ),
        (
            408,
            "ModelTimeoutException",
            "Model has timed out in processing the request. Try your request again.",
            Transient,
        ),
        (424, "ModelErrorException", "The model failed.", Transient),
        (
            424,
            "ModelStreamErrorException",
            "The stream failed.",
            Transient,
        ),
        (400, "ValidationException", "Malformed input request", Fatal),
        (400, "ServiceQuotaExceededException", "quota", Fatal),
        (
            403,
            "AccessDeniedException",
            "You don't have access to the model with the specified model ID.",
            Fatal,
        ),
        (
            404,
            "ResourceNotFoundException",
            "Could not resolve the foundation model",
            Fatal,
        ),
    ];
    let bedrock = Bedrock::new();
    let transport = tower::service_fn(|req: http::Request<Bytes>| async move {
        let (status, code, message) =
            serde_json::from_slice::<(u16, String, String)>(req.body()).unwrap();
        let mut body = json!({ "message": message });
        if code == "ServiceUnavailableException" {
            body["exceptionMetadata"] = json!({"x": 1});
        }
        Ok::<_, Infallible>(error_response(
            status,
            Some(&format!(
                "{code}:http://internal.amazon.com/coral/com.amazon.bedrock/"
            )),
            &body.to_string(),
        ))
    });
    let mut service = ServiceBuilder::new()
        .layer(bedrock.response_layer())
        .service(transport);
    for (status, code, message, expected) in cases {
        // Through the layer (error body buffered, extension attached).
        let req = http::Request::post(format!("{HOST}/model/{SONNET_4_ENCODED}/converse"))
            .body(Bytes::from(
                serde_json::to_vec(&(status, code, message)).unwrap(),
            ))
            .unwrap();
        let response = service.ready().await.unwrap().call(req).await.unwrap();
        let error = response.extensions().get::<BedrockError>().unwrap();
        assert_eq!(error.code(), Some(code));
        assert_eq!(error.message(), Some(message));
        let c = Classify::<_, Infallible>::classify(&bedrock, Ok(&response));
        assert_eq!(c.outcome, expected, "{code}: {message}");
        // The body is still there, byte for byte.
        let body = drain(response.into_body()).await;
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).unwrap()["message"],
            message
        );
        // And from bare parts.
        let body = json!({ "message": message }).to_string();
        let header = format!("{code}{suffix}");
        let c = classify_response_parts(
            status,
            |n| (n == "x-amzn-errortype").then_some(header.as_str()),
            body.as_bytes(),
        );
        assert_eq!(c.outcome, expected, "parts {code}: {message}");
    }
}

#[test]
fn classify_fallbacks_and_retry_after() {
    use Outcome::*;
    // Code from __type, message from Message.
    let c = classify_response_parts(
        429,
        |_| None,
        br#"{"__type":"com.amazon.bedrock#ThrottlingException","Message":"Too many tokens per day, please wait before trying again."}"#,
    );
    assert_eq!(c.outcome, Throttled(ThrottleCause::TokensPerDay));
    // Code from body `code`, message from errorMessage.
    let c = classify_response_parts(
        400,
        |_| None,
        br#"{"code":"ThrottlingException","errorMessage":"Your request rate is too high."}"#,
    );
    assert_eq!(c.outcome, Throttled(ThrottleCause::Requests));
    // The header wins over the body.
    let c = classify_response_parts(
        400,
        |n| (n == "x-amzn-errortype").then_some("ValidationException:x"),
        br#"{"__type":"ThrottlingException"}"#,
    );
    assert_eq!(c.outcome, Fatal);
    // No code at all: the status decides (429 by message).
    for (status, body, expected) in [
        (
            429,
            r#"{"message":"Too many tokens, please wait"}"#,
            Throttled(ThrottleCause::Tokens),
        ),
        (429, "", Throttled(ThrottleCause::Unknown)),
        (503, "<html>", Throttled(ThrottleCause::Capacity)),
        (500, "", Transient),
        (502, "", Transient),
        (504, "", Transient),
        (408, "", Transient),
        (424, "", Transient),
        (400, "", Fatal),
        (401, "", Fatal),
        (413, "", Fatal),
        (200, "", Success),
        (204, "", Success),
    ] {
        assert_eq!(
            classify_response_parts(status, |_| None, body.as_bytes()).outcome,
            expected,
            "{status} {body}"
        );
    }
    // x-amz-retry-after in milliseconds.
    let c = classify_response_parts(
        429,
        |n| match n {
            "x-amzn-errortype" => Some("ThrottlingException"),
            "x-amz-retry-after" => Some("1500"),
            _ => None,
        },
        b"{}",
    );
    assert_eq!(c.retry_after, Some(std::time::Duration::from_millis(1500)));
    assert_eq!(c.outcome, Throttled(ThrottleCause::Unknown));
}

#[test]
fn classify_http_response_without_the_layer_and_errors() {
    let bedrock = Bedrock::new();
    let response = http::Response::builder()
        .status(429)
        .header("x-amzn-ErrorType", "ThrottlingException:http://x/")
        .header("x-amz-retry-after", "20")
        .body(())
        .unwrap();
    let c = Classify::<_, std::io::Error>::classify(&bedrock, Ok(&response));
    assert_eq!(c.outcome, Outcome::Throttled(ThrottleCause::Unknown));
    assert_eq!(c.retry_after, Some(std::time::Duration::from_millis(20)));
    let err = std::io::Error::other("reset");
    let c = Classify::<http::Response<()>, _>::classify(&bedrock, Err(&err));
    assert_eq!(c.outcome, Outcome::Transient);
}

// ---------------------------------------------------------------------------------------------
// the response layer on streams

async fn through_layer(
    path: &str,
    response: http::Response<ChunkStream>,
) -> http::Response<bedrock_throttle::bedrock::ReplayBody<ChunkStream>> {
    let cell = Arc::new(Mutex::new(Some(response)));
    let transport = tower::service_fn(move |_req: http::Request<Bytes>| {
        let response = cell.lock().unwrap().take().unwrap();
        async move { Ok::<_, Infallible>(response) }
    });
    let service = ServiceBuilder::new()
        .layer(Bedrock::new().response_layer())
        .service(transport);
    service
        .oneshot(request(&format!("{HOST}{path}"), "{}"))
        .await
        .unwrap()
}

#[tokio::test]
async fn first_frame_exception_becomes_an_error_response() {
    let bedrock = Bedrock::new();
    for (kind, status, code, expected) in [
        (
            "throttlingException",
            429,
            "ThrottlingException",
            Outcome::Throttled(ThrottleCause::Tokens),
        ),
        (
            "serviceUnavailableException",
            503,
            "ServiceUnavailableException",
            Outcome::Throttled(ThrottleCause::Capacity),
        ),
        (
            "internalServerException",
            500,
            "InternalServerException",
            Outcome::Transient,
        ),
        (
            "modelStreamErrorException",
            424,
            "ModelStreamErrorException",
            Outcome::Transient,
        ),
        (
            "validationException",
            400,
            "ValidationException",
            Outcome::Fatal,
        ),
        (
            "modelTimeoutException",
            408,
            "ModelTimeoutException",
            Outcome::Transient,
        ),
    ] {
        let mut messages = vec![exception(
            kind,
            "Too many tokens, please wait before trying again.",
        )];
        messages.extend(converse_stream(1, 1));
        let bytes = frames(&messages);
        for size in [1, 10, bytes.len()] {
            let response = through_layer(
                &format!("/model/{SONNET_4_ENCODED}/converse-stream"),
                event_stream_response(chunked(&bytes, size)),
            )
            .await;
            assert_eq!(response.status().as_u16(), status, "{kind}");
            assert_eq!(response.headers()["x-amzn-errortype"], code);
            assert_eq!(response.headers()["content-type"], "application/json");
            let error = response.extensions().get::<BedrockError>().unwrap().clone();
            assert!(error.is_from_stream());
            assert_eq!(error.code(), Some(code));
            let c = Classify::<_, Infallible>::classify(&bedrock, Ok(&response));
            assert_eq!(c.outcome, expected, "{kind}");
            let call = response.extensions().get::<BedrockCall>().unwrap();
            assert_eq!(call.operation(), Operation::ConverseStream);
            let body = drain(response.into_body()).await;
            assert_eq!(
                serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
                json!({"message": "Too many tokens, please wait before trying again."})
            );
        }
    }
}

#[tokio::test]
async fn non_exception_first_frame_leaves_the_bytes_identical() {
    let mut messages = converse_stream(3, 4);
    // A later exception passes through unchanged too.
    messages.insert(3, exception("throttlingException", "Too many tokens"));
    let bytes = frames(&messages);
    for size in [1, 2, 5, 17, 64, bytes.len()] {
        let response = through_layer(
            &format!("/model/{SONNET_4_ENCODED}/converse-stream"),
            event_stream_response(chunked(&bytes, size)),
        )
        .await;
        assert_eq!(response.status(), 200);
        assert!(response.extensions().get::<BedrockError>().is_none());
        assert_eq!(drain(response.into_body()).await, bytes, "chunks of {size}");
    }
    // Invoke streams too.
    let bytes = frames(&[chunk(json!({"type":"message_start"}))]);
    let response = through_layer(
        "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke-with-response-stream",
        event_stream_response(chunked(&bytes, 3)),
    )
    .await;
    assert_eq!(drain(response.into_body()).await, bytes);
}

#[tokio::test]
async fn non_streams_and_short_streams_pass_through() {
    // A 200 JSON body is not read.
    let response = through_layer(
        &format!("/model/{SONNET_4_ENCODED}/converse"),
        http::Response::new(chunked(b"{\"usage\":{}}", 4)),
    )
    .await;
    assert!(response.body().prefix().is_none());
    assert_eq!(drain(response.into_body()).await, b"{\"usage\":{}}");
    // A stream that ends inside its first frame.
    let bytes = frames(&converse_stream(1, 1));
    let response = through_layer(
        &format!("/model/{SONNET_4_ENCODED}/converse-stream"),
        event_stream_response(chunked(&bytes[..20], 3)),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(drain(response.into_body()).await, &bytes[..20]);
    // Garbage with an event-stream content type.
    let garbage = b"\xff\xff\xff\xffnot a frame".to_vec();
    let response = through_layer(
        &format!("/model/{SONNET_4_ENCODED}/converse-stream"),
        event_stream_response(chunked(&garbage, 2)),
    )
    .await;
    assert_eq!(drain(response.into_body()).await, garbage);
}

#[tokio::test]
async fn large_error_bodies_are_replayed_not_truncated() {
    let big = format!(
        "{{\"message\":\"Too many tokens\",\"pad\":\"{}\"}}",
        "x".repeat(100_000)
    );
    let mut response = http::Response::new(chunked(big.as_bytes(), 4096));
    *response.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
    response
        .headers_mut()
        .insert("x-amzn-errortype", "ThrottlingException".parse().unwrap());
    let response = through_layer(&format!("/model/{SONNET_4_ENCODED}/invoke"), response).await;
    let error = response.extensions().get::<BedrockError>().unwrap();
    assert_eq!(error.code(), Some("ThrottlingException"));
    assert_eq!(error.message(), None, "the body was too large to parse");
    assert_eq!(drain(response.into_body()).await, big.as_bytes());
}

// ---------------------------------------------------------------------------------------------
// the AWS SDK's types

#[cfg(feature = "sdk")]
mod sdk {
    use super::*;
    use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
    use aws_smithy_runtime_api::client::result::ConnectorError;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::retry::ErrorKind;
    use bedrock_throttle::BoxError;

    fn sdk_request(uri: &str, body: &'static str) -> HttpRequest {
        let mut req = HttpRequest::new(SdkBody::from(body));
        req.set_uri(uri).unwrap();
        req
    }

    fn sdk_response(status: u16, body: SdkBody) -> HttpResponse {
        HttpResponse::new(StatusCode::try_from(status).unwrap(), body)
    }

    async fn drain_sdk(body: SdkBody) -> Vec<u8> {
        drain(body).await
    }

    #[test]
    fn keys_estimates_and_clones() {
        let bedrock = Bedrock::new().region("ca-central-1");
        let req = sdk_request(
            &format!("{HOST}/model/{SONNET_4_ENCODED}/converse?x=1"),
            r#"{"messages":[{"role":"user","content":[{"text":"Hello"}]}],"inferenceConfig":{"maxTokens":9}}"#,
        );
        assert_eq!(
            bedrock.quota_key(&req).to_string(),
            format!("us-east-1/{SONNET_4}")
        );
        assert_eq!(bedrock.estimate_tokens(&req), 8 + 2 + 9);
        let copy = bedrock.clone_request(&req).unwrap();
        assert_eq!(copy.body().bytes(), req.body().bytes());
        let local = sdk_request(
            "http://localhost:1234/model/amazon.nova-lite-v1%3A0/invoke",
            "{}",
        );
        assert_eq!(bedrock.quota_key(&local).region(), "ca-central-1");

        // A streaming body: the allowance plus the model maximum, and no clone.
        let mut streaming = HttpRequest::new(SdkBody::from_body_1_x(chunked(b"{}", 1)));
        streaming
            .set_uri(format!("{HOST}/model/{SONNET_4_ENCODED}/converse"))
            .unwrap();
        assert_eq!(bedrock.estimate_tokens(&streaming), 16_384 + 64_000);
        assert!(bedrock.clone_request(&streaming).is_none());
    }

    #[tokio::test]
    async fn settle_sdk_responses() {
        let bedrock = Bedrock::new();
        // In memory: settles at once, body untouched.
        let body = json!({"usage": {"inputTokens": 1000, "outputTokens": 100}}).to_string();
        let mut response = sdk_response(200, SdkBody::from(body.clone()));
        response.add_extension(BedrockCall::new(
            BedrockKey::new("us-east-1", SONNET_4),
            Operation::Converse,
        ));
        let probe = Probe::new(1);
        let response = bedrock.settle_with(response, probe.clone());
        assert_eq!(probe.settled(), vec![1_500]);
        assert_eq!(response.body().bytes(), Some(body.as_bytes()));

        // Streaming: settles when the body ends.
        let bytes = frames(&converse_stream(1000, 100));
        let mut response = sdk_response(200, SdkBody::from_body_1_x(chunked(&bytes, 9)));
        response
            .headers_mut()
            .insert("content-type", "application/vnd.amazon.eventstream");
        response.add_extension(BedrockCall::new(
            BedrockKey::new("us-east-1", SONNET_4),
            Operation::ConverseStream,
        ));
        let probe = Probe::new(1);
        let mut response = bedrock.settle_with(response, probe.clone());
        assert!(probe.settled().is_empty());
        assert_eq!(drain_sdk(response.take_body()).await, bytes);
        assert_eq!(probe.settled(), vec![1_500]);

        // Headers.
        let mut response = sdk_response(200, SdkBody::from_body_1_x(chunked(b"{}", 1)));
        response
            .headers_mut()
            .insert("x-amzn-bedrock-input-token-count", "10");
        response
            .headers_mut()
            .insert("x-amzn-bedrock-output-token-count", "2");
        let probe = Probe::new(1);
        let _ = bedrock.settle_with(response, probe.clone());
        assert_eq!(probe.settled(), vec![10 + 2 * 5], "untagged: burndown 5");

        // Errors.
        let probe = Probe::new(50);
        let _ = bedrock.settle_with(sdk_response(429, SdkBody::empty()), probe.clone());
        assert_eq!(probe.settled(), vec![0]);
    }

    #[test]
    fn classify_sdk_responses_and_errors() {
        let bedrock = Bedrock::new();
        let mut response = sdk_response(
            429,
            SdkBody::from(
                r#"{"message":"Too many tokens per day, please wait before trying again."}"#,
            ),
        );
        response.headers_mut().insert(
            "x-amzn-ErrorType",
            "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/",
        );
        response.headers_mut().insert("x-amz-retry-after", "3000");
        let c = Classify::<_, ConnectorError>::classify(&bedrock, Ok(&response));
        assert_eq!(c.outcome, Outcome::Throttled(ThrottleCause::TokensPerDay));
        assert_eq!(c.retry_after, Some(std::time::Duration::from_secs(3)));
        // The extension wins over the body.
        response.add_extension(BedrockError::new(
            Some("ThrottlingException"),
            Some("Too many requests"),
        ));
        let c = Classify::<_, BoxError>::classify(&bedrock, Ok(&response));
        assert_eq!(c.outcome, Outcome::Throttled(ThrottleCause::Requests));

        let cases: Vec<(ConnectorError, Outcome)> = vec![
            (ConnectorError::timeout("t".into()), Outcome::Transient),
            (ConnectorError::io("reset".into()), Outcome::Transient),
            (ConnectorError::user("bad".into()), Outcome::Fatal),
            (
                ConnectorError::other("x".into(), Some(ErrorKind::ThrottlingError)),
                Outcome::Throttled(ThrottleCause::Unknown),
            ),
            (
                ConnectorError::other("x".into(), Some(ErrorKind::TransientError)),
                Outcome::Transient,
            ),
            (
                ConnectorError::other("x".into(), Some(ErrorKind::ServerError)),
                Outcome::Transient,
            ),
            (
                ConnectorError::other("x".into(), Some(ErrorKind::ClientError)),
                Outcome::Fatal,
            ),
            (ConnectorError::other("x".into(), None), Outcome::Fatal),
        ];
        for (error, expected) in cases {
            let c = Classify::<HttpResponse, _>::classify(&bedrock, Err(&error));
            assert_eq!(c.outcome, expected, "{error:?}");
            let boxed: BoxError = Box::new(error);
            let c = Classify::<HttpResponse, BoxError>::classify(&bedrock, Err(&boxed));
            assert_eq!(c.outcome, expected);
        }
        let other: BoxError = "something else".into();
        assert_eq!(
            Classify::<HttpResponse, BoxError>::classify(&bedrock, Err(&other)).outcome,
            Outcome::Transient
        );
    }

    async fn sdk_through_layer(path: &str, response: HttpResponse) -> HttpResponse {
        let cell = Arc::new(Mutex::new(Some(response)));
        let transport = tower::service_fn(move |_req: HttpRequest| {
            let response = cell.lock().unwrap().take().unwrap();
            async move { Ok::<_, ConnectorError>(response) }
        });
        ServiceBuilder::new()
            .layer(Bedrock::new().response_layer())
            .service(transport)
            .oneshot(sdk_request(&format!("{HOST}{path}"), "{}"))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn sdk_error_bodies_are_buffered_in_memory() {
        let mut response = sdk_response(
            429,
            SdkBody::from_body_1_x(chunked(
                br#"{"message":"Too many tokens, please wait before trying again."}"#,
                7,
            )),
        );
        response
            .headers_mut()
            .insert("x-amzn-ErrorType", "ThrottlingException:http://x/");
        let response =
            sdk_through_layer(&format!("/model/{SONNET_4_ENCODED}/converse"), response).await;
        assert_eq!(
            response.body().bytes(),
            Some(&br#"{"message":"Too many tokens, please wait before trying again."}"#[..])
        );
        assert!(response.extension::<BedrockCall>().is_some());
        let c = Classify::<_, ConnectorError>::classify(&Bedrock::new(), Ok(&response));
        assert_eq!(c.outcome, Outcome::Throttled(ThrottleCause::Tokens));
    }

    #[tokio::test]
    async fn sdk_first_frame() {
        let path = format!("/model/{SONNET_4_ENCODED}/converse-stream");
        // An exception first: an in-memory 429 the SDK parses as a modeled ThrottlingException.
        let mut messages = vec![exception(
            "throttlingException",
            "Too many requests, please wait before trying again.",
        )];
        messages.extend(converse_stream(1, 1));
        let mut response =
            sdk_response(200, SdkBody::from_body_1_x(chunked(&frames(&messages), 5)));
        response
            .headers_mut()
            .insert("content-type", "application/vnd.amazon.eventstream");
        let response = sdk_through_layer(&path, response).await;
        assert_eq!(response.status().as_u16(), 429);
        assert_eq!(
            response.headers().get("x-amzn-errortype"),
            Some("ThrottlingException")
        );
        assert_eq!(
            response.body().bytes(),
            Some(&br#"{"message":"Too many requests, please wait before trying again."}"#[..])
        );
        let c = Classify::<_, ConnectorError>::classify(&Bedrock::new(), Ok(&response));
        assert_eq!(c.outcome, Outcome::Throttled(ThrottleCause::Requests));

        // An event first: the same bytes.
        let bytes = frames(&converse_stream(1, 1));
        let mut response = sdk_response(200, SdkBody::from_body_1_x(chunked(&bytes, 3)));
        response
            .headers_mut()
            .insert("content-type", "application/vnd.amazon.eventstream");
        let mut response = sdk_through_layer(&path, response).await;
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(drain_sdk(response.take_body()).await, bytes);
    }

    // --- through the real SDK client ----------------------------------------------------------

    use aws_sdk_bedrockruntime::config::{BehaviorVersion, Region};
    use aws_sdk_bedrockruntime::types::{ContentBlock, ConversationRole, Message as SdkMessage};
    use aws_smithy_runtime_api::client::http::{
        HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
    };
    use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
    use tower::util::BoxCloneSyncService;

    type Stack = BoxCloneSyncService<HttpRequest, HttpResponse, ConnectorError>;

    /// An `HttpClient` that sends every attempt through a Tower stack.
    #[derive(Clone)]
    struct StackClient(Stack);

    impl std::fmt::Debug for StackClient {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("StackClient")
        }
    }

    impl HttpConnector for StackClient {
        fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
            let service = self.0.clone();
            HttpConnectorFuture::new(async move { service.oneshot(request).await })
        }
    }

    impl HttpClient for StackClient {
        fn http_connector(
            &self,
            _: &HttpConnectorSettings,
            _: &RuntimeComponents,
        ) -> SharedHttpConnector {
            SharedHttpConnector::new(self.clone())
        }
    }

    /// An SDK client whose transport answers with `respond`, under the response layer and a
    /// settlement into `probe`.
    fn sdk_client(
        probe: Probe,
        respond: impl Fn(&HttpRequest) -> HttpResponse + Send + Sync + Clone + 'static,
    ) -> aws_sdk_bedrockruntime::Client {
        let bedrock = Bedrock::new();
        let transport = tower::service_fn(move |request: HttpRequest| {
            let response = respond(&request);
            async move { Ok::<_, ConnectorError>(response) }
        });
        let settling = bedrock.clone();
        let stack = ServiceBuilder::new()
            .map_response(move |response: HttpResponse| {
                settling.settle_with(response, probe.clone())
            })
            .layer(bedrock.response_layer())
            .service(transport);
        let config = aws_sdk_bedrockruntime::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(aws_credential_types::Credentials::new(
                "AK", "SK", None, None, "test",
            ))
            .endpoint_url("http://127.0.0.1:9")
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled())
            .http_client(StackClient(BoxCloneSyncService::new(stack)))
            .build();
        aws_sdk_bedrockruntime::Client::from_conf(config)
    }

    fn user_message(text: &str) -> SdkMessage {
        SdkMessage::builder()
            .role(ConversationRole::User)
            .content(ContentBlock::Text(text.into()))
            .build()
            .unwrap()
    }

    fn streaming(bytes: Vec<u8>) -> HttpResponse {
        let mut response = sdk_response(200, SdkBody::from_body_1_x(chunked(&bytes, 7)));
        response
            .headers_mut()
            .insert("content-type", "application/vnd.amazon.eventstream");
        response
    }

    #[tokio::test]
    async fn sdk_converse_settles_after_the_sdk_reads_the_body() {
        let probe = Probe::new(64_000);
        let client = sdk_client(probe.clone(), |request| {
            assert!(
                request
                    .uri()
                    .ends_with("/model/us.anthropic.claude-sonnet-4-20250514-v1%3A0/converse")
            );
            let body = json!({
                "output": {"message": {"role": "assistant", "content": [{"text": "Hi!"}]}},
                "stopReason": "end_turn",
                "usage": {"inputTokens": 1000, "outputTokens": 100, "totalTokens": 1100},
                "metrics": {"latencyMs": 1}
            });
            let mut response = sdk_response(
                200,
                SdkBody::from_body_1_x(chunked(body.to_string().as_bytes(), 16)),
            );
            response
                .headers_mut()
                .insert("content-type", "application/json");
            response
        });
        let output = client
            .converse()
            .model_id(SONNET_4)
            .messages(user_message("Hello"))
            .send()
            .await
            .unwrap();
        assert_eq!(output.usage().unwrap().output_tokens(), 100);
        assert_eq!(probe.settled(), vec![1_500]);
    }

    #[tokio::test]
    async fn sdk_sees_a_first_frame_exception_as_a_modeled_throttle() {
        let probe = Probe::new(64_000);
        let client = sdk_client(probe.clone(), |_| {
            let mut messages = vec![exception(
                "throttlingException",
                "Too many tokens, please wait before trying again.",
            )];
            messages.extend(converse_stream(1, 1));
            streaming(frames(&messages))
        });
        let error = client
            .converse_stream()
            .model_id(SONNET_4)
            .messages(user_message("Hello"))
            .send()
            .await
            .unwrap_err();
        let error = error.into_service_error();
        assert!(error.is_throttling_exception(), "{error:?}");
        assert_eq!(
            error.meta().message(),
            Some("Too many tokens, please wait before trying again.")
        );
        assert_eq!(probe.settled(), vec![0], "rejected before reserving");
    }

    #[tokio::test]
    async fn sdk_reads_the_replayed_stream_and_it_settles_from_metadata() {
        let probe = Probe::new(10);
        let client = sdk_client(probe.clone(), |_| {
            streaming(frames(&converse_stream(1000, 100)))
        });
        let mut output = client
            .converse_stream()
            .model_id(SONNET_4)
            .messages(user_message("Hello"))
            .send()
            .await
            .unwrap();
        let mut text = String::new();
        let mut usage = None;
        while let Some(event) = output.stream.recv().await.unwrap() {
            use aws_sdk_bedrockruntime::types::{ContentBlockDelta, ConverseStreamOutput};
            match event {
                ConverseStreamOutput::ContentBlockDelta(delta) => {
                    if let Some(ContentBlockDelta::Text(t)) = delta.delta() {
                        text.push_str(t);
                    }
                }
                ConverseStreamOutput::Metadata(metadata) => usage = metadata.usage().cloned(),
                _ => {}
            }
        }
        assert_eq!(text, "Hello world!");
        assert_eq!(usage.unwrap().input_tokens(), 1000);
        assert_eq!(probe.settled(), vec![1_500]);
    }
}
