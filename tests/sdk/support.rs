//! What every SDK test needs: the emulator's SDK config, a throttle builder, a client, a
//! Converse call.

use std::time::Duration;

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_bedrockruntime::error::ProvideErrorMetadata;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, InferenceConfiguration, Message,
};
use bedrock_throttle::bedrock::{Bedrock, BedrockKey};
use bedrock_throttle::budget::Settings;
use bedrock_throttle::emulator::EmulatorHandle;
use bedrock_throttle::sdk::{BedrockThrottle, BedrockThrottleBuilder};

pub(crate) const SONNET4: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";

pub(crate) fn sdk_config(handle: &EmulatorHandle) -> aws_sdk_bedrockruntime::config::Builder {
    aws_sdk_bedrockruntime::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AK", "SK", None, None, "test"))
        .endpoint_url(handle.endpoint_url())
}

/// The settings of the tests' stores: `window`, the rest as by default.
pub(crate) fn settings(window: Duration) -> Settings<BedrockKey> {
    Settings::new().window(window)
}

pub(crate) fn throttle(window: Duration) -> BedrockThrottleBuilder {
    throttle_with(settings(window))
}

pub(crate) fn throttle_with(settings: Settings<BedrockKey>) -> BedrockThrottleBuilder {
    BedrockThrottle::builder()
        .bedrock(Bedrock::new().with_region("us-east-1"))
        .settings(settings)
}

pub(crate) fn client(handle: &EmulatorHandle, throttle: &BedrockThrottle) -> Client {
    Client::from_conf(throttle.configure(sdk_config(handle)).build())
}

pub(crate) fn user(text: &str) -> Message {
    Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text(text.to_owned()))
        .build()
        .unwrap()
}

pub(crate) async fn converse(
    client: &Client,
    text: &str,
    max_tokens: i32,
) -> Result<(u64, u64), String> {
    client
        .converse()
        .model_id(SONNET4)
        .messages(user(text))
        .inference_config(
            InferenceConfiguration::builder()
                .max_tokens(max_tokens)
                .build(),
        )
        .send()
        .await
        .map(|out| {
            let usage = out.usage().unwrap();
            (usage.input_tokens() as u64, usage.output_tokens() as u64)
        })
        .map_err(|e| format!("{:?} {:?}", e.code(), e))
}

pub(crate) fn key() -> BedrockKey {
    BedrockKey::new("us-east-1", SONNET4)
}
