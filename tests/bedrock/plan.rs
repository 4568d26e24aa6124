//! Plans: the quota key (region from the host, model from the path), the reservation per model
//! family, the worst case if the usage never arrives, the memo; and the estimate never below
//! the emulator's counting rule.

use std::convert::Infallible;

use bedrock_throttle::admit::{Plan, Protocol};
use bedrock_throttle::bedrock::{
    Bedrock, BedrockError, BedrockKey, EstimateBasis, Estimator, Memo, ModelFamily, ModelInfo,
    ModelTable, Operation, Usage,
};
use bedrock_throttle::classify::CloneRequest;
use bytes::Bytes;
use http_body_util::Full;
use proptest::prelude::*;

use crate::reference;
use crate::support::*;

// ---------------------------------------------------------------------------------------------
// keys

#[test]
fn keys_from_real_looking_uris() {
    let bedrock = Bedrock::new().with_region("eu-north-1");
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
        let key = bedrock.plan_of(&req).key;
        assert_eq!((key.region(), key.model()), (region, model), "{uri}");
        assert_eq!(key.has_model(), !model.is_empty());
        let (target, _) = bedrock.target(req.uri().host(), req.uri().path());
        assert_eq!(target, key, "target and plan agree: {uri}");
    }
}

/// Which hosts name a region (what `region_from_host` did before it went private).
#[test]
fn regions_from_host_names() {
    let bedrock = Bedrock::new().with_region("eu-north-1");
    let path = format!("/model/{NOVA_LITE_ENCODED}/converse");
    for (host, region) in [
        ("bedrock-runtime.eu-west-3.amazonaws.com", "eu-west-3"),
        (
            "bedrock-runtime-fips.us-gov-west-1.amazonaws.com:443",
            "us-gov-west-1",
        ),
        ("bedrock-runtime.ap-south-1.api.aws", "ap-south-1"),
        ("bedrock-runtime.cn-north-1.amazonaws.com.cn", "cn-north-1"),
        (
            "vpce-0abc123-xyz.bedrock-runtime.us-east-2.vpce.amazonaws.com",
            "us-east-2",
        ),
        ("bedrock-runtime.eu-west-3.amazonaws.com.", "eu-west-3"),
        // Not Bedrock Runtime host names: the configured region.
        ("127.0.0.1:8080", "eu-north-1"),
        ("localhost", "eu-north-1"),
        ("[::1]:8080", "eu-north-1"),
        ("bedrock.us-west-2.amazonaws.com", "eu-north-1"),
        ("bedrock-runtime.example.com", "eu-north-1"),
        ("bedrock-runtime..amazonaws.com", "eu-north-1"),
    ] {
        let (key, operation) = bedrock.target(Some(host), &path);
        assert_eq!(key.region(), region, "{host}");
        assert_eq!(operation, Operation::Converse);
    }
    assert_eq!(bedrock.target(None, &path).0.region(), "eu-north-1");
}

/// How a path names the operation and the model (what `parse_path` did before it went
/// private): the segment between `/model/` and the last `/`, percent-decoded once.
#[test]
fn operations_and_models_from_paths() {
    let bedrock = Bedrock::new();
    for (path, operation, model) in [
        ("/model/m/invoke", Operation::InvokeModel, "m"),
        (
            "/model/m/invoke-with-response-stream",
            Operation::InvokeModelWithResponseStream,
            "m",
        ),
        ("/model/m/converse", Operation::Converse, "m"),
        ("/model/m/converse-stream", Operation::ConverseStream, "m"),
        ("/model/m/count-tokens", Operation::CountTokens, "m"),
        // A path prefix before `/model/` (a proxy or custom endpoint).
        ("/proxy/v1/model/m/converse", Operation::Converse, "m"),
        // An unencoded ARN with a raw `/` is read whole.
        (
            "/model/arn:aws:bedrock:us-east-1:1:application-inference-profile/abc/converse",
            Operation::Converse,
            "arn:aws:bedrock:us-east-1:1:application-inference-profile/abc",
        ),
        // Decoded once: `%253A` is `%3A`, a `%` without two hex digits stays.
        ("/model/a%253Ab/invoke", Operation::InvokeModel, "a%3Ab"),
        ("/model/a%zzb%3/invoke", Operation::InvokeModel, "a%zzb%3"),
        // No model operation: no model.
        ("/model/m/unknown", Operation::Other, ""),
        ("/model//converse", Operation::Other, ""),
        ("/model/converse", Operation::Other, ""),
        ("/guardrail/g/version/1/apply", Operation::Other, ""),
        ("", Operation::Other, ""),
    ] {
        let (key, op) = bedrock.target(None, path);
        assert_eq!((op, key.model()), (operation, model), "{path}");
    }
}

#[test]
fn cross_region_profiles_are_their_own_key_and_operations_share_one() {
    let bedrock = Bedrock::new();
    let key = |path: &str| {
        bedrock
            .plan_of(&request(&format!("{HOST}{path}"), "{}"))
            .key
    };
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
    let key = Bedrock::new().plan_of(&req).key;
    assert_eq!(key.region(), "sa-east-1");
    assert_eq!(key.model(), "amazon.titan-text-express-v1");
}

// ---------------------------------------------------------------------------------------------
// the plan: reservation, worst case, memo

#[test]
fn plan_reserves_input_and_max_output_and_remembers_the_worst_case() {
    let bedrock = Bedrock::new();
    let body = r#"{"messages":[{"role":"user","content":[{"text":"Hello"}]}],"inferenceConfig":{"maxTokens":300}}"#;
    let req = request(&format!("{HOST}/model/{SONNET_4_ENCODED}/converse"), body);
    let plan = bedrock.plan_of(&req);
    let (key, operation) = bedrock.target(None, req.uri().path());
    let estimate = bedrock.estimate(&key, operation, Some(body.as_bytes()));
    assert_eq!(
        (estimate.input_tokens, estimate.max_output_tokens),
        (8 + 2, 300)
    );
    assert_eq!(plan.tokens, estimate.total());
    assert_eq!(plan.tokens, 10 + 300);
    // Claude Sonnet 4 books output at 5x: a caller that leaves may have cost all of it.
    assert_eq!(plan.if_unknown, 10 + 5 * 300);
    assert_eq!(plan.memo.operation(), Operation::Converse);
    assert_eq!(plan.memo.burndown(), 5);
    assert_eq!(plan.memo.max_output(), 300);
    // Plain http requests have no signature deadline and no identity across attempts.
    assert!(plan.leave_by.is_none());
    assert!(plan.arrival.is_none());

    // `Protocol::plan` is the same plan, and leaves the request as it was.
    let before = req.clone();
    let protocol =
        <Bedrock as Protocol<http::Request<Bytes>, http::Response<Full<Bytes>>, Infallible>>::plan(
            &bedrock, &req,
        );
    assert_eq!(
        (
            protocol.key,
            protocol.tokens,
            protocol.if_unknown,
            protocol.memo
        ),
        (plan.key, plan.tokens, plan.if_unknown, plan.memo)
    );
    assert_eq!((req.uri(), req.body()), (before.uri(), before.body()));

    // A model that burns output at 1x: the worst case is the reservation.
    let nova = plan_of_nova(
        &bedrock,
        r#"{"messages":[],"inferenceConfig":{"maxTokens":50}}"#,
    );
    assert_eq!(nova.memo.burndown(), 1);
    assert_eq!(nova.if_unknown, nova.tokens);
    // A burndown override reaches the plan.
    let overridden = plan_of_nova(
        &bedrock
            .clone()
            .with_burndown("amazon.nova-lite-v1:0", 3)
            .unwrap(),
        r#"{"messages":[],"inferenceConfig":{"maxTokens":50}}"#,
    );
    assert_eq!(overridden.memo.burndown(), 3);
    assert_eq!(overridden.if_unknown, overridden.tokens + 2 * 50);

    // CountTokens draws on no token quota: nothing reserved, nothing at risk.
    let count = plan_for(
        &bedrock,
        SONNET_4_ENCODED,
        "count-tokens",
        r#"{"input":{"converse":{"messages":[]}}}"#,
    );
    assert_eq!((count.tokens, count.if_unknown), (0, 0));
    assert_eq!(count.memo.operation(), Operation::CountTokens);
}

fn plan_of_nova(bedrock: &Bedrock, body: &'static str) -> Plan<BedrockKey, Memo> {
    plan_for(bedrock, NOVA_LITE_ENCODED, "converse", body)
}

// ---------------------------------------------------------------------------------------------
// reservations per family

fn reserve(model: &str, op: &str, body: &'static str) -> (u64, u64) {
    let bedrock = Bedrock::new();
    let (key, operation) = bedrock.target(None, &format!("/model/{model}/{op}"));
    let e = bedrock.estimate(&key, operation, Some(body.as_bytes()));
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
    let path = format!(
        "/model/{}/invoke",
        arn.replace(':', "%3A").replace('/', "%2F")
    );

    // Unknown family: the whole body at least, the unknown maximum.
    let plain = Bedrock::new();
    let (key, operation) = plain.target(None, &path);
    assert_eq!(key.model(), arn);
    let e = plain.estimate(&key, operation, Some(body.as_bytes()));
    assert_eq!(e.basis, EstimateBasis::WholeBody);
    assert_eq!(e.input_tokens, (body.len() as u64).div_ceil(3));
    assert_eq!(e.max_output_tokens, 64_000);

    // Mapped to Claude with a smaller maximum: parsed, the mapped maximum.
    let mapped = Bedrock::new().with_models(
        ModelTable::new()
            .with_model(arn, ModelInfo::new(ModelFamily::AnthropicClaude, 8_000, 5))
            .unwrap(),
    );
    let e = mapped.estimate(&key, operation, Some(body.as_bytes()));
    assert_eq!(e.basis, EstimateBasis::Parsed);
    assert_eq!((e.input_tokens, e.max_output_tokens), (9, 8_000));
    assert_eq!(mapped.output_burndown(arn), 5);

    // Burndown override on top of the table.
    let overridden = mapped.clone().with_burndown(arn, 2).unwrap();
    assert_eq!(overridden.output_burndown(arn), 2);
    assert_eq!(
        mapped.output_burndown(arn),
        5,
        "clones do not share later changes"
    );

    // A custom estimator.
    let frugal = Bedrock::new().with_estimator(
        Estimator::new()
            .with_bytes_per_token(std::num::NonZeroU32::new(4).unwrap())
            .with_per_message(3),
    );
    let req = request(
        &format!("{HOST}/model/{SONNET_4_ENCODED}/converse"),
        r#"{"messages":[{"role":"user","content":[{"text":"abcdefgh"}]}],"inferenceConfig":{"maxTokens":10}}"#,
    );
    assert_eq!(frugal.plan_of(&req).tokens, 3 + 2 + 10);
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
    let tokens = |bedrock: &Bedrock| bedrock.plan_of(&req).tokens;

    let plain = Bedrock::new();
    let whole_body = tokens(&plain);
    assert_eq!(tokens(&plain), whole_body, "cached: same answer");
    assert_eq!(plain.plan_of(&req).key.model(), arn);

    let claude = ModelInfo::new(ModelFamily::AnthropicClaude, 8_000, 5);
    let mapped = plain
        .clone()
        .with_models(ModelTable::new().with_model(arn, claude).unwrap());
    assert_eq!(tokens(&mapped), 9 + 100, "a clone with a new table");
    assert_eq!(tokens(&plain), whole_body, "the original keeps its own");

    // The same value, unshared, changed in place after its cache was filled.
    let only = Bedrock::new();
    assert_eq!(tokens(&only), whole_body);
    let only = only.with_models(ModelTable::new().with_model(arn, claude).unwrap());
    assert_eq!(tokens(&only), 9 + 100);
    // The burndown cached with the model follows a later override too.
    assert_eq!(only.plan_of(&req).memo.burndown(), 5);
    let only = only.with_burndown(arn, 1).unwrap();
    assert_eq!(only.plan_of(&req).memo.burndown(), 1);

    // Regions are cached by host: a custom endpoint's requests follow the configured region.
    let local = request(
        "http://127.0.0.1:8080/model/amazon.nova-lite-v1%3A0/converse",
        r#"{"messages":[]}"#,
    );
    let only = only.with_region("eu-west-1");
    assert_eq!(only.plan_of(&local).key.region(), "eu-west-1");
    let only = only.with_region("ap-south-1");
    assert_eq!(only.plan_of(&local).key.region(), "ap-south-1");
    assert_eq!(
        only.plan_of(&req).key.region(),
        "us-east-1",
        "a Bedrock host names its own"
    );
}

#[test]
fn plans_for_body_types() {
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
    let as_str = http::Request::post(uri.as_str()).body(body).unwrap();
    let as_slice = http::Request::post(uri.as_str())
        .body(body.as_bytes())
        .unwrap();
    assert_eq!(bedrock.plan_of(&as_bytes).tokens, 12);
    assert_eq!(bedrock.plan_of(&as_string).tokens, 12);
    assert_eq!(bedrock.plan_of(&as_vec).tokens, 12);
    assert_eq!(bedrock.plan_of(&as_str).tokens, 12);
    assert_eq!(bedrock.plan_of(&as_slice).tokens, 12);
    let copy = bedrock.clone_request(&as_bytes).unwrap();
    assert_eq!(copy.body(), as_bytes.body());
    assert_eq!(copy.uri(), as_bytes.uri());
}

#[test]
fn bodies_edge_cases_give_conservative_defaults() {
    let bedrock = Bedrock::new();
    let (key, op) = bedrock.target(None, &format!("/model/{SONNET_4_ENCODED}/converse"));
    // Missing maxTokens: the model maximum.
    let e = bedrock.estimate(&key, op, Some(br#"{"messages":[]}"#));
    assert_eq!((e.input_tokens, e.max_output_tokens), (1, 64_000));
    // Invalid JSON.
    let e = bedrock.estimate(&key, op, Some(b"{\"messages\": [oops"));
    assert_eq!(e.basis, EstimateBasis::Unreadable);
    assert_eq!((e.input_tokens, e.max_output_tokens), (6, 64_000));
    // Wrong types: the whole body at least, maxTokens of the wrong type ignored.
    let body = br#"{"messages":{"role":"user"},"inferenceConfig":{"maxTokens":"10"}}"#;
    let e = bedrock.estimate(&key, op, Some(body));
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
        let (key, operation) = bedrock.target(None, &format!("/model/{model}/{op}"));
        let family = bedrock.model_info(key.model()).family;
        let ours = bedrock
            .estimate(&key, operation, Some(body.as_bytes()))
            .input_tokens;
        let theirs = reference::max_over_readings(operation, family, body.as_bytes());
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
        let (key, op) = bedrock.target(None, &format!("/model/{SONNET_4_ENCODED}/converse"));
        let bytes = serde_json::to_vec(&body).unwrap();
        let estimate = bedrock.estimate(&key, op, Some(&bytes));
        prop_assert_eq!(estimate.basis, EstimateBasis::Parsed, "a well-formed body is read field by field");
        let ours = estimate.input_tokens;
        let theirs = reference::max_over_readings(Operation::Converse, ModelFamily::AnthropicClaude, &bytes);
        prop_assert!(ours >= theirs, "ours {} < reference {}", ours, theirs);
        // Pretty-printing changes nothing but whitespace.
        let pretty = serde_json::to_vec_pretty(&body).unwrap();
        prop_assert_eq!(bedrock.estimate(&key, op, Some(&pretty)).input_tokens, ours);
    }

    #[test]
    fn estimate_dominates_reference_on_generated_anthropic(body in reference::anthropic_body()) {
        let bedrock = Bedrock::new();
        let (key, op) = bedrock.target(None, "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke");
        let bytes = serde_json::to_vec(&body).unwrap();
        let estimate = bedrock.estimate(&key, op, Some(&bytes));
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
            let (key, operation) = bedrock.target(None, &format!("/model/{model}/{}", ops[op]));
            let e = bedrock.estimate(&key, operation, Some(&bytes));
            if operation != Operation::CountTokens {
                prop_assert!(e.input_tokens >= 1);
            }
            let theirs = reference::max_over_readings(operation, bedrock.model_info(key.model()).family, &bytes);
            prop_assert!(e.input_tokens >= theirs);
        }
        let _ = BedrockError::from_parts(std::str::from_utf8(&bytes).ok(), &bytes);
        let _ = Usage::from_json(&bytes);
    }

    #[test]
    fn json_like_garbage_never_panics(body in reference::json_like()) {
        let bedrock = Bedrock::new();
        for model in [SONNET_4_ENCODED, "cohere.embed-v4%3A0", "amazon.nova-pro-v1%3A0"] {
            for op in ["invoke", "converse"] {
                let (key, operation) = bedrock.target(None, &format!("/model/{model}/{op}"));
                let family = bedrock.model_info(key.model()).family;
                let e = bedrock.estimate(&key, operation, Some(body.as_bytes()));
                let theirs = reference::max_over_readings(operation, family, body.as_bytes());
                prop_assert!(e.input_tokens >= theirs, "{} {}: {} < {}\n{}", model, op, e.input_tokens, theirs, body);
            }
        }
    }
}
