//! Bedrock Runtime protocol knowledge.

pub mod models;
