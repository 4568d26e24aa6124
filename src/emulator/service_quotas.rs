//! The Service Quotas API (`ListServiceQuotas`, `GetServiceQuota`) for service code `bedrock`,
//! served from the emulator's configured quotas in the real awsJson1_1 wire format, with the
//! names Service Quotas gives those models' quotas.
//!
//! A model's display name comes from the shared [`ModelNames`] table (data, not logic: the
//! client parses names with its own code); a model the table does not know is listed under its
//! id, which a client reports as an unknown display name, as it would for real.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::server::{Body, Shared, full};
use crate::bedrock::models::base_model_id;
use crate::quotas::{ListedQuota, ModelNames, QuotaKind, QuotaScope, quota_name};

/// The `X-Amz-Target` prefix of the Service Quotas API.
const TARGET_PREFIX: &str = "ServiceQuotasV20190624.";

/// Quotas per page when the request does not say (small, so clients meet pagination).
const DEFAULT_PAGE: usize = 5;

/// Codes seen in real listings, so that the emulator's match.
const KNOWN_CODES: &[(&str, &str)] = &[
    (
        "On-demand model inference tokens per minute for Anthropic Claude 3.5 Sonnet",
        "L-A50569E5",
    ),
    (
        "Global cross-region model inference tokens per minute for Anthropic Claude Sonnet 4.5 V1",
        "L-27C57EE8",
    ),
    (
        "Cross-region model inference requests per minute for Anthropic Claude Sonnet 4.5 V1",
        "L-4A6BFAB1",
    ),
    (
        "Cross-region model inference tokens per minute for Anthropic Claude Haiku 4.5",
        "L-58BE175A",
    ),
    (
        "Cross-region model inference tokens per minute for Anthropic Claude Sonnet 4 V1",
        "L-59759B4A",
    ),
    (
        "Model invocation max tokens per day for Anthropic Claude Sonnet 4.5 V1",
        "L-381AD9EE",
    ),
    (
        "On-demand model inference tokens per minute for Amazon Nova Micro",
        "L-CFA4FA0D",
    ),
    (
        "On-demand model inference tokens per minute for Amazon Nova Lite",
        "L-70423BF8",
    ),
    (
        "Cross-region model inference tokens per minute for Amazon Nova Lite",
        "L-7C42E72A",
    ),
    (
        "Cross-region model inference requests per minute for Anthropic Claude Sonnet 4 V1",
        "L-559DCC33",
    ),
    (
        "Global cross-region model inference tokens per minute for Anthropic Claude Sonnet 4 V1",
        "L-97E41E39",
    ),
    (
        "Global cross-region model inference requests per minute for Anthropic Claude Sonnet 4 V1",
        "L-C63AA5DA",
    ),
    (
        "Global cross-region model inference tokens per minute for Anthropic Claude Haiku 4.5",
        "L-9A11C666",
    ),
    (
        "Cross-region model inference tokens per minute for Anthropic Claude Opus 5.5",
        "L-A4430697",
    ),
    (
        "Global cross-region model inference tokens per minute for Anthropic Claude Opus 5.5",
        "L-A103A344",
    ),
    (
        "Cross-region model inference tokens per minute for Anthropic Claude Opus 5",
        "L-99296DCD",
    ),
    (
        "Global cross-region model inference tokens per minute for Anthropic Claude Opus 5",
        "L-D73B1244",
    ),
    (
        "Cross-region model inference tokens per minute for Anthropic Claude Opus 4.8",
        "L-DB99DCDB",
    ),
    (
        "Global cross-region model inference tokens per minute for Anthropic Claude Opus 4.8",
        "L-4FCE27C7",
    ),
    (
        "Cross-region model inference tokens per minute for Anthropic Claude Sonnet 5",
        "L-D4FBCF4E",
    ),
    (
        "Global cross-region model inference tokens per minute for Anthropic Claude Sonnet 5",
        "L-DD84E5CA",
    ),
    (ACCOUNT_DAILY_NAME, ACCOUNT_DAILY_CODE),
];

/// The account-wide daily quota's name and code (since 2026-09-21).
const ACCOUNT_DAILY_NAME: &str = "Cross-Model Max Tokens Per Day";
const ACCOUNT_DAILY_CODE: &str = "L-E3F10727";

/// Whether a request is a Service Quotas call (`X-Amz-Target: ServiceQuotasV20190624.*`).
pub(crate) fn is_service_quotas(req: &Request<Incoming>) -> bool {
    req.headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with(TARGET_PREFIX))
}

/// A stable code for a name not in [`KNOWN_CODES`] (FNV-1a, like `L-` and 8 hex digits).
fn code_of(name: &str) -> String {
    if let Some((_, code)) = KNOWN_CODES.iter().find(|(n, _)| *n == name) {
        return (*code).to_owned();
    }
    let hash = name.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("L-{hash:08X}")
}

/// The listing, sorted by name: one quota per configured dimension of each configured model,
/// then the configured extra entries.
pub(crate) fn listing(shared: &Shared) -> Vec<ListedQuota> {
    let names = ModelNames::new();
    let mut by_name = BTreeMap::new();
    for (id, quota) in &shared.config.model_quotas {
        let base = base_model_id(id);
        let scope = QuotaScope::of_model_id(id);
        let display = names
            .display_names(base)
            .first()
            .map_or_else(|| id.clone(), |n| (*n).to_owned());
        let dims = [
            (QuotaKind::TokensPerMinute, quota.tokens),
            (QuotaKind::RequestsPerMinute, quota.requests),
            (QuotaKind::TokensPerDay, quota.tokens_per_day),
        ];
        for (kind, value) in dims {
            let Some(value) = value else { continue };
            // The daily quota of a geographic profile is the model's ("Model invocation max
            // tokens per day"), listed once.
            let scope = match (scope, kind) {
                (QuotaScope::CrossRegion, QuotaKind::TokensPerDay) => QuotaScope::OnDemand,
                _ => scope,
            };
            let name = quota_name(scope, kind, &display);
            by_name.insert(name.clone(), value as f64);
        }
    }
    for (id, q) in &shared.config.mantle_quotas {
        let display = names
            .display_names(base_model_id(id))
            .first()
            .map_or_else(|| id.clone(), |n| (*n).to_owned());
        for (scope, value) in [
            (QuotaScope::MantleInput, q.input),
            (QuotaScope::MantleOutput, q.output),
        ] {
            let name = quota_name(scope, QuotaKind::TokensPerMinute, &display);
            by_name.insert(name, value as f64);
        }
    }
    if let Some(limit) = shared.config.account_tokens_per_day {
        by_name.insert(ACCOUNT_DAILY_NAME.to_owned(), limit as f64);
    }
    for extra in &shared.config.extra_service_quotas {
        by_name.insert(extra.name.clone(), extra.value);
    }
    let mut out: Vec<ListedQuota> = by_name
        .into_iter()
        .map(|(name, value)| ListedQuota {
            code: code_of(&name),
            name,
            value,
        })
        .collect();
    // Extra entries keep the code they were given.
    for extra in &shared.config.extra_service_quotas {
        if let Some(q) = out.iter_mut().find(|q| q.name == extra.name) {
            q.code = extra.code.clone();
        }
    }
    out
}

fn quota_json(q: &ListedQuota) -> Value {
    json!({
        "ServiceCode": "bedrock",
        "ServiceName": "Amazon Bedrock",
        "QuotaArn": format!("arn:aws:servicequotas:us-east-1:123456789012:bedrock/{}", q.code),
        "QuotaCode": q.code,
        "QuotaName": q.name,
        "Value": q.value,
        "Unit": "None",
        "Adjustable": true,
        "GlobalQuota": false,
    })
}

fn answer(status: StatusCode, body: Value) -> Response<Body> {
    let mut res = Response::new(full(Bytes::from(body.to_string())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    res
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response<Body> {
    let mut res = answer(status, json!({ "__type": kind, "message": message }));
    if let Ok(v) = HeaderValue::from_str(kind) {
        res.headers_mut().insert("x-amzn-errortype", v);
    }
    res
}

/// Answers one Service Quotas call.
pub(crate) async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    use http_body_util::BodyExt;
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.strip_prefix(TARGET_PREFIX))
        .unwrap_or_default()
        .to_owned();
    let body = match http_body_util::Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "IllegalArgumentException",
                "bad body",
            );
        }
    };
    let input: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "SerializationException",
                "the body is not a JSON object",
            );
        }
    };
    let service = input["ServiceCode"].as_str().unwrap_or_default();
    if service != "bedrock" {
        // As Service Quotas answers a service code it does not know (the emulator knows one).
        return error(
            StatusCode::BAD_REQUEST,
            "NoSuchResourceException",
            "The request failed because the specified service does not exist.",
        );
    }
    let quotas = listing(shared);
    match target.as_str() {
        "ListServiceQuotas" => {
            let start = match input.get("NextToken").and_then(Value::as_str) {
                None => 0,
                Some(t) => match t.parse::<usize>() {
                    Ok(n) if n <= quotas.len() => n,
                    _ => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "InvalidPaginationTokenException",
                            "Invalid pagination token.",
                        );
                    }
                },
            };
            let page = input
                .get("MaxResults")
                .and_then(Value::as_u64)
                .map_or(DEFAULT_PAGE, |n| n.clamp(1, 100) as usize);
            let end = start.saturating_add(page).min(quotas.len());
            let mut out = json!({
                "Quotas": quotas[start..end].iter().map(quota_json).collect::<Vec<_>>(),
            });
            if end < quotas.len() {
                out["NextToken"] = json!(end.to_string());
            }
            answer(StatusCode::OK, out)
        }
        "GetServiceQuota" => {
            let code = input["QuotaCode"].as_str().unwrap_or_default();
            match quotas.iter().find(|q| q.code == code) {
                Some(q) => answer(StatusCode::OK, json!({ "Quota": quota_json(q) })),
                None => error(
                    StatusCode::BAD_REQUEST,
                    "NoSuchResourceException",
                    &format!(
                        "The request failed because the specified quota {code} does not exist."
                    ),
                ),
            }
        }
        other => error(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            &format!("Unknown operation ServiceQuotasV20190624.{other}"),
        ),
    }
}

impl super::EmulatorBuilder {
    /// Adds an entry to the emulator's Service Quotas listing beside those of its configured
    /// quotas (any name and value, for tests of names and values a client must reject).
    pub fn service_quota(
        mut self,
        code: impl Into<String>,
        name: impl Into<String>,
        value: f64,
    ) -> Self {
        self.config.extra_service_quotas.push(ListedQuota {
            code: code.into(),
            name: name.into(),
            value,
        });
        self
    }
}
