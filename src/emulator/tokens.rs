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

use serde_json::Value;

use super::body::{self, Mode, Seen, TopReader};
use super::validate;

/// Tokens of one image.
pub const IMAGE_TOKENS: u64 = 1000;
/// Tokens added per message.
pub const MESSAGE_OVERHEAD_TOKENS: u64 = 3;

/// `ceil(chars / 4)`.
pub fn text_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// Input tokens of a Converse / ConverseStream body.
///
/// The server counts request bodies in one streaming pass without building a [`Value`]; this
/// function runs the same pass over `body`'s JSON text, so both always agree.
pub fn converse_input_tokens(body: &Value) -> u64 {
    let text = body.to_string();
    let reader = TopReader {
        mode: Mode::Converse,
        allowed: None,
    };
    match body::read(&text, reader) {
        Ok(Seen::Object(top)) => validate::converse_tokens(&top),
        _ => 1,
    }
}

/// Input tokens of an InvokeModel / InvokeModelWithResponseStream body, given the parsed JSON
/// and the body's length in bytes.
pub fn invoke_input_tokens(body: &Value, body_len: usize) -> u64 {
    let text = body.to_string();
    let reader = TopReader {
        mode: Mode::Invoke {
            content_may_be_string: true,
        },
        allowed: None,
    };
    match body::read(&text, reader) {
        Ok(Seen::Object(top)) => validate::invoke_tokens(&top, body_len),
        _ => (body_len as u64).div_ceil(4).max(1),
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
