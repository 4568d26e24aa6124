//! The stack in the SDK's client: no throttle reaches the caller, settlement equals the
//! emulator's, streams, waits, every operation.

use std::time::Duration;

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::StalledStreamProtectionConfig;
use aws_sdk_bedrockruntime::error::ProvideErrorMetadata;
use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types::{ConverseStreamOutput, InferenceConfiguration};
use aws_smithy_types::retry::ErrorKind;
use bedrock_throttle::budget::Quota;
use bedrock_throttle::emulator::{Emulator, Enforcement, Fault, OutputLength, StreamException};

use crate::support::{
    SONNET4, client, converse, key, sdk_config, settings, throttle, throttle_with, user,
};

/// Waits (real time, bounded) until no permit of the key is outstanding: a stream's permit
/// settles on the task that drops its body, after the caller has moved on.
async fn settled(throttle: &bedrock_throttle::sdk::BedrockThrottle) {
    for _ in 0..2_000 {
        if throttle
            .budget()
            .stats(&key())
            .is_some_and(|s| s.outstanding == 0)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("a permit never settled");
}

/// Demand at about 3x the quota, all at once: every call succeeds, none is refused by the
/// server more than a rounding of the quota allows, and the server never sees more reserved
/// than its quota in any window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_throttle_reaches_the_caller_when_demand_exceeds_the_quota() {
    let window = Duration::from_millis(800);
    let tpm = 12_000;
    let emulator = Emulator::builder()
        .model_quota(SONNET4, Quota::tokens(tpm))
        .window(window)
        .enforcement(Enforcement::SlidingWindow)
        .output_length(OutputLength::Uniform { min: 20, max: 200 })
        .seed(1)
        .start()
        .await
        .unwrap();
    // The margin: the delay from our admission to the server's booking, counted beyond the
    // window, as a loaded machine running a debug build needs it (the default, 25 ms, is sized
    // for release builds and 60 s windows).
    let throttle = throttle_with(
        settings(window)
            .max_wait(Duration::from_secs(30))
            .expiry_margin(Duration::from_millis(300)),
    )
    .quota(SONNET4, bedrock_throttle::budget::Quota::tokens(tpm))
    .build()
    .unwrap();
    let client = client(&emulator, &throttle);
    let calls: Vec<_> = (0..36)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { converse(&client, &"word ".repeat(100 + 20 * i), 256).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().expect("no call fails");
    }
    let stats = emulator.stats().model(SONNET4);
    assert_eq!(stats.counters.settled, stats.counters.admitted);
    assert!(stats.counters.admitted >= 36);
    // Without the limiter about two thirds of these calls are refused on their first attempt,
    // and their retries again (the plain SDK in the goodput bench: about 70% of attempts).
    // With it, a refusal can only come from a scheduling delay between our admission and the
    // server's booking beyond the expiry margin, and each one costs a whole window of
    // feedback. How many such delays a machine has depends on its load, so the figure lives in
    // the goodput bench (BENCHMARKS.md); this real-clock test asserts only what holds on any
    // machine: far fewer refusals than calls.
    assert!(
        stats.counters.throttled_tokens * 3 < 36,
        "server throttled {} attempts",
        stats.counters.throttled_tokens
    );
}

/// The crate's ledger settles exactly what the emulator settles, request by request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settlement_matches_the_emulator_ledger() {
    let window = Duration::from_secs(600);
    let emulator = Emulator::builder()
        .model_quota(SONNET4, Quota::tokens(10_000_000))
        .window(window)
        .output_length(OutputLength::Uniform { min: 1, max: 300 })
        .seed(9)
        .start()
        .await
        .unwrap();
    let throttle = throttle(window)
        .quota(SONNET4, bedrock_throttle::budget::Quota::tokens(10_000_000))
        .build()
        .unwrap();
    let client = client(&emulator, &throttle);
    let mut settled_before = 0;
    for i in 0..12 {
        let (input, output) = converse(&client, &"lorem ipsum ".repeat(10 * i + 1), 400)
            .await
            .unwrap();
        let stats = emulator.stats().model(SONNET4).counters;
        let ours = throttle.budget().stats(&key()).unwrap();
        assert_eq!(stats.tokens_settled - settled_before, input + 5 * output);
        assert_eq!(
            ours.tokens.unwrap().used,
            stats.tokens_settled,
            "after call {i}"
        );
        assert_eq!(ours.outstanding, 0);
        settled_before = stats.tokens_settled;
    }
    // Streams settle when their body ends.
    let out = client
        .converse_stream()
        .model_id(SONNET4)
        .messages(user("stream me"))
        .inference_config(InferenceConfiguration::builder().max_tokens(100).build())
        .send()
        .await
        .unwrap();
    let mut stream = out.stream;
    while stream.recv().await.unwrap().is_some() {}
    drop(stream);
    settled(&throttle).await;
    let stats = emulator.stats().model(SONNET4).counters;
    let ours = throttle.budget().stats(&key()).unwrap();
    assert_eq!(ours.tokens.unwrap().used, stats.tokens_settled);
}

/// A stream whose first frame is an exception is retried inside the stack: the caller gets
/// the second attempt's events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_failing_before_its_first_event_is_retried() {
    let emulator = Emulator::builder()
        .fault_at(
            0,
            Fault::StreamException {
                exception: StreamException::Throttling,
                after_events: 0,
            },
        )
        .start()
        .await
        .unwrap();
    let throttle = throttle(Duration::from_secs(60))
        .backoff(
            bedrock_throttle::retry::Backoff::new(
                Duration::from_millis(10),
                2.0,
                Duration::from_millis(50),
            )
            .unwrap(),
        )
        .build()
        .unwrap();
    let client = client(&emulator, &throttle);
    let out = client
        .converse_stream()
        .model_id(SONNET4)
        .messages(user("hello"))
        .send()
        .await
        .expect("the retry succeeds");
    let mut stream = out.stream;
    let mut events = 0;
    let mut saw_metadata = false;
    while let Some(event) = stream.recv().await.expect("no error reaches the caller") {
        events += 1;
        saw_metadata |= matches!(event, ConverseStreamOutput::Metadata(_));
    }
    assert!(events > 0 && saw_metadata);
    let stats = emulator.stats().model(SONNET4).counters;
    assert_eq!(stats.faults.stream_exception_before_events, 1);
    assert_eq!(stats.requests, 2);
}

/// After events were delivered, a mid-stream exception reaches the caller unchanged, and the
/// token budget still settles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_failing_after_events_reaches_the_caller() {
    let emulator = Emulator::builder()
        .fault_at(
            0,
            Fault::StreamException {
                exception: StreamException::Throttling,
                after_events: 2,
            },
        )
        .start()
        .await
        .unwrap();
    let throttle = throttle(Duration::from_secs(60))
        .quota(SONNET4, bedrock_throttle::budget::Quota::tokens(1_000_000))
        .build()
        .unwrap();
    let client = client(&emulator, &throttle);
    let out = client
        .converse_stream()
        .model_id(SONNET4)
        .messages(user("hello"))
        .inference_config(InferenceConfiguration::builder().max_tokens(500).build())
        .send()
        .await
        .unwrap();
    let mut stream = out.stream;
    let error = loop {
        match stream.recv().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream should fail"),
            Err(e) => break e,
        }
    };
    assert!(
        error
            .as_service_error()
            .is_some_and(|e| e.is_throttling_exception()),
        "{error:?}"
    );
    drop(stream);
    settled(&throttle).await;
    let ours = throttle.budget().stats(&key()).unwrap();
    assert_eq!(ours.outstanding, 0, "the permit settled");
    assert!(ours.tokens.unwrap().used > 0);
    assert_eq!(
        emulator.stats().model(SONNET4).counters.requests,
        1,
        "not retried"
    );
}

/// A wait longer than the cap fails at once with a throttling error the SDK can see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wait_cap_gives_a_throttling_error_the_sdk_sees() {
    let emulator = Emulator::builder().start().await.unwrap();
    let throttle =
        throttle_with(settings(Duration::from_secs(60)).max_wait(Duration::from_millis(100)))
            .quota(SONNET4, bedrock_throttle::budget::Quota::requests(1))
            .build()
            .unwrap();
    let client = client(&emulator, &throttle);
    converse(&client, "first", 10).await.unwrap();
    let error = client
        .converse()
        .model_id(SONNET4)
        .messages(user("second"))
        .send()
        .await
        .unwrap_err();
    let connector = match &error {
        aws_sdk_bedrockruntime::error::SdkError::DispatchFailure(f) => f.as_connector_error(),
        _ => None,
    }
    .unwrap_or_else(|| panic!("{error:?}"));
    assert_eq!(connector.as_other(), Some(ErrorKind::ThrottlingError));
    assert_eq!(emulator.stats().model(SONNET4).counters.requests, 1);
}

/// Waiting in the limiter longer than the stalled-stream grace period does not trip the SDK's
/// upload protection: the body is read before the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_stream_protection_does_not_fire_during_waits() {
    let window = Duration::from_millis(1500);
    let emulator = Emulator::builder()
        .model_quota(SONNET4, Quota::requests(1))
        .window(window)
        .start()
        .await
        .unwrap();
    // A loaded machine's delay from our admission to the server's booking (the default,
    // 25 ms, is sized for release builds and 60 s windows).
    let throttle = throttle_with(settings(window).expiry_margin(Duration::from_millis(300)))
        .quota(SONNET4, bedrock_throttle::budget::Quota::requests(1))
        .build()
        .unwrap();
    let config = throttle
        .configure(sdk_config(&emulator))
        .stalled_stream_protection(
            StalledStreamProtectionConfig::enabled()
                .grace_period(Duration::from_millis(200))
                .build(),
        );
    let client = Client::from_conf(config.build());
    converse(&client, "first", 10).await.unwrap();
    // This one waits about one window in the limiter, far past the 200 ms grace period.
    converse(&client, "second", 10)
        .await
        .expect("no ThroughputBelowMinimum");
    assert_eq!(
        emulator.stats().model(SONNET4).counters.throttled_requests,
        0
    );
}

/// Every operation works through the layered client, and bad bodies are refused by the server
/// (not retried) without any panic in the stack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_and_bad_bodies() {
    let emulator = Emulator::builder().start().await.unwrap();
    let throttle = throttle_with(
        settings(Duration::from_secs(60)).quota(bedrock_throttle::budget::Quota::tokens(1_000_000)),
    )
    .build()
    .unwrap();
    let client = client(&emulator, &throttle);
    let body = br#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}"#;
    let out = client
        .invoke_model()
        .model_id(SONNET4)
        .body(Blob::new(body.to_vec()))
        .send()
        .await
        .unwrap();
    assert!(!out.body().as_ref().is_empty());
    let out = client
        .invoke_model_with_response_stream()
        .model_id(SONNET4)
        .body(Blob::new(body.to_vec()))
        .send()
        .await
        .unwrap();
    let mut stream = out.body;
    let mut chunks = 0;
    while stream.recv().await.unwrap().is_some() {
        chunks += 1;
    }
    assert!(chunks > 0);
    converse(&client, "hello", 20).await.unwrap();
    // CountTokens takes base model ids only (Bedrock refuses inference profiles).
    let count = client
        .count_tokens()
        .model_id("anthropic.claude-sonnet-4-20250514-v1:0")
        .input(
            aws_sdk_bedrockruntime::types::CountTokensInput::InvokeModel(
                aws_sdk_bedrockruntime::types::InvokeModelTokensRequest::builder()
                    .body(Blob::new(body.to_vec()))
                    .build()
                    .unwrap(),
            ),
        )
        .send()
        .await
        .unwrap();
    assert!(count.input_tokens() > 0);

    // Invalid JSON, and an Anthropic body without max_tokens: the stack reserves a
    // conservative default, the server refuses, nothing is retried.
    let before = emulator.stats().model(SONNET4).counters.requests;
    for bad in [
        &b"{not json"[..],
        br#"{"anthropic_version":"bedrock-2023-05-31","messages":[]}"#,
    ] {
        let error = client
            .invoke_model()
            .model_id(SONNET4)
            .body(Blob::new(bad.to_vec()))
            .send()
            .await
            .unwrap_err();
        assert_eq!(error.code(), Some("ValidationException"), "{error:?}");
    }
    assert_eq!(
        emulator.stats().model(SONNET4).counters.requests,
        before + 2
    );
    let ours = throttle.budget().stats(&key()).unwrap();
    assert_eq!(ours.outstanding, 0);
}
