//! Event-stream frames as Bedrock sends them (bedrock-facts §3), for tests and benches: one
//! builder instead of a copy per test area. Include it with
//! `#[path = "../support/eventstream.rs"] mod eventstream;`.
//!
//! Frames are written and read with `aws-smithy-eventstream`, the SDK's own codec, so a frame
//! built here is exactly what the SDK would decode.

// Each includer uses a subset of these helpers.
#![allow(dead_code)]

use aws_smithy_eventstream::frame::{read_message_from, write_message_to};
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use base64::Engine;
use bytes::Bytes;
use serde_json::json;

/// The content type of Bedrock's streaming responses.
pub const CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";

fn string(name: &'static str, value: &str) -> Header {
    Header::new(name, HeaderValue::String(value.to_owned().into()))
}

/// An event of `event_type` (`messageStart`, `contentBlockDelta`, `metadata`, `chunk` ...)
/// with a JSON `payload`.
pub fn event(event_type: &str, payload: impl Into<Bytes>) -> Message {
    Message::new(payload)
        .add_header(string(":message-type", "event"))
        .add_header(string(":event-type", event_type))
        .add_header(string(":content-type", "application/json"))
}

/// A mid-stream exception frame of `kind` (camelCase: `throttlingException` ...) with
/// `{"message": message}`.
pub fn exception(kind: &str, message: &str) -> Message {
    Message::new(json!({ "message": message }).to_string())
        .add_header(string(":message-type", "exception"))
        .add_header(string(":exception-type", kind))
        .add_header(string(":content-type", "application/json"))
}

/// An InvokeModelWithResponseStream `chunk` event carrying `model_json` base64-encoded, with
/// the random padding field Bedrock adds.
pub fn chunk(model_json: serde_json::Value) -> Message {
    let b64 = base64::engine::general_purpose::STANDARD.encode(model_json.to_string());
    event(
        "chunk",
        json!({ "bytes": b64, "p": "abcdefghij" }).to_string(),
    )
}

/// One message as a frame on the wire.
pub fn frame(message: &Message) -> Bytes {
    let mut out = Vec::new();
    write_message_to(message, &mut out).expect("a valid frame");
    Bytes::from(out)
}

/// Messages as frames on the wire, back to back.
pub fn frames(messages: &[Message]) -> Vec<u8> {
    messages.iter().flat_map(|m| frame(m).to_vec()).collect()
}

/// A complete ConverseStream response (messageStart, two text deltas "Hello" and " world!",
/// contentBlockStop, messageStop, metadata with this usage).
pub fn converse_stream(input: u64, output: u64) -> Vec<Message> {
    vec![
        event("messageStart", r#"{"role":"assistant","p":"abc"}"#),
        event(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":"Hello"},"p":"abcd"}"#,
        ),
        event(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":" world!"},"p":"ab"}"#,
        ),
        event("contentBlockStop", r#"{"contentBlockIndex":0,"p":"a"}"#),
        event("messageStop", r#"{"stopReason":"end_turn","p":"abcdef"}"#),
        metadata(input, output),
    ]
}

/// The ConverseStream `metadata` event that ends a stream with its usage.
pub fn metadata(input: u64, output: u64) -> Message {
    event(
        "metadata",
        json!({"usage":{"inputTokens":input,"outputTokens":output,"totalTokens":input+output},
               "metrics":{"latencyMs":42},"p":"abc"})
        .to_string(),
    )
}

/// The frames of a whole body, decoded (panics on a malformed or truncated frame).
pub fn decode(mut body: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let len = u32::from_be_bytes(body[..4].try_into().expect("a prelude")) as usize;
        out.push(read_message_from(&body[..len]).expect("a valid frame"));
        body = &body[len..];
    }
    out
}

/// The string value of header `name` of a frame.
pub fn header<'a>(message: &'a Message, name: &str) -> Option<&'a str> {
    message
        .headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| h.value().as_string().ok())
        .map(|s| s.as_str())
}
