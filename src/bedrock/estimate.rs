//! How many tokens to reserve for a request before it is sent.

// Numbers here come from requests, responses and settings: no arithmetic may panic or wrap
// on them (issue 21). Each exception is an `#[allow]` that says why it cannot.
#![warn(clippy::arithmetic_side_effects)]

use std::fmt;
use std::num::NonZeroU32;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

mod json;

use super::key::Operation;
use super::models::{MaxTokenFields, ModelFamily, ModelInfo, max_output_from_fields};

/// The knobs of the input-token heuristic. See the [type docs](Self) for why each default.
///
/// # How many tokens to reserve for a request before it is sent
///
/// Bedrock reserves `input + max_tokens` when a request starts and throttles on that reservation,
/// so a client that wants to stay under the quota must reserve at least as much. The input side
/// cannot be known without the model's tokenizer, so it is estimated from the body with a
/// deliberately conservative heuristic; settlement later replaces the estimate with the exact
/// usage Bedrock reports, so over-estimating costs a little throughput for one call, while
/// under-estimating would let a burst overrun the quota.
///
/// # The heuristic (defaults, all configurable in [`Estimator`])
/// | what | tokens | why |
/// |---|---|---|
/// | each text string (messages, system, tool results, prompts, embeddings input) | `ceil(utf8_bytes / 3)` | tokenizers average ~4 bytes per token on English prose and ~3 on code; a CJK character is 3 UTF-8 bytes and rarely more than one token |
/// | each message | 8 | chat templates add role markers and separators (3–5 tokens on Claude and Llama) |
/// | each image | 1,600 | Claude resizes images to at most ~1.15 megapixels, ≈1,600 tokens (`w·h/750`) |
/// | documents and videos with inline bytes | `ceil(decoded_bytes / 3)` | bytes that the service extracts text from; base64 is never decoded, its length is converted |
/// | tool definitions (`toolConfig`, `tools`), tool calls (`toolUse`, `input`), JSON tool results, guard content, reasoning | `ceil(serialized_bytes / 3)` of the compact JSON | the model sees them serialized |
/// | a body this module cannot read (invalid JSON, wrong types, an unknown model family, none of the family's prompt fields: Claude `messages`, Nova `messages`, Titan `inputText`, Llama/Mistral `prompt`, embeddings `inputText`/`texts`) | at least `ceil(body_bytes / 3)` | every byte could be prompt |
/// | a body that is not in memory (a streaming SDK body) | 16,384 | nothing to read; see [`Estimator::with_unknown_body_tokens`] |
///
/// Text is counted per string, each rounded up, because a tokenizer never merges two strings.
/// The result is at least 1. With the defaults the estimate is never below the counting rule of
/// this crate's emulator (`ceil(chars/4)` per string, 3 per message, 1,000 per image,
/// `ceil(bytes/4)` per document, `ceil(body_bytes/4)` for bodies it cannot read): every term above
/// dominates its counterpart there, and duplicate JSON keys are counted every time they appear.
/// S3-referenced images count as images; S3-referenced documents and videos have no size in the
/// request and are not counted (settlement corrects it).
///
/// Converse bodies have one format for every model, so they are read whatever the family (an
/// unmapped ARN included); only the max output then depends on the model table.
///
/// Max output tokens come from the family's field (see [`ModelTable`](super::ModelTable)); when absent,
/// the model's maximum from the [`ModelTable`](super::models::ModelTable) is reserved, exactly as
/// Bedrock does; a field (or its `inferenceConfig` / `textGenerationConfig`) that appears twice
/// reserves at least the model's maximum, since the server may read an occurrence that leaves
/// it unset. Embeddings reserve no output (Cohere Embed v4's `max_tokens` truncates input),
/// CountTokens and requests without a model reserve nothing.
///
/// The body is parsed once, straight from the bytes, without building a `serde_json::Value`:
/// only the fields that matter are visited, strings are borrowed, everything else is skipped.
///
/// ```
/// use bedrock_throttle::bedrock::{Estimator, ModelTable, Operation};
///
/// let info = ModelTable::new().lookup("anthropic.claude-sonnet-4-20250514-v1:0");
/// let body = br#"{"messages":[{"role":"user","content":[{"text":"Hello, Claude!"}]}],
///                 "inferenceConfig":{"maxTokens":256}}"#;
/// let estimate = Estimator::default().estimate(Operation::Converse, info, Some(body));
/// assert_eq!(estimate.max_output_tokens, 256);
/// assert_eq!(estimate.input_tokens, 8 + 5); // one message + ceil(14 bytes / 3)
/// assert_eq!(estimate.total(), 269);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimator {
    bytes_per_token: NonZeroU32,
    per_message: u64,
    per_image: u64,
    unknown_body_tokens: u64,
}

impl Default for Estimator {
    fn default() -> Self {
        Self {
            bytes_per_token: NonZeroU32::new(3).expect("3 is not zero"),
            per_message: 8,
            per_image: 1_600,
            unknown_body_tokens: 16_384,
        }
    }
}

impl Estimator {
    /// The defaults: 3 bytes per token, 8 per message, 1,600 per image, 16,384 for a body that
    /// is not in memory.
    pub fn new() -> Self {
        Self::default()
    }

    /// UTF-8 bytes per token (default 3). Larger values reserve less; above 4 the estimate can
    /// fall below what Bedrock (and the emulator) count, and bursts get throttled.
    pub fn with_bytes_per_token(mut self, bytes: NonZeroU32) -> Self {
        self.bytes_per_token = bytes;
        self
    }

    /// Tokens added per chat message (default 8).
    pub fn with_per_message(mut self, tokens: u64) -> Self {
        self.per_message = tokens;
        self
    }

    /// Tokens per image (default 1,600).
    pub fn with_per_image(mut self, tokens: u64) -> Self {
        self.per_image = tokens;
        self
    }

    /// Input tokens assumed for a request whose body is not in memory (default 16,384). The SDK
    /// adapter reads bodies into memory first, so this only applies to bodies it could not read.
    pub fn with_unknown_body_tokens(mut self, tokens: u64) -> Self {
        self.unknown_body_tokens = tokens;
        self
    }

    /// UTF-8 bytes per token.
    pub fn bytes_per_token(&self) -> NonZeroU32 {
        self.bytes_per_token
    }

    /// Tokens per message.
    pub fn per_message(&self) -> u64 {
        self.per_message
    }

    /// Tokens per image.
    pub fn per_image(&self) -> u64 {
        self.per_image
    }

    /// Input tokens assumed for a body that is not in memory.
    pub fn unknown_body_tokens(&self) -> u64 {
        self.unknown_body_tokens
    }

    /// `ceil(bytes / bytes_per_token)`.
    pub fn tokens_for_bytes(&self, bytes: u64) -> u64 {
        bytes.div_ceil(u64::from(self.bytes_per_token.get()))
    }

    /// The reservation for one request of `operation` to a model described by `model`, whose
    /// body is `body` (`None` when it is not in memory). Never panics, whatever the bytes.
    pub fn estimate(
        &self,
        operation: Operation,
        model: ModelInfo,
        body: Option<&[u8]>,
    ) -> RequestEstimate {
        if !operation.uses_token_quota() {
            return RequestEstimate {
                operation,
                input_tokens: 0,
                max_output_tokens: 0,
                basis: EstimateBasis::NotCharged,
            };
        }
        let Some(body) = body else {
            return RequestEstimate {
                operation,
                input_tokens: self.unknown_body_tokens.max(1),
                max_output_tokens: model.max_output_tokens,
                basis: EstimateBasis::BodyNotInMemory,
            };
        };
        if operation.is_openai() {
            return super::openai::estimate(self, operation, model, body);
        }
        let whole_body = self.tokens_for_bytes(body.len() as u64);
        let Some(parsed) = parse_body(body, self) else {
            // Unreadable here, yet a more lenient reader (the server's) may still find image
            // blocks in it, each worth far more than its bytes: count every `"image"` key at
            // the per-image cost too (the fuzzer found a body the emulator read).
            let images = memchr::memmem::find_iter(body, b"\"image\"").count() as u64;
            let input = whole_body.saturating_add(images.saturating_mul(self.per_image));
            return RequestEstimate {
                operation,
                input_tokens: input.max(1),
                max_output_tokens: model.max_output_tokens,
                basis: EstimateBasis::Unreadable,
            };
        };
        let (expected, max_output) = if operation.is_converse() {
            (FOUND_MESSAGES, parsed.max.inference_max_tokens)
        } else {
            (
                expected_fields(model.family),
                max_output_from_fields(model.family, &parsed.max),
            )
        };
        let blocks_only = operation.is_converse() || model.family == ModelFamily::Nova;
        let wrong_shape = blocks_only && parsed.found & STRING_CONTENT != 0;
        let readable = !parsed.anomaly && !wrong_shape && parsed.found & expected != 0;
        let (input, basis) = if readable {
            (parsed.tokens, EstimateBasis::Parsed)
        } else {
            (parsed.tokens.max(whole_body), EstimateBasis::WholeBody)
        };
        let max_output = match max_output {
            // A duplicated field may be read as unset: the model's maximum at least.
            Some(n) if parsed.duplicate_max => n.max(model.max_output_tokens),
            Some(n) => n,
            // Unset: Bedrock reserves the model's maximum (the emulator does too). The table's
            // default max tokens is what an OpenAI-compatible route assumes (`openai.rs`).
            None => model.max_output_tokens,
        };
        RequestEstimate {
            operation,
            input_tokens: input.max(1),
            max_output_tokens: max_output,
            basis,
        }
    }
}

/// How an estimate was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EstimateBasis {
    /// The body was read field by field.
    Parsed,
    /// The body was valid JSON but not what the model family expects (wrong types, missing
    /// prompt fields, unknown family): at least `ceil(body_bytes / bytes_per_token)` input.
    WholeBody,
    /// The body was not valid JSON: `ceil(body_bytes / bytes_per_token)` input, the model's
    /// maximum output.
    Unreadable,
    /// The body was not in memory: the configured allowance plus the model's maximum output.
    BodyNotInMemory,
    /// The operation draws on no token quota (CountTokens, ApplyGuardrail, unknown paths).
    NotCharged,
}

/// The tokens to reserve for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestEstimate {
    /// The operation the estimate was made for.
    pub operation: Operation,
    /// The estimated input tokens (at least 1 for charged operations).
    pub input_tokens: u64,
    /// The max output tokens of the request (the model's maximum when the body does not say).
    pub max_output_tokens: u64,
    /// How the estimate was made.
    pub basis: EstimateBasis,
}

impl RequestEstimate {
    /// `input_tokens + max_output_tokens`: what Bedrock reserves, and what to reserve here.
    pub fn total(&self) -> u64 {
        self.input_tokens.saturating_add(self.max_output_tokens)
    }
}

const FOUND_MESSAGES: u8 = 1;
const FOUND_PROMPT: u8 = 2;
const FOUND_INPUT_TEXT: u8 = 4;
const FOUND_TEXTS: u8 = 16;
/// A `system`/`content` was a plain string: right for Anthropic and OpenAI shapes, a wrong type
/// for Converse and Nova.
const STRING_CONTENT: u8 = 32;

/// The prompt fields a native body of `family` must carry for the parse to be trusted. Bodies
/// without them (Claude legacy `prompt`, Jurassic, OpenAI-style `messages` on a `max_tokens`
/// family model, image-only embeddings ...) are valid, but counted at least as the whole body:
/// the emulator's rule does not read them either, and counts their whole body.
fn expected_fields(family: ModelFamily) -> u8 {
    match family {
        ModelFamily::AnthropicClaude | ModelFamily::Nova => FOUND_MESSAGES,
        ModelFamily::TitanText => FOUND_INPUT_TEXT,
        ModelFamily::Embedding => FOUND_INPUT_TEXT | FOUND_TEXTS,
        ModelFamily::Llama | ModelFamily::MaxTokens => FOUND_PROMPT,
        // An unknown family is never trusted: at least the whole body is reserved.
        _ => 0,
    }
}

/// What one pass over a body found.
#[derive(Debug)]
struct Parsed {
    tokens: u64,
    anomaly: bool,
    found: u8,
    max: MaxTokenFields,
    /// A max-tokens field, or an object holding one, appeared more than once.
    duplicate_max: bool,
}

/// Parses `body` once. `None` when it is not valid JSON (the same inputs `serde_json::Value`
/// rejects: syntax, invalid UTF-8, numbers out of range, nesting deeper than 128).
fn parse_body(body: &[u8], config: &Estimator) -> Option<Parsed> {
    let mut acc = Acc {
        bytes_per_token: u64::from(config.bytes_per_token.get()),
        per_message: config.per_message,
        per_image: config.per_image,
        tokens: 0,
        anomaly: false,
        found: 0,
        max: MaxTokenFields::default(),
        duplicate_max: false,
    };
    // Validating UTF-8 once up front lets the parser borrow strings without re-validating
    // each one; `Value` rejects the same bodies (invalid UTF-8 is either inside a string or a
    // syntax error). SIMD validation: `std`'s validator is fast on ASCII but crawls through
    // non-ASCII text, which made a 32 KB body of CJK or accented prose three times slower.
    let text = simdutf8::basic::from_utf8(body).ok()?;
    // A reader that accepts what `Value` accepts, with a faster string scan (see `json`).
    let mut de = json::Reader::new(text);
    Top(&mut acc).deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(Parsed {
        tokens: acc.tokens,
        anomaly: acc.anomaly,
        found: acc.found,
        max: acc.max,
        duplicate_max: acc.duplicate_max,
    })
}

/// The running count of one parse.
struct Acc {
    bytes_per_token: u64,
    per_message: u64,
    per_image: u64,
    tokens: u64,
    anomaly: bool,
    found: u8,
    max: MaxTokenFields,
    duplicate_max: bool,
}

impl Acc {
    fn bytes(&mut self, bytes: u64) {
        self.tokens = self
            .tokens
            .saturating_add(bytes.div_ceil(self.bytes_per_token));
    }
    fn text(&mut self, text: &str) {
        self.bytes(text.len() as u64);
    }
    fn image(&mut self) {
        self.tokens = self.tokens.saturating_add(self.per_image);
    }
    fn message(&mut self) {
        self.tokens = self.tokens.saturating_add(self.per_message);
    }
    /// A value of an unexpected type where a counted field was expected: count its serialized
    /// size and distrust the parse.
    fn odd(&mut self, serialized: u64) {
        self.anomaly = true;
        self.bytes(serialized);
    }
}

fn merge(slot: &mut Option<u64>, value: Option<u64>) {
    // Duplicate keys: keep the larger (serde_json's `Value` keeps the last one).
    *slot = (*slot).max(value);
}

/// Notes that the key numbered `bit` was seen, flagging a duplicate: the server may read a
/// later occurrence that leaves the field unset or null (the model's maximum), so keeping the
/// larger value seen is not enough.
fn seen_once(seen: &mut u8, bit: u8, acc: &mut Acc) {
    if *seen & (1 << bit) != 0 {
        acc.duplicate_max = true;
    }
    *seen |= 1 << bit;
}

/// The decoded length of a base64 string of `len` characters ending in `padding` `=`, rounded
/// up (whitespace, if any, only makes it larger).
fn base64_decoded_len(len: u64, padding: u64) -> u64 {
    (len.saturating_mul(3)).div_ceil(4).saturating_sub(padding)
}

// ---------------------------------------------------------------------------------------------
// Visitors. Every seed accepts any JSON value: a value of the wrong type is counted by its
// serialized size and flags the parse as an anomaly, so only JSON syntax errors fail a parse.

/// Implements `DeserializeSeed` by `deserialize_any` with the seed as its own visitor.
macro_rules! seed {
    ($name:ident, $value:ty, $expecting:literal) => {
        impl<'de> DeserializeSeed<'de> for $name<'_> {
            type Value = $value;
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<$value, D::Error> {
                d.deserialize_any(self)
            }
        }
        impl $name<'_> {
            const EXPECTING: &'static str = $expecting;
        }
    };
}

/// Visitor methods that treat scalars (null, booleans, numbers) as anomalies.
macro_rules! odd_scalars {
    () => {
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(self.odd(Size.visit_bool::<E>(v)?))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(self.odd(Size.visit_i64::<E>(v)?))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(self.odd(Size.visit_u64::<E>(v)?))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(self.odd(Size.visit_f64::<E>(v)?))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(self.odd(Size.visit_unit::<E>()?))
        }
    };
}

macro_rules! odd_str {
    () => {
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(self.odd(Size.visit_str::<E>(v)?))
        }
    };
}

macro_rules! odd_seq {
    () => {
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            Ok(self.odd(Size.visit_seq(seq)?))
        }
    };
}

macro_rules! odd_map {
    () => {
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            Ok(self.odd(Size.visit_map(map)?))
        }
    };
}

macro_rules! expecting {
    () => {
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(Self::EXPECTING)
        }
    };
}

/// Reads a map key and maps it to a small enum, without allocating.
struct KeyOf<K>(fn(&str) -> K);

impl<'de, K> DeserializeSeed<'de> for KeyOf<K> {
    type Value = K;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<K, D::Error> {
        d.deserialize_str(self)
    }
}

impl<K> Visitor<'_> for KeyOf<K> {
    type Value = K;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<K, E> {
        Ok((self.0)(v))
    }
}

/// Skips any value, validating it exactly as `serde_json::Value` would (numbers in range,
/// strings valid), so a body this module accepts is one `Value` accepts.
struct Skip;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Skip)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(Skip)?.is_some() {
            map.next_value_seed(Skip)?;
        }
        Ok(())
    }
}

/// The length of the compact JSON serialization of a value, an upper bound of what
/// `serde_json::to_string` gives for the same value (floats count 24, ryu's longest output).
struct Size;

impl<'de> DeserializeSeed<'de> for Size {
    type Value = u64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_any(self)
    }
}

fn digits(mut v: u64) -> u64 {
    let mut n: u64 = 1;
    while v >= 10 {
        v /= 10;
        n = n.saturating_add(1);
    }
    n
}

fn escaped_len(s: &str) -> u64 {
    if !json::needs_escape(s.as_bytes()) {
        return (s.len() as u64).saturating_add(2);
    }
    let mut n = 2u64; // the quotes
    for &b in s.as_bytes() {
        n = n.saturating_add(match b {
            b'"' | b'\\' | 0x08 | b'\t' | b'\n' | 0x0c | b'\r' => 2,
            0..=0x1f => 6,
            _ => 1,
        });
    }
    n
}

impl<'de> Visitor<'de> for Size {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<u64, E> {
        Ok(if v { 4 } else { 5 })
    }
    fn visit_i64<E>(self, v: i64) -> Result<u64, E> {
        Ok(digits(v.unsigned_abs()).saturating_add(u64::from(v < 0)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<u64, E> {
        Ok(digits(v))
    }
    fn visit_f64<E>(self, _: f64) -> Result<u64, E> {
        Ok(24)
    }
    fn visit_str<E>(self, v: &str) -> Result<u64, E> {
        Ok(escaped_len(v))
    }
    fn visit_unit<E>(self) -> Result<u64, E> {
        Ok(4)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        let mut n = 2u64;
        let mut count = 0u64;
        while let Some(item) = seq.next_element_seed(Size)? {
            n = n.saturating_add(item);
            count = count.saturating_add(1);
        }
        Ok(n.saturating_add(count.saturating_sub(1)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
        let mut n = 2u64;
        let mut count = 0u64;
        while let Some(key) = map.next_key_seed(Size)? {
            let value = map.next_value_seed(Size)?;
            n = n
                .saturating_add(key)
                .saturating_add(1)
                .saturating_add(value);
            count = count.saturating_add(1);
        }
        Ok(n.saturating_add(count.saturating_sub(1)))
    }
}

/// Counts any value by its serialized size (tool definitions, tool calls, JSON results).
struct Serialized<'a>(&'a mut Acc);

impl<'de> DeserializeSeed<'de> for Serialized<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let size = d.deserialize_any(Size)?;
        self.0.bytes(size);
        Ok(())
    }
}

// --- the top level ---------------------------------------------------------------------------

enum TopKey {
    Messages,
    System,
    Prompt,
    InputText,
    Message,
    Texts,
    Images,
    Serialized,
    InferenceConfig,
    TextGenerationConfig,
    MaxTokens,
    MaxTokensToSample,
    MaxGenLen,
    MaxTokensCamel,
    Other,
}

fn top_key(key: &str) -> TopKey {
    match key {
        "messages" => TopKey::Messages,
        "system" => TopKey::System,
        "prompt" => TopKey::Prompt,
        "inputText" => TopKey::InputText,
        "message" => TopKey::Message,
        "texts" => TopKey::Texts,
        "images" => TopKey::Images,
        "toolConfig" | "tools" | "inputs" | "chat_history" | "documents" | "promptVariables" => {
            TopKey::Serialized
        }
        "inferenceConfig" => TopKey::InferenceConfig,
        "textGenerationConfig" => TopKey::TextGenerationConfig,
        "max_tokens" => TopKey::MaxTokens,
        "max_tokens_to_sample" => TopKey::MaxTokensToSample,
        "max_gen_len" => TopKey::MaxGenLen,
        "maxTokens" => TopKey::MaxTokensCamel,
        _ => TopKey::Other,
    }
}

struct Top<'a>(&'a mut Acc);
seed!(Top, (), "a request body object");

impl Top<'_> {
    fn odd(self, size: u64) {
        self.0.odd(size)
    }
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = ();
    expecting!();
    odd_scalars!();
    odd_str!();
    odd_seq!();

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let acc = self.0;
        let mut seen = 0u8;
        while let Some(key) = map.next_key_seed(KeyOf(top_key))? {
            let bit = match key {
                TopKey::InferenceConfig => Some(0),
                TopKey::TextGenerationConfig => Some(1),
                TopKey::MaxTokens => Some(2),
                TopKey::MaxTokensToSample => Some(3),
                TopKey::MaxGenLen => Some(4),
                TopKey::MaxTokensCamel => Some(5),
                _ => None,
            };
            if let Some(bit) = bit {
                seen_once(&mut seen, bit, acc);
            }
            match key {
                TopKey::Messages => {
                    acc.found |= FOUND_MESSAGES;
                    map.next_value_seed(Messages(acc))?;
                }
                TopKey::System => map.next_value_seed(BlocksOrText(acc))?,
                TopKey::Prompt => {
                    acc.found |= FOUND_PROMPT;
                    map.next_value_seed(Text(acc))?;
                }
                TopKey::InputText => {
                    acc.found |= FOUND_INPUT_TEXT;
                    map.next_value_seed(Text(acc))?;
                }
                TopKey::Message => map.next_value_seed(Text(acc))?,
                TopKey::Texts => {
                    acc.found |= FOUND_TEXTS;
                    map.next_value_seed(Texts(acc))?;
                }
                TopKey::Images => map.next_value_seed(Images(acc))?,
                TopKey::Serialized => map.next_value_seed(Serialized(acc))?,
                TopKey::InferenceConfig => map.next_value_seed(InferenceConfig(acc))?,
                TopKey::TextGenerationConfig => map.next_value_seed(TextGenerationConfig(acc))?,
                TopKey::MaxTokens => {
                    let v = map.next_value_seed(U64(acc))?;
                    merge(&mut acc.max.max_tokens, v);
                }
                TopKey::MaxTokensToSample => {
                    let v = map.next_value_seed(U64(acc))?;
                    merge(&mut acc.max.max_tokens_to_sample, v);
                }
                TopKey::MaxGenLen => {
                    let v = map.next_value_seed(U64(acc))?;
                    merge(&mut acc.max.max_gen_len, v);
                }
                TopKey::MaxTokensCamel => {
                    let v = map.next_value_seed(U64(acc))?;
                    merge(&mut acc.max.max_tokens_camel, v);
                }
                TopKey::Other => map.next_value_seed(Skip)?,
            }
        }
        Ok(())
    }
}

// --- scalars -----------------------------------------------------------------------------------

/// A text string: counted by its UTF-8 length.
struct Text<'a>(&'a mut Acc);
seed!(Text, (), "a string");

impl Text<'_> {
    fn odd(self, size: u64) {
        self.0.odd(size)
    }
}

impl<'de> Visitor<'de> for Text<'_> {
    type Value = ();
    expecting!();
    odd_scalars!();
    odd_seq!();
    odd_map!();
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.0.text(v);
        Ok(())
    }
}

/// A max-tokens field: a non-negative integer, else absent (and an anomaly).
struct U64<'a>(&'a mut Acc);
seed!(U64, Option<u64>, "a non-negative integer");

impl U64<'_> {
    fn odd(self, size: u64) -> Option<u64> {
        self.0.odd(size);
        None
    }
}

impl<'de> Visitor<'de> for U64<'_> {
    type Value = Option<u64>;
    expecting!();
    odd_str!();
    odd_seq!();
    odd_map!();
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<u64>, E> {
        Ok(Some(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Option<u64>, E> {
        Ok(self.odd(Size.visit_bool::<E>(v)?))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<u64>, E> {
        Ok(self.odd(Size.visit_i64::<E>(v)?))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Option<u64>, E> {
        Ok(self.odd(Size.visit_f64::<E>(v)?))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<u64>, E> {
        Ok(self.odd(Size.visit_unit::<E>()?))
    }
}

/// A string whose length (and trailing `=` count, for base64) matters.
struct StrInfo<'a>(&'a mut Acc);
seed!(StrInfo, Option<(u64, u64)>, "a string");

impl StrInfo<'_> {
    fn odd(self, size: u64) -> Option<(u64, u64)> {
        self.0.odd(size);
        None
    }
}

impl<'de> Visitor<'de> for StrInfo<'_> {
    type Value = Option<(u64, u64)>;
    expecting!();
    odd_scalars!();
    odd_seq!();
    odd_map!();
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let padding = v.bytes().rev().take(2).filter(|&b| b == b'=').count() as u64;
        Ok(Some((v.len() as u64, padding)))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Image,
    Text,
    Other,
}

/// A block's or source's `type`.
struct TypeOf<'a>(&'a mut Acc);
seed!(TypeOf, Kind, "a type name");

impl TypeOf<'_> {
    fn odd(self, size: u64) -> Kind {
        self.0.odd(size);
        Kind::Other
    }
}

impl<'de> Visitor<'de> for TypeOf<'_> {
    type Value = Kind;
    expecting!();
    odd_scalars!();
    odd_seq!();
    odd_map!();
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Kind, E> {
        Ok(match v {
            "image" | "image_url" => Kind::Image,
            "text" => Kind::Text,
            _ => Kind::Other,
        })
    }
}

// --- arrays ------------------------------------------------------------------------------------

/// `messages`: each element costs `per_message` plus its content.
struct Messages<'a>(&'a mut Acc);
seed!(Messages, (), "an array of messages");

impl Messages<'_> {
    fn odd(self, size: u64) {
        self.0.odd(size)
    }
}

impl<'de> Visitor<'de> for Messages<'_> {
    type Value = ();
    expecting!();
    odd_scalars!();
    odd_str!();
    odd_map!();
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Message(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

/// `texts` (Cohere embeddings): an array of strings.
struct Texts<'a>(&'a mut Acc);
seed!(Texts, (), "an array of strings");

impl Texts<'_> {
    fn odd(self, size: u64) {
        self.0.odd(size)
    }
}

impl<'de> Visitor<'de> for Texts<'_> {
    type Value = ();
    expecting!();
    odd_scalars!();
    odd_str!();
    odd_map!();
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Text(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

/// `images` (Cohere embeddings): an array of images, `per_image` each.
struct Images<'a>(&'a mut Acc);
seed!(Images, (), "an array of images");

impl Images<'_> {
    fn odd(self, size: u64) {
        self.0.odd(size)
    }
}

impl<'de> Visitor<'de> for Images<'_> {
    type Value = ();
    expecting!();
    odd_scalars!();
    odd_str!();
    odd_map!();
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Skip)?.is_some() {
            self.0.image();
        }
        Ok(())
    }
}

// --- objects -----------------------------------------------------------------------------------

/// One chat message: `content` (a string or blocks), or Cohere's `message`.
struct Message<'a>(&'a mut Acc);

impl<'de> DeserializeSeed<'de> for Message<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.0.message();
        d.deserialize_any(self)
    }
}

impl Message<'_> {
    const EXPECTING: &'static str = "a message object";
    fn odd(self, size: u64) {
        self.0.odd(size)
    }
}

enum MessageKey {
    Content,
    Message,
    Serialized,
    Other,
}

fn message_key(key: &str) -> MessageKey {
    match key {
        "content" => MessageKey::Content,
        "message" => MessageKey::Message,
        "tool_calls" => MessageKey::Serialized,
        _ => MessageKey::Other,
    }
}

impl<'de> Visitor<'de> for Message<'_> {
    type Value = ();
    expecting!();
    odd_scalars!();
    odd_str!();
    odd_seq!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let acc = self.0;
        while let Some(key) = map.next_key_seed(KeyOf(message_key))? {
            match key {
                MessageKey::Content => map.next_value_seed(BlocksOrText(acc))?,
                MessageKey::Message => map.next_value_seed(Text(acc))?,
                MessageKey::Serialized => map.next_value_seed(Serialized(acc))?,
                MessageKey::Other => map.next_value_seed(Skip)?,
            }
        }
        Ok(())
    }
}

/// A `content`/`system` value: a string, or an array of content blocks.
struct BlocksOrText<'a>(&'a mut Acc);
seed!(BlocksOrText, (), "a string or an array of content blocks");

impl BlocksOrText<'_> {
    fn odd(self, size: u64) {
        self.0.odd(size)
    }
}

impl<'de> Visitor<'de> for BlocksOrText<'_> {
    type Value = ();
    expecting!();
    odd_scalars!();
    odd_map!();
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.0.found |= STRING_CONTENT;
        self.0.text(v);
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Block(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

enum BlockKey {
    Text,
    Type,
    Source,
    Image,
    Document,
    ToolResult,
    ToolUse,
    Content,
    Serialized,
    Other,
}

fn block_key(key: &str) -> BlockKey {
    match key {
        "text" | "thinking" => BlockKey::Text,
        "type" => BlockKey::Type,
        "source" => BlockKey::Source,
        "image" => BlockKey::Image,
        "document" | "video" => BlockKey::Document,
        "toolResult" => BlockKey::ToolResult,
        "toolUse" => BlockKey::ToolUse,
        "content" => BlockKey::Content,
        "input" | "json" | "guardContent" | "reasoningContent" => BlockKey::Serialized,
        _ => BlockKey::Other,
    }
}

/// One content block, in the Converse/Nova shape (`{"text": ..}`, `{"image": ..}`,
/// `{"toolUse": ..}` ...) or the Anthropic/OpenAI shape (`{"type": "text", "text": ..}`,
/// `{"type": "image", "source": ..}`, `{"type": "tool_result", "content": ..}` ...).
struct Block<'a>(&'a mut Acc);
seed!(Block, (), "a content block object");

impl Block<'_> {
    fn odd(self, size: u64) {
        self.0.odd(size)
    }
}

impl<'de> Visitor<'de> for Block<'_> {
    type Value = ();
    expecting!();
    odd_scalars!();
    odd_seq!();
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        // A bare string inside a block array fits no Bedrock schema.
        self.0.anomaly = true;
        self.0.text(v);
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let acc = self.0;
        let mut kind = Kind::Other;
        let mut source_bytes: Option<u64> = None;
        let mut counted_image = false;
        while let Some(key) = map.next_key_seed(KeyOf(block_key))? {
            match key {
                BlockKey::Text => map.next_value_seed(Text(acc))?,
                BlockKey::Type => kind = map.next_value_seed(TypeOf(acc))?,
                BlockKey::Source => {
                    let bytes = map.next_value_seed(Source(acc))?;
                    source_bytes = Some(source_bytes.unwrap_or(0).saturating_add(bytes));
                }
                BlockKey::Image => {
                    map.next_value_seed(Object(acc))?;
                    acc.image();
                    counted_image = true;
                }
                BlockKey::Document => map.next_value_seed(Document(acc))?,
                BlockKey::ToolResult => map.next_value_seed(ToolResult(acc))?,
                BlockKey::ToolUse => map.next_value_seed(SerializedObject(acc))?,
                BlockKey::Content => map.next_value_seed(BlocksOrText(acc))?,
                BlockKey::Serialized => map.next_value_seed(Serialized(acc))?,
                BlockKey::Other => map.next_value_seed(Skip)?,
            }
        }
        if kind == Kind::Image {
            if !counted_image {
                acc.image();
            }
        } else if let Some(bytes) = source_bytes {
            acc.bytes(bytes);
        }
        Ok(())
    }
}

/// A Converse `toolUse`: counted by its serialized size; must be an object.
struct SerializedObject<'a>(&'a mut Acc);
seed!(SerializedObject, (), "an object");

impl SerializedObject<'_> {
    fn odd(self, size: u64) {
        self.0.odd(size)
    }
}

impl<'de> Visitor<'de> for SerializedObject<'_> {
    type Value = ();
    expecting!();
    odd_scalars!();
    odd_str!();
    odd_seq!();
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let size = Size.visit_map(map)?;
        self.0.bytes(size);
        Ok(())
    }
}

/// Any object whose content does not matter (a Converse image: it costs `per_image`).
struct Object<'a>(&'a mut Acc);
seed!(Object, (), "an object");

impl Object<'_> {
    fn odd(self, size: u64) {
        self.0.odd(size)
    }
}

impl<'de> Visitor<'de> for Object<'_> {
    type Value = ();
    expecting!();
    odd_scalars!();
    odd_str!();
    odd_seq!();
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        Skip.visit_map(map)
    }
}

/// A Converse document or video: `{"format": .., "name": .., "source": {..}}`.
struct Document<'a>(&'a mut Acc);
seed!(Document, (), "a document object");

impl Document<'_> {
    fn odd(self, size: u64) {
        self.0.odd(size)
    }
}

impl<'de> Visitor<'de> for Document<'_> {
    type Value = ();
    expecting!();
    odd_scalars!();
    odd_str!();
    odd_seq!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let acc = self.0;
        while let Some(is_source) = map.next_key_seed(KeyOf(|k| k == "source"))? {
            if is_source {
                let bytes = map.next_value_seed(Source(acc))?;
                acc.bytes(bytes);
            } else {
                map.next_value_seed(Skip)?;
            }
        }
        Ok(())
    }
}

enum SourceKey {
    Data,
    Text,
    Content,
    Type,
    Other,
}

fn source_key(key: &str) -> SourceKey {
    match key {
        "bytes" | "data" => SourceKey::Data,
        "text" => SourceKey::Text,
        "content" => SourceKey::Content,
        "type" => SourceKey::Type,
        _ => SourceKey::Other,
    }
}

/// A media source: base64 `bytes` (Converse) or `data` (Anthropic; plain text when the source
/// `type` is `text`), inline `text`, or `content` blocks. Returns the bytes to count; content
/// blocks are counted directly.
struct Source<'a>(&'a mut Acc);
seed!(Source, u64, "a source object");

impl Source<'_> {
    fn odd(self, size: u64) -> u64 {
        self.0.odd(size);
        0
    }
}

impl<'de> Visitor<'de> for Source<'_> {
    type Value = u64;
    expecting!();
    odd_scalars!();
    odd_str!();
    odd_seq!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
        let acc = self.0;
        let mut kind = Kind::Other;
        // Data as plain text and as base64, until `type` (which may come last) decides.
        let (mut data_plain, mut data_base64) = (0u64, 0u64);
        let mut text = 0u64;
        while let Some(key) = map.next_key_seed(KeyOf(source_key))? {
            match key {
                SourceKey::Data => {
                    if let Some((len, padding)) = map.next_value_seed(StrInfo(acc))? {
                        data_plain = data_plain.saturating_add(len);
                        data_base64 = data_base64.saturating_add(base64_decoded_len(len, padding));
                    }
                }
                SourceKey::Text => {
                    if let Some((len, _)) = map.next_value_seed(StrInfo(acc))? {
                        text = text.saturating_add(len);
                    }
                }
                SourceKey::Content => map.next_value_seed(BlocksOrText(acc))?,
                SourceKey::Type => kind = map.next_value_seed(TypeOf(acc))?,
                SourceKey::Other => map.next_value_seed(Skip)?,
            }
        }
        let data = if kind == Kind::Text {
            data_plain
        } else {
            data_base64
        };
        Ok(data.saturating_add(text))
    }
}

/// A Converse `toolResult`: its `content` blocks count; ids and status do not.
struct ToolResult<'a>(&'a mut Acc);
seed!(ToolResult, (), "a tool result object");

impl ToolResult<'_> {
    fn odd(self, size: u64) {
        self.0.odd(size)
    }
}

impl<'de> Visitor<'de> for ToolResult<'_> {
    type Value = ();
    expecting!();
    odd_scalars!();
    odd_str!();
    odd_seq!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let acc = self.0;
        while let Some(is_content) = map.next_key_seed(KeyOf(|k| k == "content"))? {
            if is_content {
                map.next_value_seed(BlocksOrText(acc))?;
            } else {
                map.next_value_seed(Skip)?;
            }
        }
        Ok(())
    }
}

/// `inferenceConfig`: `maxTokens` (Converse, Nova) and `max_new_tokens` (legacy Nova).
struct InferenceConfig<'a>(&'a mut Acc);
seed!(InferenceConfig, (), "an inference configuration object");

impl InferenceConfig<'_> {
    fn odd(self, size: u64) {
        self.0.odd(size)
    }
}

impl<'de> Visitor<'de> for InferenceConfig<'_> {
    type Value = ();
    expecting!();
    odd_scalars!();
    odd_str!();
    odd_seq!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let acc = self.0;
        let mut seen = 0u8;
        while let Some(key) = map.next_key_seed(KeyOf(|k| match k {
            "maxTokens" => 1u8,
            "max_new_tokens" => 2,
            _ => 0,
        }))? {
            if key != 0 {
                seen_once(&mut seen, key, acc);
            }
            match key {
                1 => {
                    let v = map.next_value_seed(U64(acc))?;
                    merge(&mut acc.max.inference_max_tokens, v);
                }
                2 => {
                    let v = map.next_value_seed(U64(acc))?;
                    merge(&mut acc.max.inference_max_new_tokens, v);
                }
                _ => map.next_value_seed(Skip)?,
            }
        }
        Ok(())
    }
}

/// `textGenerationConfig` (Titan text): `maxTokenCount`.
struct TextGenerationConfig<'a>(&'a mut Acc);
seed!(
    TextGenerationConfig,
    (),
    "a text generation configuration object"
);

impl TextGenerationConfig<'_> {
    fn odd(self, size: u64) {
        self.0.odd(size)
    }
}

impl<'de> Visitor<'de> for TextGenerationConfig<'_> {
    type Value = ();
    expecting!();
    odd_scalars!();
    odd_str!();
    odd_seq!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let acc = self.0;
        let mut seen = 0u8;
        while let Some(is_max) = map.next_key_seed(KeyOf(|k| k == "maxTokenCount"))? {
            if is_max {
                seen_once(&mut seen, 0, acc);
                let v = map.next_value_seed(U64(acc))?;
                merge(&mut acc.max.titan_max_token_count, v);
            } else {
                map.next_value_seed(Skip)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bedrock::models::ModelTable;

    fn parse(body: &str) -> Parsed {
        parse_body(body.as_bytes(), &Estimator::default()).expect("valid JSON")
    }

    /// Found by the `estimate_vs_emulator` fuzz target: a later duplicate that leaves the max
    /// tokens unset (or null) is read by the server as the model's maximum.
    #[test]
    fn duplicated_max_fields_reserve_the_model_maximum() {
        let config = Estimator::default();
        let nova = crate::bedrock::models::default_model_info("amazon.nova-lite-v1:0");
        let mistral = crate::bedrock::models::default_model_info("mistral.mistral-large-2407-v1:0");
        let cases = [
            (
                nova,
                Operation::InvokeModel,
                r#"{"messages":[{"role":"user","content":[{"text":"Hi"}]}],"inferenceConfig":{"maxTokens":300},"inferenceConfig":{}}"#,
            ),
            (
                nova,
                Operation::Converse,
                r#"{"messages":[{"role":"user","content":[{"text":"Hi"}]}],"inferenceConfig":{"maxTokens":300,"maxTokens":null}}"#,
            ),
            (
                mistral,
                Operation::InvokeModel,
                r#"{"prompt":"Hi","max_tokens":10,"max_tokens":null}"#,
            ),
        ];
        for (model, operation, body) in cases {
            let e = config.estimate(operation, model, Some(body.as_bytes()));
            assert_eq!(e.max_output_tokens, model.max_output_tokens, "{body}");
        }
        // Without duplicates the body's value stands.
        let body = br#"{"messages":[{"role":"user","content":[{"text":"Hi"}]}],"inferenceConfig":{"maxTokens":300}}"#;
        assert_eq!(
            config
                .estimate(Operation::Converse, nova, Some(body))
                .max_output_tokens,
            300
        );
    }

    #[test]
    fn size_matches_serde_json_for_integers_strings_and_nesting() {
        let cases = [
            r#"{"a":[1,-20,"x\"y\\z\n\u0001é"],"b":{"c":null,"d":true,"e":false},"f":[]}"#,
            r#"[]"#,
            r#"{}"#,
            r#"  [ 18446744073709551615 , -9223372036854775808 ]"#,
        ];
        for case in cases {
            let value: serde_json::Value = serde_json::from_str(case).unwrap();
            let exact = serde_json::to_string(&value).unwrap().len() as u64;
            let mut de = serde_json::Deserializer::from_str(case);
            let size = Size.deserialize(&mut de).unwrap();
            assert_eq!(size, exact, "{case}");
        }
        // Floats are bounded, whatever their raw spelling.
        for case in ["1e15", "0.1", "-1.7976931348623157e308", "1E-7"] {
            let value: serde_json::Value = serde_json::from_str(case).unwrap();
            let exact = serde_json::to_string(&value).unwrap().len() as u64;
            let mut de = serde_json::Deserializer::from_str(case);
            assert!(Size.deserialize(&mut de).unwrap() >= exact, "{case}");
        }
    }

    #[test]
    fn base64_length_rule() {
        for n in 0..64usize {
            let raw = vec![7u8; n];
            use base64::Engine;
            let padded = base64::engine::general_purpose::STANDARD.encode(&raw);
            let pad = padded.bytes().rev().take(2).filter(|&b| b == b'=').count() as u64;
            assert!(base64_decoded_len(padded.len() as u64, pad) >= n as u64);
            let unpadded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&raw);
            assert!(base64_decoded_len(unpadded.len() as u64, 0) >= n as u64);
            // ceil(decoded/3) never below ceil(base64_len/4).
            let est = base64_decoded_len(padded.len() as u64, pad).div_ceil(3);
            assert!(est >= (padded.len() as u64).div_ceil(4));
        }
    }

    #[test]
    fn converse_blocks_are_counted() {
        let p = parse(
            r#"{"system":[{"text":"abc"},{"cachePoint":{"type":"default"}}],
                "messages":[{"role":"user","content":[
                    {"text":"abcdef"},
                    {"image":{"format":"png","source":{"bytes":"AAAA"}}},
                    {"document":{"format":"txt","name":"d","source":{"bytes":"AAAAAAAA"}}},
                    {"toolResult":{"toolUseId":"t","content":[{"text":"abcd"},{"json":{"k":1}}]}}
                ]}],
                "inferenceConfig":{"maxTokens":100,"temperature":0.5}}"#,
        );
        // system 1 + message 8 + text 2 + image 1600 + document ceil(6/3)=2 + result text 2
        // + json {"k":1} = 7 bytes -> 3.
        assert_eq!(p.tokens, 1 + 8 + 2 + 1600 + 2 + 2 + 3);
        assert!(!p.anomaly);
        assert_eq!(p.max.inference_max_tokens, Some(100));
    }

    #[test]
    fn anthropic_blocks_are_counted() {
        let p = parse(
            r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":50,"system":"abc",
                "messages":[{"role":"user","content":"abcdef"},
                            {"role":"user","content":[
                                {"source":{"media_type":"image/png","data":"AAAA","type":"base64"},"type":"image"},
                                {"type":"document","source":{"type":"text","media_type":"text/plain","data":"abcdef"}},
                                {"type":"tool_result","tool_use_id":"x","content":[{"type":"text","text":"abc"}]},
                                {"type":"tool_use","id":"y","name":"n","input":{}}
                            ]}]}"#,
        );
        // system 1; msg 8 + 2; msg 8 + image 1600 + text doc 2 + result text 1 + input "{}" 1.
        assert_eq!(p.tokens, 1 + 8 + 2 + 8 + 1600 + 2 + 1 + 1);
        assert_eq!(p.max.max_tokens, Some(50));
        assert!(!p.anomaly);
    }

    #[test]
    fn wrong_types_are_anomalies_not_errors() {
        for body in [
            r#"{"messages":"hello"}"#,
            r#"{"messages":[1,2]}"#,
            r#"{"messages":[{"content":[{"text":5}]}]}"#,
            r#"{"max_tokens":"many"}"#,
            r#"{"max_tokens":-1}"#,
            r#"{"max_tokens":1.5}"#,
            r#"{"inferenceConfig":[]}"#,
            r#"[1,2,3]"#,
            r#""just a string""#,
            r#"null"#,
        ] {
            assert!(parse(body).anomaly, "{body}");
        }
    }

    #[test]
    fn invalid_json_is_rejected_like_value() {
        for body in [
            &b"{"[..],
            b"{\"a\":1e400}",
            b"{\"a\":\"\\ud800\"}",
            b"{\"a\":\"\xff\"}",
            b"{} trailing",
            b"",
        ] {
            assert!(serde_json::from_slice::<serde_json::Value>(body).is_err());
            assert!(parse_body(body, &Estimator::default()).is_none());
        }
    }

    #[test]
    fn estimate_rules() {
        let cfg = Estimator::default();
        let table = ModelTable::new();
        let claude = table.lookup("anthropic.claude-3-haiku-20240307-v1:0");
        // Unknown family: at least the whole body.
        let unknown = table.lookup("arn:aws:bedrock:us-east-1:1:provisioned-model/x");
        let body =
            br#"{"prompt":"hi","max_tokens":10,"padding":"0123456789012345678901234567890"}"#;
        let e = cfg.estimate(Operation::InvokeModel, unknown, Some(body));
        assert_eq!(e.input_tokens, (body.len() as u64).div_ceil(3));
        assert_eq!(e.max_output_tokens, 10);
        assert_eq!(e.basis, EstimateBasis::WholeBody);
        // Invalid JSON: whole body + model maximum.
        let e = cfg.estimate(Operation::InvokeModel, claude, Some(b"{not json"));
        assert_eq!((e.input_tokens, e.max_output_tokens), (3, 4_096));
        assert_eq!(e.basis, EstimateBasis::Unreadable);
        // Not in memory.
        let e = cfg.estimate(Operation::Converse, claude, None);
        assert_eq!((e.input_tokens, e.max_output_tokens), (16_384, 4_096));
        // Not charged.
        let e = cfg.estimate(Operation::CountTokens, claude, Some(b"{}"));
        assert_eq!(e.total(), 0);
        // Empty body: at least one token.
        let e = cfg.estimate(Operation::Converse, claude, Some(b""));
        assert_eq!(e.input_tokens, 1);
    }
}
