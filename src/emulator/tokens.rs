//! The emulator's input-token rule: deterministic, cheap, and documented, so that a client-side
//! estimator can be made to never count less than the emulator does.
//!
//! Real tokenizers differ per model and are not public; what matters for quota tests is that
//! the count is reproducible and that clients can bound it. The rule:
//!
//! - a text string counts `ceil(chars / 4)` tokens, where `chars` is its number of Unicode
//!   scalar values (`str::chars().count()`), each string rounded up on its own;
//! - **Converse / ConverseStream** (and CountTokens `input.converse`): the sum over
//!   `system[].text`; `messages[].content[].text`; `messages[].content[].toolResult.content[].text`;
//!   `messages[].content[].toolUse.input` serialized as compact JSON; `toolConfig` serialized as
//!   compact JSON once; 1000 per `messages[].content[].image`; `ceil(bytes / 4)` per
//!   `messages[].content[].document`, where `bytes` is the decoded length of `source.bytes`
//!   (the base64 text's length if it does not decode) or, for `source.text`, the text rule;
//!   plus 3 per message;
//! - **InvokeModel** (and CountTokens `input.invokeModel.body`), by the shape of the JSON body:
//!   a `messages` array (Anthropic Claude messages, Amazon Nova, chat-style bodies) counts
//!   `system` (a string, or an array of blocks whose `text` counts) plus, per message, 3 and
//!   its `content` (a string, or an array of blocks whose `text` counts); otherwise a string
//!   `inputText` (Titan text and embeddings); otherwise a string `prompt` (Llama, Mistral,
//!   Claude text completions); otherwise a `texts` array of strings (Cohere embeddings);
//!   otherwise `ceil(body_bytes / 4)`;
//! - the total is at least 1.
//!
//! ```
//! use bedrock_throttle::emulator::tokens::{converse_input_tokens, invoke_input_tokens, text_tokens};
//! use serde_json::json;
//!
//! assert_eq!(text_tokens("hello"), 2); // 5 chars
//! let converse = json!({"messages": [{"role": "user", "content": [{"text": "hello"}]}]});
//! assert_eq!(converse_input_tokens(&converse), 2 + 3);
//! let claude = json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10,
//!                     "system": "be brief", "messages": [{"role": "user", "content": "hello"}]});
//! assert_eq!(invoke_input_tokens(&claude, 0), 2 + 2 + 3);
//! assert_eq!(invoke_input_tokens(&json!({"foo": 1}), 9), 3);
//! ```

use base64::Engine as _;
use serde_json::Value;

/// Tokens of one image.
pub const IMAGE_TOKENS: u64 = 1000;
/// Tokens added per message.
pub const MESSAGE_OVERHEAD_TOKENS: u64 = 3;

/// `ceil(chars / 4)`.
pub fn text_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

fn bytes_tokens(len: usize) -> u64 {
    (len as u64).div_ceil(4)
}

fn json_tokens(v: &Value) -> u64 {
    // Serializing a `Value` cannot fail (keys are strings).
    serde_json::to_string(v).map_or(0, |s| text_tokens(&s))
}

fn str_field(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_str).map_or(0, text_tokens)
}

fn array<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
}

/// Input tokens of a Converse / ConverseStream body.
pub fn converse_input_tokens(body: &Value) -> u64 {
    let mut n = 0u64;
    for block in array(body, "system") {
        n += str_field(block, "text");
    }
    for message in array(body, "messages") {
        n += MESSAGE_OVERHEAD_TOKENS;
        for block in array(message, "content") {
            n += str_field(block, "text");
            if let Some(result) = block.get("toolResult") {
                for item in array(result, "content") {
                    n += str_field(item, "text");
                }
            }
            if let Some(input) = block.get("toolUse").and_then(|u| u.get("input")) {
                n += json_tokens(input);
            }
            if block.get("image").is_some() {
                n += IMAGE_TOKENS;
            }
            if let Some(source) = block.get("document").and_then(|d| d.get("source")) {
                n += document_tokens(source);
            }
        }
    }
    if let Some(tools) = body.get("toolConfig") {
        n += json_tokens(tools);
    }
    n.max(1)
}

fn document_tokens(source: &Value) -> u64 {
    if let Some(b64) = source.get("bytes").and_then(Value::as_str) {
        let len = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_or(b64.len(), |bytes| bytes.len());
        return bytes_tokens(len);
    }
    str_field(source, "text")
}

/// Input tokens of an InvokeModel / InvokeModelWithResponseStream body, given the parsed JSON
/// and the body's length in bytes.
pub fn invoke_input_tokens(body: &Value, body_len: usize) -> u64 {
    let n = if let Some(messages) = body.get("messages").and_then(Value::as_array) {
        let mut n = text_or_blocks(body.get("system"));
        for message in messages {
            n += MESSAGE_OVERHEAD_TOKENS + text_or_blocks(message.get("content"));
        }
        n
    } else if let Some(text) = body.get("inputText").and_then(Value::as_str) {
        text_tokens(text)
    } else if let Some(text) = body.get("prompt").and_then(Value::as_str) {
        text_tokens(text)
    } else if let Some(texts) = body.get("texts").and_then(Value::as_array) {
        texts
            .iter()
            .filter_map(Value::as_str)
            .map(text_tokens)
            .sum()
    } else {
        bytes_tokens(body_len)
    };
    n.max(1)
}

/// A string, or an array of blocks whose `text` counts.
fn text_or_blocks(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::String(s)) => text_tokens(s),
        Some(Value::Array(blocks)) => blocks.iter().map(|b| str_field(b, "text")).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unicode_scalars_not_bytes() {
        assert_eq!(text_tokens(""), 0);
        assert_eq!(text_tokens("é"), 1);
        assert_eq!(text_tokens("ééééé"), 2); // 5 chars, 10 bytes
        assert_eq!(text_tokens("abcd"), 1);
    }

    #[test]
    fn converse_every_part() {
        let body = json!({
            "system": [{"text": "abcdefgh"}, {"cachePoint": {"type": "default"}}],
            "messages": [
                {"role": "user", "content": [
                    {"text": "abcde"},
                    {"image": {"format": "png", "source": {"bytes": "AAAA"}}},
                    {"document": {"format": "txt", "name": "d", "source": {"bytes": "AAAAAAAAAAAA"}}},
                    {"document": {"format": "txt", "name": "e", "source": {"text": "abc"}}}
                ]},
                {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t", "name": "f", "input": {"a": 1}}}]},
                {"role": "user", "content": [{"toolResult": {"toolUseId": "t", "content": [{"text": "abcd"}, {"json": {"x": 1}}]}}]}
            ],
            "toolConfig": {"tools": []}
        });
        // system 2; message 1: 3 + 2 + 1000 + ceil(9 bytes / 4) = 3 + 1 ("abc");
        // message 2: 3 + 2 (`{"a":1}`, 7 chars); message 3: 3 + 1; toolConfig `{"tools":[]}`: 3.
        assert_eq!(converse_input_tokens(&body), 2 + 1009 + 5 + 4 + 3);
    }

    #[test]
    fn invoke_shapes() {
        assert_eq!(
            invoke_input_tokens(&json!({"inputText": "abcdefghi"}), 0),
            3
        );
        assert_eq!(
            invoke_input_tokens(&json!({"prompt": "abcd", "max_gen_len": 5}), 0),
            1
        );
        assert_eq!(
            invoke_input_tokens(&json!({"texts": ["ab", "cd"], "input_type": "x"}), 0),
            2
        );
        let nova = json!({"system": [{"text": "abcd"}], "messages": [{"role": "user", "content": [{"text": "abcd"}, {"image": {}}]}]});
        assert_eq!(invoke_input_tokens(&nova, 0), 1 + 3 + 1);
        assert_eq!(invoke_input_tokens(&json!({}), 2), 1);
        assert_eq!(invoke_input_tokens(&json!({"x": "y"}), 40), 10);
    }
}
