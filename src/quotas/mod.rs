//! The quotas applied to an account, from AWS Service Quotas: parsed, mapped to the model ids
//! requests use, and checked.
//!
//! # Why read them
//!
//! A limiter told a higher quota than the account has is throttled by the server; one told a
//! lower quota leaves capacity unused. Service Quotas knows the applied value, per region, for
//! every model and scope (on demand, cross-region, global cross-region). Its names carry the
//! model's *display name* (`Anthropic Claude Sonnet 4 V1`), not the id requests send, so a
//! table ([`ModelNames`], extensible) maps one to the other; a name that matches no pattern, a
//! display name not in the table, or an absurd value (zero, a fraction, a huge number) is
//! reported ([`QuotaIssue`]), never guessed or used.
//!
//! [`AppliedQuotas::fetch`] (feature `service-quotas`) lists them with the AWS SDK;
//! [`BedrockThrottleBuilder::applied_quotas`](crate::sdk::BedrockThrottleBuilder::applied_quotas)
//! configures a throttle from them in one call, with anything the user sets taking precedence.
//!
//! ```
//! use bedrock_throttle::quotas::{AppliedQuotas, ListedQuota, ModelNames, QuotaIssue};
//!
//! let listing = [
//!     ("L-CFA4FA0D", "On-demand model inference tokens per minute for Amazon Nova Micro", 2_000_000.0),
//!     ("L-E3F10727", "Cross-Model Max Tokens Per Day", 7e8),
//!     ("L-2", "Imported models per account", 3.0),
//! ]
//! .map(|(code, name, value)| ListedQuota { code: code.into(), name: name.into(), value });
//! let applied = AppliedQuotas::from_listing("us-east-1", listing, &ModelNames::new());
//! assert_eq!(applied.quota("amazon.nova-micro-v1:0").unwrap().tokens, Some(2_000_000));
//! assert_eq!(applied.account_tokens_per_day(), Some(700_000_000));
//! assert!(matches!(applied.issues()[0], QuotaIssue::UnknownName { .. }));
//! ```

mod applied;
#[cfg(feature = "service-quotas")]
mod fetch;
mod name;
mod table;

pub use self::applied::{
    AppliedQuota, AppliedQuotas, ListedQuota, MAX_SANE_VALUE, QuotaIssue, QuotaValues,
};
#[cfg(feature = "service-quotas")]
pub use self::fetch::ServiceQuotasError;
pub use self::name::{QuotaKind, QuotaName, QuotaScope, parse_quota_name, quota_name};
pub use self::table::ModelNames;
