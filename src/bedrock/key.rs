//! Which quota a request draws on: the region and the decoded model id, read from the URI.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// The quota key of a Bedrock request: region plus model id (as sent, percent-decoded once).
///
/// Cheap to clone (two `Arc<str>`). Displays as `region/model`.
///
/// ```
/// use bedrock_throttle::bedrock::BedrockKey;
///
/// let key = BedrockKey::new("us-east-1", "us.anthropic.claude-sonnet-4-5-20250929-v1:0");
/// assert_eq!(key.to_string(), "us-east-1/us.anthropic.claude-sonnet-4-5-20250929-v1:0");
/// ```
///
/// # Which quota a request draws on: the region and the decoded model id, read from the URI
///
/// Bedrock's quotas are per (region, model) and shared by InvokeModel, Converse and their
/// streaming variants, so the operation is NOT part of the key. A cross-region inference profile
/// (`us.anthropic...`) draws on its own quota, so its id is kept as is, prefix included.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BedrockKey {
    /// The AWS region, e.g. `us-east-1`.
    pub region: Arc<str>,
    /// The model id, inference profile id or ARN, percent-decoded. Empty for requests that name
    /// no model (ApplyGuardrail, unknown paths): see [`BedrockKey::has_model`].
    pub model: Arc<str>,
}

impl BedrockKey {
    /// A key for `model` in `region`.
    pub fn new(region: impl Into<Arc<str>>, model: impl Into<Arc<str>>) -> Self {
        Self {
            region: region.into(),
            model: model.into(),
        }
    }

    /// The region.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The model id (empty when the request names no model).
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Whether the request named a model. Requests that do not (ApplyGuardrail, paths this crate
    /// does not know) draw on no model quota and are estimated at zero tokens.
    pub fn has_model(&self) -> bool {
        !self.model.is_empty() && !self.is_account()
    }

    /// The account-and-region scope of `account_id` in `region`: the key of the quotas an
    /// account has in a region across every model ("Cross-Model Max Tokens Per Day" since
    /// 2026-09). A request is charged to it besides its model's key (see
    /// [`Bedrock::with_account`](super::Bedrock::with_account)). Its model part is
    /// `account:<id>`, which no model id, profile id or ARN starts with.
    ///
    /// ```
    /// use bedrock_throttle::bedrock::BedrockKey;
    ///
    /// let key = BedrockKey::account("us-east-1", "123456789012");
    /// assert!(key.is_account() && !key.has_model());
    /// assert_eq!(key.account_id(), Some("123456789012"));
    /// assert_eq!(key.to_string(), "us-east-1/account:123456789012");
    /// ```
    pub fn account(region: impl Into<Arc<str>>, account_id: &str) -> Self {
        Self {
            region: region.into(),
            model: Arc::from(format!("{ACCOUNT_PREFIX}{account_id}")),
        }
    }

    /// Whether this is an account-and-region scope ([`account`](Self::account)).
    pub fn is_account(&self) -> bool {
        self.model.starts_with(ACCOUNT_PREFIX)
    }

    /// The account id of an account-and-region scope.
    pub fn account_id(&self) -> Option<&str> {
        self.model.strip_prefix(ACCOUNT_PREFIX)
    }
}

/// The model part of an account-and-region key.
const ACCOUNT_PREFIX: &str = "account:";

impl fmt::Display for BedrockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.region, self.model)
    }
}

/// The Bedrock Runtime operation of a request, from the last segment of its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// `POST /model/{id}/invoke`
    InvokeModel,
    /// `POST /model/{id}/invoke-with-response-stream`
    InvokeModelWithResponseStream,
    /// `POST /model/{id}/converse`
    Converse,
    /// `POST /model/{id}/converse-stream`
    ConverseStream,
    /// `POST /model/{id}/count-tokens`: not charged against the tokens-per-minute quota.
    CountTokens,
    /// `POST /openai/v1/chat/completions` (OpenAI-compatible; the model is the body's
    /// `model`): the same per-model quota as Converse.
    ChatCompletions,
    /// `POST /openai/v1/responses` (OpenAI-compatible; the model is the body's `model`).
    Responses,
    /// Anything else (ApplyGuardrail, unknown paths): no model quota.
    Other,
}

impl Operation {
    /// The operation named by the last path segment after the model id.
    pub fn from_suffix(suffix: &str) -> Self {
        match suffix {
            "invoke" => Self::InvokeModel,
            "invoke-with-response-stream" => Self::InvokeModelWithResponseStream,
            "converse" => Self::Converse,
            "converse-stream" => Self::ConverseStream,
            "count-tokens" => Self::CountTokens,
            _ => Self::Other,
        }
    }

    /// Whether the operation draws on the model's token quota (the two Invoke, the two
    /// Converse and the two OpenAI-compatible operations).
    pub fn uses_token_quota(self) -> bool {
        matches!(
            self,
            Self::InvokeModel
                | Self::InvokeModelWithResponseStream
                | Self::Converse
                | Self::ConverseStream
                | Self::ChatCompletions
                | Self::Responses
        )
    }

    /// Whether the model is named by the body's `model` (the OpenAI-compatible APIs) rather
    /// than by the path.
    pub fn is_openai(self) -> bool {
        matches!(self, Self::ChatCompletions | Self::Responses)
    }

    /// Whether the response is an event stream.
    pub fn is_streaming(self) -> bool {
        matches!(
            self,
            Self::InvokeModelWithResponseStream | Self::ConverseStream
        )
    }

    /// Whether the body is a Converse request (`messages`, `system`, `inferenceConfig` ...)
    /// rather than the model's native format.
    pub fn is_converse(self) -> bool {
        matches!(self, Self::Converse | Self::ConverseStream)
    }
}

/// What a request path says: the operation and, for model operations, the model id as it
/// appears in the path (percent-encoded). The model id is the part between `/model/` and the
/// last `/`, so both encoded ids and unencoded ARNs with a raw `/` are read whole; a path prefix
/// before `/model/` (custom endpoints) is allowed.
pub(crate) fn split_path(path: &str) -> (Operation, Option<&str>) {
    // Almost every path starts with `/model/`: skip the substring search for those.
    let rest = match path.strip_prefix("/model/") {
        Some(rest) => rest,
        None => match path.find("/model/") {
            Some(start) => &path[start + "/model/".len()..],
            None => {
                let op = super::openai::operation_of(path).unwrap_or(Operation::Other);
                return (op, None);
            }
        },
    };
    let Some((encoded, suffix)) = rest.rsplit_once('/') else {
        return (Operation::Other, None);
    };
    let operation = Operation::from_suffix(suffix);
    if operation == Operation::Other || encoded.is_empty() {
        return (Operation::Other, None);
    }
    (operation, Some(encoded))
}

/// Percent-decodes `encoded` once, as `percent_encoding::percent_decode_str` does (a `%` not
/// followed by two hex digits stays as it is; invalid UTF-8 is replaced), without its
/// byte-at-a-time `Vec::push` (`Bedrock` caches the result per model id).
pub(crate) fn percent_decode(encoded: &str) -> Cow<'_, str> {
    let bytes = encoded.as_bytes();
    let Some(first) = bytes.iter().position(|&b| b == b'%') else {
        return Cow::Borrowed(encoded);
    };
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..first]);
    let mut i = first;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%'
            && let Some(&[hi, lo]) = bytes.get(i + 1..i + 3)
            && let (Some(hi), Some(lo)) = (hex(hi), hex(lo))
        {
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    match String::from_utf8(out) {
        Ok(decoded) => Cow::Owned(decoded),
        Err(error) => Cow::Owned(String::from_utf8_lossy(error.as_bytes()).into_owned()),
    }
}

/// The region named by a Bedrock Runtime host name, if it is one.
///
/// Recognizes `bedrock-runtime.{region}.amazonaws.com`, `bedrock-runtime-fips.{region}...`,
/// the dual-stack `bedrock-runtime.{region}.api.aws`, China (`.amazonaws.com.cn`) and VPC
/// endpoint names (`vpce-....bedrock-runtime.{region}.vpce.amazonaws.com`). A port is ignored.
/// (`regions_from_hosts` below.)
pub(crate) fn region_from_host(host: &str) -> Option<&str> {
    let host = strip_port(host);
    let host = host.strip_suffix('.').unwrap_or(host);
    let suffix_ok = [".amazonaws.com", ".amazonaws.com.cn", ".api.aws"]
        .iter()
        .any(|suffix| ends_with_ignore_case(host, suffix));
    if !suffix_ok {
        return None;
    }
    let mut labels = host.split('.');
    while let Some(label) = labels.next() {
        if label.eq_ignore_ascii_case("bedrock-runtime")
            || label.eq_ignore_ascii_case("bedrock-runtime-fips")
        {
            let region = labels.next()?;
            return is_region(region).then_some(region);
        }
    }
    None
}

fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len()
        && s.as_bytes()[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

fn is_region(label: &str) -> bool {
    !label.is_empty()
        && label.contains('-')
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // An IPv6 literal: never a Bedrock host name.
        return host;
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Splits an absolute or relative URI string into its host (if any) and its path.
#[cfg_attr(not(feature = "sdk"), allow(dead_code))]
pub(crate) fn split_uri(uri: &str) -> (Option<&str>, &str) {
    let (authority, rest) = match uri.find("://") {
        Some(scheme_end) => {
            let after = &uri[scheme_end + 3..];
            let end = after.find(['/', '?', '#']).unwrap_or(after.len());
            (Some(&after[..end]), &after[end..])
        }
        None => (None, uri),
    };
    let path_end = rest.find(['?', '#']).unwrap_or(rest.len());
    let host = authority.map(|a| a.rsplit_once('@').map_or(a, |(_, host)| host));
    (host.filter(|h| !h.is_empty()), &rest[..path_end])
}

mod sealed {
    pub(crate) trait Sealed {}
}

/// A request whose host and path this module can read: `http::Request<B>` (any body) and, with
/// the `sdk` feature, the AWS SDK's `HttpRequest`. Sealed.
pub(crate) trait BedrockRequest: sealed::Sealed {
    /// The host the request goes to (from the URI, else the `Host` header), with any port.
    fn host(&self) -> Option<&str>;
    /// The URI path.
    fn path(&self) -> &str;
}

impl<B> sealed::Sealed for http::Request<B> {}

impl<B> BedrockRequest for http::Request<B> {
    fn host(&self) -> Option<&str> {
        self.uri().host().or_else(|| {
            self.headers()
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
        })
    }
    fn path(&self) -> &str {
        self.uri().path()
    }
}

/// An in-memory request body whose bytes the estimator can read: `Bytes`, `Vec<u8>`, `String`,
/// `&'static [u8]`, `&'static str` and `()`. Token estimates of an `http::Request<B>` need one
/// of these: read a streaming body into memory first (the estimate must be made before the
/// request is sent).
pub trait BodyBytes {
    /// The bytes, when they are in memory.
    fn body_bytes(&self) -> Option<&[u8]>;
}

impl BodyBytes for bytes::Bytes {
    fn body_bytes(&self) -> Option<&[u8]> {
        Some(self)
    }
}
impl BodyBytes for Vec<u8> {
    fn body_bytes(&self) -> Option<&[u8]> {
        Some(self)
    }
}
impl BodyBytes for String {
    fn body_bytes(&self) -> Option<&[u8]> {
        Some(self.as_bytes())
    }
}
impl BodyBytes for &'static [u8] {
    fn body_bytes(&self) -> Option<&[u8]> {
        Some(self)
    }
}
impl BodyBytes for &'static str {
    fn body_bytes(&self) -> Option<&[u8]> {
        Some(self.as_bytes())
    }
}
impl BodyBytes for () {
    fn body_bytes(&self) -> Option<&[u8]> {
        Some(&[])
    }
}

#[cfg(feature = "sdk")]
mod sdk {
    use aws_smithy_runtime_api::client::orchestrator::HttpRequest;

    impl super::sealed::Sealed for HttpRequest {}

    impl super::BedrockRequest for HttpRequest {
        fn host(&self) -> Option<&str> {
            super::split_uri(self.uri())
                .0
                .or_else(|| self.headers().get("host"))
        }
        fn path(&self) -> &str {
            super::split_uri(self.uri()).1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_from_hosts() {
        assert_eq!(
            region_from_host("bedrock-runtime.eu-west-3.amazonaws.com"),
            Some("eu-west-3")
        );
        assert_eq!(
            region_from_host("bedrock-runtime-fips.us-gov-west-1.amazonaws.com:443"),
            Some("us-gov-west-1")
        );
        assert_eq!(region_from_host("127.0.0.1:8080"), None);
    }

    #[test]
    fn percent_decoding_matches_percent_encoding() {
        for encoded in [
            "",
            "plain",
            "anthropic.claude-v2%3A1",
            "arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Aprovisioned-model%2Fabc",
            "%",
            "%4",
            "%zz%41",
            "a%2",
            "%E6%9D%B1%E4%BA%AC",
            "%FF%FE",
            "%e6%9d%b1",
            "100%%41",
        ] {
            let expected = percent_encoding::percent_decode_str(encoded).decode_utf8_lossy();
            assert_eq!(percent_decode(encoded), expected, "{encoded}");
        }
    }

    #[test]
    fn split_uri_cases() {
        assert_eq!(
            split_uri("https://bedrock-runtime.us-east-1.amazonaws.com/model/x/invoke?a=b"),
            (
                Some("bedrock-runtime.us-east-1.amazonaws.com"),
                "/model/x/invoke"
            )
        );
        assert_eq!(
            split_uri("http://user@127.0.0.1:9000/p/model/x/converse"),
            (Some("127.0.0.1:9000"), "/p/model/x/converse")
        );
        assert_eq!(split_uri("http://h"), (Some("h"), ""));
        assert_eq!(split_uri("/model/x/invoke"), (None, "/model/x/invoke"));
    }

    fn parse_path(path: &str) -> (Operation, Option<Cow<'_, str>>) {
        let (operation, encoded) = split_path(path);
        (operation, encoded.map(percent_decode))
    }

    #[test]
    fn paths() {
        let (op, model) = parse_path(
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aapplication-inference-profile%2Fabc/invoke",
        );
        assert_eq!(op, Operation::InvokeModel);
        assert_eq!(
            model.as_deref(),
            Some("arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc")
        );
        // An unencoded ARN with a raw '/' is read whole.
        let (op, model) = parse_path(
            "/model/arn:aws:bedrock:us-east-1:1:application-inference-profile/abc/converse",
        );
        assert_eq!(op, Operation::Converse);
        assert_eq!(
            model.as_deref(),
            Some("arn:aws:bedrock:us-east-1:1:application-inference-profile/abc")
        );
        // Decoded exactly once.
        assert_eq!(
            parse_path("/model/a%253Ab/invoke").1.as_deref(),
            Some("a%3Ab")
        );
        assert_eq!(parse_path("/model//invoke"), (Operation::Other, None));
        assert_eq!(parse_path("/model/x"), (Operation::Other, None));
        assert_eq!(parse_path("/model/x/unknown"), (Operation::Other, None));
        assert_eq!(parse_path(""), (Operation::Other, None));
        assert_eq!(
            parse_path("/prefix/model/m/count-tokens").0,
            Operation::CountTokens
        );
        // Invalid UTF-8 after decoding is replaced, never a panic.
        assert!(parse_path("/model/%FF%FE/invoke").1.is_some());
    }

    #[test]
    fn hosts() {
        assert_eq!(
            region_from_host("bedrock-runtime.us-west-2.api.aws"),
            Some("us-west-2")
        );
        assert_eq!(
            region_from_host("BEDROCK-RUNTIME.ap-northeast-1.AMAZONAWS.COM"),
            Some("ap-northeast-1")
        );
        assert_eq!(
            region_from_host("bedrock-runtime.cn-north-1.amazonaws.com.cn"),
            Some("cn-north-1")
        );
        assert_eq!(
            region_from_host("vpce-0abc.bedrock-runtime.eu-central-1.vpce.amazonaws.com"),
            Some("eu-central-1")
        );
        assert_eq!(region_from_host("bedrock.us-east-1.amazonaws.com"), None);
        assert_eq!(region_from_host("bedrock-runtime.amazonaws.com"), None);
        assert_eq!(
            region_from_host("bedrock-runtime.us-east-1.example.com"),
            None
        );
        assert_eq!(region_from_host("[::1]:8080"), None);
        assert_eq!(region_from_host(""), None);
    }
}
