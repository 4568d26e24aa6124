//! The one-call SDK setup on the shared store: `BedrockThrottle::builder()...redis(url)`.

use std::time::Duration;

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, InferenceConfiguration, Message,
};
use bedrock_throttle::budget::{Quota, Settings};
use bedrock_throttle::emulator::{Emulator, Enforcement, OutputLength};
use bedrock_throttle::sdk::{BedrockThrottle, SetupError};
use bedrock_throttle::store::{Store, StoreError};

use crate::support::RedisServer;

const SONNET4: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";

/// Two SDK clients, each with its own `BedrockThrottle` told the WHOLE quota, share it through
/// Redis: demand at about 3x, and the server throttles (next to) nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_throttles_share_one_quota_through_redis() {
    let server = RedisServer::start();
    let window = Duration::from_millis(800);
    let tpm = 12_000;
    let emulator = Emulator::builder()
        .model_quota(SONNET4, bedrock_throttle::budget::Quota::tokens(tpm))
        .window(window)
        .enforcement(Enforcement::SlidingWindow)
        .output_length(OutputLength::Uniform { min: 20, max: 200 })
        .seed(3)
        .start()
        .await
        .unwrap();
    let clients: Vec<Client> = (0..2)
        .map(|_| {
            let throttle = BedrockThrottle::builder()
                .quota(SONNET4, Quota::tokens(tpm))
                .settings(
                    Settings::new()
                        .window(window)
                        .max_wait(Duration::from_secs(30)),
                )
                .redis(server.url())
                .build()
                .unwrap();
            assert!(matches!(throttle.store(), Store::Redis(_)));
            let config = aws_sdk_bedrockruntime::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new("us-east-1"))
                .credentials_provider(Credentials::new("AK", "SK", None, None, "test"))
                .endpoint_url(emulator.endpoint_url());
            Client::from_conf(throttle.configure(config).build())
        })
        .collect();
    let calls: Vec<_> = (0..36)
        .map(|i| {
            let client = clients[i % 2].clone();
            tokio::spawn(async move {
                client
                    .converse()
                    .model_id(SONNET4)
                    .messages(
                        Message::builder()
                            .role(ConversationRole::User)
                            .content(ContentBlock::Text("word ".repeat(100 + 20 * i)))
                            .build()
                            .unwrap(),
                    )
                    .inference_config(InferenceConfiguration::builder().max_tokens(256).build())
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("{e:?}"))
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap().expect("no call fails");
    }
    let c = emulator.stats().model(SONNET4).counters;
    assert!(c.admitted >= 36);
    // As for one process (tests/sdk): only scheduling delay beyond the margin can throttle;
    // how often depends on the machine's load (the figure lives in the benches), so this
    // real-clock test asserts only far fewer refusals than calls.
    assert!(
        c.throttled_tokens * 3 < 36,
        "server throttled {}",
        c.throttled_tokens
    );
}

/// A bad Redis URL is a typed setup error.
#[test]
fn bad_redis_url_is_a_setup_error() {
    let e = BedrockThrottle::builder()
        .quota(SONNET4, Quota::tokens(1_000))
        .redis("not a url")
        .build()
        .unwrap_err();
    assert!(
        matches!(e, SetupError::Store(StoreError::BadUrl { .. })),
        "{e:?}"
    );
}

/// The shared store does not enforce scopes yet: an account-wide daily quota with it is a
/// typed setup error, never a silent overrun of the account's day.
#[test]
fn an_account_daily_quota_on_the_shared_store_is_a_setup_error() {
    let e = BedrockThrottle::builder()
        .quota(SONNET4, Quota::tokens(1_000))
        .account_daily_quota("123456789012", 1_000_000)
        .redis("redis://127.0.0.1:1")
        .build()
        .unwrap_err();
    assert!(matches!(e, SetupError::ScopesOnSharedStore), "{e:?}");
}
