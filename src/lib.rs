//! Tower middleware that keeps Amazon Bedrock traffic inside its quotas.
//!
//! (Crate documentation is written as the layers land.)

#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod budget;
pub mod classify;
pub mod rate_limit;
pub mod retry;
pub mod token_budget;

#[cfg(feature = "bedrock")]
pub mod bedrock;
#[cfg(feature = "emulator")]
pub mod emulator;
#[cfg(feature = "sdk")]
pub mod sdk;

/// The error type of layers that add failures of their own: callers downcast to the concrete
/// error types of each module.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
