//! Entry points for the coverage-guided fuzz targets under `fuzz/` and for the corpus replay
//! test (`tests/fuzz_corpus.rs`). **Not an API**: hidden, behind the `fuzzing` feature, and free
//! to change with the crate's internals.
//!
//! Each entry point takes the fuzzer's bytes, drives one of the crate's real parsers with them
//! and asserts what must hold whatever the bytes (a panic is the failure the fuzzer reports).
//! They stay a few lines each so that a renamed internal is re-pointed in one place. Inputs that
//! need structure (a model, an operation, event-stream frames with valid CRCs) are decoded from
//! the first bytes by the small helpers at the end of this file; [`frames_input`] writes such
//! inputs, for the seed corpus.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use aws_smithy_eventstream::frame::{read_message_from, write_message_to};
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use base64::Engine as _;
use bytes::Bytes;
use http_body::{Body, Frame};

use crate::bedrock::error::{error_code, retry_after, throttle_cause};
use crate::bedrock::models::{ModelFamily, default_model_info};
use crate::bedrock::stream::EVENT_STREAM_CONTENT_TYPE;
use crate::bedrock::{
    Bedrock, BedrockError, EstimateBasis, Memo, Operation, Reservation, Usage,
    classify_response_parts,
};
use crate::classify::Outcome;
use crate::emulator::fuzz_hooks as validate;

mod extremes;
pub use self::extremes::extremes;

/// One model id per body family (and the shapes of id the key parser must take: geo prefix,
/// upper case, ARN, unknown). The estimator and validation targets pick one with a byte.
pub const MODELS: [&str; 16] = [
    "anthropic.claude-3-haiku-20240307-v1:0",
    "us.anthropic.claude-sonnet-4-20250514-v1:0",
    "anthropic.claude-v2:1",
    "amazon.titan-text-express-v1",
    "amazon.titan-embed-text-v2:0",
    "cohere.embed-english-v3",
    "eu.amazon.nova-lite-v1:0",
    "meta.llama3-8b-instruct-v1:0",
    "ai21.j2-ultra-v1",
    "mistral.mistral-large-2407-v1:0",
    "cohere.command-r-v1:0",
    "deepseek.r1-v1:0",
    "openai.gpt-oss-120b-1:0",
    "global.anthropic.claude-opus-4-5-20251101-v1:0",
    "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc",
    "Unknown.Model-V1",
];

/// The path suffixes of every operation, picked with a byte.
pub const OPERATIONS: [&str; 8] = [
    "invoke",
    "invoke-with-response-stream",
    "converse",
    "converse-stream",
    "count-tokens",
    "apply",
    "",
    "invoke/extra",
];

/// Request estimator. Input: `[operation][model] body...`.
pub fn estimate(data: &[u8]) {
    let [op, model, body @ ..] = data else { return };
    let bedrock = Bedrock::new();
    let path = model_path(MODELS[usize::from(*model) % MODELS.len()], *op);
    let (key, operation) = bedrock.target(Some("bedrock-runtime.eu-west-1.amazonaws.com"), &path);
    let e = bedrock.estimate(&key, operation, Some(body));
    let missing = bedrock.estimate(&key, operation, None);
    check_estimate(&bedrock, operation, key.model(), body, e, missing);
}

/// The estimator against the emulator's count: for every body the emulator accepts, the
/// crate reserves at least what the emulator (Bedrock's stand-in) reserves, input and output.
/// Input: as [`estimate`].
pub fn estimate_vs_emulator(data: &[u8]) {
    let [op, model, body @ ..] = data else { return };
    let bedrock = Bedrock::new();
    let path = model_path(MODELS[usize::from(*model) % MODELS.len()], *op);
    let (key, operation) = bedrock.target(None, &path);
    let info = bedrock.model_info(key.model());
    let served = match operation {
        Operation::InvokeModel | Operation::InvokeModelWithResponseStream => {
            validate::invoke(info, body)
        }
        Operation::Converse | Operation::ConverseStream => validate::converse(info, body),
        _ => return,
    };
    let Ok(served) = served else { return };
    let e = bedrock.estimate(&key, operation, Some(body));
    assert!(
        e.input_tokens >= served.input && e.max_output_tokens >= served.max_output,
        "{e:?} reserves less than the emulator's {} + {}",
        served.input,
        served.max_output
    );
}

/// Usage from a JSON body (the whole input) and from InvokeModel headers (the input's lines).
pub fn usage(data: &[u8]) {
    if let Some(u) = Usage::from_json(data) {
        check_usage(&u);
    }
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.split('\n').collect();
    let header = |name: &str| {
        let i = USAGE_HEADERS.iter().position(|h| *h == name)?;
        lines.get(i).copied()
    };
    if let Some(u) = Usage::from_headers(header) {
        assert_eq!(Some(u.input_tokens), lines[0].trim().parse().ok());
        check_usage(&u);
    }
}

/// The settling body over an event stream or a JSON body. Input: [`frames_input`]'s format.
pub fn settle(data: &[u8]) {
    let input = FramesInput::parse(data);
    let whole = settle_once(&input, &[input.wire.len()], usize::MAX);
    let split = settle_once(&input, &input.splits, usize::MAX);
    assert_eq!(
        whole, split,
        "the settlement depends on where the body was split"
    );
    let amount = whole.actual;
    if input.flags & FLAG_ERROR_STATUS != 0 {
        assert_eq!(amount, 0, "a refused call is charged");
    } else if input.flags & FLAG_EVENT_STREAM != 0 && !input.may_report_usage {
        assert!(
            amount >= input.reserved,
            "a stream without usage freed its reservation"
        );
    }
    // Dropped after the first chunk: never below the reservation unless usage was read.
    let early = settle_once(&input, &input.splits, 1).actual;
    if input.flags & FLAG_ERROR_STATUS == 0 && !input.may_report_usage {
        assert!(
            early >= input.reserved,
            "an abandoned body freed its reservation"
        );
    }
}

/// Error classification of a status, the error headers and a body. Input:
/// `[status] x-amzn-errortype \n x-amz-retry-after \n retry-after \n body...`.
pub fn classify(data: &[u8]) {
    let [status, rest @ ..] = data else { return };
    let status = STATUSES[usize::from(*status) % STATUSES.len()];
    let mut parts = rest.splitn(4, |b| *b == b'\n');
    let mut next = || parts.next().map(String::from_utf8_lossy);
    let (error_type, x_retry, retry) = (next(), next(), next());
    let body = parts.next().unwrap_or_default();
    let header = |name: &str| match name {
        "x-amzn-errortype" => error_type.as_deref(),
        "x-amz-retry-after" => x_retry.as_deref(),
        "retry-after" => retry.as_deref(),
        _ => None,
    };
    let c = classify_response_parts(status, header, body);
    assert_eq!(c.outcome == Outcome::Success, (200..300).contains(&status));
    let error = BedrockError::from_parts(error_type.as_deref(), body);
    let _ = (error.to_string(), throttle_cause(error.message()));
    if let Some(raw) = error_type.as_deref() {
        let code = error_code(raw);
        assert!(!code.contains(':') && !code.contains('#') && raw.contains(code));
    }
    let _ = retry_after(x_retry.as_deref(), retry.as_deref());
}

/// The first-frame inspection of stream responses ([`Bedrock::response_layer`]). Input:
/// [`frames_input`]'s format.
pub fn first_frame(data: &[u8]) {
    let input = FramesInput::parse(data);
    let streaming = input.flags & FLAG_TAG_MASK != 0;
    let status = if input.flags & FLAG_ERROR_STATUS != 0 {
        429
    } else {
        200
    };
    let response = inspect(&input, status, streaming);
    let error = response.extensions().get::<BedrockError>().cloned();
    let rewritten = status == 200 && response.status() != 200;
    let out = collect(response.into_body());
    if rewritten {
        let error = error.expect("a rewritten response carries its error");
        assert!(error.is_from_stream());
        let frame = input
            .wire
            .get(..first_frame_len(&input.wire))
            .unwrap_or_default();
        let message = read_message_from(frame).expect("rewritten from a valid frame");
        assert!(matches!(
            header(&message, ":message-type"),
            Some("exception" | "error")
        ));
    } else {
        assert_eq!(out, input.wire, "the caller did not get the original bytes");
        assert_eq!(error.is_some(), status != 200);
        let inspected = streaming && status == 200 && input.flags & FLAG_EVENT_STREAM != 0;
        assert!(
            !(inspected && input.first_exception),
            "a first exception frame was missed"
        );
    }
}

/// The emulator's request validation. Input: `[operation][model] body...`.
pub fn emulator_validate(data: &[u8]) {
    let [op, model, body @ ..] = data else { return };
    let info = default_model_info(MODELS[usize::from(*model) % MODELS.len()]);
    let result = match op % 3 {
        0 => validate::invoke(info, body).map(|p| (p.input, p.max_output)),
        1 => validate::converse(info, body).map(|p| (p.input, p.max_output)),
        _ => validate::count_tokens(body).map(|n| (n, 0)),
    };
    match result {
        Ok((_, max_output)) => assert!(max_output <= info.max_output_tokens),
        Err(e) => {
            assert!(e.status.is_client_error() && !e.message.is_empty() && !e.code.is_empty())
        }
    }
}

/// The emulator's HTTP front: the input is written as-is to a connection to an in-process
/// emulator, whose answer must come within [`HTTP_ANSWER_LIMIT`] and never be a 5xx.
pub fn emulator_http(data: &[u8]) {
    let answer = emulator_http_answer(data);
    if let Some(status) = answer.strip_prefix(b"HTTP/1.1 ") {
        let text = String::from_utf8_lossy(&answer);
        assert_ne!(
            status.first(),
            Some(&b'5'),
            "5xx for a client's bytes: {text:?}"
        );
    }
}

/// What the in-process emulator answered to `data` (see [`emulator_http`]).
pub fn emulator_http_answer(data: &[u8]) -> Vec<u8> {
    let mut front = HttpFront::get().lock().unwrap_or_else(|e| e.into_inner());
    let answer = front.exchange(data);
    answer.expect("the emulator did not answer (or close) in time")
}

/// The longest an HTTP exchange with the emulator may take.
pub const HTTP_ANSWER_LIMIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// helpers: input decoding and the checks

const USAGE_HEADERS: [&str; 4] = [
    "x-amzn-bedrock-input-token-count",
    "x-amzn-bedrock-output-token-count",
    "x-amzn-bedrock-cache-read-input-token-count",
    "x-amzn-bedrock-cache-write-input-token-count",
];

const STATUSES: [u16; 16] = [
    200, 400, 403, 404, 408, 424, 429, 500, 503, 204, 302, 413, 418, 502, 599, 100,
];

fn model_path(model: &str, op: u8) -> String {
    let encoded = percent_encoding::utf8_percent_encode(model, percent_encoding::NON_ALPHANUMERIC);
    format!(
        "/model/{encoded}/{}",
        OPERATIONS[usize::from(op) % OPERATIONS.len()]
    )
}

fn check_estimate(
    bedrock: &Bedrock,
    operation: Operation,
    model: &str,
    body: &[u8],
    e: crate::bedrock::RequestEstimate,
    missing: crate::bedrock::RequestEstimate,
) {
    let info = bedrock.model_info(model);
    assert_eq!(
        e.total(),
        e.input_tokens.saturating_add(e.max_output_tokens)
    );
    assert!(e.total() >= e.max_output_tokens && e.total() >= e.input_tokens);
    if !operation.uses_token_quota() {
        assert_eq!((e.total(), e.basis), (0, EstimateBasis::NotCharged));
        return;
    }
    assert!(e.input_tokens >= 1);
    let whole = bedrock.estimator().tokens_for_bytes(body.len() as u64);
    if matches!(
        e.basis,
        EstimateBasis::Unreadable | EstimateBasis::WholeBody
    ) {
        assert!(
            e.input_tokens >= whole,
            "{e:?} below the whole body ({whole})"
        );
    }
    let embedding = info.family == ModelFamily::Embedding && !operation.is_converse();
    if e.basis == EstimateBasis::Unreadable || embedding {
        assert_eq!(e.max_output_tokens, info.max_output_tokens);
    }
    assert_eq!(missing.basis, EstimateBasis::BodyNotInMemory);
    assert_eq!(missing.max_output_tokens, info.max_output_tokens);
}

fn check_usage(u: &Usage) {
    for burndown in [0, 1, 5, u64::MAX] {
        let q = u.quota_tokens(burndown);
        assert!(q >= u.input_tokens && q >= u.cache_write_input_tokens);
        assert!(q >= u.output_tokens.saturating_mul(burndown));
    }
    assert!(u.quota_tokens(5) >= u.quota_tokens(1));
}

const FLAG_EVENT_STREAM: u8 = 1;
/// Bits 1-2: the operation of the call (0: Converse; else a streaming operation).
const FLAG_TAG_MASK: u8 = 0b110;
const FLAG_RESERVED_OUTPUT: u8 = 8;
const FLAG_ERROR_STATUS: u8 = 16;

const MESSAGE_TYPES: [&str; 8] = [
    "event",
    "event",
    "event",
    "exception",
    "error",
    "exception",
    "other",
    "event",
];
const EVENT_TYPES: [&str; 16] = [
    "chunk",
    "chunk",
    "messageStart",
    "contentBlockStart",
    "contentBlockDelta",
    "contentBlockStop",
    "messageStop",
    "metadata",
    "throttlingException",
    "serviceUnavailableException",
    "internalServerException",
    "modelStreamErrorException",
    "validationException",
    "modelTimeoutException",
    "modelNotReadyException",
    "somethingNew",
];

/// A response body described by the fuzzer: event-stream frames (valid CRCs, so the fuzzer
/// does not have to find them) or raw bytes, and where the body is split into chunks.
struct FramesInput {
    flags: u8,
    reserved: u64,
    wire: Vec<u8>,
    splits: Vec<usize>,
    /// A frame or raw bytes could carry usage (a `metadata` or `chunk` event, raw bytes).
    may_report_usage: bool,
    /// The first record is an exception or error frame.
    first_exception: bool,
}

/// One record of [`frames_input`]: a frame (`tag < 0x80`: message type `MESSAGE_TYPES[tag >> 4]`,
/// event or exception type `EVENT_TYPES[tag & 15]`; `chunk` with an even tag wraps the payload
/// as `{"bytes": base64}`) or raw bytes (`tag >= 0x80`), and a split byte (a chunk boundary at
/// `split % (len + 1)` bytes into the record).
#[derive(Debug, Clone)]
pub struct Record<'a> {
    /// The kind of record.
    pub tag: u8,
    /// The payload (or the raw bytes).
    pub payload: &'a [u8],
    /// Where the record is split.
    pub split: u8,
}

/// Writes an input for [`settle`] and [`first_frame`]: `[flags][reserved: u16 LE]` then per
/// record `[tag][len: u16 LE][payload][split]`.
pub fn frames_input(flags: u8, reserved: u16, records: &[Record<'_>]) -> Vec<u8> {
    let mut out = vec![flags];
    out.extend_from_slice(&reserved.to_le_bytes());
    for r in records {
        out.push(r.tag);
        out.extend_from_slice(&(r.payload.len() as u16).to_le_bytes());
        out.extend_from_slice(r.payload);
        out.push(r.split);
    }
    out
}

impl FramesInput {
    fn parse(data: &[u8]) -> Self {
        let (flags, reserved, mut rest) = match data {
            [flags, a, b, rest @ ..] => (*flags, u64::from(u16::from_le_bytes([*a, *b])), rest),
            _ => (0, 0, &[][..]),
        };
        let mut input = FramesInput {
            flags,
            reserved,
            wire: Vec::new(),
            splits: Vec::new(),
            may_report_usage: false,
            first_exception: false,
        };
        while let [tag, a, b, tail @ ..] = rest {
            let len = usize::from(u16::from_le_bytes([*a, *b])).min(tail.len());
            let (payload, tail) = tail.split_at(len);
            let (split, tail) = tail.split_first().map_or((0, &[][..]), |(s, t)| (*s, t));
            rest = tail;
            let start = input.wire.len();
            input.push_record(*tag, payload, start == 0);
            let written = input.wire.len() - start;
            input
                .splits
                .push(start + usize::from(split) % (written + 1));
        }
        input.splits.push(input.wire.len());
        input.splits.sort_unstable();
        input
    }

    fn push_record(&mut self, tag: u8, payload: &[u8], first: bool) {
        if tag >= 0x80 {
            self.may_report_usage = true;
            self.wire.extend_from_slice(payload);
            return;
        }
        let message_type = MESSAGE_TYPES[usize::from(tag >> 4)];
        let kind = EVENT_TYPES[usize::from(tag & 15)];
        let payload = if kind == "chunk" && tag.is_multiple_of(2) {
            let b64 = base64::engine::general_purpose::STANDARD.encode(payload);
            Bytes::from(format!(r#"{{"bytes":"{b64}","p":"abcdefghijkl"}}"#))
        } else {
            Bytes::copy_from_slice(payload)
        };
        let type_header = if message_type == "exception" {
            ":exception-type"
        } else {
            ":event-type"
        };
        let message = Message::new(payload)
            .add_header(Header::new(
                ":message-type",
                HeaderValue::String(message_type.into()),
            ))
            .add_header(Header::new(type_header, HeaderValue::String(kind.into())))
            .add_header(Header::new(
                ":content-type",
                HeaderValue::String("application/json".into()),
            ));
        if message_type == "event" && matches!(kind, "chunk" | "metadata") {
            self.may_report_usage = true;
        }
        if first && matches!(message_type, "exception" | "error") {
            self.first_exception = true;
        }
        write_message_to(&message, &mut self.wire).expect("a frame is written to a Vec");
    }

    /// The body in chunks ending at `splits`.
    fn chunks(&self, splits: &[usize]) -> Chunks {
        let mut chunks = std::collections::VecDeque::new();
        let mut start = 0;
        for &end in splits {
            if end > start {
                chunks.push_back(Bytes::copy_from_slice(&self.wire[start..end]));
                start = end;
            }
        }
        Chunks(chunks)
    }

    fn response(&self, status: u16, splits: &[usize]) -> http::Response<Chunks> {
        let content_type = if self.flags & FLAG_EVENT_STREAM != 0 {
            EVENT_STREAM_CONTENT_TYPE
        } else {
            "application/json"
        };
        http::Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(self.chunks(splits))
            .expect("a valid response")
    }
}

/// A body of chunks that are always ready.
struct Chunks(std::collections::VecDeque<Bytes>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|c| Ok(Frame::data(c))))
    }
}

/// One settlement: the amount, and Bedrock's reservation when the settlement knew it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Settled {
    actual: u64,
    server_reserved: Option<u64>,
}

/// A reservation that records its settlement.
#[derive(Debug, Clone)]
struct Probe {
    reserved: u64,
    settled: Arc<Mutex<Vec<Settled>>>,
}

impl Reservation for Probe {
    fn reserved(&self) -> u64 {
        self.reserved
    }
    fn settle(self, actual: u64) {
        self.settled.lock().expect("not poisoned").push(Settled {
            actual,
            server_reserved: None,
        });
    }
    fn settle_against(self, actual: u64, server_reserved: u64) {
        self.settled.lock().expect("not poisoned").push(Settled {
            actual,
            server_reserved: Some(server_reserved),
        });
    }
}

/// Settles `input`'s body read in chunks ending at `splits`, dropped after `read` chunks.
fn settle_once(input: &FramesInput, splits: &[usize], read: usize) -> Settled {
    let bedrock = Bedrock::new();
    let response = input.response(
        if input.flags & FLAG_ERROR_STATUS != 0 {
            429
        } else {
            200
        },
        splits,
    );
    let memo = memo(&bedrock, input.flags);
    let probe = Probe {
        reserved: input.reserved,
        settled: Arc::default(),
    };
    let body = bedrock
        .settle_with(response, probe.clone(), memo)
        .into_body();
    let out = collect_some(body, read);
    if read == usize::MAX {
        assert_eq!(out, input.wire, "the settling body changed the bytes");
    }
    let settled = probe.settled.lock().expect("not poisoned").clone();
    assert_eq!(settled.len(), 1, "settled {settled:?}, not exactly once");
    settled[0]
}

/// The plan's memo for a call of the streaming operation the flags pick (Converse when none).
fn memo(bedrock: &Bedrock, flags: u8) -> Memo {
    let (model, op) = match (flags & FLAG_TAG_MASK) >> 1 {
        0 => (MODELS[1], 2),
        1 => (MODELS[1], 3),
        2 => (MODELS[0], 1),
        _ => (MODELS[6], 2),
    };
    let (key, operation) = bedrock.target(None, &model_path(model, op));
    let reserved_output = if flags & FLAG_RESERVED_OUTPUT != 0 {
        4_096
    } else {
        0
    };
    Memo::new(
        operation,
        bedrock.output_burndown(key.model()),
        reserved_output,
    )
}

/// Runs `input`'s response through the response layer for a streaming call (or Converse).
fn inspect(
    input: &FramesInput,
    status: u16,
    streaming: bool,
) -> http::Response<impl Body<Data = Bytes, Error = Infallible>> {
    use tower::{Layer, Service};
    let response = Mutex::new(Some(input.response(status, &input.splits)));
    let transport = tower::service_fn(|_: http::Request<Bytes>| {
        let r = response
            .lock()
            .expect("not poisoned")
            .take()
            .expect("one call");
        std::future::ready(Ok::<_, Infallible>(r))
    });
    let mut service = Bedrock::new().response_layer().layer(transport);
    let op = if streaming {
        1 + 2 * (input.flags & 8 != 0) as u8
    } else {
        2
    };
    let uri = format!(
        "https://bedrock-runtime.us-east-1.amazonaws.com{}",
        model_path(MODELS[1], op)
    );
    let request = http::Request::post(uri)
        .body(Bytes::new())
        .expect("a valid request");
    let mut future = std::pin::pin!(service.call(request));
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(Ok(response)) => response,
        Poll::Ready(Err(never)) => match never {},
        Poll::Pending => panic!("the response layer waited on a body that was ready"),
    }
}

fn first_frame_len(wire: &[u8]) -> usize {
    wire.get(..4)
        .map_or(0, |p| u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize)
}

fn header<'a>(message: &'a Message, name: &str) -> Option<&'a str> {
    message
        .headers()
        .iter()
        .find(|h| h.name().as_str() == name)?
        .value()
        .as_string()
        .ok()
        .map(|s| s.as_str())
}

fn collect<B: Body<Data = Bytes, Error = Infallible>>(body: B) -> Vec<u8> {
    collect_some(body, usize::MAX)
}

/// Reads up to `frames` frames of an always-ready body, then drops it.
fn collect_some<B: Body<Data = Bytes, Error = Infallible>>(body: B, frames: usize) -> Vec<u8> {
    let mut body = std::pin::pin!(body);
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    for _ in 0..frames {
        match body.as_mut().poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    out.extend_from_slice(&data);
                }
            }
            Poll::Ready(None) => break,
            Poll::Ready(Some(Err(never))) => match never {},
            Poll::Pending => panic!("a body over a ready body was pending"),
        }
    }
    out
}

/// An in-process emulator on loopback, restarted now and then so that its per-model state
/// (which grows with every new model id) stays bounded over millions of inputs.
struct HttpFront {
    runtime: tokio::runtime::Runtime,
    emulator: Option<crate::emulator::EmulatorHandle>,
    served: u32,
}

/// Turns of the runtime without news after which the server is taken to have answered.
const HTTP_IDLE_TURNS: u32 = 512;

/// Inputs served before the emulator is restarted.
const HTTP_RESTART_EVERY: u32 = 20_000;

impl HttpFront {
    fn get() -> &'static Mutex<HttpFront> {
        static FRONT: OnceLock<Mutex<HttpFront>> = OnceLock::new();
        FRONT.get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            Mutex::new(HttpFront {
                runtime,
                emulator: None,
                served: 0,
            })
        })
    }

    /// Writes `data`, half-closes, and reads the answer to the end; `None` if that took longer
    /// than [`HTTP_ANSWER_LIMIT`].
    fn exchange(&mut self, data: &[u8]) -> Option<Vec<u8>> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if self.served >= HTTP_RESTART_EVERY {
            if let Some(old) = self.emulator.take() {
                self.runtime.block_on(old.shutdown());
            }
            self.served = 0;
        }
        self.served += 1;
        let emulator = match self.emulator.take() {
            Some(e) => e,
            None => self
                .runtime
                .block_on(crate::emulator::Emulator::builder().start())
                .expect("the emulator starts"),
        };
        let addr = emulator.addr();
        self.emulator = Some(emulator);
        self.runtime.block_on(async {
            tokio::time::timeout(HTTP_ANSWER_LIMIT, async {
                let mut stream = tokio::net::TcpStream::connect(addr)
                    .await
                    .expect("connects");
                // The server may close before reading everything: that is an answer too.
                let _ = stream.write_all(data).await;
                // Let the server answer what it can before the half-close, which makes hyper
                // drop responses still in progress: run the runtime (server included) until
                // nothing has arrived for a number of turns, then half-close and read the rest.
                let mut answer = Vec::new();
                let mut buf = [0u8; 16 << 10];
                let mut idle = 0;
                while idle < HTTP_IDLE_TURNS {
                    match stream.try_read(&mut buf) {
                        Ok(0) => return answer,
                        Ok(n) => {
                            answer.extend_from_slice(&buf[..n]);
                            idle = 0;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            idle += 1;
                            tokio::task::yield_now().await;
                        }
                        Err(_) => return answer,
                    }
                }
                let _ = stream.shutdown().await;
                let _ = stream.read_to_end(&mut answer).await;
                answer
            })
            .await
            .ok()
        })
    }
}
