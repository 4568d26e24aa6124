//! The table from Service Quotas display names to the model ids requests use.

use std::collections::HashMap;

use super::QuotaScope;

/// The built-in display names and their base model ids. Display names are matched without
/// regard to case; an entry per spelling Service Quotas uses (some names carry ` V1`, some not).
const BUILT_IN: &[(&str, &str)] = &[
    (
        "Anthropic Claude 3 Haiku",
        "anthropic.claude-3-haiku-20240307-v1:0",
    ),
    (
        "Anthropic Claude 3 Sonnet",
        "anthropic.claude-3-sonnet-20240229-v1:0",
    ),
    (
        "Anthropic Claude 3 Opus",
        "anthropic.claude-3-opus-20240229-v1:0",
    ),
    (
        "Anthropic Claude 3.5 Sonnet",
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
    ),
    (
        "Anthropic Claude 3.5 Sonnet V2",
        "anthropic.claude-3-5-sonnet-20241022-v2:0",
    ),
    (
        "Anthropic Claude 3.5 Haiku",
        "anthropic.claude-3-5-haiku-20241022-v1:0",
    ),
    (
        "Anthropic Claude 3.7 Sonnet V1",
        "anthropic.claude-3-7-sonnet-20250219-v1:0",
    ),
    (
        "Anthropic Claude 3.7 Sonnet",
        "anthropic.claude-3-7-sonnet-20250219-v1:0",
    ),
    (
        "Anthropic Claude Sonnet 4 V1",
        "anthropic.claude-sonnet-4-20250514-v1:0",
    ),
    (
        "Anthropic Claude Sonnet 4",
        "anthropic.claude-sonnet-4-20250514-v1:0",
    ),
    (
        "Anthropic Claude Opus 4 V1",
        "anthropic.claude-opus-4-20250514-v1:0",
    ),
    (
        "Anthropic Claude Opus 4.1",
        "anthropic.claude-opus-4-1-20250805-v1:0",
    ),
    (
        "Anthropic Claude Sonnet 4.5 V1",
        "anthropic.claude-sonnet-4-5-20250929-v1:0",
    ),
    (
        "Anthropic Claude Sonnet 4.5",
        "anthropic.claude-sonnet-4-5-20250929-v1:0",
    ),
    (
        "Anthropic Claude Haiku 4.5",
        "anthropic.claude-haiku-4-5-20251001-v1:0",
    ),
    (
        "Anthropic Claude Opus 4.5",
        "anthropic.claude-opus-4-5-20251101-v1:0",
    ),
    // Late-2026 models: the base ids are assumptions (no listing with them was at hand); map
    // the real ones with `ModelNames::with` if they differ.
    (
        "Anthropic Claude Opus 4.8",
        "anthropic.claude-opus-4-8-20261015-v1:0",
    ),
    (
        "Anthropic Claude Sonnet 5",
        "anthropic.claude-sonnet-5-20260917-v1:0",
    ),
    (
        "Anthropic Claude Opus 5",
        "anthropic.claude-opus-5-20261101-v1:0",
    ),
    (
        "Anthropic Claude Opus 5.5",
        "anthropic.claude-opus-5-5-20261201-v1:0",
    ),
    ("Amazon Nova Micro", "amazon.nova-micro-v1:0"),
    ("Amazon Nova Micro V1", "amazon.nova-micro-v1:0"),
    ("Amazon Nova Lite", "amazon.nova-lite-v1:0"),
    ("Amazon Nova Lite V1", "amazon.nova-lite-v1:0"),
    ("Amazon Nova Pro", "amazon.nova-pro-v1:0"),
    ("Amazon Nova Pro V1", "amazon.nova-pro-v1:0"),
    ("Amazon Nova Premier", "amazon.nova-premier-v1:0"),
    ("Amazon Nova Premier V1", "amazon.nova-premier-v1:0"),
    ("Amazon Titan Text Express", "amazon.titan-text-express-v1"),
    (
        "Meta Llama 3.1 8B Instruct",
        "meta.llama3-1-8b-instruct-v1:0",
    ),
    (
        "Meta Llama 3.1 70B Instruct",
        "meta.llama3-1-70b-instruct-v1:0",
    ),
    (
        "Meta Llama 3.3 70B Instruct",
        "meta.llama3-3-70b-instruct-v1:0",
    ),
    ("Mistral Large (24.07)", "mistral.mistral-large-2407-v1:0"),
    ("DeepSeek R1 V1", "deepseek.r1-v1:0"),
];

/// Maps the model display names of Service Quotas (`Anthropic Claude Sonnet 4 V1`) to the base
/// model ids requests use (`anthropic.claude-sonnet-4-20250514-v1:0`), and from there to the
/// ids of each scope (`us.` / `global.` inference profiles). Built in for the common models;
/// [`with`](Self::with) adds or replaces an entry. A name not in the table is reported by
/// [`AppliedQuotas`](super::AppliedQuotas), never guessed.
///
/// ```
/// use bedrock_throttle::quotas::{ModelNames, QuotaScope};
///
/// let names = ModelNames::new().with("Acme Model X", "acme.model-x-v1:0");
/// assert_eq!(
///     names.model_ids("acme model x", QuotaScope::CrossRegion, "eu-west-1"),
///     Some(vec!["eu.acme.model-x-v1:0".to_owned()])
/// );
/// assert_eq!(names.model_ids("Unheard Of", QuotaScope::OnDemand, "us-east-1"), None);
/// ```
#[derive(Debug, Clone)]
pub struct ModelNames {
    by_name: HashMap<String, Vec<String>>,
}

impl Default for ModelNames {
    fn default() -> Self {
        Self::new()
    }
}

impl ModelNames {
    /// The built-in table.
    pub fn new() -> Self {
        let mut names = Self::empty();
        for (name, id) in BUILT_IN {
            names = names.with(*name, *id);
        }
        names
    }

    /// An empty table.
    pub fn empty() -> Self {
        Self {
            by_name: HashMap::new(),
        }
    }

    /// Maps `display_name` to `base_model_id` (replacing what the table had for that name).
    pub fn with(mut self, display_name: impl AsRef<str>, base_model_id: impl Into<String>) -> Self {
        self.by_name.insert(
            display_name.as_ref().to_ascii_lowercase(),
            vec![base_model_id.into()],
        );
        self
    }

    /// The base model ids of a display name.
    pub fn base_ids(&self, display_name: &str) -> Option<&[String]> {
        self.by_name
            .get(&display_name.to_ascii_lowercase())
            .map(Vec::as_slice)
    }

    /// The display names that map to `base_model_id` (for the emulator and the report).
    pub fn display_names(&self, base_model_id: &str) -> Vec<&str> {
        let mut names: Vec<&str> = BUILT_IN
            .iter()
            .filter(|(_, id)| *id == base_model_id)
            .map(|(name, _)| *name)
            .collect();
        if names.is_empty() {
            names = self
                .by_name
                .iter()
                .filter(|(_, ids)| ids.iter().any(|id| id == base_model_id))
                .map(|(name, _)| name.as_str())
                .collect();
        }
        names
    }

    /// The ids that calls of `scope` to the model named `display_name` use from `region`:
    /// the base id on demand, the region's geographic profile ids cross-region, the `global.`
    /// profile id for global cross-region. `None` for a name not in the table; an empty list
    /// for a scope that no request id identifies (latency-optimized, mantle, account).
    pub fn model_ids(
        &self,
        display_name: &str,
        scope: QuotaScope,
        region: &str,
    ) -> Option<Vec<String>> {
        let bases = self.base_ids(display_name)?;
        Some(
            bases
                .iter()
                .flat_map(|base| match scope {
                    QuotaScope::OnDemand => vec![base.clone()],
                    QuotaScope::CrossRegion => geo_prefixes(region)
                        .iter()
                        .map(|p| format!("{p}{base}"))
                        .collect(),
                    QuotaScope::GlobalCrossRegion => vec![format!("global.{base}")],
                    _ => Vec::new(),
                })
                .collect(),
        )
    }
}

/// The geographic inference-profile prefixes usable from `region` (late 2026: `us`,
/// `us-gov`, `eu`, `apac`, `jp`, `au`, `kr`, `in`, `ca`, `sa`, `il`, `mx`).
pub(crate) fn geo_prefixes(region: &str) -> &'static [&'static str] {
    if region.starts_with("us-gov-") {
        &["us-gov."]
    } else if region.starts_with("us-") {
        &["us."]
    } else if region.starts_with("eu-") {
        &["eu."]
    } else if matches!(region, "ap-northeast-1" | "ap-northeast-3") {
        &["apac.", "jp."]
    } else if matches!(region, "ap-southeast-2" | "ap-southeast-4") {
        &["apac.", "au."]
    } else if region == "ap-northeast-2" {
        &["apac.", "kr."]
    } else if matches!(region, "ap-south-1" | "ap-south-2") {
        &["apac.", "in."]
    } else if region.starts_with("ap-") {
        &["apac."]
    } else if region.starts_with("ca-") {
        &["ca."]
    } else if region.starts_with("sa-") {
        &["sa."]
    } else if region.starts_with("il-") {
        &["il."]
    } else if region.starts_with("mx-") {
        &["mx."]
    } else {
        &[]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_geo_prefix_of_late_2026_has_a_region() {
        for (region, prefix) in [
            ("ca-central-1", "ca."),
            ("sa-east-1", "sa."),
            ("ap-northeast-2", "kr."),
            ("ap-south-1", "in."),
            ("il-central-1", "il."),
            ("mx-central-1", "mx."),
            ("ap-northeast-1", "jp."),
            ("ap-southeast-2", "au."),
        ] {
            assert!(geo_prefixes(region).contains(&prefix), "{region}");
            let id = format!("{prefix}anthropic.claude-sonnet-4-20250514-v1:0");
            assert_eq!(
                crate::bedrock::models::base_model_id(&id),
                "anthropic.claude-sonnet-4-20250514-v1:0"
            );
        }
    }
}
