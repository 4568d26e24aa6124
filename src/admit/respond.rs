//! Refusals as HTTP responses, for the admission layers in an HTTP server (opt-in:
//! [`AdmissionLayer::respond_to_refusals`](super::AdmissionLayer::respond_to_refusals)).
//!
//! Why: a refusal is an error of the layer (`BoxError`), and an axum app must turn every error
//! into a response with a `HandleErrorLayer` and a downcast before the router accepts the
//! layer. An HTTP layer may answer in HTTP itself, as tower-http's timeout answers 408: the
//! refusal becomes the response a client knows what to do with, and the service keeps its
//! inner error type (`Infallible` for an axum route).

use std::time::Duration;

use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};

use crate::budget::AdmissionError;

/// Refusals are errors: the layer's error is `BoxError`, and a refusal downcasts to
/// [`AdmissionError`] or [`LeftQueue`](super::LeftQueue). The default.
#[derive(Debug, Clone, Copy, Default)]
pub struct AsError;

/// Refusals are HTTP responses, and the inner service's error type is kept:
///
/// | refusal | status | `Retry-After` |
/// |---|---|---|
/// | a wait longer than allowed, a full queue | 429 Too Many Requests | the wait it would have had, in whole seconds rounded up, when known |
/// | a cost larger than the whole quota | 413 Content Too Large | none: it can never pass |
/// | an attempt that had to leave the queue, a place given up | 503 Service Unavailable | `0`: send it again |
///
/// The body is the refusal's message, as `text/plain`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AsResponse;

/// The `Retry-After` value for a wait: whole seconds, rounded up, at least 1.
pub fn retry_after(wait: Duration) -> HeaderValue {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    HeaderValue::from(secs.max(1))
}

fn text<B: From<String>>(status: StatusCode, message: String) -> Response<B> {
    let mut response = Response::new(B::from(message));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The response for a refusal of the store.
pub(crate) fn refused<B: From<String>>(error: &AdmissionError) -> Response<B> {
    if !error.is_retryable() {
        return text(StatusCode::PAYLOAD_TOO_LARGE, error.to_string());
    }
    let mut response = text(StatusCode::TOO_MANY_REQUESTS, error.to_string());
    if let Some(wait) = error.would_wait() {
        response
            .headers_mut()
            .insert(RETRY_AFTER, retry_after(wait));
    }
    response
}

/// The response for an attempt that left the queue or lost its kept place: send it again.
pub(crate) fn unavailable<B: From<String>>(error: &dyn std::error::Error) -> Response<B> {
    let mut response = text(StatusCode::SERVICE_UNAVAILABLE, error.to_string());
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("0"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after(Duration::ZERO), "1");
        assert_eq!(retry_after(Duration::from_millis(1)), "1");
        assert_eq!(retry_after(Duration::from_secs(2)), "2");
        assert_eq!(retry_after(Duration::from_millis(2_001)), "3");
    }
}
