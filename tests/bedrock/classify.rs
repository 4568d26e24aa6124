//! Classification: every documented error code and throttling message, the fallbacks when a
//! code or message is missing, retry-after headers, through the response layer, bare parts and
//! the `Protocol`.

use std::convert::Infallible;
use std::time::Duration;

use bedrock_throttle::admit::Protocol;
use bedrock_throttle::bedrock::{Bedrock, BedrockError, classify_response_parts};
use bedrock_throttle::classify::{Classify, Outcome, ThrottleCause};
use bytes::Bytes;
use http_body_util::Full;
use serde_json::json;
use tower::{Service, ServiceBuilder, ServiceExt};

use crate::support::*;

fn error_response(
    status: u16,
    error_type: Option<&str>,
    body: &str,
) -> http::Response<Full<Bytes>> {
    let mut builder = http::Response::builder().status(status);
    if let Some(error_type) = error_type {
        builder = builder.header("x-amzn-ErrorType", error_type);
    }
    builder
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

/// Every code/message pair of bedrock-facts §2, through the response layer and `Classify`.
#[tokio::test]
async fn classify_every_documented_error() {
    use Outcome::*;
    use ThrottleCause::*;
    let suffix = ":http://internal.amazon.com/coral/com.amazon.bedrock/";
    let cases: Vec<(u16, &str, &str, Outcome)> = vec![
        (
            429,
            "ThrottlingException",
            "Too many requests, please wait before trying again.",
            Throttled(Requests),
        ),
        (
            429,
            "ThrottlingException",
            "Too many requests, please wait before trying again. You have sent too many requests.  Wait before trying again.",
            Throttled(Requests),
        ),
        (
            429,
            "ThrottlingException",
            "Your request rate is too high. Reduce the frequency of requests.",
            Throttled(Requests),
        ),
        (
            429,
            "ThrottlingException",
            "Too many tokens, please wait before trying again.",
            Throttled(Tokens),
        ),
        (
            429,
            "ThrottlingException",
            "TOO MANY TOKENS, please wait before trying again.",
            Throttled(Tokens),
        ),
        (
            429,
            "ThrottlingException",
            "Too many tokens per day, please wait before trying again.",
            Throttled(TokensPerDay),
        ),
        (
            429,
            "ThrottlingException",
            "Rate exceeded",
            Throttled(Unknown),
        ),
        (
            429,
            "ModelNotReadyException",
            "Model is not ready for inference. Wait and try your request again.",
            Throttled(ModelNotReady),
        ),
        (
            503,
            "ServiceUnavailableException",
            "Bedrock is unable to process your request.",
            Throttled(Capacity),
        ),
        (
            503,
            "ServiceUnavailableException",
            "Too many connections, please wait before trying again.",
            Throttled(Capacity),
        ),
        (
            500,
            "InternalServerException",
            "An internal server error occurred.",
            Transient,
        ),
        (
            408,
            "ModelTimeoutException",
            "Model has timed out in processing the request. Try your request again.",
            Transient,
        ),
        (424, "ModelErrorException", "The model failed.", Transient),
        (
            424,
            "ModelStreamErrorException",
            "The stream failed.",
            Transient,
        ),
        (400, "ValidationException", "Malformed input request", Fatal),
        (400, "ServiceQuotaExceededException", "quota", Fatal),
        (
            403,
            "AccessDeniedException",
            "You don't have access to the model with the specified model ID.",
            Fatal,
        ),
        (
            404,
            "ResourceNotFoundException",
            "Could not resolve the foundation model",
            Fatal,
        ),
    ];
    let bedrock = Bedrock::new();
    let transport = tower::service_fn(|req: http::Request<Bytes>| async move {
        let (status, code, message) =
            serde_json::from_slice::<(u16, String, String)>(req.body()).unwrap();
        let mut body = json!({ "message": message });
        if code == "ServiceUnavailableException" {
            body["exceptionMetadata"] = json!({"x": 1});
        }
        Ok::<_, Infallible>(error_response(
            status,
            Some(&format!(
                "{code}:http://internal.amazon.com/coral/com.amazon.bedrock/"
            )),
            &body.to_string(),
        ))
    });
    let mut service = ServiceBuilder::new()
        .layer(bedrock.response_layer())
        .service(transport);
    for (status, code, message, expected) in cases {
        // Through the layer (error body buffered, extension attached).
        let req = http::Request::post(format!("{HOST}/model/{SONNET_4_ENCODED}/converse"))
            .body(Bytes::from(
                serde_json::to_vec(&(status, code, message)).unwrap(),
            ))
            .unwrap();
        let response = service.ready().await.unwrap().call(req).await.unwrap();
        let error = response.extensions().get::<BedrockError>().unwrap();
        assert_eq!(error.code(), Some(code));
        assert_eq!(error.message(), Some(message));
        let c = Classify::<_, Infallible>::classify(&bedrock, Ok(&response));
        assert_eq!(c.outcome, expected, "{code}: {message}");
        // The body is still there, byte for byte.
        let body = drain(response.into_body()).await;
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).unwrap()["message"],
            message
        );
        // And from bare parts.
        let body = json!({ "message": message }).to_string();
        let header = format!("{code}{suffix}");
        let c = classify_response_parts(
            status,
            |n| (n == "x-amzn-errortype").then_some(header.as_str()),
            body.as_bytes(),
        );
        assert_eq!(c.outcome, expected, "parts {code}: {message}");
    }
}

#[test]
fn classify_fallbacks_and_retry_after() {
    use Outcome::*;
    // Code from __type, message from Message.
    let c = classify_response_parts(
        429,
        |_| None,
        br#"{"__type":"com.amazon.bedrock#ThrottlingException","Message":"Too many tokens per day, please wait before trying again."}"#,
    );
    assert_eq!(c.outcome, Throttled(ThrottleCause::TokensPerDay));
    // Code from body `code`, message from errorMessage.
    let c = classify_response_parts(
        400,
        |_| None,
        br#"{"code":"ThrottlingException","errorMessage":"Your request rate is too high."}"#,
    );
    assert_eq!(c.outcome, Throttled(ThrottleCause::Requests));
    // The header wins over the body.
    let c = classify_response_parts(
        400,
        |n| (n == "x-amzn-errortype").then_some("ValidationException:x"),
        br#"{"__type":"ThrottlingException"}"#,
    );
    assert_eq!(c.outcome, Fatal);
    // No code at all: the status decides (429 by message).
    for (status, body, expected) in [
        (
            429,
            r#"{"message":"Too many tokens, please wait"}"#,
            Throttled(ThrottleCause::Tokens),
        ),
        (429, "", Throttled(ThrottleCause::Unknown)),
        (503, "<html>", Throttled(ThrottleCause::Capacity)),
        (500, "", Transient),
        (502, "", Transient),
        (504, "", Transient),
        (408, "", Transient),
        (424, "", Transient),
        (400, "", Fatal),
        (401, "", Fatal),
        (413, "", Fatal),
        (200, "", Success),
        (204, "", Success),
    ] {
        assert_eq!(
            classify_response_parts(status, |_| None, body.as_bytes()).outcome,
            expected,
            "{status} {body}"
        );
    }
    // x-amz-retry-after in milliseconds.
    let c = classify_response_parts(
        429,
        |n| match n {
            "x-amzn-errortype" => Some("ThrottlingException"),
            "x-amz-retry-after" => Some("1500"),
            _ => None,
        },
        b"{}",
    );
    assert_eq!(c.retry_after, Some(std::time::Duration::from_millis(1500)));
    assert_eq!(c.outcome, Throttled(ThrottleCause::Unknown));
}

#[test]
fn classify_http_response_without_the_layer_and_errors() {
    let bedrock = Bedrock::new();
    let response = http::Response::builder()
        .status(429)
        .header("x-amzn-ErrorType", "ThrottlingException:http://x/")
        .header("x-amz-retry-after", "20")
        .body(())
        .unwrap();
    let c = Classify::<_, std::io::Error>::classify(&bedrock, Ok(&response));
    assert_eq!(c.outcome, Outcome::Throttled(ThrottleCause::Unknown));
    assert_eq!(c.retry_after, Some(std::time::Duration::from_millis(20)));
    let err = std::io::Error::other("reset");
    let c = Classify::<http::Response<()>, _>::classify(&bedrock, Err(&err));
    assert_eq!(c.outcome, Outcome::Transient);
}

/// The code in `x-amzn-ErrorType` or `__type`: cut at the first `:`, keep what follows the last
/// `#` (what the private `error_code` does).
#[test]
fn error_codes_from_headers_and_bodies() {
    for (header, code) in [
        (
            "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/",
            Some("ThrottlingException"),
        ),
        (
            "com.amazon.coral.service#ValidationException",
            Some("ValidationException"),
        ),
        ("aws.protocoltests#FooError:http://x#y", Some("FooError")),
        (" ModelNotReadyException ", Some("ModelNotReadyException")),
        ("", None),
        (":", None),
    ] {
        let error = BedrockError::from_parts(Some(header), b"");
        assert_eq!(error.code(), code, "{header:?}");
        assert_eq!(BedrockError::new(Some(header), None).code(), code);
    }
    // An empty header falls back to the body; `code` before `__type`.
    let error = BedrockError::from_parts(
        Some(""),
        br#"{"code":"ValidationException","__type":"X","errorMessage":"bad"}"#,
    );
    assert_eq!(
        (error.code(), error.message()),
        (Some("ValidationException"), Some("bad"))
    );
    let error = BedrockError::from_parts(
        None,
        br#"{"__type":"com.amazon#ModelNotReadyException","Message":"loading"}"#,
    );
    assert_eq!(
        (error.code(), error.message()),
        (Some("ModelNotReadyException"), Some("loading"))
    );
    // Not JSON, or a message of the wrong type: nothing.
    let error = BedrockError::from_parts(None, b"<html>");
    assert_eq!((error.code(), error.message()), (None, None));
    assert_eq!(
        BedrockError::from_parts(None, br#"{"message": 5}"#).message(),
        None
    );
    assert_eq!(
        BedrockError::new(Some("ThrottlingException"), Some("Too many tokens")).to_string(),
        "ThrottlingException: Too many tokens"
    );
    assert!(!BedrockError::new(None, None).is_from_stream());
}

/// Which quota a `ThrottlingException` message names: by prefix, ignoring case and leading
/// space (what the private `throttle_cause` does).
#[test]
fn throttle_messages_by_prefix() {
    use ThrottleCause::*;
    for (message, cause) in [
        (
            "Too many tokens per day, please wait before trying again.",
            TokensPerDay,
        ),
        ("too many TOKENS PER DAY", TokensPerDay),
        ("Too many tokens, please wait before trying again.", Tokens),
        ("   Too many tokens", Tokens),
        (
            "Too many requests, please wait before trying again.",
            Requests,
        ),
        (
            "Your request rate is too high. Reduce the frequency of requests.",
            Requests,
        ),
        (
            "Too many connections, please wait before trying again.",
            Capacity,
        ),
        ("Rate exceeded", Unknown),
        ("", Unknown),
        ("Please wait: too many tokens", Unknown),
    ] {
        let body = json!({ "message": message }).to_string();
        let c = classify_response_parts(
            429,
            |n| (n == "x-amzn-errortype").then_some("ThrottlingException"),
            body.as_bytes(),
        );
        assert_eq!(c.throttle_cause(), Some(cause), "{message:?}");
    }
    // A throttle without a message: cause unknown.
    let c = classify_response_parts(
        429,
        |n| (n == "x-amzn-errortype").then_some("ThrottlingException"),
        b"{}",
    );
    assert_eq!(c.throttle_cause(), Some(Unknown));
}

/// `x-amz-retry-after` in milliseconds, else `Retry-After` in seconds or as an HTTP date (a
/// date in the past: no delay); anything else is ignored (what the private `retry_after` does).
#[test]
fn retry_after_headers() {
    for (x_amz, standard, expected) in [
        (Some("1500"), None, Some(Duration::from_millis(1500))),
        (Some("1500"), Some("9"), Some(Duration::from_millis(1500))),
        (None, Some("2"), Some(Duration::from_secs(2))),
        (Some(" 20 "), None, Some(Duration::from_millis(20))),
        (Some("soon"), Some("3"), Some(Duration::from_secs(3))),
        (Some("-1"), None, None),
        (
            None,
            Some("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO),
        ),
        (None, Some("21 Oct 2015"), None),
        (None, None, None),
    ] {
        let c = classify_response_parts(
            429,
            |n| match n {
                "x-amz-retry-after" => x_amz,
                "retry-after" => standard,
                _ => None,
            },
            b"",
        );
        assert_eq!(c.retry_after, expected, "{x_amz:?} {standard:?}");
    }
}

/// The admission layer classifies once, through `Protocol::classify`: the same answer as
/// `Classify`.
#[test]
fn protocol_classify_is_classify() {
    type Res = http::Response<Full<Bytes>>;
    let bedrock = Bedrock::new();
    let response = error_response(
        429,
        Some("ThrottlingException:http://x/"),
        r#"{"message":"Too many tokens"}"#,
    );
    let via_protocol = <Bedrock as Protocol<http::Request<Bytes>, Res, Infallible>>::classify(
        &bedrock,
        Ok(&response),
    );
    assert_eq!(
        via_protocol,
        Classify::<Res, Infallible>::classify(&bedrock, Ok(&response))
    );
    // Without the response layer the body is not read: a throttle of unknown cause.
    assert_eq!(
        via_protocol.outcome,
        Outcome::Throttled(ThrottleCause::Unknown)
    );
    let ok = http::Response::new(Full::new(Bytes::new()));
    let c = <Bedrock as Protocol<http::Request<Bytes>, Res, std::io::Error>>::classify(
        &bedrock,
        Ok(&ok),
    );
    assert_eq!(c.outcome, Outcome::Success);
    let err = std::io::Error::other("reset");
    let c = <Bedrock as Protocol<http::Request<Bytes>, Res, std::io::Error>>::classify(
        &bedrock,
        Err(&err),
    );
    assert_eq!(c.outcome, Outcome::Transient);
}
