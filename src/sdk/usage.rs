//! A response's quota tokens, from the SDK's usage type, so that a gateway never computes
//! `input + output × burndown` itself.

use aws_sdk_bedrockruntime::types::TokenUsage;

use super::BedrockThrottle;
use crate::bedrock::Usage;

/// Negative counts (never sent by Bedrock) read as zero.
fn count(n: i32) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl From<&TokenUsage> for Usage {
    fn from(usage: &TokenUsage) -> Self {
        Usage {
            input_tokens: count(usage.input_tokens()),
            output_tokens: count(usage.output_tokens()),
            cache_read_input_tokens: usage.cache_read_input_tokens().map_or(0, count),
            cache_write_input_tokens: usage.cache_write_input_tokens().map_or(0, count),
        }
    }
}

impl BedrockThrottle {
    /// What Bedrock booked on `model_id`'s quota for a call that reported `usage` (a Converse
    /// or ConverseStream `usage`): `input + cache write + output × burndown`, with the burndown
    /// of the throttle's model table (5 for recent Claude models). A gateway that keeps a
    /// budget of its own in front of the SDK settles with this.
    ///
    /// ```
    /// use aws_sdk_bedrockruntime::types::TokenUsage;
    /// use bedrock_throttle::sdk::BedrockThrottle;
    ///
    /// let throttle = BedrockThrottle::builder().build()?;
    /// let usage = TokenUsage::builder()
    ///     .input_tokens(1_000)
    ///     .output_tokens(100)
    ///     .total_tokens(1_100)
    ///     .build()?;
    /// // Claude Sonnet 4 burns output at 5x: 1,000 + 5 × 100.
    /// let model = "us.anthropic.claude-sonnet-4-20250514-v1:0";
    /// assert_eq!(throttle.quota_tokens(model, &usage), 1_500);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn quota_tokens(&self, model_id: &str, usage: &TokenUsage) -> u64 {
        Usage::from(usage).quota_tokens(self.bedrock.output_burndown(model_id))
    }
}
