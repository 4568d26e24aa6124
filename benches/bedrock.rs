//! What the Bedrock protocol knowledge costs per call: reading a request body to estimate its
//! tokens, and reading the usage back from a response.
//!
//! - **Estimate**: `Bedrock::plan_of` on an `http::Request<Bytes>` (quota key from the URI,
//!   then one pass over the body) for Converse bodies of about 1 KB, 32 KB (ASCII and
//!   mostly non-ASCII text) and 1 MB, and a 32 KB InvokeModel Anthropic Messages body. The
//!   bodies look like real chat traffic: a system prompt, a tool specification, a tool call and
//!   its result, and alternating user and assistant turns of prose with newlines and quotes.
//! - **Usage**: `Usage::from_json` on Converse responses (the usage comes after the output, so
//!   the whole output is skipped), `Usage::from_headers` on InvokeModel response headers, and a
//!   ConverseStream event stream (real frames, from the shared `tests/support/eventstream.rs`
//!   builder) passed through the settling body, frame by frame and in 1 KiB chunks that split frames.
//!
//! Run: `cargo bench --all-features --bench bedrock`.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bedrock_throttle::bedrock::{Bedrock, EstimateBasis, Memo, Reservation, Usage};
use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::FutureExt;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use serde_json::{Value, json};

#[path = "../tests/support/eventstream.rs"]
mod eventstream;
use eventstream::event;

const HOST: &str = "https://bedrock-runtime.us-east-1.amazonaws.com";
const SONNET_4: &str = "us.anthropic.claude-sonnet-4-20250514-v1%3A0";

// ---------------------------------------------------------------------------------------------
// Realistic text

const ASCII_WORDS: &[&str] = &[
    "the",
    "model",
    "returns",
    "a",
    "summary",
    "of",
    "quarterly",
    "revenue",
    "and",
    "explains",
    "why",
    "latency",
    "increased",
    "after",
    "deployment",
    "function",
    "parse_request(body)",
    "customer",
    "asked",
    "whether",
    "invoice",
    "#4821",
    "was",
    "paid",
    "in",
    "full",
    "-",
    "yes,",
    "on",
    "March",
    "3rd",
    "\"approved\"",
    "table",
    "rows",
    "where",
    "status",
    "=",
    "'open'",
    "therefore",
    "we",
    "recommend",
    "retrying",
    "with",
    "exponential",
    "backoff.",
    "Note:",
];

const NON_ASCII_WORDS: &[&str] = &[
    "東京",
    "の",
    "売上",
    "報告書",
    "を",
    "要約",
    "してください。",
    "café",
    "naïve",
    "Größe",
    "über",
    "señor",
    "año",
    "привет",
    "мир",
    "данные",
    "запрос",
    "中文",
    "内容",
    "모델",
    "응답",
    "ελληνικά",
    "🙂",
    "✓",
    "—",
    "données",
    "élevé",
    "straße",
    "the",
    "model",
    "and",
];

/// Deterministic prose of at least `bytes` UTF-8 bytes: words, punctuation, the odd paragraph
/// break (escaped in JSON, so the parser takes its slow path now and then).
fn prose(bytes: usize, non_ascii: bool, seed: &mut u64) -> String {
    let words = if non_ascii {
        NON_ASCII_WORDS
    } else {
        ASCII_WORDS
    };
    let mut out = String::with_capacity(bytes + 16);
    while out.len() < bytes {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = (*seed >> 33) as usize;
        out.push_str(words[r % words.len()]);
        match r % 97 {
            0 => out.push_str("\n\n"),
            1..=6 => out.push_str(". "),
            7..=10 => out.push_str(", "),
            _ => out.push(' '),
        }
    }
    out
}

fn tool_spec() -> Value {
    json!({"toolSpec": {
        "name": "lookup_invoice",
        "description": "Looks up an invoice by number and returns its status, amount and due date.",
        "inputSchema": {"json": {
            "type": "object",
            "properties": {
                "invoice_number": {"type": "string", "description": "The invoice number, e.g. 4821."},
                "include_lines": {"type": "boolean", "description": "Whether to return line items."}
            },
            "required": ["invoice_number"]
        }}
    }})
}

/// A Converse body of about `size` bytes: system prompt, tool spec, a tool call and its result,
/// then alternating user/assistant turns.
fn converse_body(size: usize, non_ascii: bool) -> Vec<u8> {
    let mut seed = 42;
    let turns = (size / 4096).clamp(4, 64);
    let per_turn = size.saturating_sub(900) / turns;
    let mut messages = vec![
        json!({"role": "user", "content": [{"text": "Was invoice 4821 paid?"}]}),
        json!({"role": "assistant", "content": [{"toolUse": {
            "toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "name": "lookup_invoice",
            "input": {"invoice_number": "4821", "include_lines": false}}}]}),
        json!({"role": "user", "content": [{"toolResult": {
            "toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q",
            "content": [{"json": {"status": "paid", "amount": 1250.5, "due": "2025-03-03"}}]}}]}),
    ];
    for turn in 0..turns {
        let role = if turn % 2 == 0 { "assistant" } else { "user" };
        messages.push(
            json!({"role": role, "content": [{"text": prose(per_turn, non_ascii, &mut seed)}]}),
        );
    }
    let body = json!({
        "system": [{"text": prose(300, non_ascii, &mut seed)}],
        "messages": messages,
        "toolConfig": {"tools": [tool_spec()], "toolChoice": {"auto": {}}},
        "inferenceConfig": {"maxTokens": 1024, "temperature": 0.5, "topP": 0.9},
    });
    serde_json::to_vec(&body).expect("serializable")
}

/// An InvokeModel Anthropic Messages body of about `size` bytes.
fn anthropic_body(size: usize) -> Vec<u8> {
    let mut seed = 7;
    let turns = (size / 4096).clamp(4, 64);
    let per_turn = size.saturating_sub(900) / turns;
    let mut messages = vec![
        json!({"role": "user", "content": "Was invoice 4821 paid?"}),
        json!({"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9",
            "name": "lookup_invoice", "input": {"invoice_number": "4821"}}]}),
        json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
            "content": [{"type": "text", "text": "{\"status\":\"paid\",\"amount\":1250.5}"}]}]}),
    ];
    for turn in 0..turns {
        let role = if turn % 2 == 0 { "assistant" } else { "user" };
        messages.push(json!({"role": role, "content": [{"type": "text", "text": prose(per_turn, false, &mut seed)}]}));
    }
    let body = json!({
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 1024,
        "system": prose(300, false, &mut seed),
        "messages": messages,
        "tools": [{"name": "lookup_invoice", "description": "Looks up an invoice by number.",
                   "input_schema": {"type": "object", "properties": {"invoice_number": {"type": "string"}},
                                    "required": ["invoice_number"]}}],
        "temperature": 0.5,
    });
    serde_json::to_vec(&body).expect("serializable")
}

fn request(operation: &str, body: Vec<u8>) -> http::Request<Bytes> {
    http::Request::post(format!("{HOST}/model/{SONNET_4}/{operation}"))
        .header("content-type", "application/json")
        .body(Bytes::from(body))
        .expect("a valid request")
}

fn estimate(c: &mut Criterion) {
    let bedrock = Bedrock::new();
    let mut g = c.benchmark_group("estimate");
    let cases = [
        (
            "Converse 1 KB",
            request("converse", converse_body(1 << 10, false)),
        ),
        (
            "Converse 32 KB",
            request("converse", converse_body(32 << 10, false)),
        ),
        (
            "Converse 32 KB non-ASCII",
            request("converse", converse_body(32 << 10, true)),
        ),
        (
            "Converse 1 MB",
            request("converse", converse_body(1 << 20, false)),
        ),
        (
            "InvokeModel Anthropic 32 KB",
            request("invoke", anthropic_body(32 << 10)),
        ),
    ];
    for (name, request) in &cases {
        let len = request.body().len();
        // Each body must be read field by field, not fall back to the whole-body rule.
        let (key, operation) = bedrock.target(request.uri().host(), request.uri().path());
        let estimate = bedrock.estimate(&key, operation, Some(request.body()));
        assert_eq!(estimate.basis, EstimateBasis::Parsed, "{name}");
        assert_eq!(bedrock.plan_of(request).tokens, estimate.total());
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(
            BenchmarkId::new(*name, format!("{len} B")),
            request,
            |b, r| b.iter(|| bedrock.plan_of(black_box(r))),
        );
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// Usage

fn converse_response(output_bytes: usize) -> Vec<u8> {
    let mut seed = 3;
    serde_json::to_vec(&json!({
        "output": {"message": {"role": "assistant", "content": [{"text": prose(output_bytes, false, &mut seed)}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 1834, "outputTokens": 412, "totalTokens": 2246,
                  "cacheReadInputTokens": 0, "cacheWriteInputTokens": 0},
        "metrics": {"latencyMs": 4211},
    }))
    .expect("serializable")
}

/// A ConverseStream response of `deltas` text deltas, as frames on the wire.
fn converse_stream(deltas: usize) -> Vec<Bytes> {
    let mut seed = 11;
    let mut messages = vec![
        event(
            "messageStart",
            json!({"p": "abcdefghijklmn", "role": "assistant"}).to_string(),
        ),
        event(
            "contentBlockStart",
            json!({"contentBlockIndex": 0, "p": "abcd", "start": {}}).to_string(),
        ),
    ];
    for _ in 0..deltas {
        messages.push(event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": prose(24, false, &mut seed)},
                   "p": "abcdefghijklmnopqrstu"})
            .to_string(),
        ));
    }
    messages.extend([
        event(
            "contentBlockStop",
            json!({"contentBlockIndex": 0, "p": "abcdefgh"}).to_string(),
        ),
        event(
            "messageStop",
            json!({"p": "abc", "stopReason": "end_turn"}).to_string(),
        ),
        event(
            "metadata",
            json!({"metrics": {"latencyMs": 2710}, "p": "abcdefghijkl",
                   "usage": {"inputTokens": 1834, "outputTokens": 1200, "totalTokens": 3034}})
            .to_string(),
        ),
    ]);
    messages.iter().map(eventstream::frame).collect()
}

/// Records what it settled.
struct Probe(Arc<AtomicU64>);

impl Reservation for Probe {
    fn reserved(&self) -> u64 {
        100_000
    }
    fn settle(self, actual: u64) {
        self.0.store(actual, Ordering::Relaxed);
    }
}

/// Passes `chunks` through the settling body and returns what was settled.
fn settle_stream(bedrock: &Bedrock, memo: Memo, chunks: &[Bytes], settled: &Arc<AtomicU64>) -> u64 {
    let stream = futures_util::stream::iter(
        chunks
            .iter()
            .map(|c| Ok::<_, std::convert::Infallible>(Frame::data(c.clone()))),
    );
    let response = http::Response::builder()
        .status(200)
        .header("content-type", eventstream::CONTENT_TYPE)
        .body(StreamBody::new(stream))
        .expect("a valid response");
    let response = bedrock.settle_with(response, Probe(settled.clone()), memo);
    let mut body = response.into_body();
    while let Some(frame) = body.frame().now_or_never().expect("always ready") {
        black_box(frame.expect("infallible"));
    }
    drop(body);
    settled.load(Ordering::Relaxed)
}

fn usage(c: &mut Criterion) {
    let mut g = c.benchmark_group("usage");
    for output in [1 << 10, 32 << 10] {
        let body = converse_response(output);
        assert!(Usage::from_json(&body).is_some());
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(
            BenchmarkId::new("Converse JSON from_json", format!("{} B", body.len())),
            &body,
            |b, body| b.iter(|| Usage::from_json(black_box(body))),
        );
    }

    let response = http::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("date", "Tue, 04 Mar 2025 10:12:44 GMT")
        .header("x-amzn-requestid", "2f7a1c6e-1b7e-4e0c-9d1a-8f1b2c3d4e5f")
        .header("x-amzn-bedrock-invocation-latency", "4211")
        .header("x-amzn-bedrock-input-token-count", "1834")
        .header("x-amzn-bedrock-output-token-count", "412")
        .header("x-amzn-bedrock-cache-read-input-token-count", "0")
        .header("x-amzn-bedrock-cache-write-input-token-count", "0")
        .body(())
        .expect("a valid response");
    let headers = response.headers();
    g.throughput(Throughput::Elements(1));
    g.bench_function("InvokeModel headers from_headers", |b| {
        b.iter(|| {
            Usage::from_headers(|name| black_box(headers).get(name).and_then(|v| v.to_str().ok()))
        })
    });

    let bedrock = Bedrock::new();
    let settled = Arc::new(AtomicU64::new(0));
    let frames = converse_stream(200);
    let wire: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
    let chunked: Vec<Bytes> = wire.chunks(1024).map(Bytes::copy_from_slice).collect();
    // The plan's memo carries Claude Sonnet 4's burndown, 5.
    let memo = bedrock
        .plan_of(&request("converse-stream", converse_body(1 << 10, false)))
        .memo;
    let expected = 1834 + 1200 * 5;
    assert_eq!(
        settle_stream(&bedrock, memo.clone(), &frames, &settled),
        expected
    );
    assert_eq!(
        settle_stream(&bedrock, memo.clone(), &chunked, &settled),
        expected
    );
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function(
        BenchmarkId::new(
            "ConverseStream settling body, frame per chunk",
            format!("{} frames, {} B", frames.len(), wire.len()),
        ),
        |b| b.iter(|| settle_stream(&bedrock, memo.clone(), &frames, &settled)),
    );
    g.bench_function(
        BenchmarkId::new(
            "ConverseStream settling body, 1 KiB chunks",
            format!("{} chunks, {} B", chunked.len(), wire.len()),
        ),
        |b| b.iter(|| settle_stream(&bedrock, memo.clone(), &chunked, &settled)),
    );
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = estimate, usage
}
criterion_main!(benches);
