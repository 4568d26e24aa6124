//! Debt in flight: the plan counts what a call will most likely settle above its reservation
//! (`Plan::expected_debt`), the worst case until the model's share of output is learned from
//! settlements, per model.

use bedrock_throttle::bedrock::Bedrock;
use bytes::Bytes;
use http_body_util::Full;
use serde_json::json;

use crate::eventstream::{converse_stream, frames};
use crate::support::*;

const OPUS_4_8: &str = "us.anthropic.claude-opus-4-8-20261015-v1%3A0";
const NOVA: &str = "amazon.nova-lite-v1%3A0";
const BODY: &str = r#"{"messages":[{"role":"user","content":[{"text":"Hi"}]}],"inferenceConfig":{"maxTokens":1000}}"#;

fn converse_usage(output: u64) -> http::Response<Full<Bytes>> {
    let body = json!({"usage": {"inputTokens": 10, "outputTokens": output}}).to_string();
    http::Response::new(Full::new(Bytes::from(body)))
}

#[test]
fn the_worst_case_until_the_model_has_settled_enough_calls() {
    let bedrock = Bedrock::new();
    let plan = plan_for(&bedrock, SONNET_4_ENCODED, "converse", BODY);
    // Sonnet 4 burns 5x: 1,000 max tokens may settle 5,000, 4,000 above the reservation.
    assert_eq!(plan.expected_debt, 4_000);
    assert_eq!(
        plan_for(&bedrock, OPUS_4_8, "converse", BODY).expected_debt,
        14_000
    );
    // A 1x model never settles above its reservation.
    assert_eq!(plan_for(&bedrock, NOVA, "converse", BODY).expected_debt, 0);
    // CountTokens reserves no output.
    assert_eq!(
        plan_for(&bedrock, SONNET_4_ENCODED, "count-tokens", BODY).expected_debt,
        0
    );
}

#[tokio::test]
async fn settlements_teach_the_share_of_output_per_model() {
    let bedrock = Bedrock::new();
    let sonnet = "us.anthropic.claude-sonnet-4-20250514-v1:0";
    for i in 0..20 {
        assert_eq!(bedrock.output_share(sonnet), None, "after {i}");
        let plan = plan_for(&bedrock, SONNET_4_ENCODED, "converse", BODY);
        let probe = Probe::of(&plan);
        // Every call produces 10% of its max tokens; half of them arrive as streams.
        if i % 2 == 0 {
            let response = bedrock.settle_with(converse_usage(100), probe.clone(), plan.memo);
            drain(response.into_body()).await;
        } else {
            let bytes = frames(&converse_stream(10, 100));
            let response = event_stream_response(chunked(&bytes, 64));
            let body = bedrock
                .settle_with(response, probe.clone(), plan.memo)
                .into_body();
            drain(body).await;
        }
        assert_eq!(probe.settled(), vec![10 + 5 * 100]);
    }
    let share = bedrock.output_share(sonnet).unwrap();
    assert!((0.1..=0.11).contains(&share), "{share}");
    // 0.11 × 1,000 × 5 < 1,000: no debt expected any more.
    assert_eq!(
        plan_for(&bedrock, SONNET_4_ENCODED, "converse", BODY).expected_debt,
        0
    );
    // A clone learns with it (the layers hold clones).
    assert_eq!(bedrock.clone().output_share(sonnet), Some(share));
    // Another model has learned nothing.
    assert_eq!(
        plan_for(&bedrock, OPUS_4_8, "converse", BODY).expected_debt,
        14_000
    );
}

#[tokio::test]
async fn a_call_without_usage_teaches_nothing() {
    let bedrock = Bedrock::new();
    for _ in 0..30 {
        let plan = plan_for(&bedrock, SONNET_4_ENCODED, "converse", BODY);
        let probe = Probe::of(&plan);
        let response = bedrock.settle_with(
            http::Response::new(Full::new(Bytes::from_static(b"{}"))),
            probe,
            plan.memo,
        );
        drain(response.into_body()).await;
    }
    assert_eq!(
        bedrock.output_share("us.anthropic.claude-sonnet-4-20250514-v1:0"),
        None
    );
}
