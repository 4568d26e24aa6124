//! The emulator's previous validation (a `serde_json::Value` tree per body), kept as a test-only
//! reference: the streaming reader must answer every body exactly as it did.
#![allow(dead_code)]
// Test-only: the oracle of the streaming reader, never on the request path.
#![allow(clippy::arithmetic_side_effects)]

use serde_json::Value;

use crate::bedrock::models::{
    ModelFamily, ModelInfo, converse_max_output_tokens, invoke_max_output_tokens,
};

use crate::emulator::error::ApiError;

/// The response format a request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Converse / ConverseStream.
    Converse,
    /// Anthropic messages API.
    ClaudeMessages,
    /// Anthropic legacy text completions.
    ClaudeText,
    /// Amazon Titan text.
    TitanText,
    /// Amazon Titan embeddings, with the vector length.
    TitanEmbed { dimensions: usize },
    /// Cohere embeddings, with the number of texts.
    CohereEmbed { texts: usize },
    /// Amazon Nova.
    Nova,
    /// Meta Llama.
    Llama,
    /// Mistral-style `outputs` (Mistral, Jurassic, unknown models).
    Generic,
}

impl Shape {
    pub(crate) fn is_embedding(self) -> bool {
        matches!(self, Self::TitanEmbed { .. } | Self::CohereEmbed { .. })
    }
}

/// A validated request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Parsed {
    /// Input tokens by the emulator's rule.
    pub(crate) input: u64,
    /// The most output tokens the response may have: the request's max tokens, else the
    /// model's maximum (0 for embeddings). This is what admission reserves on top of `input`.
    pub(crate) max_output: u64,
    pub(crate) shape: Shape,
}

/// The most texts a Cohere embeddings request may carry.
const MAX_EMBED_TEXTS: usize = 96;

/// The largest request body Bedrock accepts.
pub(crate) const MAX_BODY_BYTES: u64 = 25_000_000;

pub(crate) fn too_large() -> ApiError {
    ApiError::validation(format!(
        "1 validation error detected: Value at 'body' failed to satisfy constraint: Member must \
         have length less than or equal to {MAX_BODY_BYTES}"
    ))
}

/// UTF-8, JSON, and an object.
pub(crate) fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::malformed(format!("request body is not valid UTF-8 ({e})")))?;
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ApiError::malformed(format!("request body is not valid JSON ({e})")))?;
    if !value.is_object() {
        return Err(ApiError::malformed(format!(
            "#: expected type: JSONObject, found: {}",
            type_name(&value)
        )));
    }
    Ok(value)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "Null",
        Value::Bool(_) => "Boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "Integer",
        Value::Number(_) => "Number",
        Value::String(_) => "String",
        Value::Array(_) => "JSONArray",
        Value::Object(_) => "JSONObject",
    }
}

fn pointer(path: &[&str]) -> String {
    let mut s = String::from("#");
    for p in path {
        s.push('/');
        s.push_str(p);
    }
    s
}

/// Walks `path`; absent or null anywhere = `None`.
fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for key in path {
        cur = cur.get(key)?;
    }
    (!cur.is_null()).then_some(cur)
}

fn wrong_type(path: &[&str], expected: &str, found: &Value) -> ApiError {
    ApiError::malformed(format!(
        "{}: expected type: {expected}, found: {}",
        pointer(path),
        type_name(found)
    ))
}

fn missing(parent: &[&str], key: &str) -> ApiError {
    ApiError::malformed(format!(
        "{}: required key [{key}] not found",
        pointer(parent)
    ))
}

fn opt_uint(v: &Value, path: &[&str]) -> Result<Option<u64>, ApiError> {
    // Every parent must be an object when present.
    for i in 1..path.len() {
        if let Some(parent) = get(v, &path[..i])
            && !parent.is_object()
        {
            return Err(wrong_type(&path[..i], "JSONObject", parent));
        }
    }
    match get(v, path) {
        None => Ok(None),
        Some(x) => x
            .as_u64()
            .map(Some)
            .ok_or_else(|| wrong_type(path, "Integer", x)),
    }
}

fn req_uint(v: &Value, key: &str, min: u64) -> Result<u64, ApiError> {
    let n = opt_uint(v, &[key])?.ok_or_else(|| missing(&[], key))?;
    if n < min {
        return Err(ApiError::malformed(format!(
            "#/{key}: {n} is not greater or equal to {min}"
        )));
    }
    Ok(n)
}

fn req_str<'a>(v: &'a Value, key: &str) -> Result<&'a str, ApiError> {
    let x = get(v, &[key]).ok_or_else(|| missing(&[], key))?;
    x.as_str().ok_or_else(|| wrong_type(&[key], "String", x))
}

/// `messages`: an array of objects with a string `role` and a `content` that is an array of
/// objects (or, when `content_may_be_string`, a string); a block's `text` must be a string.
fn messages(v: &Value, content_may_be_string: bool) -> Result<(), ApiError> {
    let list = get(v, &["messages"]).ok_or_else(|| missing(&[], "messages"))?;
    let list = list
        .as_array()
        .ok_or_else(|| wrong_type(&["messages"], "JSONArray", list))?;
    for (i, m) in list.iter().enumerate() {
        let i = i.to_string();
        let at = ["messages", i.as_str()];
        if !m.is_object() {
            return Err(wrong_type(&at, "JSONObject", m));
        }
        req_str(m, "role").map_err(|_| match m.get("role") {
            Some(r) if !r.is_null() => wrong_type(&["messages", &i, "role"], "String", r),
            _ => missing(&at, "role"),
        })?;
        let content = get(m, &["content"]).ok_or_else(|| missing(&at, "content"))?;
        match content {
            Value::String(_) if content_may_be_string => {}
            Value::Array(blocks) => blocks_with_text(blocks, &["messages", &i, "content"])?,
            other => return Err(wrong_type(&["messages", &i, "content"], "JSONArray", other)),
        }
    }
    Ok(())
}

fn blocks_with_text(blocks: &[Value], at: &[&str]) -> Result<(), ApiError> {
    for (j, b) in blocks.iter().enumerate() {
        let j = j.to_string();
        let mut path = at.to_vec();
        path.push(&j);
        if !b.is_object() {
            return Err(wrong_type(&path, "JSONObject", b));
        }
        if let Some(t) = get(b, &["text"])
            && !t.is_string()
        {
            path.push("text");
            return Err(wrong_type(&path, "String", t));
        }
    }
    Ok(())
}

/// `system`: absent, a string (when allowed), or an array of blocks with string `text`.
fn system(v: &Value, may_be_string: bool) -> Result<(), ApiError> {
    match get(v, &["system"]) {
        None => Ok(()),
        Some(Value::String(_)) if may_be_string => Ok(()),
        Some(Value::Array(blocks)) => blocks_with_text(blocks, &["system"]),
        Some(other) => Err(wrong_type(&["system"], "JSONArray", other)),
    }
}

fn exceeds_model_limit(max: u64) -> ApiError {
    ApiError::validation(format!(
        "The maximum tokens you requested exceeds the model limit of {max}. Try again with a \
         maximum tokens value that is lower than {max}."
    ))
}

/// Validates an InvokeModel / InvokeModelWithResponseStream body for the model's family.
pub(crate) fn invoke(info: ModelInfo, body: &[u8]) -> Result<Parsed, ApiError> {
    let v = parse_json(body)?;
    let shape = match info.family {
        ModelFamily::AnthropicClaude => claude(&v)?,
        ModelFamily::TitanText => {
            req_str(&v, "inputText")?;
            opt_uint(&v, &["textGenerationConfig", "maxTokenCount"])?;
            Shape::TitanText
        }
        ModelFamily::Embedding => match get(&v, &["texts"]) {
            Some(Value::Array(texts)) => {
                if let Some(bad) = texts.iter().find(|t| !t.is_string()) {
                    return Err(wrong_type(&["texts", "0"], "String", bad));
                }
                if texts.len() > MAX_EMBED_TEXTS {
                    return Err(ApiError::malformed(format!(
                        "#/texts: expected maximum item count: {MAX_EMBED_TEXTS}, found: {}",
                        texts.len()
                    )));
                }
                Shape::CohereEmbed { texts: texts.len() }
            }
            Some(other) => return Err(wrong_type(&["texts"], "JSONArray", other)),
            None => {
                req_str(&v, "inputText")?;
                let dimensions = opt_uint(&v, &["dimensions"])?
                    .unwrap_or(1024)
                    .clamp(1, 8192);
                Shape::TitanEmbed {
                    dimensions: usize::try_from(dimensions).unwrap_or(1024),
                }
            }
        },
        ModelFamily::Nova => {
            messages(&v, false)?;
            system(&v, false)?;
            opt_uint(&v, &["inferenceConfig", "maxTokens"])?;
            opt_uint(&v, &["inferenceConfig", "max_new_tokens"])?;
            Shape::Nova
        }
        ModelFamily::Llama => {
            req_str(&v, "prompt")?;
            opt_uint(&v, &["max_gen_len"])?;
            Shape::Llama
        }
        ModelFamily::Jurassic => {
            req_str(&v, "prompt")?;
            opt_uint(&v, &["maxTokens"])?;
            Shape::Generic
        }
        ModelFamily::MaxTokens => {
            if get(&v, &["messages"]).is_some() {
                messages(&v, true)?;
            } else {
                req_str(&v, "prompt")?;
            }
            opt_uint(&v, &["max_tokens"])?;
            Shape::Generic
        }
        ModelFamily::Unknown => {
            if get(&v, &["anthropic_version"]).is_some() {
                claude(&v)?
            } else {
                for path in [
                    &["max_tokens"][..],
                    &["inferenceConfig", "maxTokens"],
                    &["max_gen_len"],
                    &["textGenerationConfig", "maxTokenCount"],
                    &["maxTokens"],
                ] {
                    opt_uint(&v, path)?;
                }
                Shape::Generic
            }
        }
    };
    let max_output = if shape.is_embedding() {
        0
    } else {
        let family = if shape == Shape::ClaudeMessages || shape == Shape::ClaudeText {
            ModelFamily::AnthropicClaude
        } else {
            info.family
        };
        match invoke_max_output_tokens(family, &v) {
            Some(n) if n > info.max_output_tokens => {
                return Err(exceeds_model_limit(info.max_output_tokens));
            }
            Some(n) => n,
            None => info.max_output_tokens,
        }
    };
    Ok(Parsed {
        input: invoke_input_tokens(&v, body.len()),
        max_output,
        shape,
    })
}

fn claude(v: &Value) -> Result<Shape, ApiError> {
    if get(v, &["messages"]).is_none() && get(v, &["prompt"]).is_some() {
        req_str(v, "prompt")?;
        req_uint(v, "max_tokens_to_sample", 1)?;
        return Ok(Shape::ClaudeText);
    }
    req_str(v, "anthropic_version")?;
    req_uint(v, "max_tokens", 1)?;
    messages(v, true)?;
    system(v, true)?;
    Ok(Shape::ClaudeMessages)
}

fn constraint(path: &str, what: &str) -> ApiError {
    ApiError::validation(format!(
        "1 validation error detected: Value at '{path}' failed to satisfy constraint: {what}"
    ))
}

/// Validates a Converse request body (also the `converse` input of CountTokens) and counts its
/// input tokens.
pub(crate) fn converse_body(v: &Value) -> Result<u64, ApiError> {
    let Some(list) = get(v, &["messages"]) else {
        return Err(ApiError::validation(
            "1 validation error detected: Value null at 'messages' failed to satisfy constraint: \
             Member must not be null",
        ));
    };
    let list = list
        .as_array()
        .ok_or_else(|| constraint("messages", "Member must be a list"))?;
    if list.is_empty() {
        return Err(ApiError::validation(
            "A conversation must start with a user message. Try again with a conversation that \
             starts with a user message.",
        ));
    }
    for (i, m) in list.iter().enumerate() {
        if !m.is_object() {
            return Err(constraint(
                &format!("messages.{}", i + 1),
                "Member must be a structure",
            ));
        }
        match m.get("role").and_then(Value::as_str) {
            Some("user" | "assistant") => {}
            _ => {
                return Err(constraint(
                    &format!("messages.{}.member.role", i + 1),
                    "Member must satisfy enum value set: [user, assistant]",
                ));
            }
        }
        let Some(content) = m.get("content").and_then(Value::as_array) else {
            return Err(constraint(
                &format!("messages.{}.member.content", i + 1),
                "Member must be a list",
            ));
        };
        for (j, b) in content.iter().enumerate() {
            let ok = b.is_object() && b.get("text").is_none_or(Value::is_string);
            if !ok {
                return Err(constraint(
                    &format!("messages.{}.member.content.{}", i + 1, j + 1),
                    "Member must be a valid content block",
                ));
            }
        }
    }
    match v.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::Array(blocks)) => {
            for (j, b) in blocks.iter().enumerate() {
                if !(b.is_object() && b.get("text").is_none_or(Value::is_string)) {
                    return Err(constraint(
                        &format!("system.{}", j + 1),
                        "Member must be a valid system content block",
                    ));
                }
            }
        }
        Some(_) => return Err(constraint("system", "Member must be a list")),
    }
    for key in ["inferenceConfig", "toolConfig"] {
        match v.get(key) {
            None | Some(Value::Null | Value::Object(_)) => {}
            Some(_) => return Err(constraint(key, "Member must be a structure")),
        }
    }
    match get(v, &["inferenceConfig", "maxTokens"]) {
        None => {}
        Some(x) if x.as_u64().is_some_and(|n| n >= 1) => {}
        Some(_) => {
            return Err(constraint(
                "inferenceConfig.maxTokens",
                "Member must have value greater than or equal to 1",
            ));
        }
    }
    Ok(converse_input_tokens(v))
}

/// Validates a Converse / ConverseStream request.
pub(crate) fn converse(info: ModelInfo, body: &[u8]) -> Result<Parsed, ApiError> {
    let v = parse_json(body)?;
    let input = converse_body(&v)?;
    if info.family == ModelFamily::Embedding {
        return Err(ApiError::validation(
            "This action doesn't support the model that you provided. Try again with a supported \
             text or chat model.",
        ));
    }
    let max_output = match converse_max_output_tokens(&v) {
        Some(n) if n > info.max_output_tokens => {
            return Err(exceeds_model_limit(info.max_output_tokens));
        }
        Some(n) => n,
        None => info.max_output_tokens,
    };
    Ok(Parsed {
        input,
        max_output,
        shape: Shape::Converse,
    })
}

/// Validates a CountTokens request and counts its input tokens.
pub(crate) fn count_tokens(body: &[u8]) -> Result<u64, ApiError> {
    use base64::Engine as _;
    let v = parse_json(body)?;
    let Some(input) = get(&v, &["input"]) else {
        return Err(ApiError::validation(
            "1 validation error detected: Value null at 'input' failed to satisfy constraint: \
             Member must not be null",
        ));
    };
    if let Some(converse) = input.get("converse").filter(|c| !c.is_null()) {
        if !converse.is_object() {
            return Err(constraint("input.converse", "Member must be a structure"));
        }
        return converse_body(converse);
    }
    if let Some(invoke) = input.get("invokeModel").filter(|c| !c.is_null()) {
        let Some(b64) = invoke.get("body").and_then(Value::as_str) else {
            return Err(constraint(
                "input.invokeModel.body",
                "Member must not be null",
            ));
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| constraint("input.invokeModel.body", "Member must be a base64 blob"))?;
        let inner = parse_json(&raw)?;
        return Ok(invoke_input_tokens(&inner, raw.len()));
    }
    Err(constraint(
        "input",
        "Member must have exactly one of: converse, invokeModel",
    ))
}

// ----- the previous token rule -----

use base64::Engine as _;

/// Tokens of one image.
pub(crate) const IMAGE_TOKENS: u64 = 1000;
/// Tokens added per message.
pub(crate) const MESSAGE_OVERHEAD_TOKENS: u64 = 3;

/// `ceil(chars / 4)`.
pub(crate) fn text_tokens(text: &str) -> u64 {
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
pub(crate) fn converse_input_tokens(body: &Value) -> u64 {
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
pub(crate) fn invoke_input_tokens(body: &Value, body_len: usize) -> u64 {
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
