//! Integration tests of the Bedrock Runtime emulator, with the real `aws-sdk-bedrockruntime`
//! client where parsing matters and a raw HTTP client where the wire or the clock matters.
#![cfg(all(feature = "emulator", feature = "sdk"))]

#[cfg(feature = "cli")]
mod binary;
mod common;
mod errors;
mod late_2026;
mod limits;
mod malformed;
mod memory;
mod operations;
mod quota;
mod throughput;
