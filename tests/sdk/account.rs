//! The account's daily scope: "Too many tokens per day" on one model holds back every model of
//! the account, through the real SDK client against the emulator.

use std::time::Duration;

use aws_sdk_bedrockruntime::types::InferenceConfiguration;
use aws_smithy_types::retry::ErrorKind;
use bedrock_throttle::bedrock::BedrockKey;
use bedrock_throttle::budget::{Quota, QuotaStore};
use bedrock_throttle::emulator::Emulator;
use bedrock_throttle::sdk::{BedrockThrottle, SetupError};

use crate::support::{SONNET4, client, converse, settings, throttle, throttle_with, user};

const HAIKU: &str = "us.anthropic.claude-3-5-haiku-20241022-v1:0";
const ACCOUNT: &str = "123456789012";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_tokens_per_day_on_one_model_makes_another_fail_fast() {
    // The server's day is spent for model a (its daily quota is below one call), which the
    // client does not know: its first call is refused with "Too many tokens per day".
    let emulator = Emulator::builder()
        .model_quota(SONNET4, Quota::tokens(1_000_000).with_tokens_per_day(10))
        .start()
        .await
        .unwrap();
    let throttle =
        throttle_with(settings(Duration::from_secs(60)).max_wait(Duration::from_secs(1)))
            .account_daily_quota(ACCOUNT, 1_000_000)
            .build()
            .unwrap();
    let client = client(&emulator, &throttle);
    let first = converse(&client, "hello", 50).await;
    assert!(first.is_err(), "the server's day is spent: {first:?}");
    assert!(
        emulator
            .stats()
            .model(SONNET4)
            .counters
            .throttled_tokens_per_day
            >= 1,
        "the server said too many tokens per day"
    );
    let account = BedrockKey::account("us-east-1", ACCOUNT);
    let day = throttle
        .store()
        .stats(&account)
        .unwrap()
        .tokens_per_day
        .unwrap();
    assert!(
        day.effective_limit < 1_000_000,
        "the feedback reached the account's scope: {day:?}"
    );
    // Model b of the same account fails fast, without reaching the server.
    let error = client
        .converse()
        .model_id(HAIKU)
        .messages(user("hello"))
        .inference_config(InferenceConfiguration::builder().max_tokens(50).build())
        .send()
        .await
        .unwrap_err();
    let connector = match &error {
        aws_sdk_bedrockruntime::error::SdkError::DispatchFailure(f) => f.as_connector_error(),
        _ => None,
    }
    .unwrap_or_else(|| panic!("{error:?}"));
    assert_eq!(connector.as_other(), Some(ErrorKind::ThrottlingError));
    assert_eq!(emulator.stats().model(HAIKU).counters.requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_daily_quota_is_charged_once_across_models() {
    let emulator = Emulator::builder().start().await.unwrap();
    let throttle = throttle(Duration::from_secs(60))
        .quota(
            SONNET4,
            Quota::tokens(1_000_000).with_tokens_per_day(5_000_000),
        )
        .account_daily_quota(ACCOUNT, 2_000_000)
        .build()
        .unwrap();
    let client = client(&emulator, &throttle);
    converse(&client, "hello", 50).await.unwrap();
    let account = BedrockKey::account("us-east-1", ACCOUNT);
    let store = throttle.store();
    let used_account = store.stats(&account).unwrap().tokens_per_day.unwrap().used;
    let model = store.stats(&BedrockKey::new("us-east-1", SONNET4)).unwrap();
    // The per-model daily quota still works beside the account's, charged the same call.
    assert!(used_account > 0);
    assert_eq!(model.tokens_per_day.unwrap().used, used_account);
}

#[test]
fn a_daily_quota_without_an_account_is_refused() {
    let err = BedrockThrottle::builder()
        .account_daily_quota("", 1_000)
        .build()
        .unwrap_err();
    assert!(matches!(err, SetupError::DailyQuotaWithoutAccount), "{err}");
}
