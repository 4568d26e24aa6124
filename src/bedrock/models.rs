//! Model ids and what they imply: the body family, where `max_tokens` sits, the model's maximum
//! output and burndown (the values live in the [model table](super::ModelTable)).

pub use super::model_table::ModelTable;

#[cfg(test)]
use serde_json::Value;

/// The request/response body family of a model, which decides where `max_tokens` sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ModelFamily {
    /// Anthropic Claude: messages API (`max_tokens`) or legacy text completions
    /// (`max_tokens_to_sample`).
    AnthropicClaude,
    /// Amazon Titan text: `textGenerationConfig.maxTokenCount` (default 512).
    TitanText,
    /// Amazon Titan and Cohere embeddings: no output tokens.
    Embedding,
    /// Amazon Nova: `inferenceConfig.maxTokens` (legacy `inferenceConfig.max_new_tokens`).
    Nova,
    /// Meta Llama: `max_gen_len`.
    Llama,
    /// AI21 Jurassic-2: `maxTokens`.
    Jurassic,
    /// Mistral, Cohere Command, AI21 Jamba, DeepSeek, OpenAI gpt-oss, Qwen, Writer: `max_tokens`.
    MaxTokens,
    /// Unknown: any of the known fields is looked for, else the configured maximum is reserved.
    Unknown,
}

/// What the crate assumes about one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelInfo {
    /// The body family.
    pub family: ModelFamily,
    /// The most output tokens the model can produce.
    pub max_output_tokens: u64,
    /// The max tokens Bedrock reserves when the request does not say (the maximum output for
    /// most models; 512 for Titan text).
    pub default_max_tokens: u64,
    /// How many quota tokens one output token costs (15, 10, 5 or 1 in late 2026).
    pub output_burndown: u64,
}

impl ModelInfo {
    /// Model info with the given family, maximum output and burndown; the default max tokens
    /// is the maximum output.
    pub const fn new(family: ModelFamily, max_output_tokens: u64, output_burndown: u64) -> Self {
        Self {
            family,
            max_output_tokens,
            default_max_tokens: max_output_tokens,
            output_burndown,
        }
    }

    /// The same, with the max tokens reserved when a request does not say.
    pub const fn with_default_max_tokens(mut self, default_max_tokens: u64) -> Self {
        self.default_max_tokens = default_max_tokens;
        self
    }
}

impl ModelFamily {
    /// The family's name in table files: `anthropic`, `titan-text`, `embedding`, `nova`,
    /// `llama`, `jurassic`, `max-tokens`, `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelFamily::AnthropicClaude => "anthropic",
            ModelFamily::TitanText => "titan-text",
            ModelFamily::Embedding => "embedding",
            ModelFamily::Nova => "nova",
            ModelFamily::Llama => "llama",
            ModelFamily::Jurassic => "jurassic",
            ModelFamily::MaxTokens => "max-tokens",
            ModelFamily::Unknown => "unknown",
        }
    }

    /// Parses a family name ([`as_str`](Self::as_str), and the aliases `claude`,
    /// `anthropic-claude`, `titan`, `embeddings`, `mistral`), ignoring case.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "anthropic" | "anthropic-claude" | "claude" => ModelFamily::AnthropicClaude,
            "titan-text" | "titan" => ModelFamily::TitanText,
            "embedding" | "embeddings" => ModelFamily::Embedding,
            "nova" => ModelFamily::Nova,
            "llama" => ModelFamily::Llama,
            "jurassic" => ModelFamily::Jurassic,
            "max-tokens" | "mistral" => ModelFamily::MaxTokens,
            "unknown" => ModelFamily::Unknown,
            _ => return None,
        })
    }
}

/// The geographic prefixes of cross-region inference profile ids (late 2026).
const GEO_PREFIXES: &[&str] = &[
    "us-gov.", "us.", "eu.", "apac.", "jp.", "au.", "global.", "ca.", "sa.", "kr.", "in.", "il.",
    "mx.",
];

/// Strips a cross-region inference profile prefix (`us.`, `eu.`, `global.` ...) from a model id.
pub(crate) fn base_model_id(model_id: &str) -> &str {
    GEO_PREFIXES
        .iter()
        .find_map(|prefix| model_id.strip_prefix(prefix))
        .unwrap_or(model_id)
}

/// What the built-in table says of a model id (no override, no warning).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn default_model_info(model_id: &str) -> ModelInfo {
    ModelTable::default().resolve(model_id).0
}

/// The max-output-tokens fields a request body may carry, as read in one pass over the body.
///
/// Each field is `None` when absent or not a non-negative integer. Which field counts depends on
/// the model family: [`max_output_from_fields`] decides, and [`invoke_max_output_tokens`] is the
/// same rule over a parsed [`Value`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MaxTokenFields {
    /// `max_tokens` (Anthropic messages, Mistral, Cohere Command, Jamba, DeepSeek, gpt-oss, ...).
    pub max_tokens: Option<u64>,
    /// `max_tokens_to_sample` (Anthropic legacy text completions).
    pub max_tokens_to_sample: Option<u64>,
    /// `inferenceConfig.maxTokens` (Converse, Nova).
    pub inference_max_tokens: Option<u64>,
    /// `inferenceConfig.max_new_tokens` (legacy Nova).
    pub inference_max_new_tokens: Option<u64>,
    /// `textGenerationConfig.maxTokenCount` (Titan text).
    pub titan_max_token_count: Option<u64>,
    /// `max_gen_len` (Meta Llama).
    pub max_gen_len: Option<u64>,
    /// `maxTokens` (AI21 Jurassic-2).
    pub max_tokens_camel: Option<u64>,
}

#[cfg(test)]
impl MaxTokenFields {
    /// Reads every known field of a parsed body.
    pub(crate) fn from_value(body: &Value) -> Self {
        let field = |path: &[&str]| -> Option<u64> {
            let mut v = body;
            for key in path {
                v = v.get(key)?;
            }
            v.as_u64()
        };
        Self {
            max_tokens: field(&["max_tokens"]),
            max_tokens_to_sample: field(&["max_tokens_to_sample"]),
            inference_max_tokens: field(&["inferenceConfig", "maxTokens"]),
            inference_max_new_tokens: field(&["inferenceConfig", "max_new_tokens"]),
            titan_max_token_count: field(&["textGenerationConfig", "maxTokenCount"]),
            max_gen_len: field(&["max_gen_len"]),
            max_tokens_camel: field(&["maxTokens"]),
        }
    }
}

/// The max output tokens of a model-native (InvokeModel) body of `family`, from its fields.
///
/// Returns `None` when the body does not say (the caller then reserves the model's maximum), and
/// `Some(0)` for embeddings. Cohere Embed v4's `max_tokens` truncates INPUT, so embeddings never
/// read it. Titan text defaults to 512 when `maxTokenCount` is absent.
pub(crate) fn max_output_from_fields(family: ModelFamily, fields: &MaxTokenFields) -> Option<u64> {
    let f = fields;
    match family {
        ModelFamily::Embedding => Some(0),
        ModelFamily::AnthropicClaude => f.max_tokens.or(f.max_tokens_to_sample),
        ModelFamily::TitanText => Some(f.titan_max_token_count.unwrap_or(512)),
        ModelFamily::Nova => f.inference_max_tokens.or(f.inference_max_new_tokens),
        ModelFamily::Llama => f.max_gen_len,
        ModelFamily::Jurassic => f.max_tokens_camel,
        ModelFamily::MaxTokens => f.max_tokens,
        ModelFamily::Unknown => f
            .max_tokens
            .or(f.inference_max_tokens)
            .or(f.max_gen_len)
            .or(f.titan_max_token_count)
            .or(f.max_tokens_camel),
    }
}

/// Reads the max-output-tokens field of a model-native (InvokeModel) body for `family`.
///
/// Returns `None` when the body does not say (the caller then reserves the model's maximum), and
/// `Some(0)` for embeddings. Cohere Embed v4's `max_tokens` truncates INPUT, so embeddings never
/// read it. A value that is not a non-negative integer counts as absent.
#[cfg(test)]
pub(crate) fn invoke_max_output_tokens(family: ModelFamily, body: &Value) -> Option<u64> {
    max_output_from_fields(family, &MaxTokenFields::from_value(body))
}

/// Reads `inferenceConfig.maxTokens` of a Converse / ConverseStream body.
#[cfg(test)]
pub(crate) fn converse_max_output_tokens(body: &Value) -> Option<u64> {
    body.get("inferenceConfig")?.get("maxTokens")?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_prefixes_are_stripped() {
        assert_eq!(
            base_model_id("eu.amazon.nova-pro-v1:0"),
            "amazon.nova-pro-v1:0"
        );
        assert_eq!(
            base_model_id("anthropic.claude-3-haiku-20240307-v1:0"),
            "anthropic.claude-3-haiku-20240307-v1:0"
        );
    }
    use serde_json::json;

    #[test]
    fn burndown_follows_claude_generation() {
        let five = [
            "anthropic.claude-3-7-sonnet-20250219-v1:0",
            "us.anthropic.claude-sonnet-4-20250514-v1:0",
            "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "anthropic.claude-opus-4-1-20250805-v1:0",
            "anthropic.claude-haiku-4-5-20251001-v1:0",
        ];
        for id in five {
            assert_eq!(default_model_info(id).output_burndown, 5, "{id}");
        }
        let one = [
            "anthropic.claude-3-5-sonnet-20240620-v1:0",
            "anthropic.claude-3-haiku-20240307-v1:0",
            "anthropic.claude-v2:1",
            "amazon.nova-pro-v1:0",
            "meta.llama3-70b-instruct-v1:0",
        ];
        for id in one {
            assert_eq!(default_model_info(id).output_burndown, 1, "{id}");
        }
    }

    #[test]
    fn max_output_per_claude_model() {
        assert_eq!(
            default_model_info("anthropic.claude-opus-4-1-20250805-v1:0").max_output_tokens,
            32_000
        );
        assert_eq!(
            default_model_info("anthropic.claude-opus-4-5-20251101-v1:0").max_output_tokens,
            64_000
        );
        assert_eq!(
            default_model_info("anthropic.claude-3-5-haiku-20241022-v1:0").max_output_tokens,
            8_192
        );
    }

    #[test]
    fn families_and_fields() {
        let cohere_v4 = default_model_info("cohere.embed-v4:0");
        assert_eq!(cohere_v4.family, ModelFamily::Embedding);
        // The Cohere Embed v4 trap: `max_tokens` there truncates input, it is not output.
        assert_eq!(
            invoke_max_output_tokens(cohere_v4.family, &json!({"max_tokens": 8000})),
            Some(0)
        );
        assert_eq!(
            invoke_max_output_tokens(ModelFamily::TitanText, &json!({})),
            Some(512)
        );
        assert_eq!(
            invoke_max_output_tokens(
                ModelFamily::Nova,
                &json!({"inferenceConfig": {"max_new_tokens": 77}})
            ),
            Some(77)
        );
        assert_eq!(
            invoke_max_output_tokens(ModelFamily::Llama, &json!({"max_gen_len": 300})),
            Some(300)
        );
        assert_eq!(
            invoke_max_output_tokens(ModelFamily::AnthropicClaude, &json!({"max_tokens": "x"})),
            None
        );
        assert_eq!(
            converse_max_output_tokens(&json!({"inferenceConfig": {"maxTokens": 9}})),
            Some(9)
        );
        assert_eq!(
            default_model_info("arn:aws:bedrock:us-east-1:1:application-inference-profile/x")
                .family,
            ModelFamily::Unknown
        );
    }
}
