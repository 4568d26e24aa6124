//! Service Quotas names for Bedrock, parsed into scope, kind and model display name.

use std::fmt;

/// Which traffic a quota governs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum QuotaScope {
    /// Calls with a base model id in the client's region (`anthropic.claude-...`).
    OnDemand,
    /// Calls with a geographic cross-region inference profile id (`us.`, `eu.`, `apac.` ...).
    CrossRegion,
    /// Calls with a global cross-region inference profile id (`global.`).
    GlobalCrossRegion,
    /// Latency-optimized on-demand calls (`performanceConfig.latency = "optimized"`).
    LatencyOptimized,
    /// Input tokens on the bedrock-mantle endpoint.
    MantleInput,
    /// Output tokens on the bedrock-mantle endpoint.
    MantleOutput,
    /// Every model of the account together.
    Account,
}

impl QuotaScope {
    /// The scope's name, as in labels and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaScope::OnDemand => "on-demand",
            QuotaScope::CrossRegion => "cross-region",
            QuotaScope::GlobalCrossRegion => "global-cross-region",
            QuotaScope::LatencyOptimized => "latency-optimized",
            QuotaScope::MantleInput => "mantle-input",
            QuotaScope::MantleOutput => "mantle-output",
            QuotaScope::Account => "account",
        }
    }

    /// The scope of the calls a model id makes (`global.` and geographic profile prefixes;
    /// anything else is on-demand).
    pub fn of_model_id(model_id: &str) -> QuotaScope {
        if model_id.starts_with("global.") {
            QuotaScope::GlobalCrossRegion
        } else if crate::bedrock::models::base_model_id(model_id).len() != model_id.len() {
            QuotaScope::CrossRegion
        } else {
            QuotaScope::OnDemand
        }
    }
}

impl fmt::Display for QuotaScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a quota counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum QuotaKind {
    /// Tokens per minute.
    TokensPerMinute,
    /// Requests per minute.
    RequestsPerMinute,
    /// Tokens per day of one model.
    TokensPerDay,
    /// Tokens per day of every model of the account together.
    AccountTokensPerDay,
}

impl fmt::Display for QuotaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QuotaKind::TokensPerMinute => "tokens per minute",
            QuotaKind::RequestsPerMinute => "requests per minute",
            QuotaKind::TokensPerDay => "tokens per day",
            QuotaKind::AccountTokensPerDay => "account-level tokens per day",
        })
    }
}

/// A Bedrock quota name, parsed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QuotaName {
    /// Which traffic it governs.
    pub scope: QuotaScope,
    /// What it counts.
    pub kind: QuotaKind,
    /// The model's display name (`Anthropic Claude Sonnet 4 V1`), without a context-length
    /// suffix; `None` for the account-level quota.
    pub model: Option<String>,
    /// The context-length variant (`1M` for `... 1M Context Length`), a quota of its own for
    /// long-context calls.
    pub context_length: Option<String>,
}

/// The prefixes of per-model quota names, longest first where one is a prefix of another.
/// Service Quotas says "model inference"; older docs say "InvokeModel": both match.
const PATTERNS: &[(&str, QuotaScope, QuotaKind)] = &[
    (
        "on-demand, latency-optimized model inference tokens per minute for ",
        QuotaScope::LatencyOptimized,
        QuotaKind::TokensPerMinute,
    ),
    (
        "on-demand, latency-optimized invokemodel tokens per minute for ",
        QuotaScope::LatencyOptimized,
        QuotaKind::TokensPerMinute,
    ),
    (
        "global cross-region model inference tokens per minute for ",
        QuotaScope::GlobalCrossRegion,
        QuotaKind::TokensPerMinute,
    ),
    (
        "global cross-region model inference requests per minute for ",
        QuotaScope::GlobalCrossRegion,
        QuotaKind::RequestsPerMinute,
    ),
    (
        "global cross-region model inference tokens per day for ",
        QuotaScope::GlobalCrossRegion,
        QuotaKind::TokensPerDay,
    ),
    (
        "global cross-region invokemodel tokens per minute for ",
        QuotaScope::GlobalCrossRegion,
        QuotaKind::TokensPerMinute,
    ),
    (
        "cross-region model inference tokens per minute for ",
        QuotaScope::CrossRegion,
        QuotaKind::TokensPerMinute,
    ),
    (
        "cross-region model inference requests per minute for ",
        QuotaScope::CrossRegion,
        QuotaKind::RequestsPerMinute,
    ),
    (
        "cross-region invokemodel tokens per minute for ",
        QuotaScope::CrossRegion,
        QuotaKind::TokensPerMinute,
    ),
    (
        "cross-region invokemodel requests per minute for ",
        QuotaScope::CrossRegion,
        QuotaKind::RequestsPerMinute,
    ),
    (
        "on-demand model inference tokens per minute for ",
        QuotaScope::OnDemand,
        QuotaKind::TokensPerMinute,
    ),
    (
        "on-demand model inference requests per minute for ",
        QuotaScope::OnDemand,
        QuotaKind::RequestsPerMinute,
    ),
    (
        "on-demand invokemodel tokens per minute for ",
        QuotaScope::OnDemand,
        QuotaKind::TokensPerMinute,
    ),
    (
        "on-demand invokemodel requests per minute for ",
        QuotaScope::OnDemand,
        QuotaKind::RequestsPerMinute,
    ),
    (
        "model invocation max tokens per day for ",
        QuotaScope::OnDemand,
        QuotaKind::TokensPerDay,
    ),
    (
        "[bedrock-mantle endpoint] input tokens per minute for ",
        QuotaScope::MantleInput,
        QuotaKind::TokensPerMinute,
    ),
    (
        "[bedrock-mantle endpoint] output tokens per minute for ",
        QuotaScope::MantleOutput,
        QuotaKind::TokensPerMinute,
    ),
];

/// Parses a Bedrock quota name (the patterns Service Quotas uses for service code `bedrock`);
/// `None` for a name that matches none (reported by the caller, never guessed).
///
/// ```
/// use bedrock_throttle::quotas::{parse_quota_name, QuotaKind, QuotaScope};
///
/// let name = parse_quota_name(
///     "Cross-region model inference tokens per minute for Anthropic Claude Sonnet 4 V1 1M Context Length",
/// )
/// .unwrap();
/// assert_eq!(name.scope, QuotaScope::CrossRegion);
/// assert_eq!(name.kind, QuotaKind::TokensPerMinute);
/// assert_eq!(name.model.as_deref(), Some("Anthropic Claude Sonnet 4 V1"));
/// assert_eq!(name.context_length.as_deref(), Some("1M"));
/// assert!(parse_quota_name("Number of custom models").is_none());
/// ```
pub fn parse_quota_name(name: &str) -> Option<QuotaName> {
    let name = name.trim();
    let lower = name.to_ascii_lowercase();
    if lower == "cross-model max tokens per day"
        || lower == "cross-model account-level tokens per day"
    {
        return Some(QuotaName {
            scope: QuotaScope::Account,
            kind: QuotaKind::AccountTokensPerDay,
            model: None,
            context_length: None,
        });
    }
    let (prefix, scope, kind) = PATTERNS.iter().find(|(p, ..)| lower.starts_with(p))?;
    // The prefixes are ASCII, so byte offsets agree between `lower` and `name`.
    let model = name[prefix.len()..].trim();
    let (model, context_length) = split_context_length(model);
    if model.is_empty() {
        return None;
    }
    Some(QuotaName {
        scope: *scope,
        kind: *kind,
        model: Some(model.to_owned()),
        context_length,
    })
}

/// `Anthropic Claude Sonnet 4 V1 1M Context Length` → (`Anthropic Claude Sonnet 4 V1`, `1M`).
fn split_context_length(model: &str) -> (&str, Option<String>) {
    const SUFFIX: &str = " context length";
    let lower = model.to_ascii_lowercase();
    let Some(head) = lower.strip_suffix(SUFFIX) else {
        return (model, None);
    };
    let head = &model[..head.len()];
    match head.rsplit_once(' ') {
        Some((rest, size))
            if size.chars().next().is_some_and(|c| c.is_ascii_digit())
                && size.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            (rest.trim_end(), Some(size.to_owned()))
        }
        _ => (model, None),
    }
}

/// The name Service Quotas gives a per-model quota (the inverse of [`parse_quota_name`], for
/// the emulator and tests).
pub fn quota_name(scope: QuotaScope, kind: QuotaKind, model: &str) -> String {
    let what = match kind {
        QuotaKind::TokensPerMinute => "tokens per minute",
        QuotaKind::RequestsPerMinute => "requests per minute",
        QuotaKind::TokensPerDay | QuotaKind::AccountTokensPerDay => "tokens per day",
    };
    match (scope, kind) {
        (_, QuotaKind::AccountTokensPerDay) | (QuotaScope::Account, _) => {
            "Cross-Model Max Tokens Per Day".to_owned()
        }
        (QuotaScope::OnDemand | QuotaScope::CrossRegion, QuotaKind::TokensPerDay) => {
            format!("Model invocation max tokens per day for {model}")
        }
        (QuotaScope::OnDemand, _) => format!("On-demand model inference {what} for {model}"),
        (QuotaScope::CrossRegion, _) => format!("Cross-region model inference {what} for {model}"),
        (QuotaScope::GlobalCrossRegion, _) => {
            format!("Global cross-region model inference {what} for {model}")
        }
        (QuotaScope::LatencyOptimized, _) => {
            format!("On-Demand, latency-optimized model inference {what} for {model}")
        }
        (QuotaScope::MantleInput, _) => {
            format!("[bedrock-mantle endpoint] Input tokens per minute for {model}")
        }
        (QuotaScope::MantleOutput, _) => {
            format!("[bedrock-mantle endpoint] Output tokens per minute for {model}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern() {
        let cases = [
            (
                "On-demand model inference tokens per minute for Anthropic Claude 3.5 Sonnet",
                QuotaScope::OnDemand,
                QuotaKind::TokensPerMinute,
                "Anthropic Claude 3.5 Sonnet",
                None,
            ),
            (
                "On-demand model inference requests per minute for Amazon Nova Lite",
                QuotaScope::OnDemand,
                QuotaKind::RequestsPerMinute,
                "Amazon Nova Lite",
                None,
            ),
            (
                "Cross-region model inference tokens per minute for Anthropic Claude Haiku 4.5",
                QuotaScope::CrossRegion,
                QuotaKind::TokensPerMinute,
                "Anthropic Claude Haiku 4.5",
                None,
            ),
            (
                "Cross-region model inference requests per minute for Anthropic Claude Sonnet 4.5",
                QuotaScope::CrossRegion,
                QuotaKind::RequestsPerMinute,
                "Anthropic Claude Sonnet 4.5",
                None,
            ),
            (
                "Global cross-region model inference tokens per minute for Anthropic Claude Sonnet 4.5 V1",
                QuotaScope::GlobalCrossRegion,
                QuotaKind::TokensPerMinute,
                "Anthropic Claude Sonnet 4.5 V1",
                None,
            ),
            (
                "Global cross-region model inference requests per minute for Anthropic Claude Sonnet 4.5 V1",
                QuotaScope::GlobalCrossRegion,
                QuotaKind::RequestsPerMinute,
                "Anthropic Claude Sonnet 4.5 V1",
                None,
            ),
            (
                "Global cross-region model inference tokens per day for Anthropic Claude Sonnet 4.5 V1",
                QuotaScope::GlobalCrossRegion,
                QuotaKind::TokensPerDay,
                "Anthropic Claude Sonnet 4.5 V1",
                None,
            ),
            (
                "Model invocation max tokens per day for Anthropic Claude Sonnet 4.5 V1",
                QuotaScope::OnDemand,
                QuotaKind::TokensPerDay,
                "Anthropic Claude Sonnet 4.5 V1",
                None,
            ),
            (
                "Cross-region model inference tokens per minute for Anthropic Claude Sonnet 4 V1 1M Context Length",
                QuotaScope::CrossRegion,
                QuotaKind::TokensPerMinute,
                "Anthropic Claude Sonnet 4 V1",
                Some("1M"),
            ),
            (
                "On-Demand, latency-optimized model inference tokens per minute for Amazon Nova Pro V1",
                QuotaScope::LatencyOptimized,
                QuotaKind::TokensPerMinute,
                "Amazon Nova Pro V1",
                None,
            ),
            (
                "[bedrock-mantle endpoint] Input tokens per minute for Anthropic Claude Opus 4.7",
                QuotaScope::MantleInput,
                QuotaKind::TokensPerMinute,
                "Anthropic Claude Opus 4.7",
                None,
            ),
            (
                "[bedrock-mantle endpoint] Output tokens per minute for Anthropic Claude Opus 4.7",
                QuotaScope::MantleOutput,
                QuotaKind::TokensPerMinute,
                "Anthropic Claude Opus 4.7",
                None,
            ),
            (
                "On-demand InvokeModel tokens per minute for Anthropic Claude 3 Haiku",
                QuotaScope::OnDemand,
                QuotaKind::TokensPerMinute,
                "Anthropic Claude 3 Haiku",
                None,
            ),
            (
                "Cross-region InvokeModel requests per minute for Anthropic Claude 3 Haiku",
                QuotaScope::CrossRegion,
                QuotaKind::RequestsPerMinute,
                "Anthropic Claude 3 Haiku",
                None,
            ),
        ];
        for (name, scope, kind, model, ctx) in cases {
            let parsed = parse_quota_name(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(parsed.scope, scope, "{name}");
            assert_eq!(parsed.kind, kind, "{name}");
            assert_eq!(parsed.model.as_deref(), Some(model), "{name}");
            assert_eq!(parsed.context_length.as_deref(), ctx, "{name}");
        }
        for name in [
            "Cross-Model Max Tokens Per Day",
            "Cross-Model Account-Level Tokens Per Day",
        ] {
            let account = parse_quota_name(name).unwrap();
            assert_eq!(account.kind, QuotaKind::AccountTokensPerDay);
            assert_eq!(account.model, None);
        }
        for unknown in [
            "Custom models per account",
            "On-demand model inference tokens per minute for ",
            "Tokens per minute",
        ] {
            assert_eq!(parse_quota_name(unknown), None, "{unknown}");
        }
    }

    #[test]
    fn names_round_trip() {
        for scope in [
            QuotaScope::OnDemand,
            QuotaScope::CrossRegion,
            QuotaScope::GlobalCrossRegion,
        ] {
            for kind in [QuotaKind::TokensPerMinute, QuotaKind::RequestsPerMinute] {
                let n = parse_quota_name(&quota_name(scope, kind, "Amazon Nova Lite")).unwrap();
                assert_eq!(
                    (n.scope, n.kind, n.model.as_deref()),
                    (scope, kind, Some("Amazon Nova Lite"))
                );
            }
        }
    }
}
