//! Debt in flight: what a call will settle above its reservation counts against later
//! admissions before its usage is read. From the response by default (a JSON answer's expected
//! debt from its head; a stream's debt as its output arrives), from admission on request, never
//! when off; the expected share of output is learned per model from settlements.

use std::convert::Infallible;

use bedrock_throttle::admit::Protocol;
use bedrock_throttle::bedrock::{Bedrock, BedrockKey, DebtInFlight};
use bedrock_throttle::budget::{Budget, Permit};
use bytes::Bytes;
use http_body::Body;
use http_body_util::{BodyExt, Full};
use serde_json::json;

use crate::eventstream::{converse_stream, event, frame, frames, metadata};
use crate::support::*;

type Http = http::Request<Bytes>;

const SONNET_4: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";
const OPUS_4_8: &str = "us.anthropic.claude-opus-4-8-20261015-v1%3A0";
const BODY: &str = r#"{"messages":[{"role":"user","content":[{"text":"Hi"}]}],"inferenceConfig":{"maxTokens":1000}}"#;

fn converse_usage(output: u64) -> http::Response<Full<Bytes>> {
    let body = json!({"usage": {"inputTokens": 10, "outputTokens": output}}).to_string();
    http::Response::new(Full::new(Bytes::from(body)))
}

fn from_admission() -> Bedrock {
    Bedrock::new().with_debt_in_flight(DebtInFlight::FromAdmission)
}

/// The key's expected debt in flight and its `used` tokens.
fn in_flight(budget: &Budget<BedrockKey>, key: &BedrockKey) -> (u64, u64) {
    let stats = budget.stats(key).unwrap();
    (stats.expected_debt, stats.tokens.unwrap().used)
}

async fn admit(budget: &Budget<BedrockKey>, bedrock: &Bedrock, body: &'static str) -> Permit {
    let plan = plan_for(bedrock, SONNET_4_ENCODED, "converse", body);
    budget
        .acquire(plan.key.clone(), plan.tokens)
        .await
        .unwrap()
        .with_if_unknown(plan.if_unknown)
        .expect_debt(plan.expected_debt)
}

#[test]
fn from_admission_plans_count_the_worst_case_until_the_model_has_settled_enough_calls() {
    let bedrock = from_admission();
    let plan = plan_for(&bedrock, SONNET_4_ENCODED, "converse", BODY);
    // Sonnet 4 burns 5x: 1,000 max tokens may settle 5,000, 4,000 above the reservation.
    assert_eq!(plan.expected_debt, 4_000);
    assert_eq!(
        plan_for(&bedrock, OPUS_4_8, "converse", BODY).expected_debt,
        14_000
    );
    // A 1x model never settles above its reservation.
    assert_eq!(
        plan_for(&bedrock, NOVA_LITE_ENCODED, "converse", BODY).expected_debt,
        0
    );
    // CountTokens reserves no output.
    assert_eq!(
        plan_for(&bedrock, SONNET_4_ENCODED, "count-tokens", BODY).expected_debt,
        0
    );
    // From the response (the default) or off, a plan counts none.
    for debt in [DebtInFlight::FromResponse, DebtInFlight::Off] {
        let bedrock = Bedrock::new().with_debt_in_flight(debt);
        assert_eq!(
            plan_for(&bedrock, SONNET_4_ENCODED, "converse", BODY).expected_debt,
            0
        );
    }
}

#[tokio::test]
async fn settlements_teach_the_share_of_output_per_model() {
    let bedrock = from_admission();
    for i in 0..20 {
        assert_eq!(bedrock.output_share(SONNET_4), None, "after {i}");
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
    let share = bedrock.output_share(SONNET_4).unwrap();
    assert!((0.1..=0.11).contains(&share), "{share}");
    // 0.11 × 1,000 × 5 < 1,000: no debt expected any more.
    assert_eq!(
        plan_for(&bedrock, SONNET_4_ENCODED, "converse", BODY).expected_debt,
        0
    );
    // A clone learns with it (the layers hold clones).
    assert_eq!(bedrock.clone().output_share(SONNET_4), Some(share));
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
    assert_eq!(bedrock.output_share(SONNET_4), None);
}

/// From the response: a JSON answer owes its expected debt from its head (the server has
/// generated and booked it) until its usage is read; then the real debt replaces it.
#[tokio::test(start_paused = true)]
async fn a_json_answer_counts_its_expected_debt_from_its_head() {
    let bedrock = Bedrock::new();
    let budget: Budget<BedrockKey> = Budget::builder().tokens(1_000_000).build().unwrap();
    let plan = plan_for(&bedrock, SONNET_4_ENCODED, "converse", BODY);
    let key = plan.key.clone();
    let permit = admit(&budget, &bedrock, BODY).await;
    assert_eq!(
        in_flight(&budget, &key),
        (0, plan.tokens),
        "nothing before the answer"
    );
    let answer = json!({"usage": {"inputTokens": 10, "outputTokens": 700}}).to_string();
    let response = http::Response::new(chunked(answer.as_bytes(), 8));
    let response =
        <Bedrock as Protocol<Http, _, Infallible>>::settle(&bedrock, response, permit, plan.memo);
    // Nothing learned yet for the model: the worst case, 1,000 × 5 − 1,000.
    assert_eq!(in_flight(&budget, &key), (4_000, plan.tokens));
    drain(response.into_body()).await;
    assert_eq!(in_flight(&budget, &key), (0, 10 + 5 * 700));
}

/// From the response: a stream counts the debt it has run up above its reservation as its
/// output arrives, so little is left to the instant its end is read.
#[tokio::test(start_paused = true)]
async fn a_stream_counts_the_debt_it_runs_up_as_its_output_arrives() {
    let bedrock = Bedrock::new();
    let budget: Budget<BedrockKey> = Budget::builder().tokens(1_000_000).build().unwrap();
    let body = r#"{"messages":[{"role":"user","content":[{"text":"Hi"}]}],"inferenceConfig":{"maxTokens":100}}"#;
    let plan = plan_for(&bedrock, SONNET_4_ENCODED, "converse-stream", body);
    let key = plan.key.clone();
    let permit = budget
        .acquire(key.clone(), plan.tokens)
        .await
        .unwrap()
        .with_if_unknown(plan.if_unknown);
    // Ten deltas of 90 bytes (about 30 tokens each at 3 bytes a token), then the usage.
    let text = "x".repeat(90);
    let delta = format!(r#"{{"contentBlockIndex":0,"delta":{{"text":"{text}"}}}}"#);
    let mut messages = vec![event("messageStart", r#"{"role":"assistant"}"#)];
    messages.extend((0..10).map(|_| event("contentBlockDelta", delta.clone())));
    messages.push(metadata(12, 300));
    let chunks: Vec<Bytes> = messages.iter().map(frame).collect();
    let response =
        event_stream_response(http_body_util::StreamBody::new(futures_util::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, Infallible>(http_body::Frame::data(c))),
        )));
    let mut body = <Bedrock as Protocol<Http, _, Infallible>>::settle(
        &bedrock,
        response,
        permit,
        plan.memo.clone(),
    )
    .into_body();
    let mut counted = Vec::new();
    while let Some(frame) = body.frame().await {
        frame.unwrap();
        if body.is_end_stream() {
            break;
        }
        counted.push(in_flight(&budget, &key).0);
    }
    // It grows with the output seen (5x each token) once that is above the reservation ...
    assert_eq!(counted[0], 0, "{counted:?}");
    assert!(counted.windows(2).all(|w| w[0] <= w[1]), "{counted:?}");
    let last = *counted.last().unwrap();
    assert!(
        last > 1_000,
        "ten deltas of about 30 tokens at 5x: {counted:?}"
    );
    // ... and the usage replaces it.
    drop(body);
    assert_eq!(in_flight(&budget, &key), (0, 12 + 5 * 300));
}

/// Off: the debt counts once the usage is read, as before the setting existed.
#[tokio::test(start_paused = true)]
async fn off_counts_nothing_before_the_usage() {
    let bedrock = Bedrock::new().with_debt_in_flight(DebtInFlight::Off);
    let budget: Budget<BedrockKey> = Budget::builder().tokens(1_000_000).build().unwrap();
    let plan = plan_for(&bedrock, SONNET_4_ENCODED, "converse", BODY);
    let permit = admit(&budget, &bedrock, BODY).await;
    let response = <Bedrock as Protocol<Http, _, Infallible>>::settle(
        &bedrock,
        converse_usage(700),
        permit,
        plan.memo,
    );
    assert_eq!(in_flight(&budget, &plan.key), (0, plan.tokens));
    drain(response.into_body()).await;
    assert_eq!(in_flight(&budget, &plan.key), (0, 10 + 5 * 700));
    assert_eq!(
        bedrock.output_share(SONNET_4),
        None,
        "nothing learned either"
    );
}
