//! The emulator's errors: [`Error`], what starting an emulator can fail with, and the errors it
//! sends in Bedrock's wire format (the code in `x-amzn-ErrorType` with the coral suffix,
//! `x-amzn-RequestId`, and a JSON body with `message` and the exception's modeled members).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use super::server::{Body, full};

use super::config::ConfigError;

/// Why an emulator could not start.
///
/// ```
/// use bedrock_throttle::emulator::{Emulator, Error};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let err = Emulator::builder().max_connections(0).start().await.unwrap_err();
/// assert!(matches!(err, Error::Config(_)));
/// assert!(err.config_error().is_some());
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The configuration cannot be used; nothing was bound.
    Config(ConfigError),
    /// The listen address could not be bound (in use, not local, no permission).
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
}

impl Error {
    /// The configuration error, when the configuration was refused.
    pub fn config_error(&self) -> Option<&ConfigError> {
        match self {
            Self::Config(e) => Some(e),
            Self::Bind { .. } => None,
        }
    }

    /// The address that could not be bound, when binding failed.
    pub fn addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Bind { addr, .. } => Some(*addr),
            Self::Config(_) => None,
        }
    }

    /// The operating system's error, when binding failed.
    pub fn io_error(&self) -> Option<&std::io::Error> {
        match self {
            Self::Bind { source, .. } => Some(source),
            Self::Config(_) => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => write!(
                f,
                "invalid emulator configuration: {e}; fix the setting and start again"
            ),
            Self::Bind { addr, source } => write!(
                f,
                "cannot listen on {addr}: {source}; choose another address (port 0 picks a free one)"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Config(e) => Some(e),
            Self::Bind { source, .. } => Some(source),
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

const ERROR_TYPE_SUFFIX: &str = ":http://internal.amazon.com/coral/com.amazon.bedrock/";

/// An error response about to be sent.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) retry_after: Option<Duration>,
    /// Modeled members besides `message` (`originalStatusCode`, `resourceName`, ...).
    pub(crate) members: serde_json::Map<String, serde_json::Value>,
    /// The body's shape.
    style: Style,
}

/// The shape of an error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// Bedrock's: `{"message": ..}` plus modeled members, the code in `x-amzn-ErrorType`.
    Aws,
    /// As a model API sends it (HTTP 529): Anthropic's envelope
    /// `{"type":"error","error":{"type":CODE,"message":..}}`, no `x-amzn-ErrorType`, and
    /// `Retry-After` in whole seconds instead of `x-amz-retry-after`.
    Anthropic,
    /// The OpenAI-compatible routes: `{"error":{"message":..,"type":CODE,"code":CODE}}`, the
    /// code also in `x-amzn-ErrorType`. (What bedrock-runtime's `/openai/v1` sends is not
    /// documented; this is the one place that says it.)
    OpenAi,
    /// bedrock-mantle's 429: `{"code":"ThrottlingException","Message":..}` and no
    /// `x-amzn-ErrorType` (the one shape seen, in a third party's fixtures; not documented).
    Mantle,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            members: serde_json::Map::new(),
            style: Style::Aws,
        }
    }

    /// This error as a model API sends it: `{"type":"error","error":{"type":CODE,"message":..}}`,
    /// no `x-amzn-ErrorType`, `Retry-After` in whole seconds.
    pub(crate) fn anthropic_envelope(mut self) -> Self {
        self.style = Style::Anthropic;
        self
    }

    /// This error as bedrock-mantle sends it: `{"code":CODE,"Message":..}`, no
    /// `x-amzn-ErrorType`.
    pub(crate) fn mantle_envelope(mut self) -> Self {
        self.style = Style::Mantle;
        self
    }

    /// This error as the OpenAI-compatible routes send it:
    /// `{"error":{"message":..,"type":CODE,"code":CODE}}`, the code in `x-amzn-ErrorType` too.
    pub(crate) fn openai_envelope(mut self) -> Self {
        self.style = Style::OpenAi;
        self
    }

    /// This error with one more modeled member in its body.
    pub(crate) fn with_member(mut self, name: &str, value: impl Into<serde_json::Value>) -> Self {
        self.members.insert(name.to_owned(), value.into());
        self
    }

    /// 400 `ValidationException`.
    pub(crate) fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ValidationException", message)
    }

    /// 400 `ValidationException` with Bedrock's "Malformed input request" wording.
    pub(crate) fn malformed(detail: impl std::fmt::Display) -> Self {
        Self::validation(format!(
            "Malformed input request: {detail}, please reformat your input and try again."
        ))
    }

    /// 404 `ResourceNotFoundException`.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "ResourceNotFoundException", message)
    }

    /// 408 for a body not received within the body-read timeout: what AWS front ends answer a
    /// client that stops sending mid-request.
    pub(crate) fn body_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "RequestTimeoutException",
            "Request timed out: the request body was not received in time.",
        )
    }

    /// 404 for paths that are no Bedrock Runtime operation.
    pub(crate) fn unknown_operation() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            "The requested operation is not recognized by the service.",
        )
    }

    /// The HTTP response.
    pub(crate) fn into_response(self, request_id: &str) -> Response<Body> {
        if self.style == Style::Mantle {
            let body = serde_json::json!({"code": self.code, "Message": self.message});
            let mut res = Response::new(full(Bytes::from(body.to_string())));
            *res.status_mut() = self.status;
            res.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if let Ok(v) = HeaderValue::from_str(request_id) {
                res.headers_mut().insert("x-amzn-RequestId", v);
            }
            return res;
        }
        if self.style == Style::Anthropic {
            let body = serde_json::json!({
                "type": "error",
                "error": {"type": self.code, "message": self.message},
            });
            let mut res = Response::new(full(Bytes::from(body.to_string())));
            *res.status_mut() = self.status;
            let h = res.headers_mut();
            h.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if let Ok(v) = HeaderValue::from_str(request_id) {
                h.insert("x-amzn-RequestId", v);
            }
            if let Some(wait) = self.retry_after {
                let secs = wait
                    .as_secs()
                    .saturating_add(u64::from(wait.subsec_nanos() > 0));
                h.insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
            }
            return res;
        }
        let body = if self.style == Style::OpenAi {
            serde_json::json!({
                "error": {"message": self.message, "type": self.code, "code": self.code},
            })
            .to_string()
        } else {
            let mut members = self.members;
            members.insert("message".to_owned(), self.message.into());
            serde_json::Value::Object(members).to_string()
        };
        let mut res = Response::new(full(Bytes::from(body)));
        *res.status_mut() = self.status;
        let h = res.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("{}{ERROR_TYPE_SUFFIX}", self.code)) {
            h.insert("x-amzn-ErrorType", v);
        }
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert("x-amzn-RequestId", v);
        }
        if let Some(wait) = self.retry_after {
            // Rounded up: a hint must never be early.
            let ms = u64::try_from(wait.as_nanos().div_ceil(1_000_000))
                .unwrap_or(u64::MAX)
                .max(1);
            h.insert("x-amz-retry-after", HeaderValue::from(ms));
        }
        res
    }
}
