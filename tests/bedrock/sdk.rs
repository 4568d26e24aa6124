//! The same protocol on the AWS SDK's types: plans of `HttpRequest`s (with the attempt's
//! signature deadline and its identity across attempts), settlement and classification of
//! `HttpResponse`s, the response layer, and the whole through the real SDK client.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::retry::ErrorKind;
use bedrock_throttle::BoxError;
use bedrock_throttle::admit::{Plan, Protocol};
use bedrock_throttle::bedrock::{
    Bedrock, BedrockError, BedrockKey, Memo, classify_connector_error,
};
use bedrock_throttle::budget::Budget;
use bedrock_throttle::classify::{Classify, CloneRequest, Outcome, ThrottleCause};
use bedrock_throttle::sdk::SignatureDeadline;
use http_body_util::BodyExt;
use serde_json::json;
use tower::{ServiceBuilder, ServiceExt};

use crate::eventstream::{self, converse_stream, exception, frames};
use crate::support::*;

/// `Protocol::plan` for the SDK's types, as the admission layer of the SDK stack calls it.
fn sdk_plan(bedrock: &Bedrock, request: &mut HttpRequest) -> Plan<BedrockKey, Memo> {
    <Bedrock as Protocol<HttpRequest, HttpResponse, ConnectorError>>::plan(bedrock, request)
}

fn sdk_request(uri: &str, body: &'static str) -> HttpRequest {
    let mut req = HttpRequest::new(SdkBody::from(body));
    req.set_uri(uri).unwrap();
    req
}

fn sdk_response(status: u16, body: SdkBody) -> HttpResponse {
    HttpResponse::new(StatusCode::try_from(status).unwrap(), body)
}

fn streaming(bytes: Vec<u8>, chunk: usize) -> HttpResponse {
    let mut response = sdk_response(200, SdkBody::from_body_1_x(chunked(&bytes, chunk)));
    response
        .headers_mut()
        .insert("content-type", eventstream::CONTENT_TYPE);
    response
}

#[tokio::test(start_paused = true)]
async fn plans_of_sdk_requests() {
    let bedrock = Bedrock::new().with_region("ca-central-1");
    let mut req = sdk_request(
        &format!("{HOST}/model/{SONNET_4_ENCODED}/converse?x=1"),
        r#"{"messages":[{"role":"user","content":[{"text":"Hello"}]}],"inferenceConfig":{"maxTokens":9}}"#,
    );
    let plan = sdk_plan(&bedrock, &mut req);
    assert_eq!(plan.key.to_string(), format!("us-east-1/{SONNET_4}"));
    assert_eq!(plan.tokens, 8 + 2 + 9);
    assert_eq!(plan.if_unknown, 8 + 2 + 5 * 9);
    assert_eq!(plan.memo.max_output(), 9);
    // Not sent by the layered client: no deadline, no identity.
    assert!(plan.leave_by.is_none());
    assert!(plan.arrival.is_none());

    // The SDK's invocation id (the same on every attempt of one operation) is the arrival; the
    // layered client's signature deadline is by when the attempt must leave.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(270);
    req.headers_mut().insert(
        "amz-sdk-invocation-id",
        "3a5e1b7c-0f4d-4c2e-9b8a-1d2e3f4a5b6c",
    );
    req.add_extension(SignatureDeadline(deadline));
    let plan = sdk_plan(&bedrock, &mut req);
    assert_eq!(plan.leave_by, Some(deadline));
    assert_eq!(
        plan.arrival.as_deref(),
        Some("3a5e1b7c-0f4d-4c2e-9b8a-1d2e3f4a5b6c")
    );
    // A re-sent copy keeps its identity; extensions are not copied (the client sets a fresh
    // deadline on every attempt).
    let mut copy = bedrock.clone_request(&req).unwrap();
    assert_eq!(copy.body().bytes(), req.body().bytes());
    let resent = sdk_plan(&bedrock, &mut copy);
    assert_eq!(resent.arrival, plan.arrival);
    assert!(resent.leave_by.is_none());

    let mut local = sdk_request(
        "http://localhost:1234/model/amazon.nova-lite-v1%3A0/invoke",
        "{}",
    );
    assert_eq!(sdk_plan(&bedrock, &mut local).key.region(), "ca-central-1");
    // A relative URI: the Host header names the region.
    let mut relative = sdk_request("/model/amazon.nova-lite-v1%3A0/invoke", "{}");
    relative
        .headers_mut()
        .insert("host", "bedrock-runtime.eu-west-3.amazonaws.com");
    assert_eq!(sdk_plan(&bedrock, &mut relative).key.region(), "eu-west-3");

    // A streaming body: the allowance plus the model maximum, and no clone.
    let mut streaming = HttpRequest::new(SdkBody::from_body_1_x(chunked(b"{}", 1)));
    streaming
        .set_uri(format!("{HOST}/model/{SONNET_4_ENCODED}/converse"))
        .unwrap();
    let plan = sdk_plan(&bedrock, &mut streaming);
    assert_eq!(plan.tokens, 16_384 + 64_000);
    assert_eq!(plan.if_unknown, 16_384 + 5 * 64_000);
    assert!(bedrock.clone_request(&streaming).is_none());
}

#[tokio::test]
async fn settle_sdk_responses() {
    let bedrock = Bedrock::new();
    let converse = memo(&bedrock, SONNET_4_ENCODED, "converse");
    // In memory: settles at once, body untouched.
    let body = json!({"usage": {"inputTokens": 1000, "outputTokens": 100}}).to_string();
    let response = sdk_response(200, SdkBody::from(body.clone()));
    let probe = Probe::new(1);
    let response = bedrock.settle_with(response, probe.clone(), converse.clone());
    assert_eq!(probe.settled(), vec![1_500]);
    assert_eq!(response.body().bytes(), Some(body.as_bytes()));

    // In memory without usage: the worst case at once (changed with the unknown-usage rule,
    // was the reservation).
    let probe = Probe::new(1).with_if_unknown(77);
    let _ = bedrock.settle_with(
        sdk_response(200, SdkBody::from("{}")),
        probe.clone(),
        converse.clone(),
    );
    assert_eq!(probe.settled(), vec![77]);

    // Streaming: settles when the body ends.
    let bytes = frames(&converse_stream(1000, 100));
    let probe = Probe::new(1);
    let mut response = bedrock.settle_with(
        streaming(bytes.clone(), 9),
        probe.clone(),
        memo(&bedrock, SONNET_4_ENCODED, "converse-stream"),
    );
    assert!(probe.settled().is_empty());
    assert_eq!(drain(response.take_body()).await, bytes);
    assert_eq!(probe.settled(), vec![1_500]);

    // Headers, with Sonnet 4's burndown from the memo.
    let mut response = sdk_response(200, SdkBody::from_body_1_x(chunked(b"{}", 1)));
    response
        .headers_mut()
        .insert("x-amzn-bedrock-input-token-count", "10");
    response
        .headers_mut()
        .insert("x-amzn-bedrock-output-token-count", "2");
    let probe = Probe::new(1);
    let _ = bedrock.settle_with(
        response,
        probe.clone(),
        memo(&bedrock, SONNET_4_ENCODED, "invoke"),
    );
    assert_eq!(probe.settled(), vec![10 + 2 * 5]);

    // Errors.
    let probe = Probe::new(50);
    let _ = bedrock.settle_with(sdk_response(429, SdkBody::empty()), probe.clone(), converse);
    assert_eq!(probe.settled(), vec![0]);
}

/// `Protocol::settle` with the engine's permit: an in-memory body settles at once; a stream
/// dropped midway books the plan's worst case.
#[tokio::test(start_paused = true)]
async fn protocol_settle_with_a_permit() {
    let bedrock = Bedrock::new();
    let budget: Budget<BedrockKey> = Budget::builder().tokens(1_000_000).build().unwrap();
    let mut req = sdk_request(
        &format!("{HOST}/model/{SONNET_4_ENCODED}/converse-stream"),
        r#"{"messages":[{"role":"user","content":[{"text":"Hello"}]}],"inferenceConfig":{"maxTokens":100}}"#,
    );
    let plan = sdk_plan(&bedrock, &mut req);
    let used = || budget.stats(&plan.key).unwrap().tokens.unwrap().used;
    let settle = |response, permit| {
        <Bedrock as Protocol<HttpRequest, HttpResponse, ConnectorError>>::settle(
            &bedrock,
            response,
            permit,
            plan.memo.clone(),
        )
    };
    let admit = || async {
        budget
            .acquire(plan.key.clone(), plan.tokens)
            .await
            .unwrap()
            .with_if_unknown(plan.if_unknown)
    };

    let body = json!({"usage": {"inputTokens": 1000, "outputTokens": 100}}).to_string();
    let _ = settle(sdk_response(200, SdkBody::from(body)), admit().await);
    assert_eq!(used(), 1_500);

    let mut response = settle(
        streaming(frames(&converse_stream(1000, 100)), 9),
        admit().await,
    );
    let mut body = response.take_body();
    body.frame().await.unwrap().unwrap();
    assert_eq!(
        used(),
        1_500 + plan.tokens,
        "reserved while the stream runs"
    );
    drop(body);
    assert_eq!(used(), 1_500 + plan.if_unknown);
    assert_eq!(budget.stats(&plan.key).unwrap().outstanding, 0);
}

#[test]
fn classify_sdk_responses_and_errors() {
    let bedrock = Bedrock::new();
    let mut response = sdk_response(
        429,
        SdkBody::from(r#"{"message":"Too many tokens per day, please wait before trying again."}"#),
    );
    response.headers_mut().insert(
        "x-amzn-ErrorType",
        "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/",
    );
    response.headers_mut().insert("x-amz-retry-after", "3000");
    let c = Classify::<_, ConnectorError>::classify(&bedrock, Ok(&response));
    assert_eq!(c.outcome, Outcome::Throttled(ThrottleCause::TokensPerDay));
    assert_eq!(c.retry_after, Some(Duration::from_secs(3)));
    // The admission layer's one classification is the same.
    assert_eq!(
        <Bedrock as Protocol<HttpRequest, HttpResponse, ConnectorError>>::classify(
            &bedrock,
            Ok(&response)
        ),
        c
    );
    // The extension wins over the body.
    response.add_extension(BedrockError::new(
        Some("ThrottlingException"),
        Some("Too many requests"),
    ));
    let c = Classify::<_, BoxError>::classify(&bedrock, Ok(&response));
    assert_eq!(c.outcome, Outcome::Throttled(ThrottleCause::Requests));

    let cases: Vec<(ConnectorError, Outcome)> = vec![
        (ConnectorError::timeout("t".into()), Outcome::Transient),
        (ConnectorError::io("reset".into()), Outcome::Transient),
        (ConnectorError::user("bad".into()), Outcome::Fatal),
        (
            ConnectorError::other("x".into(), Some(ErrorKind::ThrottlingError)),
            Outcome::Throttled(ThrottleCause::Unknown),
        ),
        (
            ConnectorError::other("x".into(), Some(ErrorKind::TransientError)),
            Outcome::Transient,
        ),
        (
            ConnectorError::other("x".into(), Some(ErrorKind::ServerError)),
            Outcome::Transient,
        ),
        (
            ConnectorError::other("x".into(), Some(ErrorKind::ClientError)),
            Outcome::Fatal,
        ),
        (ConnectorError::other("x".into(), None), Outcome::Fatal),
    ];
    for (error, expected) in cases {
        assert_eq!(
            classify_connector_error(&error).outcome,
            expected,
            "{error:?}"
        );
        let c = Classify::<HttpResponse, _>::classify(&bedrock, Err(&error));
        assert_eq!(c.outcome, expected, "{error:?}");
        let boxed: BoxError = Box::new(error);
        let c = Classify::<HttpResponse, BoxError>::classify(&bedrock, Err(&boxed));
        assert_eq!(c.outcome, expected);
    }
    let other: BoxError = "something else".into();
    assert_eq!(
        Classify::<HttpResponse, BoxError>::classify(&bedrock, Err(&other)).outcome,
        Outcome::Transient
    );
}

async fn sdk_through_layer(path: &str, response: HttpResponse) -> HttpResponse {
    let cell = Arc::new(Mutex::new(Some(response)));
    let transport = tower::service_fn(move |_req: HttpRequest| {
        let response = cell.lock().unwrap().take().unwrap();
        async move { Ok::<_, ConnectorError>(response) }
    });
    ServiceBuilder::new()
        .layer(Bedrock::new().response_layer())
        .service(transport)
        .oneshot(sdk_request(&format!("{HOST}{path}"), "{}"))
        .await
        .unwrap()
}

#[tokio::test]
async fn sdk_error_bodies_are_buffered_in_memory() {
    let mut response = sdk_response(
        429,
        SdkBody::from_body_1_x(chunked(
            br#"{"message":"Too many tokens, please wait before trying again."}"#,
            7,
        )),
    );
    response
        .headers_mut()
        .insert("x-amzn-ErrorType", "ThrottlingException:http://x/");
    let response =
        sdk_through_layer(&format!("/model/{SONNET_4_ENCODED}/converse"), response).await;
    assert_eq!(
        response.body().bytes(),
        Some(&br#"{"message":"Too many tokens, please wait before trying again."}"#[..])
    );
    assert_eq!(
        response.extension::<BedrockError>().unwrap().code(),
        Some("ThrottlingException")
    );
    let c = Classify::<_, ConnectorError>::classify(&Bedrock::new(), Ok(&response));
    assert_eq!(c.outcome, Outcome::Throttled(ThrottleCause::Tokens));
}

#[tokio::test]
async fn sdk_first_frame() {
    let path = format!("/model/{SONNET_4_ENCODED}/converse-stream");
    // An exception first: an in-memory 429 the SDK parses as a modeled ThrottlingException.
    let mut messages = vec![exception(
        "throttlingException",
        "Too many requests, please wait before trying again.",
    )];
    messages.extend(converse_stream(1, 1));
    let response = sdk_through_layer(&path, streaming(frames(&messages), 5)).await;
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(
        response.headers().get("x-amzn-errortype"),
        Some("ThrottlingException")
    );
    assert_eq!(
        response.body().bytes(),
        Some(&br#"{"message":"Too many requests, please wait before trying again."}"#[..])
    );
    let c = Classify::<_, ConnectorError>::classify(&Bedrock::new(), Ok(&response));
    assert_eq!(c.outcome, Outcome::Throttled(ThrottleCause::Requests));

    // An event first: the same bytes.
    let bytes = frames(&converse_stream(1, 1));
    let mut response = sdk_through_layer(&path, streaming(bytes.clone(), 3)).await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(drain(response.take_body()).await, bytes);
}

// ---------------------------------------------------------------------------------------------
// through the real SDK client

use aws_sdk_bedrockruntime::config::{BehaviorVersion, Region};
use aws_sdk_bedrockruntime::types::{ContentBlock, ConversationRole, Message as SdkMessage};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use tower::util::BoxCloneSyncService;

type Stack = BoxCloneSyncService<HttpRequest, HttpResponse, ConnectorError>;

/// An `HttpClient` that sends every attempt through a Tower stack.
#[derive(Clone)]
struct StackClient(Stack);

impl std::fmt::Debug for StackClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StackClient")
    }
}

impl HttpConnector for StackClient {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let service = self.0.clone();
        HttpConnectorFuture::new(async move { service.oneshot(request).await })
    }
}

impl HttpClient for StackClient {
    fn http_connector(
        &self,
        _: &HttpConnectorSettings,
        _: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

type Plans = Arc<Mutex<Vec<Plan<BedrockKey, Memo>>>>;

/// An SDK client whose transport answers with `respond`, under the response layer; around
/// them, what the admission layer does without a budget: plan each attempt once (recorded in
/// the returned list) and settle its response into `probe` with the plan's memo.
fn sdk_client(
    probe: Probe,
    respond: impl Fn(&HttpRequest) -> HttpResponse + Send + Sync + Clone + 'static,
) -> (aws_sdk_bedrockruntime::Client, Plans) {
    let bedrock = Bedrock::new();
    let transport = tower::service_fn(move |request: HttpRequest| {
        let response = respond(&request);
        async move { Ok::<_, ConnectorError>(response) }
    });
    let inner = ServiceBuilder::new()
        .layer(bedrock.response_layer())
        .service(transport);
    let plans = Plans::default();
    let seen = plans.clone();
    let stack = tower::service_fn(move |mut request: HttpRequest| {
        let plan = sdk_plan(&bedrock, &mut request);
        seen.lock().unwrap().push(plan.clone());
        let (bedrock, inner, probe) =
            (bedrock.clone(), inner.clone(), probe.clone().planned(&plan));
        async move {
            let response = inner.oneshot(request).await?;
            Ok::<_, ConnectorError>(bedrock.settle_with(response, probe, plan.memo))
        }
    });
    let config = aws_sdk_bedrockruntime::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new(
            "AK", "SK", None, None, "test",
        ))
        .endpoint_url("http://127.0.0.1:9")
        .retry_config(aws_smithy_types::retry::RetryConfig::disabled())
        .http_client(StackClient(BoxCloneSyncService::new(stack)))
        .build();
    (aws_sdk_bedrockruntime::Client::from_conf(config), plans)
}

fn user_message(text: &str) -> SdkMessage {
    SdkMessage::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text(text.into()))
        .build()
        .unwrap()
}

#[tokio::test]
async fn sdk_converse_settles_after_the_sdk_reads_the_body() {
    let probe = Probe::new(0);
    let (client, plans) = sdk_client(probe.clone(), |request| {
        assert!(
            request
                .uri()
                .ends_with("/model/us.anthropic.claude-sonnet-4-20250514-v1%3A0/converse")
        );
        let body = json!({
            "output": {"message": {"role": "assistant", "content": [{"text": "Hi!"}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": 1000, "outputTokens": 100, "totalTokens": 1100},
            "metrics": {"latencyMs": 1}
        });
        let mut response = sdk_response(
            200,
            SdkBody::from_body_1_x(chunked(body.to_string().as_bytes(), 16)),
        );
        response
            .headers_mut()
            .insert("content-type", "application/json");
        response
    });
    let output = client
        .converse()
        .model_id(SONNET_4)
        .messages(user_message("Hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(output.usage().unwrap().output_tokens(), 100);
    assert_eq!(probe.settled(), vec![1_500]);
    // One attempt, planned once: the real SDK's body was in memory and its invocation id is the
    // arrival.
    let plans = plans.lock().unwrap();
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0].key.to_string(), format!("us-east-1/{SONNET_4}"));
    assert_eq!(
        plans[0].memo.max_output(),
        64_000,
        "no maxTokens: the model maximum"
    );
    assert!(plans[0].arrival.as_deref().is_some_and(|id| !id.is_empty()));
    assert!(
        plans[0].leave_by.is_none(),
        "no layered client, no deadline"
    );
}

#[tokio::test]
async fn sdk_sees_a_first_frame_exception_as_a_modeled_throttle() {
    let probe = Probe::new(0);
    let (client, _) = sdk_client(probe.clone(), |_| {
        let mut messages = vec![exception(
            "throttlingException",
            "Too many tokens, please wait before trying again.",
        )];
        messages.extend(converse_stream(1, 1));
        streaming(frames(&messages), 7)
    });
    let error = client
        .converse_stream()
        .model_id(SONNET_4)
        .messages(user_message("Hello"))
        .send()
        .await
        .unwrap_err();
    let error = error.into_service_error();
    assert!(error.is_throttling_exception(), "{error:?}");
    assert_eq!(
        error.meta().message(),
        Some("Too many tokens, please wait before trying again.")
    );
    assert_eq!(probe.settled(), vec![0], "rejected before reserving");
}

#[tokio::test]
async fn sdk_reads_the_replayed_stream_and_it_settles_from_metadata() {
    let probe = Probe::new(0);
    let (client, _) = sdk_client(probe.clone(), |_| {
        streaming(frames(&converse_stream(1000, 100)), 7)
    });
    let mut output = client
        .converse_stream()
        .model_id(SONNET_4)
        .messages(user_message("Hello"))
        .send()
        .await
        .unwrap();
    let mut text = String::new();
    let mut usage = None;
    while let Some(event) = output.stream.recv().await.unwrap() {
        use aws_sdk_bedrockruntime::types::{ContentBlockDelta, ConverseStreamOutput};
        match event {
            ConverseStreamOutput::ContentBlockDelta(delta) => {
                if let Some(ContentBlockDelta::Text(t)) = delta.delta() {
                    text.push_str(t);
                }
            }
            ConverseStreamOutput::Metadata(metadata) => usage = metadata.usage().cloned(),
            _ => {}
        }
    }
    assert_eq!(text, "Hello world!");
    assert_eq!(usage.unwrap().input_tokens(), 1000);
    assert_eq!(probe.settled(), vec![1_500]);
}
