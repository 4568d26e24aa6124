//! What a Bedrock error response means: throttled (and on which quota), transient, or fatal.

use std::fmt;
use std::time::Duration;

use serde_json::Value;

use crate::classify::{Outcome, ThrottleCause};

/// The code and message of a Bedrock error response, as read from its header and body.
///
/// [`BedrockResponseLayer`](super::BedrockResponseLayer) attaches one to every non-2xx
/// response (and to the error response it makes from a stream's first exception frame), as a
/// response extension the classifier reads.
///
/// # What a Bedrock error response means: throttled (and on which quota), transient, or fatal
///
/// The code comes from `x-amzn-ErrorType` (cut at the first `:`, keep what follows the last `#`),
/// else the body's `code`, else its `__type`; the message from `message`, `Message` or
/// `errorMessage`. The message is what tells a requests-per-minute throttle from a
/// tokens-per-minute one, and both from the daily quota, so the error BODY must be readable when
/// the classifier runs: [`BedrockResponseLayer`](super::BedrockResponseLayer) reads error bodies
/// into memory and attaches the parsed [`BedrockError`] to the response.
///
/// | code (or status, when there is no code) | outcome |
/// |---|---|
/// | `ThrottlingException` (429): "Too many requests…", "Your request rate is too high…" | `Throttled(Requests)` |
/// | `ThrottlingException`: "Too many tokens, please wait…" | `Throttled(Tokens)` |
/// | `ThrottlingException`: "Too many tokens per day…" | `Throttled(TokensPerDay)`: never retried |
/// | `ThrottlingException`: other text | `Throttled(Unknown)` |
/// | `ModelNotReadyException` (429) | `Throttled(ModelNotReady)` |
/// | `ServiceUnavailableException`, 503; `overloaded_error`, 529 (some model APIs, since 2026) | `Throttled(Capacity)` |
/// | any code with the message "Operation not allowed" (the account is not authorized); `FTUFormNotFilled` (the model's use-case form was not submitted) | `Fatal` |
/// | `InternalServerException`, 500, 502, 504, other 5xx | `Transient` |
/// | `ModelTimeoutException`, 408 | `Transient` |
/// | `ModelErrorException`, `ModelStreamErrorException`, 424 | `Transient` (a failed model run usually passes; the retry budget bounds the cost) |
/// | `ValidationException`, `AccessDeniedException`, `ResourceNotFoundException`, `ServiceQuotaExceededException`, other 4xx | `Fatal` |
///
/// `x-amz-retry-after` (milliseconds) becomes the classification's `retry_after`; a standard
/// `Retry-After` (seconds, or an HTTP date) is honoured when it is absent. AWS says to honour
/// one when present (a 529 may carry it); the retry layer bounds it by its backoff's maximum.
///
/// The body's code and message may also sit in an Anthropic-style envelope
/// (`{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`).
///
/// ```
/// use bedrock_throttle::bedrock::{BedrockError, classify_response_parts};
/// use bedrock_throttle::classify::ThrottleCause;
///
/// let header = "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/";
/// let body = br#"{"message":"Too many tokens per day, please wait before trying again."}"#;
/// let error = BedrockError::from_parts(Some(header), body);
/// assert_eq!(error.code(), Some("ThrottlingException"));
/// let c = classify_response_parts(429, |name| (name == "x-amzn-errortype").then_some(header), body);
/// assert_eq!(c.throttle_cause(), Some(ThrottleCause::TokensPerDay));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct BedrockError {
    code: Option<String>,
    message: Option<String>,
    from_stream: bool,
}

impl BedrockError {
    /// An error with this code and message.
    pub fn new(code: Option<&str>, message: Option<&str>) -> Self {
        Self {
            code: code
                .map(|c| error_code(c).to_owned())
                .filter(|c| !c.is_empty()),
            message: message.map(str::to_owned),
            from_stream: false,
        }
    }

    /// Reads an error from the `x-amzn-ErrorType` header value (if any) and the body bytes
    /// (JSON with `code`/`__type` and `message`/`Message`/`errorMessage`; anything else is
    /// ignored). Never fails.
    pub fn from_parts(error_type_header: Option<&str>, body: &[u8]) -> Self {
        let json: Option<Value> = serde_json::from_slice(body).ok();
        let field = |names: &[&str]| -> Option<&str> {
            let object = json.as_ref()?.as_object()?;
            names
                .iter()
                .find_map(|name| object.get(*name).and_then(Value::as_str))
        };
        // Anthropic's envelope: {"type":"error","error":{"type":"overloaded_error","message":..}}.
        let nested = |name: &str| -> Option<&str> {
            json.as_ref()?
                .get("error")?
                .as_object()?
                .get(name)?
                .as_str()
        };
        let code = error_type_header
            .map(error_code)
            .filter(|c| !c.is_empty())
            .or_else(|| field(&["code", "Code"]).map(error_code))
            .or_else(|| field(&["__type"]).map(error_code))
            .or_else(|| nested("type"))
            .filter(|c| !c.is_empty());
        let message = field(&["message", "Message", "errorMessage"]).or_else(|| nested("message"));
        Self::new(code, message)
    }

    /// The same error, marked as rewritten from an event-stream exception frame.
    pub(crate) fn mark_from_stream(mut self) -> Self {
        self.from_stream = true;
        self
    }

    /// The error code (`ThrottlingException` ...), if the response had one.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The message, if the response had one.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }

    /// Whether this error was the first frame of an event stream (an HTTP 200 whose first
    /// event was an exception), rewritten into an error response.
    pub fn is_from_stream(&self) -> bool {
        self.from_stream
    }
}

impl fmt::Display for BedrockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.code, &self.message) {
            (Some(code), Some(message)) => write!(f, "{code}: {message}"),
            (Some(code), None) => f.write_str(code),
            (None, Some(message)) => f.write_str(message),
            (None, None) => f.write_str("unknown Bedrock error"),
        }
    }
}

impl std::error::Error for BedrockError {}

/// The error code in an `x-amzn-ErrorType` or `__type` value: cut at the first `:`, keep what
/// follows the last `#`.
/// (`error_codes_are_cut_as_the_sdks_cut_them` below.)
pub(crate) fn error_code(raw: &str) -> &str {
    let cut = raw.split(':').next().unwrap_or(raw);
    cut.rsplit('#').next().unwrap_or(cut).trim()
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// Which quota a `ThrottlingException` message speaks of (matched by prefix, ignoring case).
/// (`throttle_messages_name_their_quota` below.)
pub(crate) fn throttle_cause(message: Option<&str>) -> ThrottleCause {
    let Some(message) = message.map(str::trim_start) else {
        return ThrottleCause::Unknown;
    };
    if starts_with_ignore_case(message, "too many tokens per day") {
        ThrottleCause::TokensPerDay
    } else if starts_with_ignore_case(message, "too many tokens") {
        ThrottleCause::Tokens
    } else if starts_with_ignore_case(message, "too many requests")
        || starts_with_ignore_case(message, "your request rate is too high")
    {
        ThrottleCause::Requests
    } else if starts_with_ignore_case(message, "too many connections") {
        ThrottleCause::Capacity
    } else {
        ThrottleCause::Unknown
    }
}

/// The outcome of a response with HTTP `status` and the error read from it.
pub(crate) fn classify_error(status: u16, error: &BedrockError) -> Outcome {
    if (200..300).contains(&status) {
        return Outcome::Success;
    }
    // "ValidationException: Operation not allowed": the account may not call the model;
    // no retry can change that, whatever the code or status says.
    if error
        .message()
        .is_some_and(|m| starts_with_ignore_case(m.trim_start(), "operation not allowed"))
    {
        return Outcome::Fatal;
    }
    match error.code() {
        Some("ThrottlingException") => {
            return Outcome::Throttled(throttle_cause(error.message()));
        }
        Some("ModelNotReadyException") => {
            return Outcome::Throttled(ThrottleCause::ModelNotReady);
        }
        Some("ServiceUnavailableException" | "overloaded_error" | "OverloadedException") => {
            return Outcome::Throttled(ThrottleCause::Capacity);
        }
        Some("FTUFormNotFilled") => return Outcome::Fatal,
        Some(
            "InternalServerException"
            | "ModelTimeoutException"
            | "ModelErrorException"
            | "ModelStreamErrorException",
        ) => return Outcome::Transient,
        Some(
            "ValidationException"
            | "AccessDeniedException"
            | "ResourceNotFoundException"
            | "ServiceQuotaExceededException",
        ) => return Outcome::Fatal,
        _ => {}
    }
    match status {
        429 => Outcome::Throttled(throttle_cause(error.message())),
        503 | 529 => Outcome::Throttled(ThrottleCause::Capacity),
        408 | 424 | 500..=599 => Outcome::Transient,
        _ => Outcome::Fatal,
    }
}

/// The attempts in all (the first and five retries) AWS advises for Bedrock since late 2026:
/// the one source of the SDK setup's default.
#[cfg(feature = "sdk")]
pub(crate) const RECOMMENDED_ATTEMPTS: std::num::NonZeroU32 = match std::num::NonZeroU32::new(6) {
    Some(n) => n,
    None => unreachable!(),
};

/// The delay a server asked for: `x-amz-retry-after` in milliseconds, else `Retry-After` in
/// seconds or as an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`; a date in the past is no
/// delay). Other values are ignored.
pub(crate) fn retry_after(
    x_amz_retry_after: Option<&str>,
    retry_after: Option<&str>,
) -> Option<Duration> {
    let parse = |v: &str| v.trim().parse::<u64>().ok();
    x_amz_retry_after
        .and_then(parse)
        .map(Duration::from_millis)
        .or_else(|| {
            let v = retry_after?;
            parse(v).map(Duration::from_secs).or_else(|| {
                let at = http_date(v.trim())?;
                Some(
                    at.duration_since(std::time::SystemTime::now())
                        .unwrap_or(Duration::ZERO),
                )
            })
        })
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form HTTP servers send.
fn http_date(v: &str) -> Option<std::time::SystemTime> {
    let rest = v.split_once(", ")?.1;
    let mut parts = rest.split(' ');
    let day: i64 = parts.next()?.parse().ok()?;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = parts.next()?;
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':').map(|x| x.parse::<i64>().ok());
    let (h, mi, s) = (hms.next()??, hms.next()??, hms.next()??);
    // Any year outside 1..=9999 is no HTTP date (and would overflow the day count below).
    if parts.next()? != "GMT"
        || !(1..=31).contains(&day)
        || !(1..=9999).contains(&year)
        || !(0..=23).contains(&h)
        || !(0..=59).contains(&mi)
        || !(0..=60).contains(&s)
    {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let secs = u64::try_from(days * 86_400 + h * 3600 + mi * 60 + s).ok()?;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_cut_as_the_sdks_cut_them() {
        assert_eq!(
            error_code("ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"),
            "ThrottlingException"
        );
        assert_eq!(
            error_code("com.amazon.coral.service#ValidationException"),
            "ValidationException"
        );
    }

    #[test]
    fn throttle_messages_name_their_quota() {
        let cause = |m| throttle_cause(Some(m));
        assert_eq!(
            cause("Too many tokens, please wait before trying again."),
            ThrottleCause::Tokens
        );
        assert_eq!(
            cause("Your request rate is too high. Reduce the frequency of requests."),
            ThrottleCause::Requests
        );
        assert_eq!(cause("Rate exceeded"), ThrottleCause::Unknown);
    }

    #[test]
    fn codes() {
        assert_eq!(error_code("ThrottlingException"), "ThrottlingException");
        assert_eq!(
            error_code("aws.protocoltests#FooError:http://x#y"),
            "FooError"
        );
        assert_eq!(error_code(""), "");
        assert_eq!(error_code(":"), "");
    }

    #[test]
    fn body_fallbacks() {
        let e = BedrockError::from_parts(
            None,
            br#"{"__type":"com.amazon#ModelNotReadyException","Message":"loading"}"#,
        );
        assert_eq!(
            (e.code(), e.message()),
            (Some("ModelNotReadyException"), Some("loading"))
        );
        let e = BedrockError::from_parts(
            None,
            br#"{"code":"ValidationException","__type":"X","errorMessage":"bad"}"#,
        );
        assert_eq!(
            (e.code(), e.message()),
            (Some("ValidationException"), Some("bad"))
        );
        let e = BedrockError::from_parts(Some(""), b"<html>");
        assert_eq!((e.code(), e.message()), (None, None));
        let e = BedrockError::from_parts(None, br#"{"message": 5}"#);
        assert_eq!(e.message(), None);
    }

    #[test]
    fn retry_after_values() {
        assert_eq!(
            retry_after(Some("1500"), None),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(retry_after(None, Some("2")), Some(Duration::from_secs(2)));
        assert_eq!(
            retry_after(Some("soon"), Some("3")),
            Some(Duration::from_secs(3))
        );
        assert_eq!(retry_after(Some("-1"), None), None);
        assert_eq!(
            retry_after(None, Some("Sun, 06 Nov 1994 08:49:37 GMT")),
            Some(Duration::ZERO),
            "a date in the past: no delay"
        );
        assert_eq!(
            http_date("Sun, 06 Nov 1994 08:49:37 GMT")
                .unwrap()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            784_111_777
        );
        assert_eq!(
            retry_after(None, Some("Sun, 06 Nov 1994 08:49:37 PST")),
            None
        );
    }

    #[test]
    fn late_2026_errors() {
        let overloaded = BedrockError::from_parts(
            None,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert_eq!(overloaded.code(), Some("overloaded_error"));
        assert_eq!(overloaded.message(), Some("Overloaded"));
        assert_eq!(
            classify_error(529, &overloaded),
            Outcome::Throttled(ThrottleCause::Capacity)
        );
        assert_eq!(
            classify_error(529, &BedrockError::default()),
            Outcome::Throttled(ThrottleCause::Capacity)
        );
        let ftu = BedrockError::new(
            Some("FTUFormNotFilled"),
            Some("Model use case details have not been submitted for this account."),
        );
        assert_eq!(classify_error(404, &ftu), Outcome::Fatal);
        let not_allowed =
            BedrockError::new(Some("ValidationException"), Some("Operation not allowed"));
        assert_eq!(classify_error(400, &not_allowed), Outcome::Fatal);
        // Whatever the status: the account is not authorized.
        assert_eq!(classify_error(503, &not_allowed), Outcome::Fatal);
    }
}
