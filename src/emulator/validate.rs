//! Request validation: what makes Bedrock answer `ValidationException`, and the shape of each
//! accepted body (which decides the response format).
//!
//! Bodies are read in one streaming pass ([`body`](super::body)) into small summaries; the
//! rules below run on the summaries, in the order Bedrock's validator reports them.
//!
//! Bedrock enforces a JSON schema on some model-native bodies and refuses keys it does not
//! permit with `#: extraneous key [k] is not permitted`, every violation listed one after the
//! other. The emulator enforces that for the Anthropic Claude Messages API only (the family
//! whose refusals are documented and widely reported, e.g. `"stream": true`), with the keys
//! Bedrock's request reference lists plus `thinking` and `metadata`
//! ([`CLAUDE_MESSAGES_KEYS`]); other families accept unknown keys, so that the emulator never
//! refuses a body Bedrock would take.

use crate::bedrock::models::{ModelFamily, ModelInfo};

use super::body::{
    self, Kind, Mode, Part, Scalar, Seen, Top, TopReader, Violation, constraint, missing,
    wrong_type,
};
use super::error::ApiError;

/// The top-level keys Bedrock permits in an Anthropic Claude Messages body: those of the
/// Bedrock user guide's request reference ("Anthropic Claude Messages API: request and
/// response"), plus `thinking` (extended thinking, documented for Claude 3.7 and later) and
/// `metadata` (accepted from Anthropic's SDKs).
pub(crate) const CLAUDE_MESSAGES_KEYS: &[&str] = &[
    "anthropic_version",
    "anthropic_beta",
    "max_tokens",
    "messages",
    "system",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "tools",
    "tool_choice",
    "thinking",
    "metadata",
];

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

/// UTF-8, JSON, and an object, read with `reader`.
fn parse(body: &[u8], reader: TopReader) -> Result<Top, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::malformed(format!("request body is not valid UTF-8 ({e})")))?;
    match body::read(text, reader) {
        Err(e) => Err(ApiError::malformed(format!(
            "request body is not valid JSON ({e})"
        ))),
        Ok(Seen::Object(top)) => Ok(top),
        Ok(other) => Err(ApiError::malformed(wrong_type(
            "#",
            "JSONObject",
            other.kind(),
        ))),
    }
}

/// A present, non-null top-level value.
fn given<O, A>(part: &Option<Part<O, A>>) -> Option<&Part<O, A>> {
    part.as_ref().filter(|p| !p.is_null())
}

/// An optional non-negative integer at `path`.
fn opt_uint(value: Option<Scalar>, path: &str) -> Result<Option<u64>, Violation> {
    match Scalar::given(value) {
        None => Ok(None),
        Some(s) => s
            .uint
            .map(Some)
            .ok_or_else(|| wrong_type(path, "Integer", s.kind)),
    }
}

/// An optional non-negative integer inside an optional object `parent.key`.
fn opt_nested_uint<O>(
    parent: &Option<Part<O, ()>>,
    parent_name: &str,
    key: &str,
    field: impl Fn(&O) -> Option<Scalar>,
) -> Result<Option<u64>, Violation> {
    match given(parent) {
        None => Ok(None),
        Some(Part::Object(o)) => opt_uint(field(o), &format!("#/{parent_name}/{key}")),
        Some(other) => Err(wrong_type(
            &format!("#/{parent_name}"),
            "JSONObject",
            other.kind(),
        )),
    }
}

fn req_uint(value: Option<Scalar>, key: &str, min: u64) -> Result<u64, Violation> {
    let n = opt_uint(value, &format!("#/{key}"))?.ok_or_else(|| missing("#", key))?;
    if n < min {
        return Err(format!("#/{key}: {n} is not greater or equal to {min}"));
    }
    Ok(n)
}

fn req_str(value: Option<Scalar>, key: &str) -> Result<(), Violation> {
    let s = Scalar::given(value).ok_or_else(|| missing("#", key))?;
    if s.kind == Kind::String {
        Ok(())
    } else {
        Err(wrong_type(&format!("#/{key}"), "String", s.kind))
    }
}

/// `messages`: an array of objects with a string `role` and a `content` that is an array of
/// objects (or, when the reading mode allows, a string); a block's `text` must be a string.
fn messages(top: &Top) -> Result<(), Violation> {
    match given(&top.messages) {
        None => Err(missing("#", "messages")),
        Some(Part::Array(m)) => m.violation.clone().map_or(Ok(()), Err),
        Some(other) => Err(wrong_type("#/messages", "JSONArray", other.kind())),
    }
}

/// `system`: absent, a string (when allowed), or an array of blocks with string `text`.
fn system(top: &Top, may_be_string: bool, mode: Mode) -> Result<(), Violation> {
    match given(&top.system) {
        None => Ok(()),
        Some(Part::Scalar(s)) if s.kind == Kind::String && may_be_string => Ok(()),
        Some(Part::Array(blocks)) => blocks.violation_at(mode, "#/system").map_or(Ok(()), Err),
        Some(other) => Err(wrong_type("#/system", "JSONArray", other.kind())),
    }
}

fn exceeds_model_limit(max: u64) -> ApiError {
    ApiError::validation(format!(
        "The maximum tokens you requested exceeds the model limit of {max}. Try again with a \
         maximum tokens value that is lower than {max}."
    ))
}

/// The reading mode of a model-native body of `family`.
fn invoke_mode(family: ModelFamily) -> Mode {
    Mode::Invoke {
        content_may_be_string: family != ModelFamily::Nova,
    }
}

/// The top-level keys Bedrock permits in an Amazon Nova (InvokeModel) body: any other one,
/// such as `max_tokens`, is refused.
pub(crate) const NOVA_KEYS: &[&str] = &[
    "schemaVersion",
    "messages",
    "system",
    "inferenceConfig",
    "toolConfig",
];

/// Validates an InvokeModel / InvokeModelWithResponseStream body for the model's family.
pub(crate) fn invoke(info: ModelInfo, body: &[u8]) -> Result<Parsed, ApiError> {
    invoke_with_schema(
        info,
        body,
        matches!(
            info.family,
            ModelFamily::AnthropicClaude | ModelFamily::Nova
        ),
    )
}

/// [`invoke`], enforcing the family's schema keys (Claude Messages, Nova) only when `schema`.
fn invoke_with_schema(info: ModelInfo, body: &[u8], schema: bool) -> Result<Parsed, ApiError> {
    let mode = invoke_mode(info.family);
    let schema = schema
        .then_some(match info.family {
            ModelFamily::AnthropicClaude => Some(CLAUDE_MESSAGES_KEYS),
            ModelFamily::Nova => Some(NOVA_KEYS),
            _ => None,
        })
        .flatten();
    let top = parse(
        body,
        TopReader {
            mode,
            allowed: schema,
        },
    )?;
    let shape = family_shape(info.family, &top, mode)?;
    let max_output = if shape.is_embedding() {
        0
    } else {
        let family = if matches!(shape, Shape::ClaudeMessages | Shape::ClaudeText) {
            ModelFamily::AnthropicClaude
        } else {
            info.family
        };
        match invoke_max_output(family, &top) {
            Some(n) if n > info.max_output_tokens => {
                return Err(exceeds_model_limit(info.max_output_tokens));
            }
            Some(n) => n,
            None => info.max_output_tokens,
        }
    };
    Ok(Parsed {
        input: invoke_tokens(&top, body.len()),
        max_output,
        shape,
    })
}

fn family_shape(family: ModelFamily, top: &Top, mode: Mode) -> Result<Shape, ApiError> {
    let malformed = ApiError::malformed;
    Ok(match family {
        ModelFamily::AnthropicClaude => claude(top, mode, true)?,
        ModelFamily::TitanText => {
            req_str(top.input_text, "inputText").map_err(malformed)?;
            opt_nested_uint(
                &top.text_generation_config,
                "textGenerationConfig",
                "maxTokenCount",
                |c| c.max_token_count,
            )
            .map_err(malformed)?;
            Shape::TitanText
        }
        ModelFamily::Embedding => match given(&top.texts) {
            Some(Part::Array(texts)) => {
                if let Some(kind) = texts.first_not_string {
                    return Err(malformed(wrong_type("#/texts/0", "String", kind)));
                }
                if texts.len > MAX_EMBED_TEXTS {
                    return Err(malformed(format!(
                        "#/texts: expected maximum item count: {MAX_EMBED_TEXTS}, found: {}",
                        texts.len
                    )));
                }
                Shape::CohereEmbed { texts: texts.len }
            }
            Some(other) => return Err(malformed(wrong_type("#/texts", "JSONArray", other.kind()))),
            None => {
                req_str(top.input_text, "inputText").map_err(malformed)?;
                // The requested vector length, within what a response can carry.
                let dimensions = opt_uint(top.dimensions, "#/dimensions")
                    .map_err(malformed)?
                    .unwrap_or(1024)
                    .clamp(1, 8192);
                Shape::TitanEmbed {
                    dimensions: usize::try_from(dimensions).unwrap_or(1024),
                }
            }
        },
        ModelFamily::Nova => {
            messages(top).map_err(malformed)?;
            system(top, false, mode).map_err(malformed)?;
            opt_nested_uint(&top.inference_config, "inferenceConfig", "maxTokens", |c| {
                c.max_tokens
            })
            .map_err(malformed)?;
            opt_nested_uint(
                &top.inference_config,
                "inferenceConfig",
                "max_new_tokens",
                |c| c.max_new_tokens,
            )
            .map_err(malformed)?;
            if !top.extraneous.is_empty() {
                return Err(malformed(
                    top.extraneous
                        .iter()
                        .map(|key| format!("#: extraneous key [{key}] is not permitted"))
                        .collect::<Vec<_>>()
                        .concat(),
                ));
            }
            Shape::Nova
        }
        ModelFamily::Llama => {
            req_str(top.prompt, "prompt").map_err(malformed)?;
            opt_uint(top.max_gen_len, "#/max_gen_len").map_err(malformed)?;
            Shape::Llama
        }
        ModelFamily::Jurassic => {
            req_str(top.prompt, "prompt").map_err(malformed)?;
            opt_uint(top.max_tokens_camel, "#/maxTokens").map_err(malformed)?;
            Shape::Generic
        }
        ModelFamily::MaxTokens => {
            if given(&top.messages).is_some() {
                messages(top).map_err(malformed)?;
            } else {
                req_str(top.prompt, "prompt").map_err(malformed)?;
            }
            opt_uint(top.max_tokens, "#/max_tokens").map_err(malformed)?;
            Shape::Generic
        }
        ModelFamily::Unknown => {
            if Scalar::given(top.anthropic_version).is_some() {
                claude(top, mode, false)?
            } else {
                opt_uint(top.max_tokens, "#/max_tokens")
                    .and_then(|_| {
                        opt_nested_uint(
                            &top.inference_config,
                            "inferenceConfig",
                            "maxTokens",
                            |c| c.max_tokens,
                        )
                    })
                    .and_then(|_| opt_uint(top.max_gen_len, "#/max_gen_len"))
                    .and_then(|_| {
                        opt_nested_uint(
                            &top.text_generation_config,
                            "textGenerationConfig",
                            "maxTokenCount",
                            |c| c.max_token_count,
                        )
                    })
                    .and_then(|_| opt_uint(top.max_tokens_camel, "#/maxTokens"))
                    .map_err(malformed)?;
                Shape::Generic
            }
        }
    })
}

/// Anthropic Claude: a Messages body, or a legacy text completion (a `prompt` and no
/// `messages`). With `schema`, a Messages body's extraneous keys are violations too, listed
/// after the first structural one, all in one message as Bedrock lists them.
fn claude(top: &Top, mode: Mode, schema: bool) -> Result<Shape, ApiError> {
    if given(&top.messages).is_none() && Scalar::given(top.prompt).is_some() {
        req_str(top.prompt, "prompt").map_err(ApiError::malformed)?;
        req_uint(top.max_tokens_to_sample, "max_tokens_to_sample", 1)
            .map_err(ApiError::malformed)?;
        return Ok(Shape::ClaudeText);
    }
    let structural = req_str(top.anthropic_version, "anthropic_version")
        .and_then(|()| req_uint(top.max_tokens, "max_tokens", 1))
        .and_then(|_| messages(top))
        .and_then(|()| system(top, true, mode));
    let mut violations: Vec<Violation> = structural.err().into_iter().collect();
    if schema {
        violations.extend(
            top.extraneous
                .iter()
                .map(|key| format!("#: extraneous key [{key}] is not permitted")),
        );
        // Inside content blocks too (the first one, where Bedrock's schema stops).
        if let Some(Part::Array(m)) = top.messages.as_ref().filter(|_| top.schema)
            && let Some((i, j, key)) = &m.extraneous
        {
            violations.push(format!(
                "#/messages/{i}/content/{j}: extraneous key [{key}] is not permitted"
            ));
        }
        if let Some(Part::Array(b)) = top.system.as_ref().filter(|_| top.schema)
            && let Some((j, key)) = &b.first_extraneous
        {
            violations.push(format!(
                "#/system/{j}: extraneous key [{key}] is not permitted"
            ));
        }
    }
    if violations.is_empty() {
        Ok(Shape::ClaudeMessages)
    } else {
        Err(ApiError::malformed(violations.concat()))
    }
}

/// The max output tokens a model-native body of `family` asks for: the family's field when it
/// is a non-negative integer, `None` when the body does not say, `Some(0)` for embeddings
/// (Cohere Embed v4's `max_tokens` truncates INPUT), Titan's default of 512.
///
/// The emulator's own reading, not the client's: an oracle that shared the client's field
/// logic would agree with it even where both are wrong.
fn invoke_max_output(family: ModelFamily, top: &Top) -> Option<u64> {
    let uint = |s: Option<Scalar>| s.and_then(|s| s.uint);
    let inference = |f: fn(&body::InferenceConfig) -> Option<Scalar>| match &top.inference_config {
        Some(Part::Object(c)) => uint(f(c)),
        _ => None,
    };
    let titan = match &top.text_generation_config {
        Some(Part::Object(c)) => uint(c.max_token_count),
        _ => None,
    };
    match family {
        ModelFamily::Embedding => Some(0),
        ModelFamily::AnthropicClaude => uint(top.max_tokens).or(uint(top.max_tokens_to_sample)),
        ModelFamily::TitanText => Some(titan.unwrap_or(512)),
        ModelFamily::Nova => inference(|c| c.max_tokens).or(inference(|c| c.max_new_tokens)),
        ModelFamily::Llama => uint(top.max_gen_len),
        ModelFamily::Jurassic => uint(top.max_tokens_camel),
        ModelFamily::MaxTokens => uint(top.max_tokens),
        ModelFamily::Unknown => uint(top.max_tokens)
            .or(inference(|c| c.max_tokens))
            .or(uint(top.max_gen_len))
            .or(titan)
            .or(uint(top.max_tokens_camel)),
    }
}

/// Input tokens of a model-native body ([`tokens`](super::tokens) states the rule).
pub(crate) fn invoke_tokens(top: &Top, body_len: usize) -> u64 {
    let text_tokens_of = |s: Option<Scalar>| s.filter(|s| s.kind == Kind::String).map(|s| s.tokens);
    let n = if let Some(Part::Array(m)) = &top.messages {
        let system = match &top.system {
            Some(Part::Scalar(s)) => s.tokens,
            Some(Part::Array(b)) => b.tokens,
            _ => 0,
        };
        system.saturating_add(m.tokens)
    } else if let Some(n) = text_tokens_of(top.input_text) {
        n
    } else if let Some(n) = text_tokens_of(top.prompt) {
        n
    } else if let Some(Part::Array(t)) = &top.texts {
        t.tokens
    } else {
        (body_len as u64).div_ceil(4)
    };
    n.max(1)
}

/// Input tokens of a Converse body ([`tokens`](super::tokens) states the rule).
pub(crate) fn converse_tokens(top: &Top) -> u64 {
    let system = match &top.system {
        Some(Part::Array(b)) => b.tokens,
        _ => 0,
    };
    let messages = match &top.messages {
        Some(Part::Array(m)) => m.tokens,
        _ => 0,
    };
    let tools = top.tool_config.map_or(0, |(_, n)| n);
    system.saturating_add(messages).saturating_add(tools).max(1)
}

fn invalid(v: Violation) -> ApiError {
    ApiError::validation(v)
}

/// Validates a Converse request body (also the `converse` input of CountTokens) and counts its
/// input tokens.
fn converse_body(top: &Top) -> Result<u64, ApiError> {
    let list = match given(&top.messages) {
        None => {
            return Err(ApiError::validation(
                "1 validation error detected: Value null at 'messages' failed to satisfy \
                 constraint: Member must not be null",
            ));
        }
        Some(Part::Array(list)) => list,
        Some(_) => return Err(invalid(constraint("messages", "Member must be a list"))),
    };
    if list.len == 0 {
        return Err(ApiError::validation(
            "A conversation must start with a user message. Try again with a conversation that \
             starts with a user message.",
        ));
    }
    if let Some(v) = &list.violation {
        return Err(invalid(v.clone()));
    }
    match given(&top.system) {
        None => {}
        Some(Part::Array(blocks)) => {
            if let Some(v) = blocks.violation_at(Mode::Converse, "system") {
                return Err(invalid(v));
            }
        }
        Some(_) => return Err(invalid(constraint("system", "Member must be a list"))),
    }
    if let Some(c) = given(&top.inference_config)
        && c.kind() != Kind::Object
    {
        return Err(invalid(constraint(
            "inferenceConfig",
            "Member must be a structure",
        )));
    }
    if let Some((kind, _)) = top.tool_config
        && !matches!(kind, Kind::Null | Kind::Object)
    {
        return Err(invalid(constraint(
            "toolConfig",
            "Member must be a structure",
        )));
    }
    if let Some(Part::Object(c)) = &top.inference_config
        && let Some(s) = Scalar::given(c.max_tokens)
        && s.uint.is_none_or(|n| n < 1)
    {
        return Err(invalid(constraint(
            "inferenceConfig.maxTokens",
            "Member must have value greater than or equal to 1",
        )));
    }
    Ok(converse_tokens(top))
}

/// Validates a Converse / ConverseStream request.
pub(crate) fn converse(info: ModelInfo, body: &[u8]) -> Result<Parsed, ApiError> {
    let top = parse(
        body,
        TopReader {
            mode: Mode::Converse,
            allowed: None,
        },
    )?;
    let input = converse_body(&top)?;
    if info.family == ModelFamily::Embedding {
        return Err(ApiError::validation(
            "This action doesn't support the model that you provided. Try again with a supported \
             text or chat model.",
        ));
    }
    let requested = match &top.inference_config {
        Some(Part::Object(c)) => c.max_tokens.and_then(|s| s.uint),
        _ => None,
    };
    let max_output = match requested {
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
    let top = parse(
        body,
        TopReader {
            mode: Mode::Converse,
            allowed: None,
        },
    )?;
    let Some(input) = given(&top.input) else {
        return Err(ApiError::validation(
            "1 validation error detected: Value null at 'input' failed to satisfy constraint: \
             Member must not be null",
        ));
    };
    let input = match input {
        Part::Object(i) => Some(i),
        _ => None,
    };
    if let Some(converse) = input.and_then(|i| given(&i.converse)) {
        return match converse {
            Part::Object(body) => converse_body(body),
            _ => Err(invalid(constraint(
                "input.converse",
                "Member must be a structure",
            ))),
        };
    }
    if let Some(invoke) = input.and_then(|i| given(&i.invoke_model)) {
        let body = match invoke {
            Part::Object(i) => i.body.as_ref(),
            _ => None,
        };
        return match body {
            None => Err(invalid(constraint(
                "input.invokeModel.body",
                "Member must not be null",
            ))),
            Some(None) => Err(invalid(constraint(
                "input.invokeModel.body",
                "Member must be a base64 blob",
            ))),
            Some(Some(raw)) => {
                let reader = TopReader {
                    mode: invoke_mode(ModelFamily::Unknown),
                    allowed: None,
                };
                Ok(invoke_tokens(&parse(raw, reader)?, raw.len()))
            }
        };
    }
    Err(invalid(constraint(
        "input",
        "Member must have exactly one of: converse, invokeModel",
    )))
}

#[cfg(test)]
#[path = "validate_reference.rs"]
mod reference;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bedrock::models::default_model_info;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    /// JSON values built from the keys and values the validators look at.
    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            prop_oneof![
                Just(0i64),
                Just(1),
                Just(5),
                Just(-1),
                Just(64_001),
                Just(i64::MAX)
            ]
            .prop_map(Value::from),
            Just(json!(u64::MAX)),
            prop_oneof![Just(2.5f64), Just(10.0), Just(-0.5), Just(1e300)].prop_map(Value::from),
            prop_oneof![
                Just("user"),
                Just("assistant"),
                Just("hi"),
                Just("abcdé\"\\\n\u{1}x"),
                Just("aGVsbG8gd29ybGQ="),
                Just("!!"),
                Just("bedrock-2023-05-31"),
                Just(""),
            ]
            .prop_map(Value::from),
        ];
        let keys = prop_oneof![
            Just("messages"),
            Just("system"),
            Just("anthropic_version"),
            Just("max_tokens"),
            Just("max_tokens_to_sample"),
            Just("max_gen_len"),
            Just("maxTokens"),
            Just("dimensions"),
            Just("prompt"),
            Just("inputText"),
            Just("texts"),
            Just("inferenceConfig"),
            Just("textGenerationConfig"),
            Just("maxTokenCount"),
            Just("max_new_tokens"),
            Just("toolConfig"),
            Just("input"),
            Just("converse"),
            Just("invokeModel"),
            Just("body"),
            Just("role"),
            Just("content"),
            Just("text"),
            Just("toolResult"),
            Just("toolUse"),
            Just("image"),
            Just("document"),
            Just("source"),
            Just("bytes"),
            Just("stream"),
        ];
        leaf.prop_recursive(5, 64, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
                prop::collection::vec((keys.clone(), inner), 0..6).prop_map(|entries| {
                    Value::Object(
                        entries
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), v))
                            .collect(),
                    )
                }),
            ]
        })
    }

    /// A body that is an object of the top-level keys, with a valid-looking core so that the
    /// rules past the first check are reached too.
    fn body() -> impl Strategy<Value = Value> {
        (value(), prop::collection::vec((0usize..6, value()), 0..6)).prop_map(|(base, extra)| {
            let mut v = match base {
                Value::Object(m) => Value::Object(m),
                other => json!({ "messages": [{"role": "user", "content": other}] }),
            };
            let keys = [
                "anthropic_version",
                "max_tokens",
                "messages",
                "system",
                "inferenceConfig",
                "prompt",
            ];
            for (k, x) in extra {
                v[keys[k]] = x;
            }
            v
        })
    }

    fn same(
        new: Result<Parsed, ApiError>,
        old: Result<reference::Parsed, ApiError>,
    ) -> Result<(), String> {
        match (new, old) {
            (Ok(n), Ok(o)) => {
                let n = (n.input, n.max_output, format!("{:?}", n.shape));
                let o = (o.input, o.max_output, format!("{:?}", o.shape));
                if n == o {
                    Ok(())
                } else {
                    Err(format!("new {n:?}, old {o:?}"))
                }
            }
            (Err(n), Err(o))
                if (n.status, n.code, &n.message) == (o.status, o.code, &o.message) =>
            {
                Ok(())
            }
            (n, o) => Err(format!(
                "new {:?}, old {:?}",
                n.map(|p| p.input),
                o.map(|p| p.input)
            )),
        }
    }

    const MODELS: [&str; 8] = [
        "us.anthropic.claude-sonnet-4-20250514-v1:0",
        "amazon.titan-text-express-v1",
        "amazon.titan-embed-text-v2:0",
        "cohere.embed-v4:0",
        "us.amazon.nova-pro-v1:0",
        "meta.llama3-8b-instruct-v1:0",
        "mistral.mistral-large-2407-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/x",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The streaming reader answers every body exactly as the `Value`-tree validation did
        /// (the Claude Messages schema check, which is new, set aside).
        #[test]
        fn the_streaming_reader_answers_as_the_value_tree_did(v in body(), raw in value()) {
            for text in [v.to_string(), raw.to_string()] {
                let bytes = text.as_bytes();
                for model in MODELS {
                    let info = default_model_info(model);
                    same(invoke_with_schema(info, bytes, false), reference::invoke(info, bytes))
                        .map_err(|e| TestCaseError::fail(format!("invoke {model} {text}: {e}")))?;
                    same(converse(info, bytes), reference::converse(info, bytes))
                        .map_err(|e| TestCaseError::fail(format!("converse {model} {text}: {e}")))?;
                }
                let count = |r: Result<u64, ApiError>| r.map_err(|e| (e.status, e.code, e.message));
                prop_assert_eq!(count(count_tokens(bytes)), count(reference::count_tokens(bytes)), "{}", text);
                prop_assert_eq!(
                    crate::emulator::tokens::converse_input_tokens(&raw),
                    reference::converse_input_tokens(&raw)
                );
                prop_assert_eq!(
                    crate::emulator::tokens::invoke_input_tokens(&raw, 40),
                    reference::invoke_input_tokens(&raw, 40)
                );
            }
        }
    }

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
    fn extraneous_keys_are_refused_with_every_violation_listed() {
        let info = default_model_info(SONNET);
        let stream = json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10,
                            "messages": [{"role": "user", "content": "hi"}], "stream": true});
        assert_eq!(
            msg(invoke(info, stream.to_string().as_bytes()).unwrap_err()),
            "Malformed input request: #: extraneous key [stream] is not permitted, please \
             reformat your input and try again."
        );
        // A structural violation first, then every extraneous key in body order.
        let many = r#"{"anthropic_version": "bedrock-2023-05-31", "chat_id": 1,
                       "messages": [{"role": "user", "content": "hi"}], "stream": true}"#;
        assert_eq!(
            msg(invoke(info, many.as_bytes()).unwrap_err()),
            "Malformed input request: #: required key [max_tokens] not found#: extraneous key \
             [chat_id] is not permitted#: extraneous key [stream] is not permitted, please \
             reformat your input and try again."
        );
        // Every documented key is accepted.
        let full = json!({"anthropic_version": "bedrock-2023-05-31", "anthropic_beta": ["x"],
            "max_tokens": 10, "system": "s", "messages": [{"role": "user", "content": "hi"}],
            "temperature": 0.5, "top_p": 0.9, "top_k": 5, "stop_sequences": ["x"], "tools": [],
            "tool_choice": {"type": "auto"}, "thinking": {"type": "disabled"},
            "metadata": {"user_id": "u"}});
        assert!(invoke(info, full.to_string().as_bytes()).is_ok());
        // Not enforced: legacy text completions, and families whose schema is not enforced here.
        let text =
            json!({"prompt": "\n\nHuman: hi\n\nAssistant:", "max_tokens_to_sample": 5, "x": 1});
        assert!(invoke(info, text.to_string().as_bytes()).is_ok());
        let llama = default_model_info("meta.llama3-8b-instruct-v1:0");
        assert!(invoke(llama, br#"{"prompt": "hi", "stream": true}"#).is_ok());
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
