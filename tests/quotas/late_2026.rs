//! Service Quotas as of December 2026: the account-wide "Cross-Model Max Tokens Per Day"
//! (L-E3F10727, possibly 0), the real codes of Claude Sonnet 4's cross-region and global quotas,
//! the quotas of the new models and geographic prefixes, and an unknown service code.

use bedrock_throttle::budget::Quota;
use bedrock_throttle::emulator::Emulator;
use bedrock_throttle::quotas::{
    AppliedQuotas, ListedQuota, ModelNames, QuotaKind, QuotaScope, ServiceQuotasError,
    parse_quota_name, quota_name,
};

use super::client;

const SONNET4_US: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";
const SONNET4_GLOBAL: &str = "global.anthropic.claude-sonnet-4-20250514-v1:0";

#[tokio::test]
async fn the_emulator_lists_real_codes_and_the_account_quota() {
    let emu = Emulator::builder()
        .model_quota(SONNET4_US, Quota::tokens(200_000).with_requests(200))
        .model_quota(SONNET4_GLOBAL, Quota::tokens(400_000).with_requests(400))
        .model_quota(
            "us.anthropic.claude-opus-4-8-20261015-v1:0",
            Quota::tokens(1_000_000),
        )
        .account_tokens_per_day(0)
        .mantle_quota(
            "anthropic.claude-opus-4-8-20261015-v1:0",
            10_000_000,
            2_000_000,
        )
        .start()
        .await
        .unwrap();
    let client = client(&emu.endpoint_url());
    let mut listed = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .list_service_quotas()
            .service_code("bedrock")
            .set_next_token(token.take())
            .send()
            .await
            .unwrap();
        listed.extend(page.quotas().iter().map(|q| {
            (
                q.quota_code().unwrap().to_owned(),
                q.quota_name().unwrap().to_owned(),
            )
        }));
        match page.next_token() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    let code = |name: &str| {
        listed
            .iter()
            .find(|(_, n)| n == name)
            .map(|(c, _)| c.as_str())
            .unwrap_or_else(|| panic!("{name} not listed: {listed:?}"))
    };
    let sonnet = "Anthropic Claude Sonnet 4 V1";
    assert_eq!(
        code(&quota_name(
            QuotaScope::CrossRegion,
            QuotaKind::TokensPerMinute,
            sonnet
        )),
        "L-59759B4A"
    );
    assert_eq!(
        code(&quota_name(
            QuotaScope::CrossRegion,
            QuotaKind::RequestsPerMinute,
            sonnet
        )),
        "L-559DCC33"
    );
    assert_eq!(
        code(&quota_name(
            QuotaScope::GlobalCrossRegion,
            QuotaKind::TokensPerMinute,
            sonnet
        )),
        "L-97E41E39"
    );
    assert_eq!(
        code(&quota_name(
            QuotaScope::GlobalCrossRegion,
            QuotaKind::RequestsPerMinute,
            sonnet
        )),
        "L-C63AA5DA"
    );
    assert_eq!(
        code("Cross-region model inference tokens per minute for Anthropic Claude Opus 4.8"),
        "L-DB99DCDB"
    );
    assert_eq!(code("Cross-Model Max Tokens Per Day"), "L-E3F10727");
    code("[bedrock-mantle endpoint] Input tokens per minute for Anthropic Claude Opus 4.8");
    code("[bedrock-mantle endpoint] Output tokens per minute for Anthropic Claude Opus 4.8");

    // Read back: the account-wide daily quota is its own entry, and 0 is a real value.
    let applied = AppliedQuotas::fetch(&client, &ModelNames::new())
        .await
        .unwrap();
    assert_eq!(applied.account_tokens_per_day(), Some(0));
    assert_eq!(applied.account_source().unwrap().quota.code, "L-E3F10727");
    assert!(
        applied
            .quota("us.anthropic.claude-opus-4-8-20261015-v1:0")
            .is_some()
    );
    // Only the mantle quotas are not applied (the limiter keys bedrock-runtime's quotas).
    assert_eq!(applied.issues().len(), 2, "{:?}", applied.issues());
    assert!(
        applied
            .issues()
            .iter()
            .all(|i| matches!(i, bedrock_throttle::quotas::QuotaIssue::NotApplied { .. }))
    );
}

#[tokio::test]
async fn an_unknown_service_code_is_a_typed_error() {
    let emu = Emulator::builder().start().await.unwrap();
    let client = client(&emu.endpoint_url());
    let err = AppliedQuotas::fetch_service(&client, "bedrok", &ModelNames::new())
        .await
        .unwrap_err();
    match &err {
        ServiceQuotasError::UnknownService {
            service_code,
            message,
        } => {
            assert_eq!(service_code, "bedrok");
            assert_eq!(
                message,
                "The request failed because the specified service does not exist."
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("bedrok"));
}

#[test]
fn every_name_and_prefix_of_late_2026() {
    let names = ModelNames::new();
    let listing = [
        (
            "L-A4430697",
            "Cross-region model inference tokens per minute for Anthropic Claude Opus 5.5",
            1e6,
        ),
        (
            "L-A103A344",
            "Global cross-region model inference tokens per minute for Anthropic Claude Opus 5.5",
            2e6,
        ),
        (
            "L-D4FBCF4E",
            "Cross-region model inference tokens per minute for Anthropic Claude Sonnet 5",
            6e6,
        ),
        (
            "L-DD84E5CA",
            "Global cross-region model inference tokens per minute for Anthropic Claude Sonnet 5",
            6e6,
        ),
        ("L-E3F10727", "Cross-Model Max Tokens Per Day", 7e8),
        (
            "L-MI",
            "[bedrock-mantle endpoint] Input tokens per minute for Anthropic Claude Sonnet 5",
            1e7,
        ),
        (
            "L-MO",
            "[bedrock-mantle endpoint] Output tokens per minute for Anthropic Claude Sonnet 5",
            2e6,
        ),
    ]
    .map(|(code, name, value)| ListedQuota {
        code: code.into(),
        name: name.into(),
        value,
    });
    for region in [
        "ca-central-1",
        "sa-east-1",
        "ap-northeast-2",
        "ap-south-1",
        "il-central-1",
        "mx-central-1",
    ] {
        let applied = AppliedQuotas::from_listing(region, listing.clone(), &names);
        let prefix = match region {
            "ca-central-1" => "ca.",
            "sa-east-1" => "sa.",
            "ap-northeast-2" => "kr.",
            "ap-south-1" => "in.",
            "il-central-1" => "il.",
            _ => "mx.",
        };
        let id = format!("{prefix}anthropic.claude-sonnet-5-20260917-v1:0");
        assert_eq!(
            applied.quota(&id),
            Some(Quota::tokens(6_000_000)),
            "{region}"
        );
        assert_eq!(
            applied.quota("global.anthropic.claude-opus-5-5-20261201-v1:0"),
            Some(Quota::tokens(2_000_000))
        );
        assert_eq!(applied.account_tokens_per_day(), Some(700_000_000));
    }
    let mantle = parse_quota_name(&listing[5].name).unwrap();
    assert_eq!(
        (mantle.scope, mantle.kind),
        (QuotaScope::MantleInput, QuotaKind::TokensPerMinute)
    );
}
