//! The operations: admission against the quota, generated output, and each response format.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::config::{Fault, Latency, MAX_DELAY, MAX_GENERATED_TOKENS, OutputLength};
use super::error::ApiError;
use super::eventstream::{self, FrameBody, PlannedFrame, padding};
use super::faults;
use super::ledger::{Admission, ModelLedger, lock};
use super::server::{Body, Shared, full};
use super::stats::bump;
use super::validate::{self, Parsed, Shape};

/// A Bedrock Runtime operation, from the last path segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Invoke,
    InvokeStream,
    Converse,
    ConverseStream,
    CountTokens,
    /// `/openai/v1/chat/completions` or `/openai/v1/responses` (the model in the body).
    OpenAi,
}

impl Operation {
    pub(crate) fn from_segment(s: &str) -> Option<Self> {
        Some(match s {
            "invoke" => Self::Invoke,
            "invoke-with-response-stream" => Self::InvokeStream,
            "converse" => Self::Converse,
            "converse-stream" => Self::ConverseStream,
            "count-tokens" => Self::CountTokens,
            _ => return None,
        })
    }
}

/// Output tokens produced per stream delta.
const TOKENS_PER_DELTA: usize = 8;

const WORDS: [&str; 16] = [
    "the", "model", "emulates", "bedrock", "output", "tokens", "under", "quota", "with", "steady",
    "streams", "and", "frames", "for", "tests", "today",
];

/// A seeded generator per request: deterministic for a given seed and request number, and no
/// shared lock.
pub(crate) fn request_rng(seed: u64, index: u64) -> fastrand::Rng {
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    fastrand::Rng::with_seed(z ^ (z >> 31))
}

/// A UUID-shaped request id.
pub(crate) fn request_id(rng: &mut fastrand::Rng) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        rng.u32(..),
        rng.u16(..),
        rng.u16(..0x1000),
        rng.u16(..0x4000) | 0x8000,
        rng.u64(..1 << 48)
    )
}

/// When output token `j` (0-based) is produced, from the start of the request.
fn token_time(latency: &Latency, j: u64) -> Duration {
    let ttft = latency.time_to_first_token.min(MAX_DELAY);
    let after = latency
        .tokens_per_second
        .map_or(Duration::ZERO, |tps| {
            Duration::try_from_secs_f64(j as f64 / tps).unwrap_or(MAX_DELAY)
        })
        .min(MAX_DELAY);
    ttft.saturating_add(after)
}

/// When the last output token is produced (the first-token time when there is none).
pub(crate) fn end_time(latency: &Latency, n: u64) -> Duration {
    token_time(latency, n.saturating_sub(1))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The generated output of one request.
pub(crate) struct Output {
    tokens: Vec<&'static str>,
    /// The output hit the max-tokens cap.
    truncated: bool,
}

impl Output {
    pub(crate) fn new(length: OutputLength, cap: u64, rng: &mut fastrand::Rng) -> Self {
        let wanted = match length {
            OutputLength::Fixed(n) => n,
            OutputLength::Uniform { min, max } => rng.u64(min..=max.max(min)),
        };
        // Capped by max tokens, and by a bound that keeps a misconfigured model maximum from
        // exhausting memory.
        let n = wanted.min(cap).min(MAX_GENERATED_TOKENS);
        let tokens = (0..n).map(|_| WORDS[rng.usize(..WORDS.len())]).collect();
        Self {
            tokens,
            truncated: wanted >= cap && cap > 0,
        }
    }

    pub(crate) fn n(&self) -> u64 {
        self.tokens.len() as u64
    }

    pub(crate) fn truncated(&self) -> bool {
        self.truncated
    }

    pub(crate) fn text(&self) -> String {
        self.tokens.join(" ")
    }

    /// Delta texts (each with its leading space but the first) and the number of tokens up to
    /// and including each.
    fn deltas(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let mut produced = 0u64;
        for (i, chunk) in self.tokens.chunks(TOKENS_PER_DELTA).enumerate() {
            let mut text = if i == 0 {
                String::new()
            } else {
                " ".to_owned()
            };
            text.push_str(&chunk.join(" "));
            produced = produced.saturating_add(chunk.len() as u64);
            out.push((text, produced));
        }
        out
    }
}

/// Everything a response builder needs.
struct Ctx<'a> {
    shared: &'a Shared,
    model_id: &'a str,
    request_id: String,
    start: Instant,
    rng: fastrand::Rng,
    burndown: u64,
    parsed: Parsed,
}

impl Ctx<'_> {
    fn settle_amount(&self, output: u64) -> u64 {
        self.parsed
            .input
            .saturating_add(output.saturating_mul(self.burndown))
    }
}

/// Serves one inference request (InvokeModel, Converse and their streaming variants).
pub(crate) async fn inference(
    shared: Arc<Shared>,
    op: Operation,
    model_id: String,
    body: Bytes,
    start: Instant,
) -> Response<Body> {
    let index = shared.next_index();
    let mut rng = request_rng(shared.config.seed, index);
    let request_id = request_id(&mut rng);
    let ledger = shared.ledgers.get(&model_id);
    bump(&mut lock(&ledger).counters.requests);

    let reject = |e: ApiError| {
        bump(&mut lock(&ledger).counters.rejected);
        e.into_response(&request_id)
    };
    let info = shared.table.resolve(&model_id).0;
    let parsed = match op {
        Operation::Converse | Operation::ConverseStream => validate::converse(info, &body),
        _ => validate::invoke(info, &body),
    };
    let parsed = match parsed {
        Ok(p) if op == Operation::InvokeStream && p.shape.is_embedding() => {
            return reject(ApiError::validation(
                "The model is unsupported for streaming.",
            ));
        }
        Ok(p) => p,
        Err(e) => return reject(e),
    };
    drop(body);

    let fault = faults::pick(&shared.config.faults, index, op, &mut rng);
    if let Some(error) = fault.and_then(|f| faults::http_error(f, &model_id)) {
        if let Some(f) = fault {
            faults::count(&mut lock(&ledger).counters.faults, f, 0);
        }
        return error.into_response(&request_id);
    }

    let reservation = parsed.input.saturating_add(parsed.max_output);
    let admitted = {
        let mut l = lock(&ledger);
        let r = l.admit(Instant::now(), reservation);
        if r.is_ok() {
            l.counters.input_tokens = l.counters.input_tokens.saturating_add(parsed.input);
        }
        r
    };
    let reservation = match admitted {
        Ok(r) => r,
        Err((dim, wait)) => {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "ThrottlingException",
                dim.message(),
            );
            if shared.config.retry_after {
                e.retry_after = wait;
            }
            return e.into_response(&request_id);
        }
    };
    let admission = Admission::new(Arc::clone(&ledger), reservation, parsed.input);

    let mut ctx = Ctx {
        shared: &shared,
        model_id: &model_id,
        request_id,
        start,
        rng,
        burndown: info.output_burndown,
        parsed,
    };
    let output = if parsed.shape.is_embedding() {
        Output {
            tokens: Vec::new(),
            truncated: false,
        }
    } else {
        Output::new(shared.config.output_length, parsed.max_output, &mut ctx.rng)
    };

    match op {
        Operation::InvokeStream | Operation::ConverseStream => {
            let frames = if op == Operation::ConverseStream {
                converse_stream_events(&mut ctx, &output)
            } else {
                invoke_stream_chunks(&mut ctx, &output)
            };
            stream_response(&mut ctx, frames, fault, &ledger, admission)
        }
        _ => {
            let end = end_time(&shared.config.latency, output.n());
            tokio::time::sleep_until(start.checked_add(end).unwrap_or(start)).await;
            admission.settle(ctx.settle_amount(output.n()), output.n());
            if op == Operation::Converse {
                converse_response(&ctx, &output, end)
            } else {
                invoke_response(&mut ctx, &output, end)
            }
        }
    }
}

/// Serves CountTokens: no quota, no faults.
pub(crate) fn count_tokens(
    shared: &Shared,
    model_id: &str,
    body: &[u8],
    request_id: &str,
) -> Response<Body> {
    let ledger = shared.ledgers.get(model_id);
    bump(&mut lock(&ledger).counters.count_tokens_requests);
    // CountTokens takes base model ids only: inference profiles (geographic, global,
    // application) and Nova are refused, as Bedrock refuses them.
    let profile = crate::bedrock::models::base_model_id(model_id) != model_id
        || model_id.contains(":application-inference-profile/")
        || model_id.contains(":inference-profile/");
    let nova = shared.table.resolve(model_id).0.family == crate::bedrock::ModelFamily::Nova;
    if profile || nova {
        bump(&mut lock(&ledger).counters.rejected);
        return ApiError::validation("The provided model doesn't support counting tokens.")
            .into_response(request_id);
    }
    let result = validate::count_tokens(body);
    match result {
        Ok(n) => json_response(&json!({ "inputTokens": n }), request_id),
        Err(e) => {
            bump(&mut lock(&ledger).counters.rejected);
            e.into_response(request_id)
        }
    }
}

pub(crate) fn json_response(v: &Value, request_id: &str) -> Response<Body> {
    let mut res = Response::new(full(Bytes::from(v.to_string())));
    let h = res.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(id) = HeaderValue::from_str(request_id) {
        h.insert("x-amzn-RequestId", id);
    }
    res
}

fn converse_response(ctx: &Ctx<'_>, output: &Output, end: Duration) -> Response<Body> {
    let (input, n) = (ctx.parsed.input, output.n());
    let body = json!({
        "output": {"message": {"role": "assistant", "content": [{"text": output.text()}]}},
        "stopReason": if output.truncated { "max_tokens" } else { "end_turn" },
        "usage": {"inputTokens": input, "outputTokens": n, "totalTokens": input.saturating_add(n)},
        "metrics": {"latencyMs": ms(end)},
    });
    json_response(&body, &ctx.request_id)
}

fn embedding(rng: &mut fastrand::Rng, dimensions: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dimensions).map(|_| rng.f32() * 2.0 - 1.0).collect();
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

fn invoke_response(ctx: &mut Ctx<'_>, output: &Output, end: Duration) -> Response<Body> {
    let (input, n) = (ctx.parsed.input, output.n());
    let text = output.text();
    let body = match ctx.parsed.shape {
        Shape::ClaudeMessages | Shape::Converse => json!({
            "id": format!("msg_bdrk_{}", ctx.rng.u64(..)),
            "type": "message",
            "role": "assistant",
            "model": ctx.model_id,
            "content": [{"type": "text", "text": text}],
            "stop_reason": if output.truncated { "max_tokens" } else { "end_turn" },
            "stop_sequence": null,
            "usage": {"input_tokens": input, "output_tokens": n},
        }),
        Shape::ClaudeText => json!({
            "type": "completion",
            "completion": text,
            "stop_reason": if output.truncated { "max_tokens" } else { "stop_sequence" },
            "stop": null,
        }),
        Shape::TitanText => json!({
            "inputTextTokenCount": input,
            "results": [{
                "tokenCount": n,
                "outputText": text,
                "completionReason": if output.truncated { "LENGTH" } else { "FINISH" },
            }],
        }),
        Shape::TitanEmbed { dimensions } => json!({
            "embedding": embedding(&mut ctx.rng, dimensions),
            "inputTextTokenCount": input,
        }),
        Shape::CohereEmbed { texts } => {
            let embeddings: Vec<Vec<f32>> =
                (0..texts).map(|_| embedding(&mut ctx.rng, 1024)).collect();
            json!({
                "id": ctx.request_id,
                "response_type": "embeddings_floats",
                "embeddings": embeddings,
                "texts": [],
            })
        }
        Shape::Nova => json!({
            "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
            "stopReason": if output.truncated { "max_tokens" } else { "end_turn" },
            "usage": {"inputTokens": input, "outputTokens": n, "totalTokens": input.saturating_add(n)},
        }),
        Shape::Llama => json!({
            "generation": text,
            "prompt_token_count": input,
            "generation_token_count": n,
            "stop_reason": if output.truncated { "length" } else { "stop" },
        }),
        Shape::Generic => json!({
            "outputs": [{"text": text, "stop_reason": if output.truncated { "length" } else { "stop" }}],
        }),
    };
    let mut res = json_response(&body, &ctx.request_id);
    let h = res.headers_mut();
    h.insert("x-amzn-bedrock-input-token-count", HeaderValue::from(input));
    if !ctx.parsed.shape.is_embedding() {
        h.insert("x-amzn-bedrock-output-token-count", HeaderValue::from(n));
    }
    h.insert(
        "x-amzn-bedrock-invocation-latency",
        HeaderValue::from(ms(end)),
    );
    res
}

/// One planned event: when, its bytes, and the output tokens produced up to and including it.
struct Event {
    at: Duration,
    bytes: Bytes,
    produced: u64,
}

fn fields(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn converse_stream_events(ctx: &mut Ctx<'_>, output: &Output) -> Vec<Event> {
    let latency = ctx.shared.config.latency;
    let (input, n) = (ctx.parsed.input, output.n());
    let end = end_time(&latency, n);
    let mut events = Vec::new();
    let mut push = |ctx: &mut Ctx<'_>, at, kind, v: Value, produced| {
        let pad = padding(&mut ctx.rng);
        events.push(Event {
            at,
            bytes: eventstream::event(kind, fields(v), pad),
            produced,
        });
    };
    push(
        ctx,
        Duration::ZERO,
        "messageStart",
        json!({"role": "assistant"}),
        0,
    );
    for (text, produced) in output.deltas() {
        let at = token_time(&latency, produced.saturating_sub(1));
        push(
            ctx,
            at,
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": text}}),
            produced,
        );
    }
    push(
        ctx,
        end,
        "contentBlockStop",
        json!({"contentBlockIndex": 0}),
        n,
    );
    let stop = if output.truncated {
        "max_tokens"
    } else {
        "end_turn"
    };
    push(ctx, end, "messageStop", json!({"stopReason": stop}), n);
    push(
        ctx,
        end,
        "metadata",
        json!({
            "usage": {"inputTokens": input, "outputTokens": n, "totalTokens": input.saturating_add(n)},
            "metrics": {"latencyMs": ms(end)},
        }),
        n,
    );
    events
}

fn invoke_stream_chunks(ctx: &mut Ctx<'_>, output: &Output) -> Vec<Event> {
    let latency = ctx.shared.config.latency;
    let (input, n) = (ctx.parsed.input, output.n());
    let end = end_time(&latency, n);
    let metrics = json!({
        "inputTokenCount": input,
        "outputTokenCount": n,
        "invocationLatency": ms(end),
        "firstByteLatency": ms(token_time(&latency, 0)),
    });
    let truncated = output.truncated;
    let deltas = output.deltas();
    // (time, model-native JSON, produced) in order; the last one gets the metrics.
    let mut chunks: Vec<(Duration, Value, u64)> = Vec::new();
    let delta_time = |produced: u64| token_time(&latency, produced.saturating_sub(1));
    match ctx.parsed.shape {
        Shape::ClaudeMessages | Shape::ClaudeText | Shape::Converse => {
            if ctx.parsed.shape == Shape::ClaudeText {
                for (text, produced) in &deltas {
                    chunks.push((delta_time(*produced), json!({"type": "completion", "completion": text, "stop_reason": null, "stop": null}), *produced));
                }
                let reason = if truncated {
                    "max_tokens"
                } else {
                    "stop_sequence"
                };
                chunks.push((end, json!({"type": "completion", "completion": "", "stop_reason": reason, "stop": null}), n));
            } else {
                let id = format!("msg_bdrk_{}", ctx.rng.u64(..));
                chunks.push((
                    Duration::ZERO,
                    json!({"type": "message_start", "message": {
                    "id": id, "type": "message", "role": "assistant", "model": ctx.model_id,
                    "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": input, "output_tokens": 1}}}),
                    0,
                ));
                chunks.push((Duration::ZERO, json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}), 0));
                for (text, produced) in &deltas {
                    chunks.push((delta_time(*produced), json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}), *produced));
                }
                chunks.push((end, json!({"type": "content_block_stop", "index": 0}), n));
                let reason = if truncated { "max_tokens" } else { "end_turn" };
                chunks.push((end, json!({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": null}, "usage": {"output_tokens": n}}), n));
                chunks.push((end, json!({"type": "message_stop"}), n));
            }
        }
        Shape::TitanText => {
            let reason = if truncated { "LENGTH" } else { "FINISH" };
            if deltas.is_empty() {
                chunks.push((end, json!({"outputText": "", "index": 0, "totalOutputTextTokenCount": 0, "completionReason": reason, "inputTextTokenCount": input}), 0));
            }
            let last = deltas.len().saturating_sub(1);
            for (i, (text, produced)) in deltas.iter().enumerate() {
                chunks.push((delta_time(*produced), json!({
                    "outputText": text, "index": 0, "totalOutputTextTokenCount": produced,
                    "completionReason": if i == last { Value::from(reason) } else { Value::Null },
                    "inputTextTokenCount": if i == 0 { Value::from(input) } else { Value::Null },
                }), *produced));
            }
        }
        Shape::Nova => {
            chunks.push((
                Duration::ZERO,
                json!({"messageStart": {"role": "assistant"}}),
                0,
            ));
            for (text, produced) in &deltas {
                chunks.push((
                    delta_time(*produced),
                    json!({"contentBlockDelta": {"delta": {"text": text}, "contentBlockIndex": 0}}),
                    *produced,
                ));
            }
            chunks.push((
                end,
                json!({"contentBlockStop": {"contentBlockIndex": 0}}),
                n,
            ));
            let reason = if truncated { "max_tokens" } else { "end_turn" };
            chunks.push((end, json!({"messageStop": {"stopReason": reason}}), n));
            chunks.push((
                end,
                json!({"metadata": {"usage": {"inputTokens": input, "outputTokens": n}}}),
                n,
            ));
        }
        Shape::Llama => {
            let reason = if truncated { "length" } else { "stop" };
            for (i, (text, produced)) in deltas.iter().enumerate() {
                chunks.push((
                    delta_time(*produced),
                    json!({
                        "generation": text,
                        "prompt_token_count": if i == 0 { Value::from(input) } else { Value::Null },
                        "generation_token_count": produced, "stop_reason": null,
                    }),
                    *produced,
                ));
            }
            chunks.push((end, json!({"generation": "", "prompt_token_count": null, "generation_token_count": n, "stop_reason": reason}), n));
        }
        Shape::Generic | Shape::TitanEmbed { .. } | Shape::CohereEmbed { .. } => {
            for (text, produced) in &deltas {
                chunks.push((
                    delta_time(*produced),
                    json!({"outputs": [{"text": text, "stop_reason": null}]}),
                    *produced,
                ));
            }
            let reason = if truncated { "length" } else { "stop" };
            chunks.push((
                end,
                json!({"outputs": [{"text": "", "stop_reason": reason}]}),
                n,
            ));
        }
    }
    if let Some((_, Value::Object(last), _)) = chunks.last_mut() {
        last.insert("amazon-bedrock-invocationMetrics".to_owned(), metrics);
    }
    let engine = base64::engine::general_purpose::STANDARD;
    chunks
        .into_iter()
        .map(|(at, v, produced)| {
            let b64 = engine.encode(v.to_string());
            let pad = padding(&mut ctx.rng);
            Event {
                at,
                bytes: eventstream::event("chunk", fields(json!({ "bytes": b64 })), pad),
                produced,
            }
        })
        .collect()
}

fn stream_response(
    ctx: &mut Ctx<'_>,
    mut events: Vec<Event>,
    fault: Option<Fault>,
    ledger: &Mutex<ModelLedger>,
    admission: Admission,
) -> Response<Body> {
    let n_total = events.last().map_or(0, |e| e.produced);
    let mut settle = (ctx.settle_amount(n_total), n_total);
    if let Some(
        f @ Fault::StreamException {
            exception,
            after_events: after,
        },
    ) = fault
    {
        // The exception replaces event `k`: the stream never completes normally.
        let k = usize::try_from(after)
            .unwrap_or(usize::MAX)
            .min(events.len().saturating_sub(1));
        let at = events.get(k).map_or(Duration::ZERO, |e| e.at);
        let produced = k
            .checked_sub(1)
            .and_then(|i| events.get(i))
            .map_or(0, |e| e.produced);
        events.truncate(k);
        let (kind, members) = faults::stream_exception(exception);
        events.push(Event {
            at,
            bytes: eventstream::exception(kind, members),
            produced,
        });
        // Not charged when nothing was sent; what was produced otherwise.
        settle = if k == 0 {
            (0, 0)
        } else {
            (ctx.settle_amount(produced), produced)
        };
        faults::count(&mut lock(ledger).counters.faults, f, k);
    }
    let frames = events
        .into_iter()
        .map(|e| PlannedFrame {
            at: e.at,
            bytes: e.bytes,
            on_drop: (ctx.settle_amount(e.produced), e.produced),
        })
        .collect();
    let body = FrameBody::new(frames, ctx.start, admission, settle);
    let mut res = Response::new(http_body_util::BodyExt::boxed_unsync(body));
    let h = res.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.amazon.eventstream"),
    );
    if ctx.parsed.shape != Shape::Converse {
        // InvokeModelWithResponseStream: the content type of the model's chunks.
        h.insert(
            "x-amzn-bedrock-content-type",
            HeaderValue::from_static("application/json"),
        );
    }
    if let Ok(id) = HeaderValue::from_str(&ctx.request_id) {
        h.insert("x-amzn-RequestId", id);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_capped_and_chunked() {
        let mut rng = fastrand::Rng::with_seed(1);
        let o = Output::new(OutputLength::Fixed(20), 10, &mut rng);
        assert_eq!(o.n(), 10);
        assert!(o.truncated);
        let d = o.deltas();
        assert_eq!(d.iter().map(|(_, p)| *p).collect::<Vec<_>>(), vec![8, 10]);
        let joined: String = d.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(joined, o.text());
        let o = Output::new(OutputLength::Uniform { min: 3, max: 5 }, 100, &mut rng);
        assert!((3..=5).contains(&o.n()) && !o.truncated);
    }

    #[test]
    fn pacing() {
        let l = Latency {
            time_to_first_token: Duration::from_millis(100),
            tokens_per_second: Some(10.0),
        };
        assert_eq!(token_time(&l, 0), Duration::from_millis(100));
        assert_eq!(token_time(&l, 10), Duration::from_millis(1100));
        assert_eq!(end_time(&l, 0), Duration::from_millis(100));
        let huge = Latency {
            time_to_first_token: Duration::MAX,
            tokens_per_second: Some(1e-300),
        };
        assert_eq!(token_time(&huge, u64::MAX), MAX_DELAY * 2);
    }

    #[test]
    fn request_ids_look_like_uuids() {
        let id = request_id(&mut request_rng(0, 0));
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
        assert_ne!(id, request_id(&mut request_rng(0, 1)));
    }
}
