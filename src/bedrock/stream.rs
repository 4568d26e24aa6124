//! The innermost layer: makes a Bedrock response readable by the synchronous classifier and the
//! settlement, by buffering error bodies (bounded) and turning an exception in a stream's first
//! frame into the error response it stands for.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use aws_smithy_eventstream::frame::read_message_from;
use aws_smithy_types::event_stream::Message;
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::error::BedrockError;
use super::usage::header_str;
use crate::macros::define_inner_service_accessors;

/// The most bytes of an error body read into memory (Bedrock's are a few hundred bytes).
pub(crate) const ERROR_BODY_LIMIT: usize = 64 << 10;
/// The largest event-stream frame looked at (the first one here, any one while a stream
/// settles); a longer one is passed on unexamined.
pub(crate) const FRAME_LIMIT: usize = 1 << 20;

/// The content type of Bedrock's streaming responses.
pub(crate) const EVENT_STREAM_CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";

/// A [`Layer`] that buffers error bodies and rewrites first-frame stream exceptions. See the
/// [type docs](Self).
///
/// # The innermost layer: makes a Bedrock response readable by the synchronous classifier and the
/// settlement, and turns a stream that fails before its first event into an error response.
///
/// Two jobs, each because a later step cannot do it itself:
/// 1. **Buffer error bodies.** The message that tells a requests throttle from a tokens throttle
///    from the daily quota is in the body, and a classifier cannot await a body. Non-2xx bodies
///    (small JSON) are read into memory (up to 64 KiB), parsed into a [`BedrockError`] response
///    extension, and put back unchanged.
/// 2. **First-frame exceptions.** A stream that fails after HTTP 200 does so with an exception
///    frame, which no SDK retries. If that frame is the FIRST one, nothing has reached the
///    caller: the response is replaced by the equivalent HTTP error (status per exception,
///    `x-amzn-ErrorType` in PascalCase, `{"message": ..}` body, the [`BedrockError`] extension),
///    so the retry layer and the SDK treat it like any throttle. Otherwise the bytes read are put
///    back in front of the rest of the stream, and the caller sees exactly the original bytes.
///    After the first frame nothing is touched: later exceptions reach the caller unchanged.
///
/// | exception frame | status | code |
/// |---|---|---|
/// | `throttlingException`, `modelNotReadyException` | 429 | `ThrottlingException`, `ModelNotReadyException` |
/// | `serviceUnavailableException` | 503 | `ServiceUnavailableException` |
/// | `internalServerException` (and protocol `error` frames) | 500 | `InternalServerException` |
/// | `modelStreamErrorException`, `modelErrorException` | 424 | `ModelStreamErrorException`, ... |
/// | `modelTimeoutException` | 408 | `ModelTimeoutException` |
/// | `validationException`, `serviceQuotaExceededException` | 400 | ... |
/// | `accessDeniedException` / `resourceNotFoundException` | 403 / 404 | ... |
/// | anything else | 500 | the type in PascalCase |
///
/// Put it innermost, right above the transport, so every attempt of the retry layer goes
/// through it:
///
/// ```
/// use bedrock_throttle::bedrock::{Bedrock, BedrockError};
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let transport = tower::service_fn(|_req: http::Request<Bytes>| async {
///     let response = http::Response::builder()
///         .status(429)
///         .header("x-amzn-ErrorType", "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/")
///         .body(Full::new(Bytes::from_static(br#"{"message":"Too many tokens, please wait before trying again."}"#)))
///         .unwrap();
///     Ok::<_, std::convert::Infallible>(response)
/// });
/// let mut service = ServiceBuilder::new()
///     .layer(Bedrock::new().response_layer())
///     .service(transport);
/// let request = http::Request::post("https://bedrock-runtime.us-east-1.amazonaws.com/model/amazon.nova-lite-v1%3A0/converse")
///     .body(Bytes::from_static(b"{}"))
///     .unwrap();
/// let response = service.ready().await.unwrap().call(request).await.unwrap();
/// let error = response.extensions().get::<BedrockError>().unwrap();
/// assert_eq!(error.message(), Some("Too many tokens, please wait before trying again."));
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct BedrockResponseLayer {
    _private: (),
}

impl BedrockResponseLayer {
    /// The layer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for BedrockResponseLayer {
    type Service = BedrockResponse<S>;
    fn layer(&self, inner: S) -> BedrockResponse<S> {
        BedrockResponse { inner }
    }
}

/// The service of [`BedrockResponseLayer`].
#[derive(Debug, Clone)]
pub struct BedrockResponse<S> {
    inner: S,
}

impl<S> BedrockResponse<S> {
    define_inner_service_accessors!();
}

impl<S, Req> Service<Req> for BedrockResponse<S>
where
    S: Service<Req>,
    S::Response: InspectResponse,
{
    type Response = <S::Response as InspectResponse>::Output;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        ResponseFuture {
            future: self.inner.call(request),
            reading: None,
        }
    }
}

pin_project! {
    /// The response future of [`BedrockResponse`].
    pub struct ResponseFuture<F, Res: InspectResponse> {
        #[pin]
        future: F,
        reading: Option<Reading<Res>>,
    }
}

impl<F, Res: InspectResponse> fmt::Debug for ResponseFuture<F, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("reading", &self.reading.is_some())
            .finish()
    }
}

impl<F, Res, E> Future for ResponseFuture<F, Res>
where
    F: Future<Output = Result<Res, E>>,
    Res: InspectResponse,
{
    type Output = Result<Res::Output, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(reading) = this.reading.as_mut() {
            return reading.poll(cx).map(Ok);
        }
        let response = ready!(this.future.poll(cx))?;
        let status = response.status();
        let mode = if !(200..300).contains(&status) {
            Mode::ErrorBody
        } else if response
            .header("content-type")
            .is_some_and(|ct| ct.starts_with(EVENT_STREAM_CONTENT_TYPE))
        {
            Mode::FirstFrame
        } else {
            return Poll::Ready(Ok(response.passthrough()));
        };
        let (head, body) = response.into_parts();
        let reading = this.reading.insert(Reading {
            head: Some(head),
            body: Some(body),
            buf: BytesMut::new(),
            mode,
        });
        reading.poll(cx).map(Ok)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    ErrorBody,
    FirstFrame,
}

/// A response whose body is being read.
struct Reading<Res: InspectResponse> {
    head: Option<Res::Head>,
    body: Option<Res::Body>,
    buf: BytesMut,
    mode: Mode,
}

enum FirstFrame {
    Incomplete,
    Event,
    Exception(u16, BedrockError),
}

impl<Res: InspectResponse> Reading<Res> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Res::Output> {
        loop {
            let Some(body) = self.body.as_mut() else {
                panic!("ResponseFuture polled after completion");
            };
            match ready!(Pin::new(body).poll_frame(cx)) {
                None => {
                    self.body = None;
                    return Poll::Ready(self.finish_ended());
                }
                Some(Err(error)) => {
                    self.body = None;
                    return Poll::Ready(self.replay(Some(Err(error))));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.buf.extend_from_slice(&data),
                    Err(trailers) => return Poll::Ready(self.replay(Some(Ok(trailers)))),
                },
            }
            match self.mode {
                Mode::ErrorBody if self.buf.len() > ERROR_BODY_LIMIT => {
                    return Poll::Ready(self.replay(None));
                }
                Mode::ErrorBody => {}
                Mode::FirstFrame => match first_frame(&self.buf) {
                    FirstFrame::Incomplete => {}
                    FirstFrame::Event => return Poll::Ready(self.replay(None)),
                    FirstFrame::Exception(status, error) => {
                        self.body = None;
                        return Poll::Ready(self.rewrite(status, error));
                    }
                },
            }
        }
    }

    fn take_head(&mut self) -> Res::Head {
        self.head
            .take()
            .expect("ResponseFuture polled after completion")
    }

    /// The body ended while being read.
    fn finish_ended(&mut self) -> Res::Output {
        let head = self.take_head();
        let bytes = std::mem::take(&mut self.buf).freeze();
        match self.mode {
            Mode::ErrorBody => {
                let error =
                    BedrockError::from_parts(Res::head_header(&head, "x-amzn-errortype"), &bytes);
                Res::buffered(head, bytes, Some(error))
            }
            Mode::FirstFrame => match first_frame(&bytes) {
                FirstFrame::Exception(status, error) => Res::rewritten(head, status, error),
                // A stream shorter than one frame, or a complete event: unchanged.
                _ => Res::buffered(head, bytes, None),
            },
        }
    }

    /// Puts the bytes read back in front of the rest of the body (and `held` after them).
    fn replay(
        &mut self,
        held: Option<Result<Frame<Bytes>, <Res::Body as Body>::Error>>,
    ) -> Res::Output {
        let mut head = self.take_head();
        let prefix = std::mem::take(&mut self.buf).freeze();
        if self.mode == Mode::ErrorBody {
            let error = BedrockError::from_parts(Res::head_header(&head, "x-amzn-errortype"), b"");
            Res::attach_error(&mut head, error);
        }
        let failed = matches!(held, Some(Err(_)));
        let rest = if failed { None } else { self.body.take() };
        let body = ReplayBody {
            prefix: (!prefix.is_empty()).then_some(prefix),
            held,
            rest,
        };
        Res::replay(head, body)
    }

    fn rewrite(&mut self, status: u16, error: BedrockError) -> Res::Output {
        let head = self.take_head();
        Res::rewritten(head, status, error)
    }
}

/// Looks at the first frame of an event stream, if it is complete.
fn first_frame(buf: &[u8]) -> FirstFrame {
    let Some(prelude) = buf.get(..4) else {
        return FirstFrame::Incomplete;
    };
    let total = u32::from_be_bytes([prelude[0], prelude[1], prelude[2], prelude[3]]) as usize;
    if !(16..=FRAME_LIMIT).contains(&total) {
        return FirstFrame::Event;
    }
    let Some(frame) = buf.get(..total) else {
        return FirstFrame::Incomplete;
    };
    match read_message_from(frame) {
        Ok(message) => match exception_of(&message) {
            Some((status, error)) => FirstFrame::Exception(status, error),
            None => FirstFrame::Event,
        },
        // Not a valid frame: the caller's own decoder will say so.
        Err(_) => FirstFrame::Event,
    }
}

/// The HTTP status and error equivalent to an exception (or protocol error) frame.
pub(crate) fn exception_of(message: &Message) -> Option<(u16, BedrockError)> {
    let payload_message = || -> Option<String> {
        let json: serde_json::Value = serde_json::from_slice(message.payload()).ok()?;
        ["message", "Message", "errorMessage"]
            .iter()
            .find_map(|k| json.get(*k).and_then(|v| v.as_str()))
            .map(str::to_owned)
    };
    match header_str(message, ":message-type")? {
        "exception" => {
            let kind = header_str(message, ":exception-type").unwrap_or("internalServerException");
            let status = match kind {
                "throttlingException" | "modelNotReadyException" => 429,
                "serviceUnavailableException" => 503,
                "internalServerException" => 500,
                "modelStreamErrorException" | "modelErrorException" => 424,
                "validationException" | "serviceQuotaExceededException" => 400,
                "modelTimeoutException" => 408,
                "accessDeniedException" => 403,
                "resourceNotFoundException" => 404,
                _ => 500,
            };
            let code = pascal_case(kind);
            let text = payload_message();
            Some((
                status,
                BedrockError::new(Some(&code), text.as_deref()).mark_from_stream(),
            ))
        }
        "error" => {
            let text = header_str(message, ":error-message")
                .map(str::to_owned)
                .or_else(payload_message);
            Some((
                500,
                BedrockError::new(Some("InternalServerException"), text.as_deref())
                    .mark_from_stream(),
            ))
        }
        _ => None,
    }
}

fn pascal_case(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The JSON body of a rewritten error: `{"message": ...}`.
fn error_json(error: &BedrockError) -> Bytes {
    let body = match error.message() {
        Some(message) => serde_json::json!({ "message": message }),
        None => serde_json::json!({}),
    };
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

pin_project! {
    /// A body that yields bytes already read, then an event held back (trailers or an error),
    /// then the rest of the original body.
    pub struct ReplayBody<B: Body> {
        prefix: Option<Bytes>,
        held: Option<Result<Frame<Bytes>, B::Error>>,
        #[pin]
        rest: Option<B>,
    }
}

impl<B: Body> ReplayBody<B> {
    /// The body, unchanged.
    pub fn new(body: B) -> Self {
        Self {
            prefix: None,
            held: None,
            rest: Some(body),
        }
    }

    /// A body of exactly these bytes.
    pub fn full(bytes: Bytes) -> Self {
        Self {
            prefix: (!bytes.is_empty()).then_some(bytes),
            held: None,
            rest: None,
        }
    }

    /// The bytes not yet yielded of what was read ahead, if any.
    pub fn prefix(&self) -> Option<&Bytes> {
        self.prefix.as_ref()
    }
}

impl<B: Body> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayBody")
            .field("prefix", &self.prefix.as_ref().map(Bytes::len))
            .field("held", &self.held.is_some())
            .field("rest", &self.rest.is_some())
            .finish()
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        if let Some(prefix) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        if let Some(held) = this.held.take() {
            return Poll::Ready(Some(held));
        }
        match this.rest.as_pin_mut() {
            Some(rest) => rest.poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none()
            && self.held.is_none()
            && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        let mut hint = match (&self.held, &self.rest) {
            (None, Some(rest)) => rest.size_hint(),
            (None, None) => SizeHint::with_exact(0),
            (Some(_), _) => SizeHint::new(),
        };
        hint.set_lower(hint.lower() + prefix);
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + prefix);
        }
        hint
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A response type [`BedrockResponseLayer`] can inspect and rebuild: `http::Response<B>` (with
/// `B: Body<Data = Bytes> + Unpin`) and, with the `sdk` feature, the AWS SDK's `HttpResponse`.
/// Sealed.
pub trait InspectResponse: sealed::Sealed + Sized {
    /// The body type.
    type Body: Body<Data = Bytes> + Unpin;
    /// The response without its body.
    type Head;
    /// The response type handed on.
    type Output;

    /// The HTTP status.
    fn status(&self) -> u16;
    /// A header value, by lower-case name.
    fn header(&self, name: &str) -> Option<&str>;
    /// Splits the response into head and body.
    fn into_parts(self) -> (Self::Head, Self::Body);
    /// A header of a head.
    fn head_header<'a>(head: &'a Self::Head, name: &str) -> Option<&'a str>;
    /// Attaches a parsed error to a head.
    fn attach_error(head: &mut Self::Head, error: BedrockError);
    /// The response unchanged.
    fn passthrough(self) -> Self::Output;
    /// The head with a body that replays what was read.
    fn replay(head: Self::Head, body: ReplayBody<Self::Body>) -> Self::Output;
    /// The head with a body read whole, and the error parsed from it.
    fn buffered(head: Self::Head, body: Bytes, error: Option<BedrockError>) -> Self::Output;
    /// An error response made from a first-frame exception.
    fn rewritten(head: Self::Head, status: u16, error: BedrockError) -> Self::Output;
}

impl<B> sealed::Sealed for http::Response<B> {}

impl<B> InspectResponse for http::Response<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Body = B;
    type Head = http::response::Parts;
    type Output = http::Response<ReplayBody<B>>;

    fn status(&self) -> u16 {
        self.status().as_u16()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers().get(name).and_then(|v| v.to_str().ok())
    }
    fn into_parts(self) -> (Self::Head, B) {
        http::Response::into_parts(self)
    }
    fn head_header<'a>(head: &'a Self::Head, name: &str) -> Option<&'a str> {
        head.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn attach_error(head: &mut Self::Head, error: BedrockError) {
        head.extensions.insert(error);
    }
    fn passthrough(self) -> Self::Output {
        self.map(ReplayBody::new)
    }
    fn replay(head: Self::Head, body: ReplayBody<B>) -> Self::Output {
        http::Response::from_parts(head, body)
    }
    fn buffered(mut head: Self::Head, body: Bytes, error: Option<BedrockError>) -> Self::Output {
        if let Some(error) = error {
            head.extensions.insert(error);
        }
        http::Response::from_parts(head, ReplayBody::full(body))
    }
    fn rewritten(mut head: Self::Head, status: u16, error: BedrockError) -> Self::Output {
        let body = error_json(&error);
        head.status =
            http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        let headers = &mut head.headers;
        headers.remove(http::header::TRANSFER_ENCODING);
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        headers.insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from(body.len()),
        );
        if let Some(code) = error
            .code()
            .and_then(|c| http::HeaderValue::from_str(c).ok())
        {
            headers.insert("x-amzn-errortype", code);
        }
        head.extensions.insert(error);
        http::Response::from_parts(head, ReplayBody::full(body))
    }
}

#[cfg(feature = "sdk")]
mod sdk {
    use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;
    use bytes::Bytes;

    use super::{BedrockError, InspectResponse, ReplayBody, error_json};

    impl super::sealed::Sealed for HttpResponse {}

    impl InspectResponse for HttpResponse {
        type Body = SdkBody;
        type Head = HttpResponse;
        type Output = HttpResponse;

        fn status(&self) -> u16 {
            self.status().as_u16()
        }
        fn header(&self, name: &str) -> Option<&str> {
            self.headers().get(name)
        }
        fn into_parts(mut self) -> (HttpResponse, SdkBody) {
            let body = self.take_body();
            (self, body)
        }
        fn head_header<'a>(head: &'a HttpResponse, name: &str) -> Option<&'a str> {
            head.headers().get(name)
        }
        fn attach_error(head: &mut HttpResponse, error: BedrockError) {
            head.add_extension(error);
        }
        fn passthrough(self) -> HttpResponse {
            self
        }
        fn replay(mut head: HttpResponse, body: ReplayBody<SdkBody>) -> HttpResponse {
            *head.body_mut() = SdkBody::from_body_1_x(body);
            head
        }
        fn buffered(
            mut head: HttpResponse,
            body: Bytes,
            error: Option<BedrockError>,
        ) -> HttpResponse {
            if let Some(error) = error {
                head.add_extension(error);
            }
            // In memory, so `SdkBody::bytes()` works for classifiers and deserializers.
            *head.body_mut() = SdkBody::from(body);
            head
        }
        fn rewritten(mut head: HttpResponse, status: u16, error: BedrockError) -> HttpResponse {
            let body = error_json(&error);
            *head.status_mut() = StatusCode::try_from(status)
                .unwrap_or_else(|_| StatusCode::try_from(500).expect("500 is a valid status"));
            let headers = head.headers_mut();
            headers.remove("transfer-encoding");
            headers.insert("content-type", "application/json");
            headers.insert("content-length", body.len().to_string());
            if let Some(code) = error.code() {
                headers.insert("x-amzn-errortype", code.to_owned());
            }
            head.add_extension(error);
            *head.body_mut() = SdkBody::from(body);
            head
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_types::event_stream::{Header, HeaderValue};

    fn frame(message: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        aws_smithy_eventstream::frame::write_message_to(message, &mut out).unwrap();
        out
    }

    fn exception(kind: &'static str, text: &str) -> Message {
        Message::new(format!(r#"{{"message":"{text}"}}"#).into_bytes())
            .add_header(Header::new(
                ":message-type",
                HeaderValue::String("exception".into()),
            ))
            .add_header(Header::new(
                ":exception-type",
                HeaderValue::String(kind.into()),
            ))
            .add_header(Header::new(
                ":content-type",
                HeaderValue::String("application/json".into()),
            ))
    }

    #[test]
    fn exception_table() {
        for (kind, status, code) in [
            ("throttlingException", 429, "ThrottlingException"),
            (
                "serviceUnavailableException",
                503,
                "ServiceUnavailableException",
            ),
            ("internalServerException", 500, "InternalServerException"),
            (
                "modelStreamErrorException",
                424,
                "ModelStreamErrorException",
            ),
            ("validationException", 400, "ValidationException"),
            ("modelTimeoutException", 408, "ModelTimeoutException"),
            ("somethingNewException", 500, "SomethingNewException"),
        ] {
            let (s, e) = exception_of(&exception(kind, "m")).unwrap();
            assert_eq!(
                (s, e.code(), e.message()),
                (status, Some(code), Some("m")),
                "{kind}"
            );
            assert!(e.is_from_stream());
        }
        let event = Message::new(&b"{}"[..]).add_header(Header::new(
            ":message-type",
            HeaderValue::String("event".into()),
        ));
        assert!(exception_of(&event).is_none());
    }

    #[test]
    fn first_frame_decisions() {
        let bytes = frame(&exception("throttlingException", "Too many tokens"));
        assert!(matches!(first_frame(&bytes[..3]), FirstFrame::Incomplete));
        assert!(matches!(
            first_frame(&bytes[..bytes.len() - 1]),
            FirstFrame::Incomplete
        ));
        assert!(matches!(first_frame(&bytes), FirstFrame::Exception(429, _)));
        // A corrupt frame or an absurd length is passed on.
        let mut corrupt = bytes.clone();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        assert!(matches!(first_frame(&corrupt), FirstFrame::Event));
        assert!(matches!(
            first_frame(&[0xff, 0xff, 0xff, 0xff, 0]),
            FirstFrame::Event
        ));
        assert!(matches!(first_frame(&[0, 0, 0, 1, 0]), FirstFrame::Event));
    }
}
