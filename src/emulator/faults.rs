//! Fault injection: which fault (if any) a request gets, and what each fault looks like on the
//! wire. Messages are the ones seen from real Bedrock (bedrock-facts §2).

use http::StatusCode;

use super::config::{Fault, Faults, StreamException};
use super::error::ApiError;
use super::stats::FaultCounters;

/// The fault for inference request number `index`: the schedule first, else one uniform draw
/// against the cumulative probabilities. A fault that does not apply to the operation (a stream
/// exception on a non-streaming call) is not injected.
pub(crate) fn pick(
    faults: &Faults,
    index: u64,
    streaming: bool,
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
    fault.filter(|f| f.applies(streaming))
}

/// The HTTP error of a non-stream fault (`None` for stream exceptions).
pub(crate) fn http_error(fault: Fault) -> Option<ApiError> {
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
        Fault::StreamException { .. } => return None,
    };
    Some(ApiError::new(status, code, message))
}

/// The `:exception-type` and message of a stream exception frame.
pub(crate) fn stream_exception(e: StreamException) -> (&'static str, &'static str) {
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
        Fault::ServiceUnavailable => counters.service_unavailable += 1,
        Fault::TooManyConnections => counters.too_many_connections += 1,
        Fault::InternalServer => counters.internal_server += 1,
        Fault::ModelTimeout => counters.model_timeout += 1,
        Fault::ModelNotReady => counters.model_not_ready += 1,
        Fault::StreamException { .. } if after_events == 0 => {
            counters.stream_exception_before_events += 1;
        }
        Fault::StreamException { .. } => counters.stream_exception_after_events += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            pick(&faults, 0, false, &mut rng),
            Some(Fault::InternalServer)
        );
        assert_eq!(pick(&faults, 1, false, &mut rng), Some(Fault::ModelTimeout));
        assert_eq!(pick(&faults, 2, false, &mut rng), None);
        assert!(pick(&faults, 2, true, &mut rng).is_some());
    }

    #[test]
    fn probabilities_are_exclusive() {
        let mut faults = Faults::default();
        faults.probabilities.push((Fault::InternalServer, 0.25));
        faults.probabilities.push((Fault::ModelNotReady, 0.25));
        let mut rng = fastrand::Rng::with_seed(7);
        let (mut a, mut b, mut none) = (0, 0, 0);
        for i in 0..4000 {
            match pick(&faults, i, false, &mut rng) {
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
