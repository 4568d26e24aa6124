//! One streaming pass over a request body that keeps only what validation and token counting
//! need: no JSON tree is built.
//!
//! A `serde_json::Value` costs tens of bytes per node on top of the text, dozens of times the
//! size of a body of small messages, so a few large requests at once could exhaust a machine. Here
//! every array is read element by element and each element is folded into a small summary
//! (counts, token sums, the first violation) before the next is read; keys are borrowed from
//! the body; strings are only held while their element is read. Extra memory is bounded by
//! the largest single string plus a little per nesting level, whatever the body's size.
//!
//! The readers are generic over what they do with objects and arrays ([`ObjectReader`],
//! [`ArrayReader`]); [`Any`] reads one value of any type and returns what it [`Seen`].

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use base64::Engine as _;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::tokens::{IMAGE_TOKENS, MESSAGE_OVERHEAD_TOKENS, text_tokens};

/// A JSON type, named as Bedrock's schema validator names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Null,
    Boolean,
    Integer,
    Number,
    String,
    Array,
    Object,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Null => "Null",
            Self::Boolean => "Boolean",
            Self::Integer => "Integer",
            Self::Number => "Number",
            Self::String => "String",
            Self::Array => "JSONArray",
            Self::Object => "JSONObject",
        }
    }
}

/// What one value was.
#[derive(Debug)]
pub(crate) enum Seen<'de, O, A> {
    Null,
    Bool,
    /// A non-negative integer that fits a u64.
    UInt(u64),
    /// A negative integer.
    Int,
    Float,
    Str(Cow<'de, str>),
    Array(A),
    Object(O),
}

impl<O, A> Seen<'_, O, A> {
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Self::Null => Kind::Null,
            Self::Bool => Kind::Boolean,
            Self::UInt(_) | Self::Int => Kind::Integer,
            Self::Float => Kind::Number,
            Self::Str(_) => Kind::String,
            Self::Array(_) => Kind::Array,
            Self::Object(_) => Kind::Object,
        }
    }
}

/// A scalar reduced to what validation needs: its type, its value when it is a `u64`, and its
/// tokens when it is a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scalar {
    pub(crate) kind: Kind,
    pub(crate) uint: Option<u64>,
    pub(crate) tokens: u64,
}

impl Scalar {
    fn of<O, A>(seen: &Seen<'_, O, A>) -> Self {
        Self {
            kind: seen.kind(),
            uint: match seen {
                Seen::UInt(n) => Some(*n),
                _ => None,
            },
            tokens: match seen {
                Seen::Str(s) => text_tokens(s),
                _ => 0,
            },
        }
    }

    /// Present and not null.
    pub(crate) fn given(this: Option<Self>) -> Option<Self> {
        this.filter(|s| s.kind != Kind::Null)
    }
}

/// Reads the entries of an object.
pub(crate) trait ObjectReader<'de>: Sized {
    type Out;
    fn read<M: MapAccess<'de>>(self, map: M) -> Result<Self::Out, M::Error>;
}

/// Reads the elements of an array.
pub(crate) trait ArrayReader<'de>: Sized {
    type Out;
    fn read<S: SeqAccess<'de>>(self, seq: S) -> Result<Self::Out, S::Error>;
}

/// Skips an object or an array.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Skip;

impl<'de> ObjectReader<'de> for Skip {
    type Out = ();
    fn read<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

impl<'de> ArrayReader<'de> for Skip {
    type Out = ();
    fn read<S: SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

/// Reads one value of any type, handing objects to `O` and arrays to `A`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Any<O, A>(pub(crate) O, pub(crate) A);

type SeenOf<'de, O, A> = Seen<'de, <O as ObjectReader<'de>>::Out, <A as ArrayReader<'de>>::Out>;

impl<'de, O: ObjectReader<'de>, A: ArrayReader<'de>> DeserializeSeed<'de> for Any<O, A> {
    type Value = SeenOf<'de, O, A>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, O: ObjectReader<'de>, A: ArrayReader<'de>> Visitor<'de> for Any<O, A> {
    type Value = SeenOf<'de, O, A>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Seen::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Seen::Null)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Seen::Bool)
    }
    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        Ok(Seen::UInt(n))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
        Ok(u64::try_from(n).map_or(Seen::Int, Seen::UInt))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Seen::Float)
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Seen::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Seen::Str(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(Seen::Str(Cow::Owned(s)))
    }
    fn visit_seq<S: SeqAccess<'de>>(self, seq: S) -> Result<Self::Value, S::Error> {
        self.1.read(seq).map(Seen::Array)
    }
    fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Self::Value, M::Error> {
        self.0.read(map).map(Seen::Object)
    }
}

/// Any scalar, any object or array skipped.
pub(crate) fn scalar() -> Any<Skip, Skip> {
    Any(Skip, Skip)
}

/// An object key, borrowed from the body when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'de>(PhantomData<&'de ()>);
        impl<'de> Visitor<'de> for V<'de> {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V(PhantomData))
    }
}

fn next_key<'de, M: MapAccess<'de>>(map: &mut M) -> Result<Option<Cow<'de, str>>, M::Error> {
    Ok(map.next_key::<Key<'de>>()?.map(|k| k.0))
}

/// A value of the body, reduced: a scalar, or the summary of an object (`O`) or array (`A`).
#[derive(Debug)]
pub(crate) enum Part<O, A> {
    Scalar(Scalar),
    Array(A),
    Object(O),
}

impl<O, A> Part<O, A> {
    fn of(seen: Seen<'_, O, A>) -> Self {
        match seen {
            Seen::Array(a) => Self::Array(a),
            Seen::Object(o) => Self::Object(o),
            other => Self::Scalar(Scalar::of(&other)),
        }
    }

    pub(crate) fn kind(&self) -> Kind {
        match self {
            Self::Scalar(s) => s.kind,
            Self::Array(_) => Kind::Array,
            Self::Object(_) => Kind::Object,
        }
    }

    pub(crate) fn is_null(&self) -> bool {
        self.kind() == Kind::Null
    }
}

/// Which rules an array of messages or blocks is read with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A model-native (InvokeModel) body; `content` may be a string unless `false`.
    Invoke { content_may_be_string: bool },
    /// A Converse body.
    Converse,
}

/// What a validator reports: a JSON-pointer detail in Bedrock's "Malformed input request"
/// wording (`#/messages/0/role: expected type: String, found: Integer`) for model-native
/// bodies, or the constraint message of the Converse API.
pub(crate) type Violation = String;

/// The top-level keys of a body, each reduced to what some family's rules read.
#[derive(Debug, Default)]
pub(crate) struct Top {
    pub(crate) messages: Option<Part<(), Messages>>,
    pub(crate) system: Option<Part<(), Blocks>>,
    pub(crate) anthropic_version: Option<Scalar>,
    pub(crate) max_tokens: Option<Scalar>,
    pub(crate) max_tokens_to_sample: Option<Scalar>,
    pub(crate) max_gen_len: Option<Scalar>,
    pub(crate) max_tokens_camel: Option<Scalar>,
    pub(crate) dimensions: Option<Scalar>,
    pub(crate) prompt: Option<Scalar>,
    pub(crate) input_text: Option<Scalar>,
    pub(crate) texts: Option<Part<(), Texts>>,
    pub(crate) inference_config: Option<Part<InferenceConfig, ()>>,
    pub(crate) text_generation_config: Option<Part<TextGenerationConfig, ()>>,
    /// `(kind, tokens of its compact JSON)`.
    pub(crate) tool_config: Option<(Kind, u64)>,
    /// The CountTokens `input`.
    pub(crate) input: Option<Part<CountInput, ()>>,
    /// Keys outside `allowed` (when the reader was given a schema), in body order.
    pub(crate) extraneous: Vec<String>,
    /// Whether the reader was given a schema (then content-block keys are checked too).
    pub(crate) schema: bool,
}

/// The most extraneous keys listed in one error; the rest are not named.
pub(crate) const MAX_LISTED_KEYS: usize = 100;

/// Reads a body's top-level object.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TopReader {
    pub(crate) mode: Mode,
    /// The keys the family's schema permits, if Bedrock enforces one for it.
    pub(crate) allowed: Option<&'static [&'static str]>,
}

impl<'de> ObjectReader<'de> for TopReader {
    type Out = Top;
    fn read<M: MapAccess<'de>>(self, mut map: M) -> Result<Top, M::Error> {
        let mut top = Top::default();
        let mode = self.mode;
        while let Some(key) = next_key(&mut map)? {
            let scalar_value = |map: &mut M| -> Result<Option<Scalar>, M::Error> {
                map.next_value_seed(scalar()).map(|s| Some(Scalar::of(&s)))
            };
            match &*key {
                "messages" => {
                    top.messages = Some(Part::of(
                        map.next_value_seed(Any(Skip, MessagesReader(mode)))?,
                    ));
                }
                "system" => {
                    top.system = Some(Part::of(
                        map.next_value_seed(Any(Skip, BlocksReader(mode, false)))?,
                    ));
                }
                "anthropic_version" => top.anthropic_version = scalar_value(&mut map)?,
                "max_tokens" => top.max_tokens = scalar_value(&mut map)?,
                "max_tokens_to_sample" => top.max_tokens_to_sample = scalar_value(&mut map)?,
                "max_gen_len" => top.max_gen_len = scalar_value(&mut map)?,
                "maxTokens" => top.max_tokens_camel = scalar_value(&mut map)?,
                "dimensions" => top.dimensions = scalar_value(&mut map)?,
                "prompt" => top.prompt = scalar_value(&mut map)?,
                "inputText" => top.input_text = scalar_value(&mut map)?,
                "texts" => {
                    top.texts = Some(Part::of(map.next_value_seed(Any(Skip, TextsReader))?));
                }
                "inferenceConfig" => {
                    top.inference_config = Some(Part::of(
                        map.next_value_seed(Any(InferenceConfigReader, Skip))?,
                    ));
                }
                "textGenerationConfig" => {
                    top.text_generation_config = Some(Part::of(
                        map.next_value_seed(Any(TextGenerationConfigReader, Skip))?,
                    ));
                }
                "toolConfig" => top.tool_config = Some(map.next_value_seed(CompactTokens)?),
                "input" => {
                    top.input = Some(Part::of(map.next_value_seed(Any(CountInputReader, Skip))?));
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            if let Some(allowed) = self.allowed {
                top.schema = true;
                if !allowed.contains(&&*key) && top.extraneous.len() < MAX_LISTED_KEYS {
                    top.extraneous.push(key.into_owned());
                }
            }
        }
        Ok(top)
    }
}

/// A summary of a `messages` array.
#[derive(Debug, Default)]
pub(crate) struct Messages {
    pub(crate) len: usize,
    /// Input tokens by the rule of [`Mode`] (for Converse, only meaningful without violation).
    pub(crate) tokens: u64,
    /// The first violation in array order.
    pub(crate) violation: Option<Violation>,
    /// The first content-block key outside [`CLAUDE_BLOCK_KEYS`] (model-native bodies only):
    /// `(message, block, key)`. Only the Claude validator refuses it.
    pub(crate) extraneous: Option<(usize, usize, String)>,
}

/// The keys an Anthropic Claude Messages content block may carry (every block type's own:
/// text, image and document sources, tool use and results, thinking, citations, caching).
pub(crate) const CLAUDE_BLOCK_KEYS: &[&str] = &[
    "type",
    "text",
    "source",
    "id",
    "name",
    "input",
    "tool_use_id",
    "content",
    "is_error",
    "cache_control",
    "citations",
    "thinking",
    "signature",
    "data",
    "title",
    "context",
];

#[derive(Clone, Copy)]
struct MessagesReader(Mode);

impl<'de> ArrayReader<'de> for MessagesReader {
    type Out = Messages;
    fn read<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Messages, S::Error> {
        let mut out = Messages::default();
        while let Some(seen) = seq.next_element_seed(Any(MessageReader(self.0), Skip))? {
            let i = out.len;
            out.len = out.len.saturating_add(1);
            out.tokens = out.tokens.saturating_add(MESSAGE_OVERHEAD_TOKENS);
            let message = match seen {
                Seen::Object(m) => m,
                other => {
                    if out.violation.is_none() {
                        out.violation = Some(match self.0 {
                            Mode::Invoke { .. } => {
                                wrong_type(&format!("#/messages/{i}"), "JSONObject", other.kind())
                            }
                            Mode::Converse => constraint(
                                &format!("messages.{}", i.saturating_add(1)),
                                "Member must be a structure",
                            ),
                        });
                    }
                    continue;
                }
            };
            out.tokens = out.tokens.saturating_add(message.content_tokens);
            if out.violation.is_none() {
                out.violation = message.violation(self.0, i);
            }
            if out.extraneous.is_none()
                && let Some(Part::Array(blocks)) = &message.content
            {
                out.extraneous = blocks
                    .first_extraneous
                    .as_ref()
                    .map(|(j, key)| (i, *j, key.clone()));
            }
        }
        Ok(out)
    }
}

/// One message, reduced.
#[derive(Debug, Default)]
struct Message {
    role: Option<Role>,
    content: Option<Part<(), Blocks>>,
    content_tokens: u64,
}

#[derive(Debug, Clone, Copy)]
struct Role {
    kind: Kind,
    user_or_assistant: bool,
}

impl Message {
    fn violation(&self, mode: Mode, i: usize) -> Option<Violation> {
        match mode {
            Mode::Invoke {
                content_may_be_string,
            } => {
                match self.role {
                    Some(r) if r.kind == Kind::String => {}
                    Some(r) if r.kind != Kind::Null => {
                        return Some(wrong_type(
                            &format!("#/messages/{i}/role"),
                            "String",
                            r.kind,
                        ));
                    }
                    _ => return Some(missing(&format!("#/messages/{i}"), "role")),
                }
                match &self.content {
                    None => Some(missing(&format!("#/messages/{i}"), "content")),
                    Some(c) if c.is_null() => Some(missing(&format!("#/messages/{i}"), "content")),
                    Some(Part::Scalar(s)) if s.kind == Kind::String && content_may_be_string => {
                        None
                    }
                    Some(Part::Array(blocks)) => {
                        blocks.violation_at(mode, &format!("#/messages/{i}/content"))
                    }
                    Some(other) => Some(wrong_type(
                        &format!("#/messages/{i}/content"),
                        "JSONArray",
                        other.kind(),
                    )),
                }
            }
            Mode::Converse => {
                if !self.role.is_some_and(|r| r.user_or_assistant) {
                    return Some(constraint(
                        &format!("messages.{}.member.role", i.saturating_add(1)),
                        "Member must satisfy enum value set: [user, assistant]",
                    ));
                }
                match &self.content {
                    Some(Part::Array(blocks)) => blocks.violation_at(
                        mode,
                        &format!("messages.{}.member.content", i.saturating_add(1)),
                    ),
                    _ => Some(constraint(
                        &format!("messages.{}.member.content", i.saturating_add(1)),
                        "Member must be a list",
                    )),
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
struct MessageReader(Mode);

impl<'de> ObjectReader<'de> for MessageReader {
    type Out = Message;
    fn read<M: MapAccess<'de>>(self, mut map: M) -> Result<Message, M::Error> {
        let mut out = Message::default();
        while let Some(key) = next_key(&mut map)? {
            match &*key {
                "role" => {
                    let seen = map.next_value_seed(scalar())?;
                    let user_or_assistant =
                        matches!(&seen, Seen::Str(s) if s == "user" || s == "assistant");
                    out.role = Some(Role {
                        kind: seen.kind(),
                        user_or_assistant,
                    });
                }
                "content" => {
                    let reader = BlocksReader(self.0, true);
                    let part = Part::of(map.next_value_seed(Any(Skip, reader))?);
                    out.content_tokens = match &part {
                        Part::Scalar(s) if self.0 != Mode::Converse => s.tokens,
                        Part::Array(b) => b.tokens,
                        _ => 0,
                    };
                    out.content = Some(part);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

/// A summary of an array of content blocks (`messages[].content` or `system`). Its violation
/// is placed by whoever knows where it sits ([`Blocks::violation_at`]).
#[derive(Debug, Default)]
pub(crate) struct Blocks {
    pub(crate) tokens: u64,
    /// The first invalid block: its index and whether its `text` (rather than the block) is
    /// at fault, with the kind found.
    pub(crate) first_bad: Option<(usize, BadBlock)>,
    /// The first block with a key outside [`CLAUDE_BLOCK_KEYS`] (model-native bodies only),
    /// and the key.
    pub(crate) first_extraneous: Option<(usize, String)>,
}

/// What is wrong with a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadBlock {
    /// The block is not an object.
    NotObject(Kind),
    /// Its `text` is not a string (`Null` included: invoke rules ignore a null text).
    Text(Kind),
}

impl Blocks {
    /// The violation of this array at `at` (`#/messages/0/content` or `#/system` for
    /// model-native bodies, `messages.1.member.content` or `system` for Converse).
    pub(crate) fn violation_at(&self, mode: Mode, at: &str) -> Option<Violation> {
        let (j, bad) = self.first_bad?;
        match mode {
            Mode::Invoke { .. } => match bad {
                BadBlock::NotObject(kind) => {
                    Some(wrong_type(&format!("{at}/{j}"), "JSONObject", kind))
                }
                BadBlock::Text(kind) => Some(wrong_type(&format!("{at}/{j}/text"), "String", kind)),
            },
            Mode::Converse => Some(constraint(
                &format!("{at}.{}", j.saturating_add(1)),
                if at == "system" {
                    "Member must be a valid system content block"
                } else {
                    "Member must be a valid content block"
                },
            )),
        }
    }
}

/// Reads blocks by `Mode`'s rules; with `true`, a Converse block's tool results, tool uses,
/// images and documents count too (message content), else only its text (`system`).
#[derive(Clone, Copy)]
struct BlocksReader(Mode, bool);

impl<'de> ArrayReader<'de> for BlocksReader {
    type Out = Blocks;
    fn read<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Blocks, S::Error> {
        let mut out = Blocks::default();
        let mut j = 0;
        let block = BlockReader(if self.1 { Some(self.0) } else { None });
        while let Some(seen) = seq.next_element_seed(Any(block, Skip))? {
            let bad = match seen {
                Seen::Object(block) => {
                    out.tokens = out.tokens.saturating_add(block.tokens);
                    if out.first_extraneous.is_none() && self.0 != Mode::Converse {
                        out.first_extraneous = block.extraneous.map(|key| (j, key));
                    }
                    match block.text {
                        Some(Kind::String) => None,
                        // Invoke rules treat a null text as absent; Converse's do not.
                        Some(Kind::Null) if self.0 != Mode::Converse => None,
                        Some(k) => Some(BadBlock::Text(k)),
                        None => None,
                    }
                }
                other => Some(BadBlock::NotObject(other.kind())),
            };
            if out.first_bad.is_none() {
                out.first_bad = bad.map(|b| (j, b));
            }
            j = j.saturating_add(1);
        }
        Ok(out)
    }
}

/// One content block, reduced.
#[derive(Debug, Default)]
struct Block {
    text: Option<Kind>,
    tokens: u64,
    /// The first key outside [`CLAUDE_BLOCK_KEYS`].
    extraneous: Option<String>,
}

/// `Some(Mode::Converse)`: every counted part; otherwise the text only.
#[derive(Clone, Copy)]
struct BlockReader(Option<Mode>);

impl<'de> ObjectReader<'de> for BlockReader {
    type Out = Block;
    fn read<M: MapAccess<'de>>(self, mut map: M) -> Result<Block, M::Error> {
        let mut out = Block::default();
        // Converse counts more than text; each part is kept so a repeated key replaces it.
        let (mut text, mut tool_result, mut tool_use, mut image, mut document) = (0, 0, 0, 0, 0);
        while let Some(key) = next_key(&mut map)? {
            match (&*key, self.0) {
                ("text", _) => {
                    let s = Scalar::of(&map.next_value_seed(scalar())?);
                    out.text = Some(s.kind);
                    text = s.tokens;
                }
                ("toolResult", Some(Mode::Converse)) => {
                    tool_result = match map.next_value_seed(Any(ToolResultReader, Skip))? {
                        Seen::Object(n) => n,
                        _ => 0,
                    };
                }
                ("toolUse", Some(Mode::Converse)) => {
                    tool_use = match map.next_value_seed(Any(ToolUseReader, Skip))? {
                        Seen::Object(n) => n,
                        _ => 0,
                    };
                }
                ("image", Some(Mode::Converse)) => {
                    map.next_value::<IgnoredAny>()?;
                    image = IMAGE_TOKENS;
                }
                ("document", Some(Mode::Converse)) => {
                    document = match map.next_value_seed(Any(DocumentReader, Skip))? {
                        Seen::Object(n) => n,
                        _ => 0,
                    };
                }
                (other, _) => {
                    if out.extraneous.is_none() && !CLAUDE_BLOCK_KEYS.contains(&other) {
                        out.extraneous = Some(other.to_owned());
                    }
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        out.tokens = [text, tool_result, tool_use, image, document]
            .into_iter()
            .fold(0u64, u64::saturating_add);
        Ok(out)
    }
}

/// `toolResult`: the tokens of `content[].text`.
#[derive(Clone, Copy)]
struct ToolResultReader;

impl<'de> ObjectReader<'de> for ToolResultReader {
    type Out = u64;
    fn read<M: MapAccess<'de>>(self, mut map: M) -> Result<u64, M::Error> {
        let mut n = 0;
        while let Some(key) = next_key(&mut map)? {
            if key == "content" {
                n = match map.next_value_seed(Any(Skip, BlocksReader(Mode::Converse, false)))? {
                    Seen::Array(b) => b.tokens,
                    _ => 0,
                };
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(n)
    }
}

/// `toolUse`: the tokens of `input` as compact JSON.
#[derive(Clone, Copy)]
struct ToolUseReader;

impl<'de> ObjectReader<'de> for ToolUseReader {
    type Out = u64;
    fn read<M: MapAccess<'de>>(self, mut map: M) -> Result<u64, M::Error> {
        let mut n = 0;
        while let Some(key) = next_key(&mut map)? {
            if key == "input" {
                n = map.next_value_seed(CompactTokens)?.1;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(n)
    }
}

/// `document`: the tokens of `source`.
#[derive(Clone, Copy)]
struct DocumentReader;

impl<'de> ObjectReader<'de> for DocumentReader {
    type Out = u64;
    fn read<M: MapAccess<'de>>(self, mut map: M) -> Result<u64, M::Error> {
        let mut n = 0;
        while let Some(key) = next_key(&mut map)? {
            if key == "source" {
                n = match map.next_value_seed(Any(SourceReader, Skip))? {
                    Seen::Object(n) => n,
                    _ => 0,
                };
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(n)
    }
}

/// A document `source`: `ceil(decoded bytes / 4)` of `bytes` (its length if it does not
/// decode), else the text rule of `text`.
#[derive(Clone, Copy)]
struct SourceReader;

impl<'de> ObjectReader<'de> for SourceReader {
    type Out = u64;
    fn read<M: MapAccess<'de>>(self, mut map: M) -> Result<u64, M::Error> {
        let (mut bytes, mut text) = (None, 0);
        while let Some(key) = next_key(&mut map)? {
            match &*key {
                "bytes" => {
                    bytes = match map.next_value_seed(scalar())? {
                        Seen::Str(b64) => Some(
                            base64::engine::general_purpose::STANDARD
                                .decode(b64.as_bytes())
                                .map_or(b64.len(), |decoded| decoded.len()),
                        ),
                        _ => None,
                    };
                }
                "text" => text = Scalar::of(&map.next_value_seed(scalar())?).tokens,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(bytes.map_or(text, |len| (len as u64).div_ceil(4)))
    }
}

/// A summary of a Cohere `texts` array.
#[derive(Debug, Default)]
pub(crate) struct Texts {
    pub(crate) len: usize,
    pub(crate) tokens: u64,
    /// The kind of the first element that is not a string.
    pub(crate) first_not_string: Option<Kind>,
}

#[derive(Clone, Copy)]
struct TextsReader;

impl<'de> ArrayReader<'de> for TextsReader {
    type Out = Texts;
    fn read<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Texts, S::Error> {
        let mut out = Texts::default();
        while let Some(seen) = seq.next_element_seed(scalar())? {
            out.len = out.len.saturating_add(1);
            let s = Scalar::of(&seen);
            if s.kind == Kind::String {
                out.tokens = out.tokens.saturating_add(s.tokens);
            } else if out.first_not_string.is_none() {
                out.first_not_string = Some(s.kind);
            }
        }
        Ok(out)
    }
}

/// `inferenceConfig`.
#[derive(Debug, Default)]
pub(crate) struct InferenceConfig {
    pub(crate) max_tokens: Option<Scalar>,
    pub(crate) max_new_tokens: Option<Scalar>,
}

#[derive(Clone, Copy)]
struct InferenceConfigReader;

impl<'de> ObjectReader<'de> for InferenceConfigReader {
    type Out = InferenceConfig;
    fn read<M: MapAccess<'de>>(self, mut map: M) -> Result<InferenceConfig, M::Error> {
        let mut out = InferenceConfig::default();
        while let Some(key) = next_key(&mut map)? {
            match &*key {
                "maxTokens" => out.max_tokens = Some(Scalar::of(&map.next_value_seed(scalar())?)),
                "max_new_tokens" => {
                    out.max_new_tokens = Some(Scalar::of(&map.next_value_seed(scalar())?));
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

/// `textGenerationConfig`.
#[derive(Debug, Default)]
pub(crate) struct TextGenerationConfig {
    pub(crate) max_token_count: Option<Scalar>,
}

#[derive(Clone, Copy)]
struct TextGenerationConfigReader;

impl<'de> ObjectReader<'de> for TextGenerationConfigReader {
    type Out = TextGenerationConfig;
    fn read<M: MapAccess<'de>>(self, mut map: M) -> Result<TextGenerationConfig, M::Error> {
        let mut out = TextGenerationConfig::default();
        while let Some(key) = next_key(&mut map)? {
            if key == "maxTokenCount" {
                out.max_token_count = Some(Scalar::of(&map.next_value_seed(scalar())?));
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(out)
    }
}

/// The CountTokens `input`: the Converse body, or the decoded InvokeModel body.
#[derive(Debug, Default)]
pub(crate) struct CountInput {
    pub(crate) converse: Option<Part<Box<Top>, ()>>,
    pub(crate) invoke_model: Option<Part<InvokeModelInput, ()>>,
}

/// `input.invokeModel`: whether `body` was a string, and what it decoded to.
#[derive(Debug, Default)]
pub(crate) struct InvokeModelInput {
    /// `None`: no string `body`; `Some(None)`: not base64; `Some(Some(bytes))`: decoded.
    pub(crate) body: Option<Option<Vec<u8>>>,
}

#[derive(Clone, Copy)]
struct CountInputReader;

impl<'de> ObjectReader<'de> for CountInputReader {
    type Out = CountInput;
    fn read<M: MapAccess<'de>>(self, mut map: M) -> Result<CountInput, M::Error> {
        let mut out = CountInput::default();
        while let Some(key) = next_key(&mut map)? {
            match &*key {
                "converse" => {
                    let reader = TopReader {
                        mode: Mode::Converse,
                        allowed: None,
                    };
                    out.converse = Some(match Part::of(map.next_value_seed(Any(reader, Skip))?) {
                        Part::Object(top) => Part::Object(Box::new(top)),
                        Part::Array(()) => Part::Array(()),
                        Part::Scalar(s) => Part::Scalar(s),
                    });
                }
                "invokeModel" => {
                    out.invoke_model = Some(Part::of(
                        map.next_value_seed(Any(InvokeModelInputReader, Skip))?,
                    ));
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

#[derive(Clone, Copy)]
struct InvokeModelInputReader;

impl<'de> ObjectReader<'de> for InvokeModelInputReader {
    type Out = InvokeModelInput;
    fn read<M: MapAccess<'de>>(self, mut map: M) -> Result<InvokeModelInput, M::Error> {
        let mut out = InvokeModelInput::default();
        while let Some(key) = next_key(&mut map)? {
            if key == "body" {
                out.body = match map.next_value_seed(scalar())? {
                    Seen::Str(b64) => Some(
                        base64::engine::general_purpose::STANDARD
                            .decode(b64.as_bytes())
                            .ok(),
                    ),
                    _ => None,
                };
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(out)
    }
}

/// The kind of a value and the tokens of its compact JSON serialization (`ceil(chars / 4)`),
/// computed without serializing it: the length each part would have, summed.
///
/// This is the length `serde_json::to_string` gives for the parsed value, except that a key
/// repeated within one object is counted each time it appears (a parsed value keeps the last).
struct CompactTokens;

impl<'de> DeserializeSeed<'de> for CompactTokens {
    type Value = (Kind, u64);
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(Kind, u64), D::Error> {
        let (kind, chars) = d.deserialize_any(CompactChars)?;
        Ok((kind, chars.div_ceil(4)))
    }
}

/// `(kind, chars of the compact JSON)`.
struct CompactChars;

impl<'de> DeserializeSeed<'de> for CompactChars {
    type Value = (Kind, u64);
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(Kind, u64), D::Error> {
        d.deserialize_any(self)
    }
}

/// Characters of `s` as a JSON string literal (serde_json's escapes).
fn string_chars(s: &str) -> u64 {
    s.chars()
        .map(|c| match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if (c as u32) < 0x20 => 6,
            _ => 1,
        })
        .fold(2, u64::saturating_add)
}

fn number_chars(n: impl fmt::Display) -> u64 {
    n.to_string().len() as u64
}

impl<'de> Visitor<'de> for CompactChars {
    type Value = (Kind, u64);
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok((Kind::Null, 4))
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok((Kind::Null, 4))
    }
    fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
        Ok((Kind::Boolean, if b { 4 } else { 5 }))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        Ok((Kind::Integer, number_chars(n)))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
        Ok((Kind::Integer, number_chars(n)))
    }
    fn visit_f64<E>(self, n: f64) -> Result<Self::Value, E> {
        // serde_json writes a float as its `Number` displays (`null` if not finite).
        Ok((
            Kind::Number,
            serde_json::Number::from_f64(n).map_or(4, number_chars),
        ))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok((Kind::String, string_chars(s)))
    }
    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
        let (mut chars, mut n) = (2u64, 0u64);
        while let Some((_, c)) = seq.next_element_seed(CompactChars)? {
            chars = chars.saturating_add(c);
            n = n.saturating_add(1);
        }
        Ok((Kind::Array, chars.saturating_add(n.saturating_sub(1))))
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let (mut chars, mut n) = (2u64, 0u64);
        while let Some(key) = next_key(&mut map)? {
            let (_, c) = map.next_value_seed(CompactChars)?;
            chars = chars
                .saturating_add(string_chars(&key).saturating_add(1))
                .saturating_add(c);
            n = n.saturating_add(1);
        }
        Ok((Kind::Object, chars.saturating_add(n.saturating_sub(1))))
    }
}

/// Reads `text` (a JSON document) as one value with `reader` for a top-level object.
pub(crate) fn read<'de, O: ObjectReader<'de>>(
    text: &'de str,
    reader: O,
) -> Result<Seen<'de, O::Out, ()>, serde_json::Error> {
    let mut d = serde_json::Deserializer::from_str(text);
    let seen = Any(reader, Skip).deserialize(&mut d)?;
    d.end()?;
    Ok(seen)
}

/// `#/path: expected type: X, found: Y`.
pub(crate) fn wrong_type(path: &str, expected: &str, found: Kind) -> Violation {
    format!("{path}: expected type: {expected}, found: {}", found.name())
}

/// `#/parent: required key [key] not found`.
pub(crate) fn missing(parent: &str, key: &str) -> Violation {
    format!("{parent}: required key [{key}] not found")
}

/// A Converse constraint message.
pub(crate) fn constraint(path: &str, what: &str) -> Violation {
    format!("1 validation error detected: Value at '{path}' failed to satisfy constraint: {what}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn compact_length_matches_serde_json() {
        for v in [
            json!(null),
            json!({"a": 1, "b": [true, false, null, -3, 2.5, 1e300], "c": {"d": "x\"y\\z\n\u{1}é"}}),
            json!([]),
            json!({}),
            json!("ünïcødé"),
            json!(18446744073709551615u64),
        ] {
            let text = v.to_string();
            let mut d = serde_json::Deserializer::from_str(&text);
            let (_, chars) = CompactChars.deserialize(&mut d).unwrap();
            assert_eq!(chars, text.chars().count() as u64, "{text}");
        }
    }
}
