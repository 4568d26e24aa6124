//! The emulator as Bedrock is in December 2026: burndown from the shared table (and a flag to
//! put it out of step), the account-wide daily quota, HTTP 529, the OpenAI-compatible routes,
//! CountTokens refusing profiles and Nova, extraneous keys in Claude blocks and Nova bodies.

use bedrock_throttle::budget::Quota;
use bedrock_throttle::emulator::{Emulator, Fault, OutputLength};
use serde_json::json;

use crate::common::*;

const OPUS48: &str = "us.anthropic.claude-opus-4-8-20261015-v1:0";
const SONNET5: &str = "us.anthropic.claude-sonnet-5-20260917-v1:0";
const GPT56: &str = "openai.gpt-5.6-sol-v1:0";

fn claude_body(max_tokens: u64) -> Vec<u8> {
    json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": max_tokens,
           "messages": [{"role": "user", "content": "abcdefgh"}]})
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn burndown_comes_from_the_table_and_can_be_put_out_of_step() {
    for (flag, opus, sonnet) in [(None, 15, 10), (Some(5), 5, 10)] {
        let mut b = Emulator::builder().output_length(OutputLength::Fixed(10));
        if let Some(n) = flag {
            b = b.burndown("anthropic.claude-opus-4-8*", n);
        }
        let e = b.start().await.unwrap();
        for (model, burndown) in [(OPUS48, opus), (SONNET5, sonnet)] {
            let r = send(e.addr(), "POST", &path(model, "invoke"), &claude_body(100)).await;
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            // "abcdefgh": 2 tokens + 3 for the message.
            assert_eq!(
                e.stats().model(model).counters.tokens_settled,
                5 + 10 * burndown,
                "{model} {flag:?}"
            );
        }
    }
    // A burndown of 0 and a pattern that matches nothing are refused at start.
    for (pattern, n) in [
        ("anthropic.claude-opus-4-8*", 0),
        ("anthropic.claud-opus*", 5),
    ] {
        let err = Emulator::builder()
            .burndown(pattern, n)
            .start()
            .await
            .unwrap_err();
        assert!(err.config_error().is_some(), "{pattern} {n}: {err}");
    }
}

/// Three models, one account-wide daily quota: the day runs out for all three at once.
#[tokio::test]
async fn an_account_daily_quota_spans_every_model() {
    let e = Emulator::builder()
        .account_tokens_per_day(1_000)
        .output_length(OutputLength::Fixed(10))
        .start()
        .await
        .unwrap();
    let models = [SONNET4, HAIKU3, OPUS48];
    // Each call reserves 5 + 100 and settles 5 + 10 x burndown; 600 reserved before the day
    // is spent whatever the mix.
    let mut ok = 0;
    'outer: for round in 0.. {
        for model in models {
            let r = send(e.addr(), "POST", &path(model, "invoke"), &claude_body(100)).await;
            if r.status != 200 {
                assert_eq!(r.status, 429, "round {round}");
                assert_eq!(r.error_code(), "ThrottlingException");
                assert_eq!(
                    r.json()["message"],
                    "Too many tokens per day, please wait before trying again."
                );
                break 'outer;
            }
            ok += 1;
        }
    }
    assert!(
        ok >= 3,
        "every model was served before the day ran out ({ok})"
    );
    // Now every model is refused on the day, none on its own minute.
    for model in models {
        let r = send(e.addr(), "POST", &path(model, "invoke"), &claude_body(100)).await;
        assert_eq!(r.status, 429, "{model}");
        assert_eq!(
            r.json()["message"],
            "Too many tokens per day, please wait before trying again."
        );
    }
    let stats = e.stats();
    assert!(stats.account_tokens_per_day.unwrap() <= 1_000);
    assert!(stats.totals.throttled_tokens_per_day >= 3);
    assert_eq!(stats.totals.throttled_tokens, 0);

    // A daily limit of 0 refuses even the smallest call.
    let zero = Emulator::builder()
        .account_tokens_per_day(0)
        .start()
        .await
        .unwrap();
    let r = send(
        zero.addr(),
        "POST",
        &path(NOVA, "converse"),
        &converse_body("hi", Some(1)),
    )
    .await;
    assert_eq!(r.status, 429);
    assert_eq!(
        r.json()["message"],
        "Too many tokens per day, please wait before trying again."
    );
}

#[tokio::test]
async fn http_529_with_and_without_retry_after() {
    let e = Emulator::builder()
        .fault_at(
            0,
            Fault::Overloaded {
                retry_after_secs: None,
            },
        )
        .fault_at(1, "overloaded@3".parse().unwrap())
        .start()
        .await
        .unwrap();
    for expected in [None, Some("3")] {
        let r = send(
            e.addr(),
            "POST",
            &path(SONNET4, "converse"),
            &converse_body("hi", Some(5)),
        )
        .await;
        assert_eq!(r.status, 529);
        assert_eq!(r.header("retry-after"), expected);
        assert_eq!(r.header("x-amzn-ErrorType"), None);
        assert_eq!(r.json()["error"]["type"], "overloaded_error");
        // The crate classifies it as a capacity throttle, with the delay when there is one.
        let c = bedrock_throttle::bedrock::classify_response_parts(529, |n| r.header(n), &r.body);
        assert_eq!(
            c.throttle_cause(),
            Some(bedrock_throttle::classify::ThrottleCause::Capacity)
        );
        assert_eq!(
            c.retry_after,
            expected.map(|_| std::time::Duration::from_secs(3))
        );
    }
    assert_eq!(e.stats().totals.faults.overloaded, 2);
    // The third request is served.
    let r = send(
        e.addr(),
        "POST",
        &path(SONNET4, "converse"),
        &converse_body("hi", Some(5)),
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn count_tokens_refuses_profiles_and_nova() {
    let e = Emulator::builder().start().await.unwrap();
    let body =
        br#"{"input":{"converse":{"messages":[{"role":"user","content":[{"text":"hi"}]}]}}}"#;
    for model in [
        SONNET4,
        "global.anthropic.claude-sonnet-4-20250514-v1:0",
        "amazon.nova-pro-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc",
    ] {
        let r = send(e.addr(), "POST", &path(model, "count-tokens"), body).await;
        assert_eq!(r.status, 400, "{model}");
        assert_eq!(r.error_code(), "ValidationException");
        assert_eq!(
            r.json()["message"],
            "The provided model doesn't support counting tokens."
        );
    }
    let r = send(e.addr(), "POST", &path(SONNET4_BASE, "count-tokens"), body).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn extraneous_keys_in_claude_blocks_and_nova_bodies() {
    let e = Emulator::builder().start().await.unwrap();
    let claude = json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "colour": "red"}]}]});
    let r = send(
        e.addr(),
        "POST",
        &path(SONNET4, "invoke"),
        claude.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["message"],
        "Malformed input request: #/messages/0/content/0: extraneous key [colour] is not \
         permitted, please reformat your input and try again."
    );
    let ok = json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi",
                      "cache_control": {"type": "ephemeral"}}]}]});
    let r = send(
        e.addr(),
        "POST",
        &path(SONNET4, "invoke"),
        ok.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    let nova =
        json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}], "max_tokens": 5});
    let r = send(
        e.addr(),
        "POST",
        &path(NOVA, "invoke"),
        nova.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["message"],
        "Malformed input request: #: extraneous key [max_tokens] is not permitted, please \
         reformat your input and try again."
    );
    let nova = json!({"schemaVersion": "messages-v1",
        "messages": [{"role": "user", "content": [{"text": "hi"}]}],
        "inferenceConfig": {"maxTokens": 5}});
    let r = send(
        e.addr(),
        "POST",
        &path(NOVA, "invoke"),
        nova.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

#[tokio::test]
async fn openai_compatible_routes_share_the_model_quota() {
    let e = Emulator::builder()
        .model_quota(GPT56, Quota::tokens(1_000))
        .output_length(OutputLength::Fixed(10))
        .start()
        .await
        .unwrap();
    let chat = json!({"model": GPT56, "messages": [{"role": "user", "content": "abcdefgh"}],
                      "max_completion_tokens": 100});
    let r = send(
        e.addr(),
        "POST",
        "/openai/v1/chat/completions",
        chat.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["usage"]["prompt_tokens"], 5);
    assert_eq!(v["usage"]["completion_tokens"], 10);
    // Settled at GPT-5.6's 10x.
    assert_eq!(e.stats().model(GPT56).counters.tokens_settled, 5 + 100);

    let responses = json!({"model": GPT56, "input": "abcdefgh", "max_output_tokens": 100});
    let r = send(
        e.addr(),
        "POST",
        "/openai/v1/responses",
        responses.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["usage"]["output_tokens"], 10);

    // 210 settled; a call reserving 5 + 900 is over the 1,000 of the window.
    let big = json!({"model": GPT56, "messages": [{"role": "user", "content": "abcdefgh"}],
                     "max_tokens": 900});
    let r = send(
        e.addr(),
        "POST",
        "/openai/v1/chat/completions",
        big.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.error_code(), "ThrottlingException");
    assert_eq!(
        r.json()["error"]["message"],
        "Too many tokens, please wait before trying again."
    );

    for bad in [
        json!({"messages": []}),
        json!({"model": 5, "messages": [{"role": "user", "content": "x"}]}),
    ] {
        let r = send(
            e.addr(),
            "POST",
            "/openai/v1/chat/completions",
            bad.to_string().as_bytes(),
        )
        .await;
        assert_eq!(r.status, 400);
        assert_eq!(r.error_code(), "ValidationException");
    }
}

/// bedrock-mantle: input + max tokens against the input quota (429 when over), output charged
/// as generated and cut short (a 200 with a `length` finish) when the output quota runs out,
/// no burndown.
#[tokio::test]
async fn mantle_has_input_and_output_quotas_and_a_cutoff() {
    let e = Emulator::builder()
        .mantle_quota(GPT56, 1_000, 100)
        .output_length(OutputLength::Fixed(60))
        .start()
        .await
        .unwrap();
    let chat = |max: u64| {
        json!({"model": GPT56, "messages": [{"role": "user", "content": "abcdefgh"}],
               "max_tokens": max})
        .to_string()
    };
    // 60 of the 100 output tokens.
    let r = send(
        e.addr(),
        "POST",
        "/v1/chat/completions",
        chat(200).as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["choices"][0]["finish_reason"], "stop");
    assert_eq!(r.json()["usage"]["completion_tokens"], 60);
    // 40 left: cut short, not refused.
    let r = send(
        e.addr(),
        "POST",
        "/v1/chat/completions",
        chat(200).as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["choices"][0]["finish_reason"], "length");
    assert_eq!(r.json()["usage"]["completion_tokens"], 40);
    // None left: an empty answer, still a 200.
    let r = send(
        e.addr(),
        "POST",
        "/v1/responses",
        json!({"model": GPT56, "input": "abcdefgh", "max_output_tokens": 10})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "incomplete");
    assert_eq!(r.json()["usage"]["output_tokens"], 0);
    // Input + max tokens over what the input quota has left (3 x 5 settled): a 429.
    let r = send(
        e.addr(),
        "POST",
        "/v1/chat/completions",
        chat(990).as_bytes(),
    )
    .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-amzn-ErrorType"), None);
    assert_eq!(r.json()["code"], "ThrottlingException");
    let stats = e.stats();
    let input = stats
        .model("bedrock-mantle/input/openai.gpt-5.6-sol-v1:0")
        .counters;
    let output = stats
        .model("bedrock-mantle/output/openai.gpt-5.6-sol-v1:0")
        .counters;
    assert_eq!(
        input.tokens_settled,
        3 * 5,
        "the unused reservation returned; no burndown"
    );
    assert_eq!((input.throttled_tokens, output.cutoffs), (1, 2));
    assert_eq!(output.tokens_settled, 100);
    // bedrock-runtime's quota of the same model is untouched.
    assert_eq!(stats.model(GPT56).counters.requests, 0);
}
