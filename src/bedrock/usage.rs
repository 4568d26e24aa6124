//! What a call really used, as Bedrock reports it, and what that costs against the quota.

// Numbers here come from requests, responses and settings: no arithmetic may panic or wrap
// on them (issue 21). Each exception is an `#[allow]` that says why it cannot.
#![warn(clippy::arithmetic_side_effects)]

use std::fmt;

use aws_smithy_types::event_stream::Message;
use base64::Engine;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// Token usage of one call.
///
/// # What a call really used, as Bedrock reports it, and what that costs against the quota
///
/// Bedrock settles a call at `input + cache_write + output × burndown` (cache reads are not
/// counted at settlement; the burndown is 5 for Claude 3.7 and later, else 1). The usage comes
/// from one of four places, depending on the operation:
///
/// | operation | where |
/// |---|---|
/// | InvokeModel | headers `x-amzn-bedrock-{input,output,cache-read-input,cache-write-input}-token-count` |
/// | Converse | body `usage` `{inputTokens, outputTokens, cacheReadInputTokens?, cacheWriteInputTokens?}` |
/// | ConverseStream | the `metadata` event's `usage` |
/// | InvokeModelWithResponseStream | the last `chunk`'s `amazon-bedrock-invocationMetrics` |
///
/// ```
/// use bedrock_throttle::bedrock::Usage;
///
/// // Claude Sonnet 4: 1,000 in + 100 out settles 1,500.
/// let usage = Usage::from_json(br#"{"usage":{"inputTokens":1000,"outputTokens":100,"totalTokens":1100}}"#).unwrap();
/// assert_eq!(usage.quota_tokens(5), 1_500);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Usage {
    /// Input tokens (not read from or written to the prompt cache).
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens read from the prompt cache (not counted at settlement).
    pub cache_read_input_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_write_input_tokens: u64,
}

impl Usage {
    /// What Bedrock settles for this usage: `input + cache_write + output × burndown`.
    pub fn quota_tokens(&self, output_burndown: u64) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_write_input_tokens)
            .saturating_add(self.output_tokens.saturating_mul(output_burndown))
    }

    /// Reads the InvokeModel usage headers through `header` (a lookup by lower-case name).
    /// `None` unless the input count is present; the other counts default to 0 (embeddings
    /// report input only).
    pub fn from_headers<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Option<Self> {
        let count = |name: &str| header(name).and_then(|v| v.trim().parse::<u64>().ok());
        Some(Self {
            input_tokens: count("x-amzn-bedrock-input-token-count")?,
            output_tokens: count("x-amzn-bedrock-output-token-count").unwrap_or(0),
            cache_read_input_tokens: count("x-amzn-bedrock-cache-read-input-token-count")
                .unwrap_or(0),
            cache_write_input_tokens: count("x-amzn-bedrock-cache-write-input-token-count")
                .unwrap_or(0),
        })
    }

    /// Reads the usage of a JSON response body: a Converse `usage` object, an Anthropic-style
    /// `usage` (`input_tokens`, `output_tokens`, `cache_read_input_tokens`,
    /// `cache_creation_input_tokens`), or `amazon-bedrock-invocationMetrics`. `None` when the
    /// body is not JSON or carries none of them.
    pub fn from_json(body: &[u8]) -> Option<Self> {
        let envelope: Envelope = serde_json::from_slice(body).ok()?;
        envelope
            .metrics
            .map(InvocationMetrics::usage)
            .or_else(|| envelope.usage.and_then(AnyUsage::usage))
    }
}

/// `usage` in any of the shapes Bedrock and the model providers use.
#[derive(Deserialize, Default)]
struct AnyUsage {
    // `prompt_tokens` / `completion_tokens`: OpenAI Chat Completions (on bedrock-runtime's
    // `/openai/v1`); `input_tokens` / `output_tokens` are also the Responses API's.
    #[serde(
        alias = "input_tokens",
        alias = "prompt_tokens",
        rename = "inputTokens",
        default
    )]
    input: Option<u64>,
    #[serde(
        alias = "output_tokens",
        alias = "completion_tokens",
        rename = "outputTokens",
        default
    )]
    output: Option<u64>,
    #[serde(
        alias = "cache_read_input_tokens",
        rename = "cacheReadInputTokens",
        default
    )]
    cache_read: Option<u64>,
    #[serde(
        alias = "cache_creation_input_tokens",
        rename = "cacheWriteInputTokens",
        default
    )]
    cache_write: Option<u64>,
}

impl AnyUsage {
    /// Complete usage: input and output both present.
    fn usage(self) -> Option<Usage> {
        Some(Usage {
            input_tokens: self.input?,
            output_tokens: self.output?,
            cache_read_input_tokens: self.cache_read.unwrap_or(0),
            cache_write_input_tokens: self.cache_write.unwrap_or(0),
        })
    }
}

#[derive(Deserialize)]
struct InvocationMetrics {
    #[serde(rename = "inputTokenCount")]
    input: u64,
    #[serde(rename = "outputTokenCount", default)]
    output: u64,
    #[serde(rename = "cacheReadInputTokenCount", default)]
    cache_read: u64,
    #[serde(rename = "cacheWriteInputTokenCount", default)]
    cache_write: u64,
}

impl InvocationMetrics {
    fn usage(self) -> Usage {
        Usage {
            input_tokens: self.input,
            output_tokens: self.output,
            cache_read_input_tokens: self.cache_read,
            cache_write_input_tokens: self.cache_write,
        }
    }
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    usage: Option<AnyUsage>,
    #[serde(rename = "amazon-bedrock-invocationMetrics", default)]
    metrics: Option<InvocationMetrics>,
}

/// The length of a string, read without allocating.
#[derive(Default)]
struct StrLen(u64);

impl<'de> Deserialize<'de> for StrLen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StrLen;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StrLen, E> {
                Ok(StrLen(v.len() as u64))
            }
        }
        d.deserialize_str(V)
    }
}

/// A ConverseStream `contentBlockDelta` event (or the delta inside an invoke-stream chunk).
#[derive(Deserialize, Default)]
struct DeltaEvent {
    #[serde(default)]
    delta: Option<Delta>,
}

#[derive(Deserialize, Default)]
struct Delta {
    #[serde(default)]
    text: Option<StrLen>,
    #[serde(rename = "toolUse", default)]
    tool_use: Option<DeltaInput>,
    #[serde(rename = "reasoningContent", default)]
    reasoning: Option<DeltaText>,
    #[serde(default)]
    partial_json: Option<StrLen>,
    #[serde(default)]
    thinking: Option<StrLen>,
}

#[derive(Deserialize, Default)]
struct DeltaInput {
    #[serde(default)]
    input: Option<StrLen>,
}

#[derive(Deserialize, Default)]
struct DeltaText {
    #[serde(default)]
    text: Option<StrLen>,
}

impl Delta {
    fn bytes(&self) -> u64 {
        [
            self.text.as_ref(),
            self.tool_use.as_ref().and_then(|t| t.input.as_ref()),
            self.reasoning.as_ref().and_then(|r| r.text.as_ref()),
            self.partial_json.as_ref(),
            self.thinking.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|s| s.0)
        .sum()
    }
}

/// The model JSON inside an InvokeModelWithResponseStream `chunk`.
#[derive(Deserialize)]
struct ChunkJson {
    #[serde(rename = "amazon-bedrock-invocationMetrics", default)]
    metrics: Option<InvocationMetrics>,
    /// Anthropic `message_start`: `message.usage`.
    #[serde(default)]
    message: Option<ChunkMessage>,
    /// Anthropic `message_delta`: cumulative `usage`.
    #[serde(default)]
    usage: Option<AnyUsage>,
    #[serde(default)]
    delta: Option<Delta>,
    /// Nova: `contentBlockDelta.delta`.
    #[serde(rename = "contentBlockDelta", default)]
    content_block_delta: Option<DeltaEvent>,
    /// Titan text.
    #[serde(rename = "outputText", default)]
    output_text: Option<StrLen>,
    /// Llama.
    #[serde(default)]
    generation: Option<StrLen>,
    /// Cohere Command, Mistral text completions.
    #[serde(default)]
    completion: Option<StrLen>,
}

#[derive(Deserialize)]
struct MetricsOnly {
    #[serde(rename = "amazon-bedrock-invocationMetrics", default)]
    metrics: Option<InvocationMetrics>,
}

#[derive(Deserialize)]
struct ChunkMessage {
    #[serde(default)]
    usage: Option<AnyUsage>,
}

#[derive(Deserialize)]
struct ChunkPayload<'a> {
    #[serde(borrow)]
    bytes: std::borrow::Cow<'a, str>,
}

/// What an event stream has shown so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct StreamUsage {
    /// The final usage (`metadata` or `amazon-bedrock-invocationMetrics`), once seen.
    pub(crate) final_usage: Option<Usage>,
    /// Input and cache-write tokens reported so far (Anthropic `message_start`).
    pub(crate) input_seen: u64,
    pub(crate) cache_write_seen: u64,
    /// Output tokens reported so far (Anthropic `message_delta`).
    pub(crate) output_reported: u64,
    /// Output tokens estimated from the deltas seen: `ceil(bytes / bytes_per_token)` each,
    /// at least 1 per delta.
    pub(crate) output_estimated: u64,
}

impl StreamUsage {
    /// What the stream cost so far, as the quota counts it.
    pub(crate) fn seen_quota_tokens(&self, output_burndown: u64) -> u64 {
        if let Some(usage) = self.final_usage {
            return usage.quota_tokens(output_burndown);
        }
        let output = self.output_reported.max(self.output_estimated);
        self.input_seen
            .saturating_add(self.cache_write_seen)
            .saturating_add(output.saturating_mul(output_burndown))
    }

    fn add_delta(&mut self, bytes: u64, bytes_per_token: u64) {
        let tokens = bytes.div_ceil(bytes_per_token.max(1)).max(1);
        self.output_estimated = self.output_estimated.saturating_add(tokens);
    }

    /// Takes one decoded event-stream message into account. Exceptions and unknown events are
    /// ignored; malformed payloads are ignored (never an error: this only observes).
    pub(crate) fn observe(&mut self, message: &Message, bytes_per_token: u64) {
        if header_str(message, ":message-type") != Some("event") {
            return;
        }
        let payload = message.payload();
        match header_str(message, ":event-type") {
            Some("metadata") => {
                if let Some(usage) = Usage::from_json(payload) {
                    self.final_usage = Some(usage);
                }
            }
            Some("contentBlockDelta") => {
                let bytes = serde_json::from_slice::<DeltaEvent>(payload)
                    .ok()
                    .and_then(|e| e.delta)
                    .map_or(0, |d| d.bytes());
                self.add_delta(bytes, bytes_per_token);
            }
            Some("chunk") => self.observe_chunk(payload, bytes_per_token),
            _ => {}
        }
    }

    fn observe_chunk(&mut self, payload: &[u8], bytes_per_token: u64) {
        let Ok(chunk) = serde_json::from_slice::<ChunkPayload<'_>>(payload) else {
            return;
        };
        let Ok(json) = base64::engine::general_purpose::STANDARD.decode(chunk.bytes.as_bytes())
        else {
            return;
        };
        let Ok(chunk) = serde_json::from_slice::<ChunkJson>(&json) else {
            // A field of a shape this module does not expect must not hide the final metrics.
            if let Ok(MetricsOnly {
                metrics: Some(metrics),
            }) = serde_json::from_slice(&json)
            {
                self.final_usage = Some(metrics.usage());
            }
            return;
        };
        if let Some(metrics) = chunk.metrics {
            self.final_usage = Some(metrics.usage());
            return;
        }
        if let Some(usage) = chunk.message.and_then(|m| m.usage) {
            self.input_seen = self.input_seen.max(usage.input.unwrap_or(0));
            self.cache_write_seen = self.cache_write_seen.max(usage.cache_write.unwrap_or(0));
            self.output_reported = self.output_reported.max(usage.output.unwrap_or(0));
        }
        if let Some(usage) = chunk.usage {
            self.input_seen = self.input_seen.max(usage.input.unwrap_or(0));
            self.output_reported = self.output_reported.max(usage.output.unwrap_or(0));
        }
        let delta = chunk
            .delta
            .as_ref()
            .or(chunk
                .content_block_delta
                .as_ref()
                .and_then(|e| e.delta.as_ref()))
            .map(Delta::bytes);
        let text = [chunk.output_text, chunk.generation, chunk.completion]
            .into_iter()
            .flatten()
            .map(|s| s.0)
            .fold(0, u64::saturating_add);
        if let Some(bytes) = delta {
            self.add_delta(bytes.saturating_add(text), bytes_per_token);
        } else if text > 0 {
            self.add_delta(text, bytes_per_token);
        }
    }
}

/// The string value of an event-stream header.
pub(crate) fn header_str<'a>(message: &'a Message, name: &str) -> Option<&'a str> {
    message
        .headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| h.value().as_string().ok())
        .map(|s| s.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_types::event_stream::{Header, HeaderValue};

    fn event(event_type: &'static str, payload: &str) -> Message {
        Message::new(payload.as_bytes().to_vec())
            .add_header(Header::new(
                ":message-type",
                HeaderValue::String("event".into()),
            ))
            .add_header(Header::new(
                ":event-type",
                HeaderValue::String(event_type.into()),
            ))
            .add_header(Header::new(
                ":content-type",
                HeaderValue::String("application/json".into()),
            ))
    }

    fn chunk(json: &str) -> Message {
        let b64 = base64::engine::general_purpose::STANDARD.encode(json);
        event("chunk", &format!(r#"{{"bytes":"{b64}","p":"abcdefgh"}}"#))
    }

    #[test]
    fn headers() {
        let h = |name: &str| match name {
            "x-amzn-bedrock-input-token-count" => Some("1000"),
            "x-amzn-bedrock-output-token-count" => Some(" 100 "),
            "x-amzn-bedrock-cache-write-input-token-count" => Some("50"),
            "x-amzn-bedrock-cache-read-input-token-count" => Some("2000"),
            _ => None,
        };
        let usage = Usage::from_headers(h).unwrap();
        assert_eq!(usage.quota_tokens(5), 1000 + 50 + 500);
        assert_eq!(Usage::from_headers(|_| None), None);
        assert_eq!(
            Usage::from_headers(|n| (n == "x-amzn-bedrock-input-token-count").then_some("x")),
            None
        );
    }

    #[test]
    fn json_shapes() {
        let converse = br#"{"output":{"message":{"role":"assistant","content":[{"text":"hi"}]}},
            "stopReason":"end_turn","usage":{"inputTokens":10,"outputTokens":2,"totalTokens":12,
            "cacheReadInputTokens":7,"cacheWriteInputTokens":3},"metrics":{"latencyMs":5}}"#;
        let u = Usage::from_json(converse).unwrap();
        assert_eq!(
            (
                u.input_tokens,
                u.output_tokens,
                u.cache_read_input_tokens,
                u.cache_write_input_tokens
            ),
            (10, 2, 7, 3)
        );
        assert_eq!(u.quota_tokens(1), 15);
        let anthropic = br#"{"type":"message","usage":{"input_tokens":4,"output_tokens":6,"cache_creation_input_tokens":1}}"#;
        assert_eq!(
            Usage::from_json(anthropic).unwrap().quota_tokens(5),
            4 + 1 + 30
        );
        assert_eq!(Usage::from_json(br#"{"usage":{"inputTokens":1}}"#), None);
        assert_eq!(Usage::from_json(b"not json"), None);
        assert_eq!(
            Usage::from_json(br#"{"usage":{"inputTokens":"x","outputTokens":1}}"#),
            None
        );
    }

    #[test]
    fn converse_stream_events() {
        let mut seen = StreamUsage::default();
        seen.observe(
            &event("messageStart", r#"{"role":"assistant","p":"ab"}"#),
            3,
        );
        seen.observe(
            &event(
                "contentBlockDelta",
                r#"{"contentBlockIndex":0,"delta":{"text":"Hello there"},"p":"x"}"#,
            ),
            3,
        );
        assert_eq!(seen.output_estimated, 4);
        assert_eq!(seen.seen_quota_tokens(5), 20);
        seen.observe(&event("metadata", r#"{"usage":{"inputTokens":25,"outputTokens":3,"totalTokens":28},"metrics":{"latencyMs":1}}"#), 3);
        assert_eq!(seen.seen_quota_tokens(5), 40);
        // An exception frame changes nothing.
        let exception = Message::new(&b"{\"message\":\"x\"}"[..])
            .add_header(Header::new(
                ":message-type",
                HeaderValue::String("exception".into()),
            ))
            .add_header(Header::new(
                ":exception-type",
                HeaderValue::String("throttlingException".into()),
            ));
        seen.observe(&exception, 3);
        assert_eq!(seen.seen_quota_tokens(5), 40);
    }

    #[test]
    fn invoke_stream_chunks() {
        let mut seen = StreamUsage::default();
        seen.observe(&chunk(r#"{"type":"message_start","message":{"usage":{"input_tokens":12,"output_tokens":1}}}"#), 3);
        seen.observe(&chunk(r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"abcdef"}}"#), 3);
        seen.observe(
            &chunk(r#"{"type":"message_delta","usage":{"output_tokens":9}}"#),
            3,
        );
        assert_eq!(seen.seen_quota_tokens(1), 12 + 9);
        seen.observe(&chunk(r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":12,"outputTokenCount":10,"invocationLatency":5,"firstByteLatency":1}}"#), 3);
        assert_eq!(seen.final_usage.unwrap().quota_tokens(5), 62);
        // A field of an unexpected shape does not hide the metrics.
        let mut odd = StreamUsage::default();
        odd.observe(&chunk(r#"{"generation":null,"delta":"x","amazon-bedrock-invocationMetrics":{"inputTokenCount":3,"outputTokenCount":4}}"#), 3);
        assert_eq!(odd.final_usage.unwrap().quota_tokens(1), 7);
        // Garbage payloads are ignored.
        seen.observe(&event("chunk", "{"), 3);
        seen.observe(&event("chunk", r#"{"bytes":"!!!"}"#), 3);
        assert_eq!(seen.seen_quota_tokens(5), 62);
    }
}
