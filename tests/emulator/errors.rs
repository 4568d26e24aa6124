//! Every error the emulator can send, through the real SDK client: each parses as the type the
//! operation's service model defines, with its modeled members; faults an operation does not
//! model are not injected; unknown and malformed model ids get Bedrock's exact answers.

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::error::ProvideErrorMetadata;
use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, InferenceConfiguration, Message,
};
use bedrock_throttle::emulator::{Emulator, EmulatorHandle, Fault, StreamException};
use serde_json::json;

use crate::common::*;

fn user(text: &str) -> Message {
    Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text(text.into()))
        .build()
        .unwrap()
}

fn claude_body() -> Blob {
    Blob::new(
        json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 100,
               "messages": [{"role": "user", "content": "abcd"}]})
        .to_string(),
    )
}

async fn with_fault(fault: Fault) -> (EmulatorHandle, Client) {
    let e = Emulator::builder()
        .fault_probability(fault, 1.0)
        .start()
        .await
        .unwrap();
    let c = client(&e);
    (e, c)
}

const HTTP_FAULTS: [Fault; 8] = [
    Fault::ServiceUnavailable,
    Fault::TooManyConnections,
    Fault::InternalServer,
    Fault::ModelTimeout,
    Fault::ModelNotReady,
    Fault::ModelError,
    Fault::AccessDenied,
    Fault::ServiceQuotaExceeded,
];

#[tokio::test]
async fn http_faults_parse_as_the_modeled_error_of_every_operation() {
    use aws_sdk_bedrockruntime::operation::converse::ConverseError as C;
    use aws_sdk_bedrockruntime::operation::converse_stream::ConverseStreamError as CS;
    use aws_sdk_bedrockruntime::operation::invoke_model::InvokeModelError as I;
    use aws_sdk_bedrockruntime::operation::invoke_model_with_response_stream::InvokeModelWithResponseStreamError as IS;
    for fault in HTTP_FAULTS {
        let (e, client) = with_fault(fault).await;
        let invoke = client
            .invoke_model()
            .model_id(SONNET4)
            .body(claude_body())
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        let ok = match (&invoke, fault) {
            (I::ServiceUnavailableException(_), Fault::ServiceUnavailable)
            | (I::ServiceUnavailableException(_), Fault::TooManyConnections)
            | (I::InternalServerException(_), Fault::InternalServer)
            | (I::ModelTimeoutException(_), Fault::ModelTimeout)
            | (I::ModelNotReadyException(_), Fault::ModelNotReady)
            | (I::AccessDeniedException(_), Fault::AccessDenied)
            | (I::ServiceQuotaExceededException(_), Fault::ServiceQuotaExceeded) => true,
            (I::ModelErrorException(m), Fault::ModelError) => {
                assert_eq!(m.original_status_code(), Some(500));
                assert_eq!(m.resource_name(), Some(SONNET4));
                true
            }
            _ => false,
        };
        assert!(ok, "{fault}: {invoke:?}");
        assert!(invoke.message().is_some_and(|m| !m.is_empty()));

        let stream = client
            .invoke_model_with_response_stream()
            .model_id(SONNET4)
            .body(claude_body())
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        let ok = matches!(
            (&stream, fault),
            (
                IS::ServiceUnavailableException(_),
                Fault::ServiceUnavailable
            ) | (
                IS::ServiceUnavailableException(_),
                Fault::TooManyConnections
            ) | (IS::InternalServerException(_), Fault::InternalServer)
                | (IS::ModelTimeoutException(_), Fault::ModelTimeout)
                | (IS::ModelNotReadyException(_), Fault::ModelNotReady)
                | (IS::ModelErrorException(_), Fault::ModelError)
                | (IS::AccessDeniedException(_), Fault::AccessDenied)
                | (
                    IS::ServiceQuotaExceededException(_),
                    Fault::ServiceQuotaExceeded
                )
        );
        assert!(ok, "{fault}: {stream:?}");

        let converse = client
            .converse()
            .model_id(SONNET4)
            .messages(user("hi"))
            .inference_config(InferenceConfiguration::builder().max_tokens(10).build())
            .send()
            .await;
        let converse_stream = client
            .converse_stream()
            .model_id(SONNET4)
            .messages(user("hi"))
            .inference_config(InferenceConfiguration::builder().max_tokens(10).build())
            .send()
            .await;
        if fault == Fault::ServiceQuotaExceeded {
            // Not in Converse's or ConverseStream's model: not injected.
            assert!(converse.is_ok(), "{converse:?}");
            assert!(converse_stream.is_ok());
            continue;
        }
        let converse = converse.unwrap_err().into_service_error();
        let ok = matches!(
            (&converse, fault),
            (C::ServiceUnavailableException(_), Fault::ServiceUnavailable)
                | (C::ServiceUnavailableException(_), Fault::TooManyConnections)
                | (C::InternalServerException(_), Fault::InternalServer)
                | (C::ModelTimeoutException(_), Fault::ModelTimeout)
                | (C::ModelNotReadyException(_), Fault::ModelNotReady)
                | (C::ModelErrorException(_), Fault::ModelError)
                | (C::AccessDeniedException(_), Fault::AccessDenied)
        );
        assert!(ok, "{fault}: {converse:?}");
        let converse_stream = converse_stream.unwrap_err().into_service_error();
        let ok = matches!(
            (&converse_stream, fault),
            (
                CS::ServiceUnavailableException(_),
                Fault::ServiceUnavailable
            ) | (
                CS::ServiceUnavailableException(_),
                Fault::TooManyConnections
            ) | (CS::InternalServerException(_), Fault::InternalServer)
                | (CS::ModelTimeoutException(_), Fault::ModelTimeout)
                | (CS::ModelNotReadyException(_), Fault::ModelNotReady)
                | (CS::ModelErrorException(_), Fault::ModelError)
                | (CS::AccessDeniedException(_), Fault::AccessDenied)
        );
        assert!(ok, "{fault}: {converse_stream:?}");
        drop(e);
    }
}

const STREAM_EXCEPTIONS: [StreamException; 6] = [
    StreamException::Throttling,
    StreamException::ServiceUnavailable,
    StreamException::InternalServer,
    StreamException::ModelStreamError,
    StreamException::ModelTimeout,
    StreamException::Validation,
];

#[tokio::test]
async fn every_modeled_exception_frame_parses_in_each_stream() {
    use aws_sdk_bedrockruntime::types::error::ConverseStreamOutputError as CE;
    use aws_sdk_bedrockruntime::types::error::ResponseStreamError as RE;
    for exception in STREAM_EXCEPTIONS {
        for after_events in [0, 2] {
            let fault = Fault::StreamException {
                exception,
                after_events,
            };
            let (e, client) = with_fault(fault).await;

            let mut out = client
                .invoke_model_with_response_stream()
                .model_id(SONNET4)
                .body(claude_body())
                .send()
                .await
                .unwrap();
            for _ in 0..after_events {
                assert!(out.body.recv().await.unwrap().is_some());
            }
            let err = out.body.recv().await.unwrap_err().into_service_error();
            let ok = match (&err, exception) {
                (RE::ThrottlingException(_), StreamException::Throttling)
                | (RE::ServiceUnavailableException(_), StreamException::ServiceUnavailable)
                | (RE::InternalServerException(_), StreamException::InternalServer)
                | (RE::ModelTimeoutException(_), StreamException::ModelTimeout)
                | (RE::ValidationException(_), StreamException::Validation) => true,
                (RE::ModelStreamErrorException(m), StreamException::ModelStreamError) => {
                    assert_eq!(m.original_status_code(), Some(500));
                    assert!(m.original_message().is_some_and(|s| !s.is_empty()));
                    true
                }
                _ => false,
            };
            assert!(ok, "{fault}: {err:?}");
            assert!(err.message().is_some_and(|m| !m.is_empty()), "{err:?}");

            let mut out = client
                .converse_stream()
                .model_id(SONNET4)
                .messages(user("abcd"))
                .inference_config(InferenceConfiguration::builder().max_tokens(100).build())
                .send()
                .await
                .unwrap();
            if exception == StreamException::ModelTimeout {
                // Not a ConverseStream member: not injected, the stream completes.
                let mut events = 0;
                while out.stream.recv().await.unwrap().is_some() {
                    events += 1;
                }
                assert!(events >= 5, "{events}");
                continue;
            }
            for _ in 0..after_events {
                assert!(out.stream.recv().await.unwrap().is_some());
            }
            let err = out.stream.recv().await.unwrap_err().into_service_error();
            let ok = match (&err, exception) {
                (CE::ThrottlingException(_), StreamException::Throttling)
                | (CE::ServiceUnavailableException(_), StreamException::ServiceUnavailable)
                | (CE::InternalServerException(_), StreamException::InternalServer)
                | (CE::ValidationException(_), StreamException::Validation) => true,
                (CE::ModelStreamErrorException(m), StreamException::ModelStreamError) => {
                    assert_eq!(m.original_status_code(), Some(500));
                    assert!(m.original_message().is_some());
                    true
                }
                _ => false,
            };
            assert!(ok, "{fault}: {err:?}");
            drop(e);
        }
    }
}

#[tokio::test]
async fn unknown_and_malformed_model_ids_get_bedrocks_answers() {
    let e = Emulator::builder()
        .strict_models(true)
        .start()
        .await
        .unwrap();
    let client = client(&e);
    let converse = |id: &str| {
        client
            .converse()
            .model_id(id)
            .messages(user("hi"))
            .inference_config(InferenceConfiguration::builder().max_tokens(10).build())
            .send()
    };

    let err = converse("vendor.no-such-model-v1:0")
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_validation_exception(), "{err:?}");
    assert_eq!(
        err.message(),
        Some("The provided model identifier is invalid.")
    );

    let arn = "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abcdefghijkl";
    let err = converse(arn).await.unwrap_err().into_service_error();
    assert!(err.is_resource_not_found_exception(), "{err:?}");
    assert_eq!(
        err.message(),
        Some("Could not resolve the foundation model from the provided model identifier.")
    );

    let err = converse("not a model/id")
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_validation_exception(), "{err:?}");
    let message = err.message().unwrap();
    assert!(
        message.starts_with(
            "1 validation error detected: Value 'not a model/id' at 'modelId' failed to satisfy \
             constraint: Member must satisfy regular expression pattern: (arn:aws(-[^:]+)?:bedrock:"
        ),
        "{message}"
    );

    let err = client
        .invoke_model()
        .model_id("bad id")
        .body(claude_body())
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_validation_exception(), "{err:?}");
    assert!(
        err.message()
            .unwrap()
            .contains("Value 'bad id' at 'modelId'")
    );

    // Without strict models any well-formed id is served, even a misspelt one.
    let lax = Emulator::builder().start().await.unwrap();
    let out = crate::common::client(&lax)
        .converse()
        .model_id("anthropic.claude-sonnet-4-typo")
        .messages(user("hi"))
        .inference_config(InferenceConfiguration::builder().max_tokens(10).build())
        .send()
        .await;
    assert!(out.is_ok(), "{out:?}");
}
