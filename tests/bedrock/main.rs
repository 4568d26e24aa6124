//! Bedrock protocol knowledge: plans (keys, reservations, the worst case), settlement,
//! classification, and the response layer, on real-looking requests, bodies and event-stream
//! frames; then the same through the AWS SDK's types.

#![cfg(feature = "bedrock")]

#[path = "../support/eventstream.rs"]
mod eventstream;
mod reference;
mod support;

mod classify;
mod debt;
mod models;
#[cfg(feature = "emulator")]
mod openai;
mod plan;
mod response_layer;
#[cfg(feature = "sdk")]
mod sdk;
mod settle;
