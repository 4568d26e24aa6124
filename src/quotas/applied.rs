//! The applied quotas of an account and region, read from a Service Quotas listing.

use std::collections::BTreeMap;
use std::fmt;

use super::{ModelNames, QuotaKind, QuotaName, QuotaScope, parse_quota_name};
use crate::budget::Quota;

/// The largest value taken as a real quota (10¹² per minute or per day): anything larger is
/// reported as absurd, not used.
pub const MAX_SANE_VALUE: f64 = 1e12;

/// One quota of a listing, as Service Quotas returns it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ListedQuota {
    /// `QuotaCode` (`L-A50569E5`).
    pub code: String,
    /// `QuotaName`.
    pub name: String,
    /// `Value`.
    pub value: f64,
}

/// A quota of the listing that was not used, and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "issue", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum QuotaIssue {
    /// The name matches no known pattern.
    UnknownName {
        /// The quota.
        quota: ListedQuota,
    },
    /// The name's model display name is not in the [`ModelNames`] table.
    UnknownModel {
        /// The quota.
        quota: ListedQuota,
        /// The display name.
        model: String,
    },
    /// The value is zero, not an integer, negative or larger than [`MAX_SANE_VALUE`].
    AbsurdValue {
        /// The quota.
        quota: ListedQuota,
    },
    /// A quota the limiter's keys cannot express (latency-optimized, mantle, a context-length
    /// variant); kept for the report.
    NotApplied {
        /// The quota.
        quota: ListedQuota,
        /// Why.
        reason: &'static str,
    },
    /// The same quota (model id, scope and kind) is listed more than once, as when a listing
    /// carries it under both name patterns ("model inference" and "InvokeModel"). The smaller
    /// value is used: the server enforces one of them, and admitting above the lower one
    /// could be throttled.
    ListedTwice {
        /// The quota read second.
        quota: ListedQuota,
        /// The entry read before it for the same model id and kind.
        other: ListedQuota,
        /// The value used (the smaller of the two).
        used: u64,
    },
}

impl fmt::Display for QuotaIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuotaIssue::UnknownName { quota } => write!(
                f,
                "{} \"{}\" = {}: the name matches no known Bedrock quota pattern; not used",
                quota.code, quota.name, quota.value
            ),
            QuotaIssue::UnknownModel { quota, model } => write!(
                f,
                "{} \"{}\" = {}: model \"{model}\" is not in the display-name table \
                 (add it with ModelNames::with); not used",
                quota.code, quota.name, quota.value
            ),
            QuotaIssue::AbsurdValue { quota } => write!(
                f,
                "{} \"{}\" = {}: not a usable quota value; not used",
                quota.code, quota.name, quota.value
            ),
            QuotaIssue::NotApplied { quota, reason } => write!(
                f,
                "{} \"{}\" = {}: not applied ({reason})",
                quota.code, quota.name, quota.value
            ),
            QuotaIssue::ListedTwice { quota, other, used } => write!(
                f,
                "{} \"{}\" = {}: the same quota as {} \"{}\" = {}; the smaller, {used}, is used",
                quota.code, quota.name, quota.value, other.code, other.name, other.value
            ),
        }
    }
}

/// One applied quota that a model id draws on.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AppliedQuota {
    /// The quota as listed.
    pub quota: ListedQuota,
    /// The parsed name.
    pub parsed: QuotaName,
}

/// The applied Bedrock quotas of one account and region: per model id (the ids requests use),
/// the quota to admit on, and everything in the listing that could not be used.
///
/// ```
/// use bedrock_throttle::budget::Quota;
/// use bedrock_throttle::quotas::{AppliedQuotas, ListedQuota, ModelNames};
///
/// let listing = vec![
///     ListedQuota { code: "L-59759B4A".into(), name: "Cross-region model inference tokens per minute for Anthropic Claude Sonnet 4 V1".into(), value: 200_000.0 },
///     ListedQuota { code: "L-X".into(), name: "Cross-region model inference requests per minute for Anthropic Claude Sonnet 4 V1".into(), value: 0.5 },
///     ListedQuota { code: "L-Y".into(), name: "On-demand model inference tokens per minute for Someone's Model".into(), value: 1e6 },
/// ];
/// let applied = AppliedQuotas::from_listing("us-east-1", listing, &ModelNames::new());
/// assert_eq!(
///     applied.quota("us.anthropic.claude-sonnet-4-20250514-v1:0"),
///     Some(Quota::tokens(200_000))
/// );
/// assert_eq!(applied.issues().len(), 2); // a non-integer value, an unknown model
/// ```
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AppliedQuotas {
    region: String,
    #[serde(serialize_with = "quota_map")]
    quotas: BTreeMap<String, Quota>,
    sources: BTreeMap<String, Vec<AppliedQuota>>,
    account_tokens_per_day: Option<u64>,
    account: Option<AppliedQuota>,
    issues: Vec<QuotaIssue>,
}

/// A [`Quota`] as JSON shows it: `{"requests": .., "tokens": .., "tokens_per_day": ..}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct QuotaValues {
    /// Requests per window.
    pub requests: Option<u64>,
    /// Tokens per window.
    pub tokens: Option<u64>,
    /// Tokens per day.
    pub tokens_per_day: Option<u64>,
}

impl From<Quota> for QuotaValues {
    fn from(q: Quota) -> Self {
        QuotaValues {
            requests: q.requests,
            tokens: q.tokens,
            tokens_per_day: q.tokens_per_day,
        }
    }
}

fn quota_map<S: serde::Serializer>(
    map: &BTreeMap<String, Quota>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(map.iter().map(|(k, q)| (k, QuotaValues::from(*q))))
}

fn sane(value: f64) -> Option<u64> {
    (value.is_finite() && value >= 1.0 && value.fract() == 0.0 && value <= MAX_SANE_VALUE)
        .then_some(value as u64)
}

impl AppliedQuotas {
    /// Reads a listing of service code `bedrock` for `region`, mapping display names through
    /// `names`.
    pub fn from_listing(
        region: impl Into<String>,
        listing: impl IntoIterator<Item = ListedQuota>,
        names: &ModelNames,
    ) -> Self {
        let mut out = AppliedQuotas {
            region: region.into(),
            ..Self::default()
        };
        for quota in listing {
            let Some(parsed) = parse_quota_name(&quota.name) else {
                out.issues.push(QuotaIssue::UnknownName { quota });
                continue;
            };
            if parsed.scope == QuotaScope::Account {
                // An account-level limit of 0 is real (new accounts): it refuses every call.
                match sane(quota.value).or((quota.value == 0.0).then_some(0)) {
                    Some(value) => {
                        out.account_tokens_per_day = Some(value);
                        out.account = Some(AppliedQuota { quota, parsed });
                    }
                    None => out.issues.push(QuotaIssue::AbsurdValue { quota }),
                }
                continue;
            }
            let Some(value) = sane(quota.value) else {
                out.issues.push(QuotaIssue::AbsurdValue { quota });
                continue;
            };
            let not_applied = match (parsed.scope, &parsed.context_length) {
                (_, Some(_)) => {
                    Some("a context-length variant: the limiter does not key by context length")
                }
                (QuotaScope::LatencyOptimized, _) => {
                    Some("latency-optimized calls are not keyed apart from standard ones")
                }
                (QuotaScope::MantleInput | QuotaScope::MantleOutput, _) => {
                    Some("a bedrock-mantle endpoint quota")
                }
                _ => None,
            };
            if let Some(reason) = not_applied {
                out.issues.push(QuotaIssue::NotApplied { quota, reason });
                continue;
            }
            let model = parsed.model.clone().unwrap_or_default();
            // "Model invocation max tokens per day" holds for the model whichever id calls it.
            let scopes: &[QuotaScope] =
                if parsed.kind == QuotaKind::TokensPerDay && parsed.scope == QuotaScope::OnDemand {
                    &[QuotaScope::OnDemand, QuotaScope::CrossRegion]
                } else {
                    std::slice::from_ref(&parsed.scope)
                };
            let mut ids = Vec::new();
            for scope in scopes {
                match names.model_ids(&model, *scope, &out.region) {
                    Some(found) => ids.extend(found),
                    None => {
                        ids.clear();
                        break;
                    }
                }
            }
            if names.base_ids(&model).is_none() {
                out.issues.push(QuotaIssue::UnknownModel { quota, model });
                continue;
            }
            let mut twice = None;
            for id in ids {
                let entry = out.quotas.entry(id.clone()).or_default();
                let slot = match parsed.kind {
                    QuotaKind::TokensPerMinute => &mut entry.tokens,
                    QuotaKind::RequestsPerMinute => &mut entry.requests,
                    QuotaKind::TokensPerDay => &mut entry.tokens_per_day,
                    QuotaKind::AccountTokensPerDay => continue,
                };
                let sources = out.sources.entry(id).or_default();
                if let Some(previous) = *slot {
                    let used = previous.min(value);
                    *slot = Some(used);
                    // Reported once per listing entry, however many ids it maps to.
                    if twice.is_none() {
                        let other = sources
                            .iter()
                            .find(|s| s.parsed.kind == parsed.kind)
                            .map(|s| s.quota.clone());
                        twice = other.map(|other| (other, used));
                    }
                } else {
                    *slot = Some(value);
                }
                sources.push(AppliedQuota {
                    quota: quota.clone(),
                    parsed: parsed.clone(),
                });
            }
            if let Some((other, used)) = twice {
                out.issues
                    .push(QuotaIssue::ListedTwice { quota, other, used });
            }
        }
        out
    }

    /// The region the listing is for.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The applied quota of a model id (as requests send it), if the listing has one.
    pub fn quota(&self, model_id: &str) -> Option<Quota> {
        self.quotas.get(model_id).copied()
    }

    /// Every model id with an applied quota, and its quota.
    pub fn quotas(&self) -> impl Iterator<Item = (&str, Quota)> + '_ {
        self.quotas.iter().map(|(id, q)| (id.as_str(), *q))
    }

    /// The listed quotas a model id's quota came from.
    pub fn sources(&self, model_id: &str) -> &[AppliedQuota] {
        self.sources.get(model_id).map_or(&[], Vec::as_slice)
    }

    /// The account-level tokens per day, shared by every model of the region (Bedrock's
    /// "Cross-Model Max Tokens Per Day", code L-E3F10727, since 2026-09-21), if listed: the
    /// limit of the account scope, not of any model. May be 0 (a new account): then every
    /// call is refused.
    pub fn account_tokens_per_day(&self) -> Option<u64> {
        self.account_tokens_per_day
    }

    /// The listed quota [`account_tokens_per_day`](Self::account_tokens_per_day) came from.
    pub fn account_source(&self) -> Option<&AppliedQuota> {
        self.account.as_ref()
    }

    /// What in the listing was not used, and why.
    pub fn issues(&self) -> &[QuotaIssue] {
        &self.issues
    }

    /// Logs each issue as a `tracing` warning (the setup does this when it is given the
    /// quotas).
    pub fn warn_issues(&self) {
        for issue in &self.issues {
            match issue {
                QuotaIssue::NotApplied { .. } => {
                    tracing::debug!(region = %self.region, "service quota: {issue}")
                }
                _ => tracing::warn!(region = %self.region, "service quota: {issue}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(code: &str, name: &str, value: f64) -> ListedQuota {
        ListedQuota {
            code: code.into(),
            name: name.into(),
            value,
        }
    }

    /// Issue 21: a quota under both name patterns silently took the last entry.
    #[test]
    fn a_quota_listed_twice_is_an_issue_and_the_smaller_value_is_used() {
        let model = "Anthropic Claude Sonnet 4 V1";
        for (first, second) in [(200_000.0, 100_000.0), (100_000.0, 200_000.0)] {
            let listing = [
                listed(
                    "L-A",
                    &format!("Cross-region model inference tokens per minute for {model}"),
                    first,
                ),
                listed(
                    "L-B",
                    &format!("Cross-region InvokeModel tokens per minute for {model}"),
                    second,
                ),
                listed(
                    "L-C",
                    &format!("Cross-region model inference requests per minute for {model}"),
                    200.0,
                ),
            ];
            let applied = AppliedQuotas::from_listing("us-east-1", listing, &ModelNames::new());
            let quota = applied
                .quota("us.anthropic.claude-sonnet-4-20250514-v1:0")
                .unwrap();
            assert_eq!(quota.tokens, Some(100_000));
            assert_eq!(quota.requests, Some(200));
            let twice: Vec<&QuotaIssue> = applied
                .issues()
                .iter()
                .filter(|i| matches!(i, QuotaIssue::ListedTwice { .. }))
                .collect();
            assert_eq!(twice.len(), 1, "{:?}", applied.issues());
            let QuotaIssue::ListedTwice { quota, other, used } = twice[0] else {
                unreachable!()
            };
            assert_eq!((quota.code.as_str(), other.code.as_str()), ("L-B", "L-A"));
            assert_eq!(*used, 100_000);
            assert!(
                twice[0]
                    .to_string()
                    .contains("the smaller, 100000, is used")
            );
        }
    }

    /// The daily quota of a model reaches its on-demand and cross-region ids from one entry:
    /// that is not a duplicate.
    #[test]
    fn one_daily_entry_for_two_scopes_is_not_listed_twice() {
        let listing = [listed(
            "L-D",
            "Model invocation max tokens per day for Anthropic Claude Sonnet 4 V1",
            1e8,
        )];
        let applied = AppliedQuotas::from_listing("us-east-1", listing, &ModelNames::new());
        assert!(applied.issues().is_empty(), "{:?}", applied.issues());
    }
}
