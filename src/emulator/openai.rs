//! The OpenAI-compatible routes of bedrock-runtime: `POST /openai/v1/chat/completions` and
//! `POST /openai/v1/responses`, synchronous only, on the same per-model quota (and burndown)
//! as Converse.
//!
//! The emulator's own reading of these bodies (an oracle shares data with the client, not the
//! code that reads bodies): `model` must be a non-empty string; input tokens follow the text
//! rule of [`tokens`](super::tokens) (`ceil(chars / 4)` per string): per message or input item
//! 3 plus its `content` (a string, or parts whose `text` counts), plus `instructions` and the
//! compact JSON of `tools`; the max output is `max_completion_tokens`, else `max_tokens`
//! (Chat Completions) or `max_output_tokens` (Responses), else the model's default. Errors use
//! the OpenAI envelope with the Bedrock code in `x-amzn-ErrorType` too.

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::error::ApiError;
use super::faults;
use super::ledger::{Admission, lock};
use super::ops::{Operation, Output, end_time, json_response, request_id, request_rng};
use super::server::{Body, Shared};
use super::stats::bump;
use super::tokens::{MESSAGE_OVERHEAD_TOKENS, text_tokens};

/// Which OpenAI-compatible API a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    ChatCompletions,
    Responses,
}

/// Which API a path is, and on which endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Route {
    pub(crate) api: Api,
    /// bedrock-mantle (`/v1/...`) rather than bedrock-runtime (`/openai/v1/...`).
    pub(crate) mantle: bool,
}

/// The route of `path`: bedrock-runtime's `/openai/v1/chat/completions` and
/// `/openai/v1/responses`, bedrock-mantle's `/v1/chat/completions` and `/v1/responses`.
pub(crate) fn route(path: &str) -> Option<Route> {
    let (mantle, rest) = match path.strip_prefix("/openai/v1/") {
        Some(rest) => (false, rest),
        None => (true, path.strip_prefix("/v1/")?),
    };
    let api = match rest {
        "chat/completions" => Api::ChatCompletions,
        "responses" => Api::Responses,
        _ => return None,
    };
    Some(Route { api, mantle })
}

pub(crate) fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::validation(message).openai_envelope()
}

/// Text tokens of a `content`: a string, or parts whose `text` counts.
fn content_tokens(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::String(s)) => text_tokens(s),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| match p {
                Value::String(s) => text_tokens(s),
                _ => p.get("text").and_then(Value::as_str).map_or(0, text_tokens),
            })
            .fold(0, u64::saturating_add),
        _ => 0,
    }
}

/// The items of `messages` / `input`: 3 each plus their content; a string input is one item.
fn items_tokens(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::Array(items)) => items
            .iter()
            .map(|m| MESSAGE_OVERHEAD_TOKENS.saturating_add(content_tokens(m.get("content"))))
            .fold(0, u64::saturating_add),
        Some(Value::String(s)) => MESSAGE_OVERHEAD_TOKENS.saturating_add(text_tokens(s)),
        _ => 0,
    }
}

/// A validated body: the model, the input tokens, the max output asked for (if any).
pub(crate) struct Request {
    pub(crate) model: String,
    pub(crate) input: u64,
    pub(crate) max_output: Option<u64>,
}

fn parse(api: Api, body: &[u8]) -> Result<Request, ApiError> {
    let Ok(Value::Object(top)) = serde_json::from_slice::<Value>(body) else {
        return Err(invalid("The request body is not a JSON object."));
    };
    let model = match top.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(Value::Null) | None => return Err(invalid("The request body has no `model`.")),
        Some(_) => return Err(invalid("`model` must be a string.")),
    };
    if top.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err(invalid(
            "Streaming is not supported on this endpoint; call it without `stream`.",
        ));
    }
    let uint = |k: &str| -> Result<Option<u64>, ApiError> {
        match top.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n >= 1 => Ok(Some(n)),
                _ => Err(invalid(format!("`{k}` must be a positive integer."))),
            },
        }
    };
    let tools = top
        .get("tools")
        .map_or(0, |t| (t.to_string().chars().count() as u64).div_ceil(4));
    let (input, max_output) = match api {
        Api::ChatCompletions => {
            if !matches!(top.get("messages"), Some(Value::Array(m)) if !m.is_empty()) {
                return Err(invalid("`messages` must be a non-empty array."));
            }
            let max = match uint("max_completion_tokens")? {
                Some(n) => Some(n),
                None => uint("max_tokens")?,
            };
            (items_tokens(top.get("messages")), max)
        }
        Api::Responses => {
            if !matches!(top.get("input"), Some(Value::Array(_) | Value::String(_))) {
                return Err(invalid("`input` must be a string or an array."));
            }
            let instructions = top
                .get("instructions")
                .and_then(Value::as_str)
                .map_or(0, text_tokens);
            (
                items_tokens(top.get("input")).saturating_add(instructions),
                uint("max_output_tokens")?,
            )
        }
    };
    Ok(Request {
        model,
        input: input.saturating_add(tools).max(1),
        max_output,
    })
}

/// Serves one OpenAI-compatible request.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    route: Route,
    body: Bytes,
    start: Instant,
) -> Response<Body> {
    let api = route.api;
    let index = shared.next_index();
    let mut rng = request_rng(shared.config.seed, index);
    let request_id = request_id(&mut rng);
    let request = match parse(api, &body) {
        Ok(r) => r,
        Err(e) => return e.into_response(&request_id),
    };
    drop(body);
    if let Err(e) = shared.check_model(&request.model, Operation::OpenAi) {
        return e.openai_envelope().into_response(&request_id);
    }
    if route.mantle {
        return super::mantle::serve(&shared, api, request, rng, &request_id, start).await;
    }
    let model_id = request.model;
    let ledger = shared.ledgers.get(&model_id);
    bump(&mut lock(&ledger).counters.requests);
    let info = shared.table.resolve(&model_id).0;
    let max_output = match request.max_output {
        Some(n) if n > info.max_output_tokens => {
            bump(&mut lock(&ledger).counters.rejected);
            return invalid(format!(
                "The maximum tokens you requested exceeds the model limit of {}.",
                info.max_output_tokens
            ))
            .into_response(&request_id);
        }
        Some(n) => n,
        None => info.default_max_tokens,
    };

    let fault = faults::pick(&shared.config.faults, index, Operation::OpenAi, &mut rng);
    if let Some(error) = fault.and_then(|f| faults::http_error(f, &model_id)) {
        if let Some(f) = fault {
            faults::count(&mut lock(&ledger).counters.faults, f, 0);
        }
        return error.into_response(&request_id);
    }

    let input = request.input;
    let admitted = {
        let mut l = lock(&ledger);
        let r = l.admit(Instant::now(), input.saturating_add(max_output));
        if r.is_ok() {
            l.counters.input_tokens = l.counters.input_tokens.saturating_add(input);
        }
        r
    };
    let reservation = match admitted {
        Ok(r) => r,
        Err((dim, wait)) => {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "ThrottlingException",
                dim.message(),
            )
            .openai_envelope();
            if shared.config.retry_after {
                e.retry_after = wait;
            }
            return e.into_response(&request_id);
        }
    };
    let admission = Admission::new(Arc::clone(&ledger), reservation, input);
    let output = Output::new(shared.config.output_length, max_output, &mut rng);
    let n = output.n();
    let end = end_time(&shared.config.latency, n);
    tokio::time::sleep_until(start.checked_add(end).unwrap_or(start)).await;
    admission.settle(
        input.saturating_add(n.saturating_mul(info.output_burndown)),
        n,
    );
    let truncated = output.truncated();
    answer(
        api,
        &model_id,
        input,
        &output,
        truncated,
        &mut rng,
        &request_id,
    )
}

/// The OpenAI-shaped answer of `api` with `output` (a `length` finish when `truncated`).
pub(crate) fn answer(
    api: Api,
    model_id: &str,
    input: u64,
    output: &Output,
    truncated: bool,
    rng: &mut fastrand::Rng,
    request_id: &str,
) -> Response<Body> {
    let (n, text) = (output.n(), output.text());
    let body = match api {
        Api::ChatCompletions => json!({
            "id": format!("chatcmpl-{}", rng.u64(..)),
            "object": "chat.completion",
            "created": 0,
            "model": model_id,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": if truncated { "length" } else { "stop" },
            }],
            "usage": {"prompt_tokens": input, "completion_tokens": n, "total_tokens": input.saturating_add(n)},
        }),
        Api::Responses => json!({
            "id": format!("resp_{}", rng.u64(..)),
            "object": "response",
            "model": model_id,
            "status": if truncated { "incomplete" } else { "completed" },
            "output": [{
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text}],
            }],
            "usage": {"input_tokens": input, "output_tokens": n, "total_tokens": input.saturating_add(n)},
        }),
    };
    json_response(&body, request_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        let chat =
            br#"{"model":"m","messages":[{"role":"user","content":"hello"}],"max_tokens":9}"#;
        let r = parse(Api::ChatCompletions, chat).unwrap();
        assert_eq!(
            (r.model.as_str(), r.input, r.max_output),
            ("m", 3 + 2, Some(9))
        );
        let resp = br#"{"model":"m","input":"hello","instructions":"abcd"}"#;
        let r = parse(Api::Responses, resp).unwrap();
        assert_eq!((r.input, r.max_output), (3 + 2 + 1, None));
        for bad in [
            &br#"{"messages":[{"role":"user","content":"x"}]}"#[..],
            br#"{"model":7,"messages":[{"role":"user","content":"x"}]}"#,
            br#"{"model":"m","messages":[]}"#,
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true}"#,
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0}"#,
            b"[]",
        ] {
            assert!(parse(Api::ChatCompletions, bad).is_err());
        }
    }
}
