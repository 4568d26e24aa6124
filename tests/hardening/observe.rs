//! Model ids chosen by callers: the metrics and the capacity report stay within their cap.

use std::collections::HashSet;

use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, InferenceConfiguration, Message,
};
use bedrock_throttle::budget::Quota;
use bedrock_throttle::emulator::Emulator;
use bedrock_throttle::metrics::METRICS;
use bedrock_throttle::report::DEFAULT_MAX_KEYS;
use bedrock_throttle::sdk::BedrockThrottle;
use futures_util::StreamExt;
use metrics_util::debugging::DebuggingRecorder;

use crate::{SONNET4, client};

const IDS: usize = 10_000;

fn id(i: usize) -> String {
    format!("acme.model-{i:05}-v1:0")
}

/// Issue 21: every model id a caller sent added a label value (31 series) and a report key,
/// never pruned. 10,000 distinct ids through the SDK setup with metrics on, half of them on the
/// allow-list (so the cap is reached) and half unknown (so they fold into `other`): the series
/// and the report keys stay within the cap.
#[tokio::test(flavor = "current_thread")]
async fn ten_thousand_model_ids_stay_within_the_cap() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // A local recorder: this current-thread runtime runs every admission on this thread.
    let _guard = metrics::set_default_local_recorder(&recorder);
    let emulator = Emulator::builder().start().await.unwrap();
    let throttle = BedrockThrottle::builder()
        .quota(SONNET4, Quota::tokens(1_000_000))
        .observe_models((0..IDS / 2).map(id))
        .metrics(true)
        .build()
        .unwrap();
    let client = client(&emulator, &throttle);
    // The configured model first: entries go to the first keys seen, up to the cap.
    let models = std::iter::once(SONNET4.to_owned()).chain((0..IDS).map(id));
    let calls = futures_util::stream::iter(models)
        .map(|model| {
            let client = client.clone();
            async move {
                client
                    .converse()
                    .model_id(model)
                    .messages(
                        Message::builder()
                            .role(ConversationRole::User)
                            .content(ContentBlock::Text("hi".into()))
                            .build()
                            .unwrap(),
                    )
                    .inference_config(InferenceConfiguration::builder().max_tokens(5).build())
                    .send()
                    .await
                    .is_ok()
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<bool>>()
        .await;
    assert!(calls.iter().filter(|ok| **ok).count() >= IDS / 2);

    // Metrics: per label value of `model`, one key's series.
    let series = snapshotter.snapshot().into_vec();
    let models: HashSet<String> = series
        .iter()
        .filter_map(|(key, ..)| {
            key.key()
                .labels()
                .find(|l| l.key() == "model")
                .map(|l| l.value().to_owned())
        })
        .collect();
    assert!(models.contains("other"), "{models:?}");
    assert!(models.len() <= DEFAULT_MAX_KEYS + 1, "{}", models.len());
    // Every id past the cap, and every id off the allow-list, is in `other`.
    assert!(!models.contains(&id(IDS - 1)));
    let per_key = series
        .iter()
        .filter(|(key, ..)| key.key().labels().any(|l| l.value() == SONNET4))
        .count();
    assert!(per_key > 0 && per_key <= METRICS.len() * 8, "{per_key}");
    let with_model = series
        .iter()
        .filter(|(key, ..)| key.key().labels().any(|l| l.key() == "model"))
        .count();
    assert!(
        with_model <= (DEFAULT_MAX_KEYS + 1) * per_key,
        "{with_model} series"
    );

    // The report: at most the cap, plus `other`.
    let report = throttle.report();
    assert!(
        report.keys.len() <= DEFAULT_MAX_KEYS + 1,
        "{}",
        report.keys.len()
    );
    assert_eq!(report.keys.last().map(|k| k.key.as_str()), Some("other"));
    assert_eq!(throttle.recorder().key_count(), DEFAULT_MAX_KEYS);
    let other = report.keys.last().unwrap();
    assert!(other.demand.requests.max > 0);
    assert!(
        other.warnings.iter().any(|w| w.contains("acme.model-")),
        "{:?}",
        other.warnings
    );
    emulator.shutdown().await;
}

/// A key whose windows have all left the report gives its place back; so does a metrics key
/// idle for longer than `idle`. On a paused clock.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn idle_keys_are_dropped() {
    use std::time::Duration;

    use bedrock_throttle::admit::{Event, Observe};
    use bedrock_throttle::budget::Budget;
    use bedrock_throttle::metrics::Metrics;
    use bedrock_throttle::report::CapacityRecorder;

    let window = Duration::from_secs(60);
    let budget: Budget<u32> = Budget::builder().tokens(1_000).build().unwrap();
    let recorder = CapacityRecorder::new(window, 5).max_keys(3);
    let metrics = Metrics::new(|k: &u32| vec![("key", k.to_string())])
        .max_keys(3)
        .idle(Duration::from_secs(300));
    let admitted = Event::Admitted {
        tokens: 10,
        waited: Duration::ZERO,
        waited_on: None,
    };
    for key in 0..10u32 {
        recorder.observe(&key, admitted);
        metrics.observe(&key, admitted);
    }
    assert_eq!((recorder.key_count(), metrics.key_count()), (3, 3));
    let keys: Vec<String> = recorder
        .report(&budget)
        .keys
        .into_iter()
        .map(|k| k.key)
        .collect();
    assert_eq!(keys, ["0", "1", "2", "other"]);
    // Six windows on (the report covers five): nothing of theirs is left to report.
    tokio::time::advance(window * 6).await;
    recorder.observe(&10, admitted);
    metrics.observe(&10, admitted);
    assert_eq!((recorder.key_count(), metrics.key_count()), (1, 1));
    let report = recorder.report(&budget);
    assert_eq!(report.keys.len(), 2, "{report}");
    assert_eq!(report.keys[0].key, "10");
}
