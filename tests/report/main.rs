//! The capacity report under a paused clock: a known load (three times the token quota for
//! three windows, some throttles of known causes) gives the known report.

#![cfg(feature = "bedrock")]

use std::time::Duration;

use bedrock_throttle::admit::{AdmissionLayer, Closures};
use bedrock_throttle::budget::Budget;
use bedrock_throttle::classify::{Classification, ThrottleCause};
use bedrock_throttle::report::CapacityRecorder;
use tokio::time::{Instant, sleep_until};
use tower::{Service, ServiceBuilder, ServiceExt};

const W: Duration = Duration::from_secs(60);

#[derive(Clone, Copy)]
struct Answer {
    used: u64,
    throttled: Option<ThrottleCause>,
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_known_load_gives_the_known_report() {
    // 100 requests, 10,000 tokens per minute, 1,000,000 per day.
    let budget = Budget::builder()
        .requests(100)
        .tokens(10_000)
        .tokens_per_day(1_000_000)
        .window(W)
        .without_aimd()
        .build()
        .unwrap();
    let recorder = CapacityRecorder::new(W, 12);
    let protocol = Closures::new(|_: &u64| "model-a")
        .tokens(|_: &u64| 1_000, |a: &Answer| Some(a.used))
        .classify(|r: Result<&Answer, &std::io::Error>| match r {
            Ok(Answer {
                throttled: Some(c), ..
            }) => Classification::throttled(*c),
            _ => Classification::success(),
        });
    let service = ServiceBuilder::new()
        .layer(AdmissionLayer::new(budget.clone(), protocol).observe(recorder.clone()))
        .service_fn(|i: u64| async move {
            // Every 15th call is throttled on tokens, every 30th (offset) on capacity.
            let throttled = match i % 30 {
                0 | 15 => Some(ThrottleCause::Tokens),
                7 => Some(ThrottleCause::Capacity),
                _ => None,
            };
            Ok::<_, std::io::Error>(Answer {
                used: 1_000,
                throttled,
            })
        });

    // 90 calls of 1,000 tokens, one every 2 s: 30,000 tokens per window for three windows,
    // three times the quota.
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..90u64 {
        let mut svc = service.clone();
        tasks.push(async move {
            sleep_until(start + Duration::from_secs(2 * i)).await;
            svc.ready().await.unwrap().call(i).await
        });
    }
    // Joined on this task (no spawn: rust-lang/rust#64552 with closure protocols).
    for result in futures_util::future::join_all(tasks).await {
        result.unwrap();
    }
    // Report at the end of the 12th window.
    sleep_until(start + 12 * W - Duration::from_secs(1)).await;
    let report = recorder.report(&budget);
    assert_eq!(report.windows, 12);
    assert_eq!(report.keys.len(), 1);
    let k = &report.keys[0];
    assert_eq!(k.key, "\"model-a\"");

    // Demand at arrival: [30,000 ×3, 0 ×9] → p50 (rank 6) 0, p95 (rank 12) 30,000.
    assert_eq!(k.demand.tokens_reserved.p95, 30_000);
    assert_eq!(k.demand.tokens_reserved.max, 30_000);
    assert_eq!(k.demand.tokens_reserved.p50, 0);
    assert_eq!(k.demand.requests.p95, 30);
    // Settled: at most the quota per window, 90,000 in all.
    assert_eq!(k.demand.tokens_settled.max, 10_000);

    // The binding limit is measured: every wait was on tokens.
    assert_eq!(k.waits.binding, Some("tokens"));
    assert_eq!(k.waits.on_requests_secs, 0.0);
    assert!(k.waits.on_tokens_secs > 0.0);
    assert!(k.waits.waited >= 60, "{}", k.waits.waited);
    assert!(k.waits.p50_ms <= k.waits.p99_ms && k.waits.p99_ms <= k.waits.max_ms);
    // The last call arrives at 178 s and the 90th slot frees near 8 windows: it waited minutes.
    assert!(k.waits.max_ms > 200_000.0, "{}", k.waits.max_ms);
    assert!(k.saturated_share > 0.5, "{}", k.saturated_share);

    // Throttles by cause.
    assert_eq!(k.throttles.get("tokens"), Some(&6));
    assert_eq!(k.throttles.get("capacity"), Some(&3));
    assert!(k.refusals.is_empty());

    // Limits and the recommendation: max(p95 reserved 30,000, p95 settled 10,000).
    assert_eq!(k.limits.configured.tokens, Some(10_000));
    assert_eq!(k.limits.effective.tokens, Some(10_000));
    assert_eq!(k.recommendation.tokens_per_window, Some(30_000));
    assert_eq!(k.recommendation.requests_per_window, None);
    assert_eq!(
        k.recommendation.text,
        "request an increase to 30000 tokens per minute for \"model-a\""
    );
    // Daily: 90,000 of 1,000,000 spent at 90,000 / 12 = 7,500 per window: 910,000 / 7,500
    // windows of 60 s = 7,280 s.
    let secs = k.recommendation.daily_spent_in_secs.unwrap();
    assert!((secs - 7_280.0).abs() < 1.0, "{secs}");

    // Both forms.
    let table = report.to_string();
    assert!(table.contains("tokens-bound"), "{table}");
    assert!(
        table.contains("request an increase to 30000 tokens per minute"),
        "{table}"
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(
        json["keys"][0]["recommendation"]["tokens_per_window"],
        30_000
    );
    assert_eq!(json["keys"][0]["waits"]["binding"], "tokens");
}
