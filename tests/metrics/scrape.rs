//! The Prometheus exposition after real traffic: the SDK configured by `BedrockThrottle` with
//! metrics on, against the emulator; the scraped counters agree with the emulator's own stats.

#![cfg(all(feature = "sdk", feature = "emulator"))]

use std::time::Duration;

use aws_sdk_bedrockruntime::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, InferenceConfiguration, Message,
};
use bedrock_throttle::budget::Quota as Limits;
use bedrock_throttle::budget::{Quota, Settings};
use bedrock_throttle::emulator::{Emulator, OutputLength};
use bedrock_throttle::metrics::{RATIO_BUCKETS, WAIT_BUCKETS};
use bedrock_throttle::sdk::BedrockThrottle;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

const MODEL: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";

/// Sums the samples of `name` whose label set contains `label` in the text exposition.
fn scraped(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_counters_match_the_emulator() {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("wait".into()), WAIT_BUCKETS)
        .unwrap()
        .set_buckets_for_metric(Matcher::Suffix("ratio".into()), RATIO_BUCKETS)
        .unwrap()
        .install_recorder()
        .unwrap();
    let window = Duration::from_millis(500);
    let emu = Emulator::builder()
        .model_quota(MODEL, Quota::tokens(20_000))
        .window(window)
        .output_length(OutputLength::Uniform { min: 20, max: 200 })
        .seed(3)
        .start()
        .await
        .unwrap();
    // Told a little more than the emulator enforces, so the server throttles some.
    let throttle = BedrockThrottle::builder()
        .quota(MODEL, Limits::tokens(26_000))
        .settings(Settings::new().window(window))
        .metrics(true)
        .build()
        .unwrap();
    let config = throttle.configure(
        aws_sdk_bedrockruntime::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(emu.endpoint_url())
            .credentials_provider(Credentials::new("AK", "SK", None, None, "test")),
    );
    let client = aws_sdk_bedrockruntime::Client::from_conf(config.build());
    let mut calls = Vec::new();
    for i in 0..40 {
        let client = client.clone();
        calls.push(tokio::spawn(async move {
            client
                .converse()
                .model_id(MODEL)
                .messages(
                    Message::builder()
                        .role(ConversationRole::User)
                        .content(ContentBlock::Text(format!(
                            "call {i}: {}",
                            "word ".repeat(200)
                        )))
                        .build()
                        .unwrap(),
                )
                .inference_config(InferenceConfiguration::builder().max_tokens(400).build())
                .send()
                .await
        }));
    }
    for c in calls {
        let _ = c.await.unwrap();
    }
    let text = handle.render();
    let stats = emu.stats().model(MODEL).counters;
    let label = format!("model=\"{MODEL}\"");
    let admitted = scraped(&text, "bedrock_throttle_admissions", &label);
    let throttles = scraped(&text, "bedrock_throttle_server_throttles", &label);
    let settled = scraped(&text, "bedrock_throttle_tokens_settled", &label);
    assert_eq!(admitted, stats.requests as f64, "{text}");
    assert_eq!(
        throttles,
        (stats.throttled_requests + stats.throttled_tokens + stats.throttled_tokens_per_day) as f64,
        "{text}"
    );
    // Every answered call settles what the emulator booked for it.
    assert_eq!(settled, stats.tokens_settled as f64, "{text}");
    // Histograms with explicit buckets (not summaries).
    assert!(
        text.contains("bedrock_throttle_queue_wait_bucket"),
        "{text}"
    );
    let report = throttle.report();
    assert_eq!(report.keys.len(), 1);
    emu.shutdown().await;
}
