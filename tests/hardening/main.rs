//! Hostile input (issue 21): model ids chosen by callers, numbers at the edges of their types.
//! Nothing may panic or wrap, and nothing a caller sends may grow the observers without bound.
//! The SDK tests use the real client over loopback HTTP to the emulator.

#![cfg(all(feature = "sdk", feature = "emulator", feature = "metrics"))]

mod extremes;
mod observe;
mod sdk;

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::{BehaviorVersion, Credentials, Region};
use bedrock_throttle::emulator::EmulatorHandle;
use bedrock_throttle::sdk::BedrockThrottle;

pub(crate) const SONNET4: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";

/// The real SDK client, configured by `throttle`, against `emulator`.
pub(crate) fn client(emulator: &EmulatorHandle, throttle: &BedrockThrottle) -> Client {
    let config = aws_sdk_bedrockruntime::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AK", "SK", None, None, "test"))
        .endpoint_url(emulator.endpoint_url());
    Client::from_conf(throttle.configure(config).build())
}
