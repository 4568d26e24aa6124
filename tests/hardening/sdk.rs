//! Bodies with extreme numbers through the real SDK stack.

use aws_sdk_bedrockruntime::primitives::Blob;
use bedrock_throttle::budget::{Quota, Settings};
use bedrock_throttle::emulator::Emulator;
use bedrock_throttle::sdk::BedrockThrottle;

use crate::{SONNET4, client};

const HAIKU3: &str = "anthropic.claude-3-haiku-20240307-v1:0";

/// Issue 21: three InvokeModel bodies with `"max_tokens": u64::MAX` to a model without a quota
/// made the second and third calls panic inside the SDK client ("attempt to add with
/// overflow" in the capacity recorder's reserved sum).
#[tokio::test]
async fn max_tokens_of_u64_max_three_times_does_not_panic() {
    let emulator = Emulator::builder().start().await.unwrap();
    // A quota for another model: HAIKU3 has none.
    let throttle = BedrockThrottle::builder()
        .quota(SONNET4, Quota::tokens(100_000))
        .metrics(true)
        .build()
        .unwrap();
    let client = client(&emulator, &throttle);
    let body = br#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":18446744073709551615,"messages":[{"role":"user","content":"hi"}]}"#;
    for _ in 0..3 {
        // The emulator refuses the body (max_tokens above the model's maximum), like Bedrock.
        let result = client
            .invoke_model()
            .model_id(HAIKU3)
            .body(Blob::new(body.to_vec()))
            .send()
            .await;
        assert!(result.is_err());
    }
    let report = throttle.report();
    let other = report.keys.iter().find(|k| k.key == "other").unwrap();
    assert_eq!(other.demand.requests.max, 3);
    // Saturated, not wrapped.
    assert_eq!(other.demand.tokens_reserved.max, u64::MAX);
    emulator.shutdown().await;
}

/// Bodies whose numbers sit at the edges (0, u64::MAX, 2^63, negative, fractional,
/// subnormal, huge floats, numbers where strings belong) through InvokeModel and Converse, to
/// a model with a quota and to one without: each call ends in a response or an error, never a
/// panic, and the report still builds.
#[tokio::test]
async fn extreme_numbers_in_bodies_end_in_a_response_or_an_error() {
    let emulator = Emulator::builder().start().await.unwrap();
    let throttle = BedrockThrottle::builder()
        .quota(
            SONNET4,
            Quota::tokens(u64::MAX).with_tokens_per_day(u64::MAX),
        )
        // A reservation of u64::MAX fits only in an empty day: refused at once, not waited for.
        .settings(Settings::new().max_wait(std::time::Duration::from_secs(1)))
        .metrics(true)
        .build()
        .unwrap();
    let client = client(&emulator, &throttle);
    let numbers = [
        "0",
        "1",
        "-1",
        "18446744073709551615",
        "18446744073709551616",
        "9223372036854775808",
        "-9223372036854775808",
        "9007199254740993",
        "1e308",
        "-1e308",
        "5e-324",
        "2.2250738585072014e-308",
        "0.5",
        "1e400",
        "\"18446744073709551615\"",
        "null",
    ];
    for model in [SONNET4, HAIKU3] {
        for n in numbers {
            let invoke = format!(
                r#"{{"anthropic_version":"bedrock-2023-05-31","max_tokens":{n},"temperature":{n},"messages":[{{"role":"user","content":"hi"}}]}}"#
            );
            let _ = client
                .invoke_model()
                .model_id(model)
                .body(Blob::new(invoke.into_bytes()))
                .send()
                .await;
        }
        // Converse bodies are built by the SDK from typed fields: their edges are i32's.
        for max in [0, 1, i32::MAX, i32::MIN, -1] {
            let _ = client
                .converse()
                .model_id(model)
                .messages(
                    aws_sdk_bedrockruntime::types::Message::builder()
                        .role(aws_sdk_bedrockruntime::types::ConversationRole::User)
                        .content(aws_sdk_bedrockruntime::types::ContentBlock::Text(
                            "hi".into(),
                        ))
                        .build()
                        .unwrap(),
                )
                .inference_config(
                    aws_sdk_bedrockruntime::types::InferenceConfiguration::builder()
                        .max_tokens(max)
                        .top_p(f32::MIN_POSITIVE / 2.0)
                        .build(),
                )
                .send()
                .await;
        }
    }
    let report = throttle.report();
    let text = report.to_string();
    assert!(text.contains(SONNET4), "{text}");
    serde_json::to_string(&report).unwrap();
    let stats = throttle
        .budget()
        .stats(&bedrock_throttle::bedrock::BedrockKey::new(
            "us-east-1",
            SONNET4,
        ))
        .unwrap();
    let tokens = stats.tokens.unwrap();
    assert_eq!(tokens.limit, u64::MAX);
    emulator.shutdown().await;
}
