//! The SDK setup against Bedrock as it is in December 2026: the quickstart's workload on a 15x
//! and a 10x model (the model table's tiers, shared as data with the emulator), a server out of
//! step with the crate's table (the crate says so), and a bearer-authenticated client whose
//! wait is longer than a SigV4 signature's validity.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_bedrockruntime::config::{ConfigBag, Intercept, RuntimeComponents, Token};
use aws_smithy_runtime_api::client::auth::http::HTTP_BEARER_AUTH_SCHEME_ID;
use bedrock_throttle::bedrock::Bedrock;
use bedrock_throttle::budget::{Quota, Settings};
use bedrock_throttle::emulator::{Emulator, EmulatorHandle, Enforcement, OutputLength};
use bedrock_throttle::sdk::{BedrockThrottle, default_https_client};

use crate::load;
use crate::support::{converse, sdk_config, settings, throttle, throttle_with};

const OPUS48: &str = "us.anthropic.claude-opus-4-8-20261015-v1:0";
const SONNET5: &str = "us.anthropic.claude-sonnet-5-20260917-v1:0";

/// The quickstart's emulator: a sliding window, Claude-like speed and output lengths.
async fn emulator(model: &str, tpm: u64, window: Duration) -> EmulatorHandle {
    Emulator::builder()
        .model_quota(model, Quota::tokens(tpm))
        .window(window)
        .enforcement(Enforcement::SlidingWindow)
        .output_length(OutputLength::Uniform { min: 40, max: 400 })
        .time_to_first_token(Duration::from_millis(150))
        .tokens_per_second(2_000.0)
        .seed(7)
        .start()
        .await
        .unwrap()
}

/// The quickstart's workload through the setup: about twice the quota for three windows, at
/// the burndown `bedrock` uses for `model`. Returns the throttle and the attempts the server
/// throttled.
async fn quickstart(
    emulator: &EmulatorHandle,
    model: &str,
    tpm: u64,
    window: Duration,
    bedrock: Bedrock,
) -> (BedrockThrottle, u64, Vec<load::CallOutcome>) {
    let burndown = bedrock.output_burndown(model);
    let per_call = 415 + 210 * burndown;
    let count = (2 * tpm * 3 / per_call).max(1) as usize;
    let calls = load::mixed_calls(42, count, window * 3);
    let throttle = BedrockThrottle::builder()
        .bedrock(bedrock)
        .quota(model, Quota::tokens(tpm))
        .settings(Settings::new().window(window))
        .report_windows(8)
        .http_client(default_https_client())
        .build()
        .unwrap();
    let client = Client::from_conf(throttle.configure(sdk_config(emulator)).build());
    let outcomes = load::run(&client, model, &calls).await;
    let c = emulator.stats().model(model).counters;
    (
        throttle,
        c.throttled_requests + c.throttled_tokens + c.throttled_tokens_per_day,
        outcomes,
    )
}

/// Opus 4.8 (15x) and Sonnet 5 (10x): the crate's table and the server agree, so every call
/// completes and the server throttles (almost) no attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_workload_on_15x_and_10x_models() {
    // The quickstart's window and demand (about twice the quota for three windows).
    let window = Duration::from_secs(2);
    let tpm = 40_000;
    for (model, burndown) in [(OPUS48, 15), (SONNET5, 10)] {
        let emu = emulator(model, tpm, window).await;
        let bedrock = Bedrock::new().with_region("us-east-1");
        assert_eq!(bedrock.output_burndown(model), burndown);
        let (throttle, throttled, outcomes) = quickstart(&emu, model, tpm, window, bedrock).await;
        let failed: Vec<_> = outcomes
            .iter()
            .filter_map(|o| o.result.clone().err())
            .collect();
        assert!(failed.is_empty(), "{model}: {failed:?}");
        // With a right table the server throttles little or nothing (0 in most runs, and in
        // the goodput bench at 10x). Not always 0: calls admitted together book their 10x or
        // 15x output debt on the server a few milliseconds before the client reads it, and an
        // admission in that gap can be refused. Counting that debt in flight against admission
        // is the engine's part (an estimate learned per key); until it lands, a loaded machine
        // sees a throttle or two here, against 5-10% with a stale 5x table (next test).
        // The figure depends on the machine's load (the goodput bench has it); on any
        // machine it stays far below the plain SDK's (about 70% of attempts at 3x).
        let attempts = emu.stats().model(model).counters.requests;
        assert!(
            throttled * 10 <= attempts,
            "{model}: the server throttled {throttled} of {attempts} attempts"
        );
        let report = throttle.report();
        let key = report
            .keys
            .iter()
            .find(|k| k.model.as_deref() == Some(model))
            .unwrap();
        assert_eq!(key.burndown, Some(burndown));
        if throttled == 0 {
            assert!(
                key.warnings
                    .iter()
                    .all(|w| !w.contains("throttled on tokens"))
            );
        }
        // The crate's ledger settled what the emulator settled.
        let settled: u64 = outcomes
            .iter()
            .filter_map(|o| o.result.as_ref().ok())
            .map(|(input, output)| input + output * burndown)
            .sum();
        assert_eq!(emu.stats().model(model).counters.tokens_settled, settled);
    }
}

/// The server settles Opus 4.8 at 15x; the crate's table is overridden to 5x: the server
/// throttles what the crate admits, and the crate says why it may be (a warning in the
/// capacity report, with the burndown it used).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_burndown_shows_in_the_report() {
    let window = Duration::from_secs(1);
    let tpm = 40_000;
    let emu = emulator(OPUS48, tpm, window).await;
    let stale = Bedrock::new()
        .with_region("us-east-1")
        .with_burndown("anthropic.claude-opus-4-8*", 5)
        .unwrap();
    let (throttle, throttled, outcomes) = quickstart(&emu, OPUS48, tpm, window, stale).await;
    assert!(
        throttled > 0,
        "a 5x table against a 15x server is throttled"
    );
    assert!(outcomes.iter().any(|o| o.result.is_ok()));
    let report = throttle.report();
    let key = report
        .keys
        .iter()
        .find(|k| k.model.as_deref() == Some(OPUS48))
        .unwrap();
    assert_eq!(key.burndown, Some(5));
    // The limit in force, while below the configured one, names the model and its table's
    // rate, and the throttles say the same while they are in the report's windows (one of the
    // two holds at the end of the run: the limit recovers only after the last throttle).
    assert!(
        key.warnings
            .iter()
            .any(|w| (w.contains("brought the limit in force")
                && w.contains(OPUS48)
                && w.contains("it says 5x"))
                || (w.contains("throttled on tokens") && w.contains("5x"))),
        "{:?}",
        key.warnings
    );
    assert!(report.to_string().contains("(output burndown 5x)"));
}

/// Counts the SDK's attempts and checks each is bearer-authenticated (none SigV4-signed).
#[derive(Debug, Clone, Default)]
struct BearerAttempts(Arc<AtomicUsize>);

impl Intercept for BearerAttempts {
    fn name(&self) -> &'static str {
        "count bearer attempts"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), bedrock_throttle::BoxError> {
        let auth = context
            .request()
            .headers()
            .get("authorization")
            .unwrap_or_default();
        assert_eq!(auth, "Bearer bedrock-api-key-for-tests");
        assert!(context.request().headers().get("x-amz-date").is_none());
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// One request admitted per 2 s window and a signature window scaled down to 3 s (the margin
/// leaves 3 s of the 5 minutes): SigV4 requests waiting longer are re-signed
/// (`tests/sdk/backlog.rs`). Bearer requests have no signature to expire: the fourth waits about 6 s,
/// twice the scaled window, and is neither re-signed (one SDK attempt per call) nor cut, and
/// the server throttles none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_request_waits_past_the_signature_window_without_a_re_sign() {
    let window = Duration::from_secs(2);
    let emu = Emulator::builder()
        .model_quota(crate::support::SONNET4, Quota::requests(1))
        .window(window)
        .start()
        .await
        .unwrap();
    // The margin: room for the scheduling delays of a loaded test machine between the crate's
    // admission and the server's booking.
    let throttle = throttle_with(settings(window).expiry_margin(Duration::from_millis(300)))
        .quota(crate::support::SONNET4, Quota::requests(1))
        .signature_margin(Duration::from_secs(297))
        .retry_deadline(Duration::from_millis(500))
        .build()
        .unwrap();
    let attempts = BearerAttempts::default();
    let config = throttle
        .configure(
            aws_sdk_bedrockruntime::Config::builder()
                .behavior_version(aws_sdk_bedrockruntime::config::BehaviorVersion::latest())
                .region(aws_sdk_bedrockruntime::config::Region::new("us-east-1"))
                .endpoint_url(emu.endpoint_url()),
        )
        .bearer_token(Token::new("bedrock-api-key-for-tests", None))
        .auth_scheme_preference([HTTP_BEARER_AUTH_SCHEME_ID])
        .interceptor(attempts.clone())
        .build();
    let client = Client::from_conf(config);
    let start = tokio::time::Instant::now();
    let mut calls = Vec::new();
    for i in 0..4u32 {
        let client = client.clone();
        calls.push(tokio::spawn(async move {
            (
                converse(&client, &format!("request {i}"), 10).await,
                start.elapsed(),
            )
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut longest = Duration::ZERO;
    for call in calls {
        let (result, at) = call.await.unwrap();
        result.expect("every bearer call completes");
        longest = longest.max(at);
    }
    assert!(
        longest > Duration::from_secs(3),
        "the last call waited past the scaled signature window"
    );
    assert_eq!(attempts.0.load(Ordering::SeqCst), 4, "no call was re-sent");
    let c = emu.stats().model(crate::support::SONNET4).counters;
    assert_eq!(c.throttled_requests, 0);
    assert_eq!(c.admitted, 4);
}

/// An HTTP 529 `overloaded_error` with `Retry-After` is a capacity throttle the stack retries
/// (after the server's delay): the caller sees a success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_529_is_retried() {
    let window = Duration::from_secs(1);
    let emu = Emulator::builder()
        .fault_at(0, "overloaded@1".parse().unwrap())
        .fault_at(1, "overloaded".parse().unwrap())
        .start()
        .await
        .unwrap();
    // A model with a quota of its own: the report keeps it apart (models without one are
    // folded into `other`).
    let throttle = throttle(window)
        .quota(
            crate::support::SONNET4,
            bedrock_throttle::budget::Quota::tokens(1_000_000),
        )
        .build()
        .unwrap();
    let client = Client::from_conf(throttle.configure(sdk_config(&emu)).build());
    converse(&client, "hello", 10)
        .await
        .expect("retried past two 529s");
    let c = emu.stats().model(crate::support::SONNET4).counters;
    assert_eq!(c.faults.overloaded, 2);
    assert_eq!((c.requests, c.admitted), (3, 1));
    let report = throttle.report();
    let key = report
        .keys
        .iter()
        .find(|k| k.model.as_deref() == Some(crate::support::SONNET4))
        .unwrap();
    assert_eq!(key.throttles.get("capacity"), Some(&2));
}
