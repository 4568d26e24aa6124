//! Quota enforcement for each window algorithm and each dimension, with burndown. The clock is
//! paused and driven with `advance`; requests go over the raw HTTP client (it starts no timers).

use std::time::Duration;

use bedrock_throttle::budget::Quota;
use bedrock_throttle::emulator::{Emulator, EmulatorHandle, Enforcement, OutputLength};
use tokio::time::advance;

use crate::common::*;

const W: Duration = Duration::from_secs(1);

async fn emulator(enforcement: Enforcement, quota: Quota, output: u64) -> EmulatorHandle {
    Emulator::builder()
        .enforcement(enforcement)
        .window(W)
        .default_quota(quota)
        .output_length(OutputLength::Fixed(output))
        .start()
        .await
        .unwrap()
}

/// Converse on Claude Sonnet 4 (burndown 5): input is 1 ("abcd") + 3, so each request reserves
/// `4 + max_tokens` and settles `4 + output × 5`.
async fn call(e: &EmulatorHandle, max_tokens: u64) -> RawResponse {
    send(
        e.addr(),
        "POST",
        &path(SONNET4, "converse"),
        &converse_body("abcd", Some(max_tokens)),
    )
    .await
}

fn assert_throttled(r: &RawResponse, message: &str) {
    assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.error_code(), "ThrottlingException");
    assert_eq!(r.json()["message"], message);
    assert!(r.header("x-amzn-RequestId").is_some());
    assert!(
        r.header("x-amz-retry-after").is_none(),
        "real Bedrock sends no retry hint"
    );
}

const TOO_MANY_REQUESTS: &str = "Too many requests, please wait before trying again.";
const TOO_MANY_TOKENS: &str = "Too many tokens, please wait before trying again.";
const TOO_MANY_TOKENS_PER_DAY: &str = "Too many tokens per day, please wait before trying again.";

const ALL: [Enforcement; 3] = [
    Enforcement::SlidingWindow,
    Enforcement::TokenBucket,
    Enforcement::FixedWindow,
];

#[tokio::test(start_paused = true)]
async fn requests_per_window() {
    for enforcement in ALL {
        let e = emulator(enforcement, Quota::requests(2), 1).await;
        assert_eq!(call(&e, 10).await.status, 200);
        assert_eq!(call(&e, 10).await.status, 200);
        assert_throttled(&call(&e, 10).await, TOO_MANY_REQUESTS);
        advance(W).await;
        assert_eq!(call(&e, 10).await.status, 200, "{enforcement}");
        let c = e.stats().model(SONNET4);
        assert_eq!(
            (c.counters.admitted, c.counters.throttled_requests),
            (3, 1),
            "{enforcement}"
        );
        assert_eq!(c.peak_window.requests, 2, "{enforcement}");
        e.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn tokens_per_window_with_burndown() {
    for enforcement in ALL {
        // Each request reserves 4 + 100 = 104 and settles 4 + 40 × 5 = 204.
        let e = emulator(enforcement, Quota::tokens(300), 40).await;
        assert_eq!(call(&e, 100).await.status, 200);
        // Usage 204 after settlement: 204 + 104 > 300.
        assert_throttled(&call(&e, 100).await, TOO_MANY_TOKENS);
        // A smaller reservation fits: 204 + 4 + 50 <= 300; it also produces 40 and settles 204.
        assert_eq!(call(&e, 50).await.status, 200);
        let s = e.stats().model(SONNET4);
        assert_eq!(
            s.window.tokens, 408,
            "{enforcement}: 2 × 204, overshooting the limit"
        );
        assert_eq!(s.peak_window.tokens, 408, "{enforcement}");
        assert_eq!(s.counters.tokens_reserved, 104 + 54);
        assert_eq!(s.counters.tokens_settled, 408);
        assert_eq!(s.counters.throttled_tokens, 1);
        advance(W).await;
        // Sliding and fixed: empty again. Token bucket: 300 refilled on a 408 debt, usage 108,
        // and 108 + 104 <= 300.
        assert_eq!(call(&e, 100).await.status, 200, "{enforcement}");
        e.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn refund_when_output_is_short() {
    for enforcement in ALL {
        // Reserve 4 + 1000, settle 4 + 2 × 5 = 14: the refund frees the window at once.
        let e = emulator(enforcement, Quota::tokens(1_100), 2).await;
        assert_eq!(call(&e, 1_000).await.status, 200);
        assert_eq!(
            call(&e, 1_000).await.status,
            200,
            "{enforcement}: 14 + 1004 <= 1100"
        );
        let s = e.stats().model(SONNET4);
        assert_eq!(s.window.tokens, 28, "{enforcement}");
        assert_eq!(s.peak_window.tokens, 1_018, "{enforcement}");
        e.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn tokens_per_day() {
    for enforcement in ALL {
        // The day window is 1440 windows; settles 4 + 10 × 5 = 54 each.
        let e = emulator(
            enforcement,
            Quota::tokens(1_000).with_tokens_per_day(120),
            10,
        )
        .await;
        assert_eq!(call(&e, 10).await.status, 200);
        assert_eq!(call(&e, 10).await.status, 200);
        // 108 + 14 > 120.
        assert_throttled(&call(&e, 10).await, TOO_MANY_TOKENS_PER_DAY);
        advance(W * 10).await;
        assert_throttled(&call(&e, 10).await, TOO_MANY_TOKENS_PER_DAY);
        advance(W * 1440).await;
        assert_eq!(call(&e, 10).await.status, 200, "{enforcement}");
        let s = e.stats().model(SONNET4);
        assert_eq!(s.counters.throttled_tokens_per_day, 2, "{enforcement}");
        assert_eq!(s.peak_window.tokens_per_day, 108, "{enforcement}");
        e.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn burndown_is_one_before_claude_3_7() {
    let e = emulator(Enforcement::SlidingWindow, Quota::unlimited(), 40).await;
    let r = send(
        e.addr(),
        "POST",
        &path(HAIKU3, "converse"),
        &converse_body("abcd", Some(100)),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(e.stats().model(HAIKU3).counters.tokens_settled, 4 + 40);
}

#[tokio::test(start_paused = true)]
async fn sliding_and_fixed_differ_at_the_boundary() {
    // Fixed windows reset at multiples of W from start; a sliding window does not.
    for (enforcement, admitted_after_boundary) in [
        (Enforcement::FixedWindow, true),
        (Enforcement::SlidingWindow, false),
    ] {
        let e = emulator(enforcement, Quota::requests(1), 1).await;
        advance(Duration::from_millis(900)).await;
        assert_eq!(call(&e, 10).await.status, 200);
        advance(Duration::from_millis(200)).await;
        assert_eq!(
            call(&e, 10).await.status == 200,
            admitted_after_boundary,
            "{enforcement}"
        );
        e.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn token_bucket_refills_continuously() {
    // Capacity 1000, refill 1000 per window.
    let e = emulator(Enforcement::TokenBucket, Quota::tokens(1_000), 0).await;
    // Reserve 4 + 996 = 1000, settle 4 (no output).
    assert_eq!(call(&e, 996).await.status, 200);
    assert_eq!(e.stats().model(SONNET4).window.tokens, 4);
    assert_eq!(call(&e, 996).await.status, 429);
    advance(Duration::from_millis(4)).await; // refills 4 tokens
    assert_eq!(call(&e, 996).await.status, 200);
}

#[tokio::test(start_paused = true)]
async fn quotas_are_per_model_id() {
    let e = Emulator::builder()
        .window(W)
        .default_quota(Quota::requests(1))
        .model_quota(HAIKU3, Quota::requests(2))
        .start()
        .await
        .unwrap();
    let haiku = |e: &EmulatorHandle| {
        let addr = e.addr();
        async move {
            send(
                addr,
                "POST",
                &path(HAIKU3, "converse"),
                &converse_body("x", None),
            )
            .await
            .status
        }
    };
    assert_eq!(call(&e, 10).await.status, 200);
    assert_eq!(call(&e, 10).await.status, 429);
    assert_eq!(haiku(&e).await, 200);
    assert_eq!(haiku(&e).await, 200);
    assert_eq!(haiku(&e).await, 429);
    // The in-region id is another quota than the cross-region profile.
    let r = send(
        e.addr(),
        "POST",
        &path("anthropic.claude-sonnet-4-20250514-v1:0", "converse"),
        &converse_body("x", Some(5)),
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test(start_paused = true)]
async fn retry_after_when_enabled() {
    let e = Emulator::builder()
        .window(W)
        .enforcement(Enforcement::TokenBucket)
        .default_quota(Quota::tokens(1_000))
        .output_length(OutputLength::Fixed(0))
        .retry_after(true)
        .start()
        .await
        .unwrap();
    assert_eq!(call(&e, 996).await.status, 200); // level 1000 - 1000 + 996 = 996
    let r = call(&e, 996).await; // needs 1000: 4 tokens short = 4 ms
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-amz-retry-after"), Some("4"));
}

#[tokio::test(start_paused = true)]
async fn streams_settle_at_the_last_frame_and_pace_output() {
    let e = Emulator::builder()
        .window(W * 10)
        .default_quota(Quota::tokens(10_000))
        .output_length(OutputLength::Fixed(16))
        .time_to_first_token(Duration::from_millis(500))
        .tokens_per_second(10.0)
        .start()
        .await
        .unwrap();
    let start = tokio::time::Instant::now();
    let r = send(
        e.addr(),
        "POST",
        &path(SONNET4, "converse-stream"),
        &converse_body("abcd", Some(100)),
    )
    .await;
    // First token at 0.5 s, the 16th at 0.5 + 15 / 10 s.
    assert_eq!(start.elapsed(), Duration::from_millis(2_000));
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.amazon.eventstream")
    );
    let frames = r.frames();
    let kinds: Vec<String> = frames
        .iter()
        .map(|f| frame_header(f, ":event-type").unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "messageStart",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockStop",
            "messageStop",
            "metadata"
        ]
    );
    for f in &frames {
        let v: serde_json::Value = serde_json::from_slice(f.payload()).unwrap();
        assert!(
            v["p"].as_str().is_some_and(|p| !p.is_empty()),
            "padding in {v}"
        );
        assert_eq!(frame_header(f, ":message-type").as_deref(), Some("event"));
    }
    let meta: serde_json::Value = serde_json::from_slice(frames[5].payload()).unwrap();
    assert_eq!(meta["usage"]["outputTokens"], 16);
    assert_eq!(meta["metrics"]["latencyMs"], 2_000);
    let s = e.stats().model(SONNET4);
    assert_eq!(s.counters.tokens_settled, 4 + 16 * 5);
    // The refund (104 reserved, 84 settled) reduced the charge booked at the start.
    assert_eq!(s.window.tokens, 84);
    assert_eq!(s.peak_window.tokens, 104);
}
