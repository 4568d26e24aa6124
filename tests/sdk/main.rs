//! End to end: the real `aws-sdk-bedrockruntime` client, configured by `BedrockThrottle`, over
//! real HTTP on loopback against the emulator. Real time, short scaled windows; nothing here
//! asserts a duration.

#![cfg(all(feature = "sdk", feature = "emulator"))]

mod account;
mod backlog;
mod end_to_end;
mod support;
mod unknown_usage;
