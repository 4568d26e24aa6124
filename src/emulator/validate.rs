//! Request validation: what makes Bedrock answer `ValidationException`, and the shape of each
//! accepted body (which decides the response format).

use serde_json::Value;

use crate::bedrock::models::{
    ModelFamily, ModelInfo, converse_max_output_tokens, invoke_max_output_tokens,
};

use super::error::ApiError;
use super::tokens::{converse_input_tokens, invoke_input_tokens};

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
        if let Some(parent) = get(v, &path[..i]) {
            if !parent.is_object() {
                return Err(wrong_type(&path[..i], "JSONObject", parent));
            }
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
        if let Some(t) = get(b, &["text"]) {
            if !t.is_string() {
                path.push("text");
                return Err(wrong_type(&path, "String", t));
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bedrock::models::default_model_info;
    use serde_json::json;

    const SONNET: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";

    fn msg(e: ApiError) -> String {
        e.message
    }

    #[test]
    fn claude_required_fields_and_types() {
        let info = default_model_info(SONNET);
        let ok = json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10,
                        "messages": [{"role": "user", "content": "hi"}]});
        let p = invoke(info, ok.to_string().as_bytes()).unwrap();
        assert_eq!((p.max_output, p.shape), (10, Shape::ClaudeMessages));

        let no_max = json!({"anthropic_version": "bedrock-2023-05-31", "messages": []});
        assert!(
            msg(invoke(info, no_max.to_string().as_bytes()).unwrap_err())
                .contains("required key [max_tokens]")
        );
        let no_version = json!({"max_tokens": 1, "messages": []});
        assert!(
            msg(invoke(info, no_version.to_string().as_bytes()).unwrap_err())
                .contains("[anthropic_version]")
        );
        let bad_type = json!({"anthropic_version": "x", "max_tokens": "10", "messages": []});
        assert!(
            msg(invoke(info, bad_type.to_string().as_bytes()).unwrap_err())
                .contains("#/max_tokens: expected type: Integer, found: String")
        );
        let bad_content = json!({"anthropic_version": "x", "max_tokens": 1, "messages": [{"role": "user", "content": 5}]});
        assert!(invoke(info, bad_content.to_string().as_bytes()).is_err());
        let too_many = json!({"anthropic_version": "x", "max_tokens": 64_001, "messages": []});
        assert!(
            msg(invoke(info, too_many.to_string().as_bytes()).unwrap_err())
                .contains("model limit of 64000")
        );
    }

    #[test]
    fn malformed_bodies() {
        let info = default_model_info(SONNET);
        assert!(msg(invoke(info, b"{not json").unwrap_err()).contains("not valid JSON"));
        assert!(msg(invoke(info, &[0xff, 0xfe]).unwrap_err()).contains("UTF-8"));
        assert!(msg(invoke(info, b"[1]").unwrap_err()).contains("JSONObject"));
        assert!(
            converse(info, b"{}")
                .unwrap_err()
                .message
                .contains("'messages'")
        );
        assert!(converse(info, br#"{"messages": "x"}"#).is_err());
        assert!(converse(info, br#"{"messages": [{"role": "robot", "content": []}]}"#).is_err());
        assert!(
            converse(
                info,
                br#"{"messages": [{"role": "user", "content": [{"text": 1}]}]}"#
            )
            .is_err()
        );
        assert!(converse(info, br#"{"messages": [{"role": "user", "content": []}], "inferenceConfig": {"maxTokens": "a"}}"#).is_err());
        assert!(converse(info, br#"{"messages": [{"role": "user", "content": []}], "inferenceConfig": {"maxTokens": 64001}}"#).is_err());
        let p = converse(info, br#"{"messages": [{"role": "user", "content": []}]}"#).unwrap();
        assert_eq!(p.max_output, 64_000);
    }

    #[test]
    fn other_families() {
        let titan = default_model_info("amazon.titan-text-express-v1");
        let p = invoke(titan, br#"{"inputText": "abcd"}"#).unwrap();
        assert_eq!((p.input, p.max_output), (1, 512));
        assert!(invoke(titan, br#"{"inputText": 3}"#).is_err());
        assert!(invoke(titan, br#"{"inputText": "a", "textGenerationConfig": 3}"#).is_err());

        let embed = default_model_info("amazon.titan-embed-text-v2:0");
        let p = invoke(embed, br#"{"inputText": "abcd", "dimensions": 256}"#).unwrap();
        assert_eq!(
            (p.max_output, p.shape),
            (0, Shape::TitanEmbed { dimensions: 256 })
        );
        let cohere = default_model_info("cohere.embed-v4:0");
        let p = invoke(cohere, br#"{"texts": ["a", "b"], "max_tokens": 8000}"#).unwrap();
        assert_eq!(
            (p.max_output, p.shape),
            (0, Shape::CohereEmbed { texts: 2 })
        );
        assert!(converse(embed, br#"{"messages": [{"role": "user", "content": []}]}"#).is_err());

        let nova = default_model_info("us.amazon.nova-pro-v1:0");
        let p = invoke(nova, br#"{"messages": [{"role": "user", "content": [{"text": "abcd"}]}], "inferenceConfig": {"max_new_tokens": 9}}"#).unwrap();
        assert_eq!((p.max_output, p.shape), (9, Shape::Nova));
        assert!(
            invoke(
                nova,
                br#"{"messages": [{"role": "user", "content": "abcd"}]}"#
            )
            .is_err()
        );

        let llama = default_model_info("meta.llama3-8b-instruct-v1:0");
        assert_eq!(
            invoke(llama, br#"{"prompt": "hi"}"#).unwrap().max_output,
            8192
        );
        assert!(invoke(llama, br#"{"prompt": "hi", "max_gen_len": -1}"#).is_err());
    }

    #[test]
    fn count_tokens_inputs() {
        use base64::Engine as _;
        let conv = json!({"input": {"converse": {"messages": [{"role": "user", "content": [{"text": "abcd"}]}]}}});
        assert_eq!(count_tokens(conv.to_string().as_bytes()).unwrap(), 4);
        let inner = json!({"inputText": "abcdefgh"}).to_string();
        let b64 = base64::engine::general_purpose::STANDARD.encode(inner);
        let inv = json!({"input": {"invokeModel": {"body": b64}}});
        assert_eq!(count_tokens(inv.to_string().as_bytes()).unwrap(), 2);
        assert!(count_tokens(br#"{"input": {}}"#).is_err());
        assert!(count_tokens(br#"{"input": {"invokeModel": {"body": "!!"}}}"#).is_err());
        assert!(count_tokens(br#"{}"#).is_err());
    }
}
