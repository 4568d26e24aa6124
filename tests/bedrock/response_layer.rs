//! The response layer: error bodies buffered and parsed, a stream's first-frame exception
//! turned into the equivalent error response, every other byte passed through unchanged.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bedrock_throttle::bedrock::{Bedrock, BedrockError, ReplayBody};
use bedrock_throttle::classify::{Classify, Outcome, ThrottleCause};
use bytes::Bytes;
use serde_json::json;
use tower::{ServiceBuilder, ServiceExt};

use crate::eventstream::{self, chunk, converse_stream, exception, frames};
use crate::support::*;

async fn through_layer(
    path: &str,
    response: http::Response<ChunkStream>,
) -> http::Response<ReplayBody<ChunkStream>> {
    let cell = Arc::new(Mutex::new(Some(response)));
    let transport = tower::service_fn(move |_req: http::Request<Bytes>| {
        let response = cell.lock().unwrap().take().unwrap();
        async move { Ok::<_, Infallible>(response) }
    });
    let service = ServiceBuilder::new()
        .layer(Bedrock::new().response_layer())
        .service(transport);
    service
        .oneshot(request(&format!("{HOST}{path}"), "{}"))
        .await
        .unwrap()
}

#[tokio::test]
async fn first_frame_exception_becomes_an_error_response() {
    let bedrock = Bedrock::new();
    for (kind, status, code, expected) in [
        (
            "throttlingException",
            429,
            "ThrottlingException",
            Outcome::Throttled(ThrottleCause::Tokens),
        ),
        (
            "serviceUnavailableException",
            503,
            "ServiceUnavailableException",
            Outcome::Throttled(ThrottleCause::Capacity),
        ),
        (
            "internalServerException",
            500,
            "InternalServerException",
            Outcome::Transient,
        ),
        (
            "modelStreamErrorException",
            424,
            "ModelStreamErrorException",
            Outcome::Transient,
        ),
        (
            "validationException",
            400,
            "ValidationException",
            Outcome::Fatal,
        ),
        (
            "modelTimeoutException",
            408,
            "ModelTimeoutException",
            Outcome::Transient,
        ),
    ] {
        let mut messages = vec![exception(
            kind,
            "Too many tokens, please wait before trying again.",
        )];
        messages.extend(converse_stream(1, 1));
        let bytes = frames(&messages);
        for size in [1, 10, bytes.len()] {
            let response = through_layer(
                &format!("/model/{SONNET_4_ENCODED}/converse-stream"),
                event_stream_response(chunked(&bytes, size)),
            )
            .await;
            assert_eq!(response.status().as_u16(), status, "{kind}");
            assert_eq!(response.headers()["x-amzn-errortype"], code);
            assert_eq!(response.headers()["content-type"], "application/json");
            let error = response.extensions().get::<BedrockError>().unwrap().clone();
            assert!(error.is_from_stream());
            assert_eq!(error.code(), Some(code));
            let c = Classify::<_, Infallible>::classify(&bedrock, Ok(&response));
            assert_eq!(c.outcome, expected, "{kind}");
            let body = drain(response.into_body()).await;
            assert_eq!(
                serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
                json!({"message": "Too many tokens, please wait before trying again."})
            );
        }
    }
}

#[tokio::test]
async fn non_exception_first_frame_leaves_the_bytes_identical() {
    let mut messages = converse_stream(3, 4);
    // A later exception passes through unchanged too.
    messages.insert(3, exception("throttlingException", "Too many tokens"));
    let bytes = frames(&messages);
    for size in [1, 2, 5, 17, 64, bytes.len()] {
        let response = through_layer(
            &format!("/model/{SONNET_4_ENCODED}/converse-stream"),
            event_stream_response(chunked(&bytes, size)),
        )
        .await;
        assert_eq!(response.status(), 200);
        assert!(response.extensions().get::<BedrockError>().is_none());
        let seen = drain(response.into_body()).await;
        assert_eq!(seen, bytes, "chunks of {size}");
        // The later exception still reaches the caller as an exception frame.
        let decoded = eventstream::decode(&seen);
        assert_eq!(decoded.len(), messages.len());
        assert_eq!(
            eventstream::header(&decoded[3], ":exception-type"),
            Some("throttlingException")
        );
    }
    // Invoke streams too.
    let bytes = frames(&[chunk(json!({"type":"message_start"}))]);
    let response = through_layer(
        "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke-with-response-stream",
        event_stream_response(chunked(&bytes, 3)),
    )
    .await;
    assert_eq!(drain(response.into_body()).await, bytes);
}

#[tokio::test]
async fn non_streams_and_short_streams_pass_through() {
    // A 200 JSON body is not read.
    let response = through_layer(
        &format!("/model/{SONNET_4_ENCODED}/converse"),
        http::Response::new(chunked(b"{\"usage\":{}}", 4)),
    )
    .await;
    assert!(response.body().prefix().is_none());
    assert_eq!(drain(response.into_body()).await, b"{\"usage\":{}}");
    // A stream that ends inside its first frame.
    let bytes = frames(&converse_stream(1, 1));
    let response = through_layer(
        &format!("/model/{SONNET_4_ENCODED}/converse-stream"),
        event_stream_response(chunked(&bytes[..20], 3)),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(drain(response.into_body()).await, &bytes[..20]);
    // Garbage with an event-stream content type.
    let garbage = b"\xff\xff\xff\xffnot a frame".to_vec();
    let response = through_layer(
        &format!("/model/{SONNET_4_ENCODED}/converse-stream"),
        event_stream_response(chunked(&garbage, 2)),
    )
    .await;
    assert_eq!(drain(response.into_body()).await, garbage);
}

#[tokio::test]
async fn large_error_bodies_are_replayed_not_truncated() {
    let big = format!(
        "{{\"message\":\"Too many tokens\",\"pad\":\"{}\"}}",
        "x".repeat(100_000)
    );
    let mut response = http::Response::new(chunked(big.as_bytes(), 4096));
    *response.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
    response
        .headers_mut()
        .insert("x-amzn-errortype", "ThrottlingException".parse().unwrap());
    let response = through_layer(&format!("/model/{SONNET_4_ENCODED}/invoke"), response).await;
    let error = response.extensions().get::<BedrockError>().unwrap();
    assert_eq!(error.code(), Some("ThrottlingException"));
    assert_eq!(error.message(), None, "the body was too large to parse");
    assert_eq!(drain(response.into_body()).await, big.as_bytes());
}
