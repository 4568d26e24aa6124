//! Fault injection: which fault (if any) a request gets, and what each fault looks like on the
//! wire. Messages are the ones seen from real Bedrock; which faults an operation can get is what
//! its service model defines (the AWS SDK's generated error types are the reference).

use http::StatusCode;

use serde_json::{Map, Value};

use super::config::{Fault, Faults, StreamException};
use super::error::ApiError;
use super::ops::Operation;
use super::stats::{FaultCounters, bump};

/// The fault for inference request number `index`: the schedule first, else one uniform draw
/// against the cumulative probabilities. A fault the operation's service model does not define
/// (a stream exception on a non-streaming call, `modelTimeoutException` in ConverseStream,
/// `ServiceQuotaExceededException` in Converse) is not injected.
pub(crate) fn pick(
    faults: &Faults,
    index: u64,
    op: Operation,
    rng: &mut fastrand::Rng,
) -> Option<Fault> {
    let fault = match faults.schedule.get(&index) {
        Some(f) => Some(*f),
        None if faults.probabilities.is_empty() => None,
        None => {
            let x = rng.f64();
            let mut acc = 0.0;
            faults.probabilities.iter().find_map(|(f, p)| {
                acc += p;
                (x < acc).then_some(*f)
            })
        }
    };
    fault.filter(|f| f.applies(op))
}

/// The HTTP error of a non-stream fault for `model_id` (`None` for stream exceptions).
pub(crate) fn http_error(fault: Fault, model_id: &str) -> Option<ApiError> {
    let (status, code, message) = match fault {
        Fault::ServiceUnavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableException",
            "Bedrock is unable to process your request.",
        ),
        Fault::TooManyConnections => (
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableException",
            "Too many connections, please wait before trying again.",
        ),
        Fault::InternalServer => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerException",
            "The system encountered an unexpected error during processing. Try your request again.",
        ),
        Fault::ModelTimeout => (
            StatusCode::REQUEST_TIMEOUT,
            "ModelTimeoutException",
            "Model has timed out in processing the request. Try your request again.",
        ),
        Fault::ModelNotReady => (
            StatusCode::TOO_MANY_REQUESTS,
            "ModelNotReadyException",
            "Model is not ready to serve inference requests. The model is being loaded, try again later.",
        ),
        Fault::ModelError => {
            return Some(
                ApiError::new(
                    StatusCode::FAILED_DEPENDENCY,
                    "ModelErrorException",
                    "The model encountered an error while processing the request. Try your \
                     request again.",
                )
                .with_member("originalStatusCode", 500)
                .with_member("resourceName", model_id),
            );
        }
        Fault::AccessDenied => (
            StatusCode::FORBIDDEN,
            "AccessDeniedException",
            "You don't have access to the model with the specified model ID.",
        ),
        Fault::ServiceQuotaExceeded => (
            StatusCode::BAD_REQUEST,
            "ServiceQuotaExceededException",
            "Your request exceeds the service quota for your account. You can view your quotas \
             at Viewing service quotas. You can resubmit your request later.",
        ),
        Fault::Overloaded { retry_after_secs } => {
            let mut e = ApiError::new(
                StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                "overloaded_error",
                "Overloaded",
            )
            .anthropic_envelope();
            e.retry_after = retry_after_secs.map(|s| std::time::Duration::from_secs(s.into()));
            return Some(e);
        }
        Fault::StreamException { .. } => return None,
    };
    Some(ApiError::new(status, code, message))
}

/// `originalStatusCode` and `originalMessage` of an injected `modelStreamErrorException`: what
/// the model's own endpoint answered, in the exception's modeled members.
const MODEL_STREAM_ORIGINAL: (u16, &str) = (500, "The model stream was interrupted.");

/// The `:exception-type` and payload members of a stream exception frame.
pub(crate) fn stream_exception(e: StreamException) -> (&'static str, Map<String, Value>) {
    let (kind, message) = stream_exception_message(e);
    let mut members = Map::new();
    members.insert("message".to_owned(), message.into());
    if e == StreamException::ModelStreamError {
        let (status, original) = MODEL_STREAM_ORIGINAL;
        members.insert("originalStatusCode".to_owned(), status.into());
        members.insert("originalMessage".to_owned(), original.into());
    }
    (kind, members)
}

fn stream_exception_message(e: StreamException) -> (&'static str, &'static str) {
    match e {
        StreamException::Throttling => (
            "throttlingException",
            "Too many tokens, please wait before trying again.",
        ),
        StreamException::ServiceUnavailable => (
            "serviceUnavailableException",
            "Bedrock is unable to process your request.",
        ),
        StreamException::InternalServer => (
            "internalServerException",
            "The system encountered an unexpected error during processing. Try your request again.",
        ),
        StreamException::ModelStreamError => (
            "modelStreamErrorException",
            "The model encountered an error while streaming the response.",
        ),
        StreamException::ModelTimeout => (
            "modelTimeoutException",
            "Model has timed out in processing the request. Try your request again.",
        ),
        StreamException::Validation => (
            "validationException",
            "The model produced output that failed validation.",
        ),
    }
}

/// Counts an injected fault. `after_events` is the position a stream exception was actually
/// sent at (it may be clamped below the configured one).
pub(crate) fn count(counters: &mut FaultCounters, fault: Fault, after_events: usize) {
    match fault {
        Fault::ServiceUnavailable => bump(&mut counters.service_unavailable),
        Fault::TooManyConnections => bump(&mut counters.too_many_connections),
        Fault::InternalServer => bump(&mut counters.internal_server),
        Fault::ModelTimeout => bump(&mut counters.model_timeout),
        Fault::ModelNotReady => bump(&mut counters.model_not_ready),
        Fault::ModelError => bump(&mut counters.model_error),
        Fault::AccessDenied => bump(&mut counters.access_denied),
        Fault::ServiceQuotaExceeded => bump(&mut counters.service_quota_exceeded),
        Fault::Overloaded { .. } => bump(&mut counters.overloaded),
        Fault::StreamException { .. } if after_events == 0 => {
            bump(&mut counters.stream_exception_before_events);
        }
        Fault::StreamException { .. } => bump(&mut counters.stream_exception_after_events),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_modeled_faults_apply() {
        let timeout = Fault::StreamException {
            exception: StreamException::ModelTimeout,
            after_events: 0,
        };
        assert!(timeout.applies(Operation::InvokeStream));
        assert!(!timeout.applies(Operation::ConverseStream));
        assert!(!timeout.applies(Operation::Invoke));
        let quota = Fault::ServiceQuotaExceeded;
        assert!(quota.applies(Operation::Invoke) && quota.applies(Operation::InvokeStream));
        assert!(!quota.applies(Operation::Converse) && !quota.applies(Operation::ConverseStream));
        for op in [
            Operation::Invoke,
            Operation::InvokeStream,
            Operation::Converse,
            Operation::ConverseStream,
        ] {
            for f in [Fault::ModelError, Fault::AccessDenied, Fault::ModelTimeout] {
                assert!(f.applies(op), "{f} in {op:?}");
            }
        }
        let (_, members) = stream_exception(StreamException::ModelStreamError);
        assert_eq!(members["originalStatusCode"], 500);
        assert!(members["originalMessage"].is_string());
    }

    #[test]
    fn schedule_wins_and_respects_streaming() {
        let mut faults = Faults::default();
        faults.schedule.insert(1, Fault::ModelTimeout);
        faults.schedule.insert(
            2,
            Fault::StreamException {
                exception: StreamException::Throttling,
                after_events: 0,
            },
        );
        faults.probabilities.push((Fault::InternalServer, 1.0));
        let mut rng = fastrand::Rng::with_seed(3);
        assert_eq!(
            pick(&faults, 0, Operation::Converse, &mut rng),
            Some(Fault::InternalServer)
        );
        assert_eq!(
            pick(&faults, 1, Operation::Converse, &mut rng),
            Some(Fault::ModelTimeout)
        );
        assert_eq!(pick(&faults, 2, Operation::Invoke, &mut rng), None);
        assert!(pick(&faults, 2, Operation::ConverseStream, &mut rng).is_some());
    }

    #[test]
    fn probabilities_are_exclusive() {
        let mut faults = Faults::default();
        faults.probabilities.push((Fault::InternalServer, 0.25));
        faults.probabilities.push((Fault::ModelNotReady, 0.25));
        let mut rng = fastrand::Rng::with_seed(7);
        let (mut a, mut b, mut none) = (0, 0, 0);
        for i in 0..4000 {
            match pick(&faults, i, Operation::Invoke, &mut rng) {
                Some(Fault::InternalServer) => a += 1,
                Some(Fault::ModelNotReady) => b += 1,
                None => none += 1,
                Some(other) => panic!("{other}"),
            }
        }
        assert!((800..1200).contains(&a), "{a}");
        assert!((800..1200).contains(&b), "{b}");
        assert!((1700..2300).contains(&none), "{none}");
    }
}
