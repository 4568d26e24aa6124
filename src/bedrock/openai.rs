//! The OpenAI-compatible APIs of bedrock-runtime: Chat Completions
//! (`POST /openai/v1/chat/completions`) and Responses (`POST /openai/v1/responses`).
//!
//! Why they need their own reading: the model id is in the JSON body (`"model"`), not in the
//! path, yet the call draws on the same per-model runtime quota as Converse and InvokeModel,
//! with the same reservation (input + max output) and the same burndown at settlement. So the
//! key is the region and the body's `model`; the estimate reads `messages` (Chat Completions)
//! or `input` and `instructions` (Responses) plus `max_completion_tokens` / `max_tokens` /
//! `max_output_tokens` (absent: the model's default); the usage comes back as OpenAI `usage`
//! (`prompt_tokens` / `completion_tokens`, or `input_tokens` / `output_tokens`), read by the
//! same JSON settlement as Converse. Errors are classified as they come (an AWS error code in
//! `x-amzn-ErrorType`, or an `{"error": {"type", "message"}}` envelope).
//!
//! Only the synchronous form is served on bedrock-runtime: a `"stream": true` body is
//! estimated like any other, and the server refuses it.

use serde_json::Value;

use super::estimate::{EstimateBasis, Estimator, RequestEstimate};
use super::key::Operation;
use super::models::ModelInfo;

/// Why the `model` of an OpenAI-compatible body could not be read. Such a request draws on no
/// model quota (the server refuses it with a 400); nothing panics.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenAiBodyError {
    /// The body is not in memory, not UTF-8 JSON, or not a JSON object.
    NotAnObject,
    /// The object has no `model`.
    MissingModel,
    /// `model` is not a string (or is an empty one).
    ModelNotAString,
}

impl std::fmt::Display for OpenAiBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NotAnObject => "the OpenAI-compatible request body is not a JSON object",
            Self::MissingModel => "the OpenAI-compatible request body has no `model`",
            Self::ModelNotAString => {
                "the OpenAI-compatible request body's `model` is not a non-empty string"
            }
        })
    }
}

impl std::error::Error for OpenAiBodyError {}

/// The operation of an OpenAI-compatible path on bedrock-runtime: `/openai/v1/chat/completions`
/// or `/openai/v1/responses` (also `/v1/...`, the newer docs' form), with any path prefix.
pub(crate) fn operation_of(path: &str) -> Option<Operation> {
    let path = path.strip_suffix('/').unwrap_or(path);
    let rest = path
        .rsplit_once("/openai/v1/")
        .or_else(|| path.rsplit_once("/v1/"))
        .map(|(_, rest)| rest)?;
    match rest {
        "chat/completions" => Some(Operation::ChatCompletions),
        "responses" => Some(Operation::Responses),
        _ => None,
    }
}

/// The `model` of an OpenAI-compatible request body.
///
/// ```
/// use bedrock_throttle::bedrock::{OpenAiBodyError, openai_model};
///
/// assert_eq!(openai_model(br#"{"model":"openai.gpt-5.6-sol-v1:0","messages":[]}"#), Ok("openai.gpt-5.6-sol-v1:0".to_owned()));
/// assert_eq!(openai_model(br#"{"messages":[]}"#), Err(OpenAiBodyError::MissingModel));
/// assert_eq!(openai_model(br#"{"model":5}"#), Err(OpenAiBodyError::ModelNotAString));
/// assert_eq!(openai_model(b"[1]"), Err(OpenAiBodyError::NotAnObject));
/// ```
///
/// # Errors
///
/// [`OpenAiBodyError`]: not a JSON object, no `model`, or a `model` that is not a string.
pub fn openai_model(body: &[u8]) -> Result<String, OpenAiBodyError> {
    #[derive(serde::Deserialize)]
    struct ModelOnly {
        model: Option<Value>,
    }
    // An object only (serde would read a struct from an array too).
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(OpenAiBodyError::NotAnObject);
    }
    // Only `model` is materialized: every other value is skipped without allocation.
    let only: ModelOnly = serde_json::from_slice(body).map_err(|_| OpenAiBodyError::NotAnObject)?;
    match only.model {
        None | Some(Value::Null) => Err(OpenAiBodyError::MissingModel),
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(_) => Err(OpenAiBodyError::ModelNotAString),
    }
}

/// The tokens of one string, rounded up on its own (so never below a per-string count at a
/// larger bytes-per-token).
fn text(estimator: &Estimator, s: &str) -> u64 {
    estimator.tokens_for_bytes(s.len() as u64)
}

/// The text tokens of a message's or an item's `content`: a string, or an array of parts whose
/// `text` counts (images at the estimator's per-image allowance).
fn content(estimator: &Estimator, value: Option<&Value>) -> u64 {
    match value {
        Some(Value::String(s)) => text(estimator, s),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|part| match part {
                Value::String(s) => text(estimator, s),
                Value::Object(o) => match o.get("text") {
                    Some(Value::String(s)) => text(estimator, s),
                    _ if o.contains_key("image_url") || o.contains_key("input_image") => {
                        estimator.per_image()
                    }
                    _ if o.get("type").and_then(Value::as_str) == Some("input_image") => {
                        estimator.per_image()
                    }
                    _ => 0,
                },
                _ => 0,
            })
            .fold(0, u64::saturating_add),
        _ => 0,
    }
}

/// The reservation of a Chat Completions or Responses body for a model described by `model`.
pub(crate) fn estimate(
    estimator: &Estimator,
    operation: Operation,
    model: ModelInfo,
    body: &[u8],
) -> RequestEstimate {
    let whole_body = estimator.tokens_for_bytes(body.len() as u64).max(1);
    let Ok(Value::Object(top)) = serde_json::from_slice::<Value>(body) else {
        return RequestEstimate {
            operation,
            input_tokens: whole_body,
            max_output_tokens: model.max_output_tokens,
            basis: EstimateBasis::Unreadable,
        };
    };
    let per_message = estimator.per_message();
    let list = |key: &str| -> u64 {
        match top.get(key) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|m| per_message.saturating_add(content(estimator, m.get("content"))))
                .fold(0, u64::saturating_add),
            Some(Value::String(s)) => per_message.saturating_add(text(estimator, s)),
            _ => 0,
        }
    };
    let tools = top.get("tools").map_or(0, |t| {
        estimator.tokens_for_bytes(t.to_string().len() as u64)
    });
    let (input, max_fields): (u64, &[&str]) = match operation {
        Operation::Responses => (
            list("input")
                .saturating_add(content(estimator, top.get("instructions")))
                .saturating_add(tools),
            &["max_output_tokens"],
        ),
        _ => (
            list("messages").saturating_add(tools),
            &["max_completion_tokens", "max_tokens"],
        ),
    };
    let expected = match operation {
        Operation::Responses => top.contains_key("input"),
        _ => matches!(top.get("messages"), Some(Value::Array(_))),
    };
    let (input, basis) = if expected {
        (input, EstimateBasis::Parsed)
    } else {
        (input.max(whole_body), EstimateBasis::WholeBody)
    };
    let max_output = max_fields
        .iter()
        .find_map(|k| top.get(*k).and_then(Value::as_u64))
        .unwrap_or(model.default_max_tokens);
    RequestEstimate {
        operation,
        input_tokens: input.max(1),
        max_output_tokens: max_output,
        basis,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bedrock::models::ModelFamily;

    #[test]
    fn paths() {
        assert_eq!(
            operation_of("/openai/v1/chat/completions"),
            Some(Operation::ChatCompletions)
        );
        assert_eq!(
            operation_of("/prefix/openai/v1/responses/"),
            Some(Operation::Responses)
        );
        assert_eq!(
            operation_of("/v1/chat/completions"),
            Some(Operation::ChatCompletions)
        );
        assert_eq!(operation_of("/openai/v1/models"), None);
        assert_eq!(operation_of("/model/x/converse"), None);
    }

    #[test]
    fn estimates() {
        let e = Estimator::default();
        let info = ModelInfo::new(ModelFamily::MaxTokens, 1_000, 10);
        let chat = br#"{"model":"m","messages":[{"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"hello there"}]}],"max_completion_tokens":50}"#;
        let r = estimate(&e, Operation::ChatCompletions, info, chat);
        assert_eq!(r.basis, EstimateBasis::Parsed);
        assert_eq!(r.input_tokens, 8 + 3 + 8 + 4);
        assert_eq!(r.max_output_tokens, 50);
        let responses = br#"{"model":"m","input":"hello","instructions":"be brief"}"#;
        let r = estimate(&e, Operation::Responses, info, responses);
        assert_eq!((r.input_tokens, r.max_output_tokens), (8 + 2 + 3, 1_000));
        let r = estimate(&e, Operation::ChatCompletions, info, b"{not json");
        assert_eq!(r.basis, EstimateBasis::Unreadable);
        let r = estimate(&e, Operation::ChatCompletions, info, br#"{"model":"m"}"#);
        assert_eq!(r.basis, EstimateBasis::WholeBody);
    }
}
