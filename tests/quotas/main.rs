//! Service Quotas: the real `aws-sdk-servicequotas` client against the emulator's listing
//! (several pages, every name pattern, unknown names, absurd values), the setup configured
//! from it, and the typed errors when Service Quotas is unreachable or denies access.

#![cfg(all(feature = "service-quotas", feature = "emulator"))]

use aws_sdk_servicequotas::config::{BehaviorVersion, Credentials, Region};
use bedrock_throttle::budget::Quota as Limits;
use bedrock_throttle::budget::Quota;
use bedrock_throttle::emulator::{Emulator, EmulatorHandle};
use bedrock_throttle::quotas::{
    AppliedQuotas, ModelNames, QuotaIssue, QuotaKind, QuotaScope, ServiceQuotasError,
    parse_quota_name,
};
use bedrock_throttle::sdk::BedrockThrottle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SONNET4_US: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";
const SONNET4: &str = "anthropic.claude-sonnet-4-20250514-v1:0";
const SONNET45_GLOBAL: &str = "global.anthropic.claude-sonnet-4-5-20250929-v1:0";
const NOVA_MICRO: &str = "amazon.nova-micro-v1:0";

mod late_2026;

fn client(endpoint: &str) -> aws_sdk_servicequotas::Client {
    let config = aws_sdk_servicequotas::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AK", "SK", None, None, "test"))
        .endpoint_url(endpoint)
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .retry_config(aws_sdk_servicequotas::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_servicequotas::Client::from_conf(config)
}

async fn emulator() -> EmulatorHandle {
    Emulator::builder()
        .model_quota(SONNET4_US, Quota::tokens(200_000).with_requests(200))
        .model_quota(SONNET4, Quota::tokens(100_000).with_tokens_per_day(144_000_000))
        .model_quota(SONNET45_GLOBAL, Quota::tokens(500_000))
        .model_quota(NOVA_MICRO, Quota::tokens(2_000_000))
        .model_quota("acme.unlisted-model-v1:0", Quota::tokens(1_000))
        .service_quota(
            "L-CTX",
            "Cross-region model inference tokens per minute for Anthropic Claude Sonnet 4 V1 1M Context Length",
            50_000.0,
        )
        .service_quota(
            "L-LAT",
            "On-Demand, latency-optimized model inference tokens per minute for Amazon Nova Pro V1",
            100_000.0,
        )
        .service_quota("L-ACC", "Cross-Model Account-Level Tokens Per Day", 1e9)
        .service_quota(
            "L-MIN",
            "[bedrock-mantle endpoint] Input tokens per minute for Anthropic Claude Opus 4.7",
            10_000_000.0,
        )
        .service_quota(
            "L-MOUT",
            "[bedrock-mantle endpoint] Output tokens per minute for Anthropic Claude Opus 4.7",
            2_000_000.0,
        )
        .service_quota(
            "L-OLD",
            "On-demand InvokeModel requests per minute for Anthropic Claude 3 Haiku",
            400.0,
        )
        .service_quota("L-UNK", "Custom models per account", 100.0)
        .service_quota(
            "L-ZERO",
            "On-demand model inference tokens per minute for Amazon Nova Lite",
            0.0,
        )
        .service_quota(
            "L-FRAC",
            "On-demand model inference requests per minute for Amazon Nova Lite",
            12.5,
        )
        .service_quota(
            "L-HUGE",
            "Cross-region model inference tokens per minute for Amazon Nova Lite",
            1e18,
        )
        .start()
        .await
        .expect("emulator")
}

#[tokio::test]
async fn the_real_client_reads_every_page_and_pattern() {
    let emu = emulator().await;
    let client = client(&emu.endpoint_url());

    // Several pages: the emulator pages by 5 unless asked.
    let first = client
        .list_service_quotas()
        .service_code("bedrock")
        .send()
        .await
        .unwrap();
    assert_eq!(first.quotas().len(), 5);
    assert!(first.next_token().is_some());
    let all: Vec<_> = client
        .list_service_quotas()
        .service_code("bedrock")
        .max_results(3)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap();
    assert!(all.len() > 15, "{}", all.len());

    // The names the emulator gives its configured quotas parse back to what was configured.
    let name_of = |code_or_name: &str| {
        all.iter()
            .find(|q| q.quota_name() == Some(code_or_name))
            .unwrap_or_else(|| panic!("{code_or_name} not listed"))
            .clone()
    };
    let tpm =
        name_of("Cross-region model inference tokens per minute for Anthropic Claude Sonnet 4 V1");
    assert_eq!(tpm.quota_code(), Some("L-59759B4A"));
    assert_eq!(tpm.value(), Some(200_000.0));
    let parsed = parse_quota_name(tpm.quota_name().unwrap()).unwrap();
    assert_eq!(
        (parsed.scope, parsed.kind),
        (QuotaScope::CrossRegion, QuotaKind::TokensPerMinute)
    );

    // GetServiceQuota by code, and a code that does not exist.
    let got = client
        .get_service_quota()
        .service_code("bedrock")
        .quota_code("L-59759B4A")
        .send()
        .await
        .unwrap();
    assert_eq!(got.quota().unwrap().value(), Some(200_000.0));
    let missing = client
        .get_service_quota()
        .service_code("bedrock")
        .quota_code("L-NOPE")
        .send()
        .await
        .unwrap_err();
    assert!(missing.into_service_error().is_no_such_resource_exception());

    // The whole path, as a user runs it.
    let applied = AppliedQuotas::fetch(&client, &ModelNames::new())
        .await
        .unwrap();
    assert_eq!(applied.region(), "us-east-1");
    assert_eq!(
        applied.quota(SONNET4_US),
        Some(
            Limits::tokens(200_000)
                .with_requests(200)
                .with_tokens_per_day(144_000_000)
        )
    );
    assert_eq!(
        applied.quota(SONNET4),
        Some(Limits::tokens(100_000).with_tokens_per_day(144_000_000))
    );
    assert_eq!(
        applied.quota(SONNET45_GLOBAL),
        Some(Limits::tokens(500_000))
    );
    assert_eq!(applied.quota(NOVA_MICRO), Some(Limits::tokens(2_000_000)));
    assert_eq!(
        applied.quota("anthropic.claude-3-haiku-20240307-v1:0"),
        Some(Limits::requests(400))
    );
    assert_eq!(applied.account_tokens_per_day(), Some(1_000_000_000));
    // Nothing absurd was used.
    assert_eq!(applied.quota("amazon.nova-lite-v1:0"), None);
    assert_eq!(applied.quota("us.amazon.nova-lite-v1:0"), None);

    let codes = |f: fn(&QuotaIssue) -> bool| {
        let mut c: Vec<String> = applied
            .issues()
            .iter()
            .filter(|i| f(i))
            .map(|i| match i {
                QuotaIssue::UnknownName { quota }
                | QuotaIssue::UnknownModel { quota, .. }
                | QuotaIssue::AbsurdValue { quota }
                | QuotaIssue::NotApplied { quota, .. } => quota.code.clone(),
                _ => unreachable!(),
            })
            .collect();
        c.sort();
        c
    };
    assert_eq!(
        codes(|i| matches!(i, QuotaIssue::UnknownName { .. })),
        ["L-UNK"]
    );
    assert_eq!(
        codes(|i| matches!(i, QuotaIssue::AbsurdValue { .. })),
        ["L-FRAC", "L-HUGE", "L-ZERO"]
    );
    assert_eq!(
        codes(|i| matches!(i, QuotaIssue::NotApplied { .. })),
        ["L-CTX", "L-LAT", "L-MIN", "L-MOUT"]
    );
    // The account-level daily quota is the account scope's, not a model's, and not an issue.
    assert_eq!(
        applied.account_source().map(|q| q.quota.code.as_str()),
        Some("L-ACC")
    );
    // The model the table does not know is reported under its display name (its id, here).
    assert_eq!(
        codes(|i| matches!(i, QuotaIssue::UnknownModel { .. })).len(),
        1
    );

    // A user-extended table resolves it.
    let names = ModelNames::new().with("acme.unlisted-model-v1:0", "acme.unlisted-model-v1:0");
    let extended = AppliedQuotas::fetch(&client, &names).await.unwrap();
    assert_eq!(
        extended.quota("acme.unlisted-model-v1:0"),
        Some(Limits::tokens(1_000))
    );

    // The setup takes them in one call: the applied quota where the user set nothing, the
    // user's limit where it did (here above the applied one, which the report shows).
    let throttle = BedrockThrottle::builder()
        .quota(SONNET4_US, Limits::tokens(300_000))
        .applied_quotas(applied)
        .build()
        .unwrap();
    assert!(throttle.applied_quotas().is_some());
    let config = throttle.configure(
        aws_sdk_bedrockruntime::config::Builder::new()
            .behavior_version(aws_sdk_bedrockruntime::config::BehaviorVersion::latest())
            .region(aws_sdk_bedrockruntime::config::Region::new("us-east-1"))
            .endpoint_url(emu.endpoint_url())
            .credentials_provider(Credentials::new("AK", "SK", None, None, "test")),
    );
    let bedrock = aws_sdk_bedrockruntime::Client::from_conf(config.build());
    // Llama has no applied quota: reported, and it still passes (configuration only).
    for model in [SONNET4_US, "meta.llama3-8b-instruct-v1:0"] {
        bedrock
            .converse()
            .model_id(model)
            .messages(
                aws_sdk_bedrockruntime::types::Message::builder()
                    .role(aws_sdk_bedrockruntime::types::ConversationRole::User)
                    .content(aws_sdk_bedrockruntime::types::ContentBlock::Text(
                        "hi".into(),
                    ))
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
    }
    let report = throttle.report();
    let key = |model: &str| {
        report
            .keys
            .iter()
            .find(|k| k.model.as_deref() == Some(model))
            .unwrap_or_else(|| panic!("{model} not in the report"))
    };
    let sonnet = key(SONNET4_US);
    assert_eq!(sonnet.limits.configured.tokens, Some(300_000));
    assert_eq!(sonnet.limits.configured.requests, Some(200)); // from the applied quota
    assert_eq!(sonnet.limits.applied.unwrap().tokens, Some(200_000));
    assert!(
        sonnet
            .warnings
            .iter()
            .any(|w| w.contains("above the applied quota of 200000")),
        "{:?}",
        sonnet.warnings
    );
    // Llama has no quota of any kind: counted in `other` (bounded observation), which names it.
    assert!(
        report
            .keys
            .iter()
            .all(|k| k.model.as_deref() != Some("meta.llama3-8b-instruct-v1:0"))
    );
    let other = report
        .keys
        .iter()
        .find(|k| k.key == "other")
        .expect("other");
    assert!(
        other
            .warnings
            .iter()
            .any(|w| w.contains("meta.llama3-8b-instruct-v1:0")),
        "{:?}",
        other.warnings
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn unreachable_and_access_denied_are_typed_errors() {
    // Nothing listens on this port once the listener is dropped.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = AppliedQuotas::fetch(&client(&format!("http://{addr}")), &ModelNames::new())
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceQuotasError::Unreachable(_)), "{err:?}");
    assert!(err.to_string().contains("unreachable"));

    // A server that denies access, in the awsJson1_1 error format.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = vec![0u8; 64 * 1024];
            let _ = stream.read(&mut buf).await;
            let body = r#"{"__type":"AccessDeniedException","message":"User is not authorized to perform servicequotas:ListServiceQuotas"}"#;
            let response = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/x-amz-json-1.1\r\n\
                 x-amzn-errortype: AccessDeniedException\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        }
    });
    let err = AppliedQuotas::fetch(&client(&format!("http://{addr}")), &ModelNames::new())
        .await
        .unwrap_err();
    match &err {
        ServiceQuotasError::AccessDenied { message } => {
            assert!(message.contains("not authorized"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // The configured quotas still work without them.
    let throttle = BedrockThrottle::builder()
        .quota(SONNET4_US, Limits::tokens(1_000))
        .build()
        .unwrap();
    assert!(throttle.applied_quotas().is_none());
}
