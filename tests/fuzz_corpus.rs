//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) and every crash regression
//! (`fuzz/regressions/<target>/`) through the fuzz entry points, as plain tests, so that
//! `cargo test --all-features` checks them on every run. See FUZZING.md.
//!
//! `cargo test --features fuzzing --test fuzz_corpus -- --ignored write_seeds` rewrites the
//! seed corpus (`fuzz/seeds/<target>/`) from the real bodies and frames below.

#![cfg(feature = "fuzzing")]

use std::path::{Path, PathBuf};

use base64::Engine as _;
use bedrock_throttle::fuzzing::{self, Record, frames_input};

type Entry = fn(&[u8]);

const TARGETS: [(&str, Entry); 9] = [
    ("estimate", fuzzing::estimate),
    ("estimate_vs_emulator", fuzzing::estimate_vs_emulator),
    ("usage", fuzzing::usage),
    ("settle", fuzzing::settle),
    ("classify", fuzzing::classify),
    ("first_frame", fuzzing::first_frame),
    ("emulator_validate", fuzzing::emulator_validate),
    ("emulator_http", fuzzing::emulator_http),
    ("extremes", fuzzing::extremes),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Every input of every kind through the entry point of its target; a panic names the file.
fn replay(kind: &str) -> usize {
    let mut count = 0;
    for (target, entry) in TARGETS {
        for file in files(&fuzz_dir().join(kind).join(target)) {
            let data = std::fs::read(&file).expect("readable");
            let run = std::panic::catch_unwind(|| entry(&data));
            assert!(run.is_ok(), "{} failed on {}", target, file.display());
            count += 1;
        }
    }
    count
}

#[test]
fn corpus_replays() {
    assert!(replay("corpus") > 0, "no corpus under fuzz/corpus");
}

#[test]
fn seeds_replay() {
    assert!(replay("seeds") > 0, "no seeds under fuzz/seeds");
}

#[test]
fn regressions_replay() {
    replay("regressions");
}

/// The HTTP entry point really talks to the emulator (a fuzz target that only ever saw a
/// closed connection would find nothing).
#[test]
fn http_front_answers() {
    for (target, _) in TARGETS {
        assert!(
            !files(&fuzz_dir().join("seeds").join(target)).is_empty(),
            "{target} has no seeds"
        );
    }
    let answer = fuzzing::emulator_http_answer(&http(
        "POST",
        "/model/amazon.nova-lite-v1%3A0/converse",
        CONVERSE,
    ));
    assert!(
        answer.starts_with(b"HTTP/1.1 200 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let answer = fuzzing::emulator_http_answer(b"GET /_emulator/stats HTTP/1.1\r\nhost: x\r\n\r\n");
    assert!(
        answer.starts_with(b"HTTP/1.1 200 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

// ---------------------------------------------------------------------------------------------
// the seed corpus

const CONVERSE: &[u8] = br#"{"messages":[{"role":"user","content":[{"text":"Hello, how are you?"}]}],"system":[{"text":"Be brief."}],"inferenceConfig":{"maxTokens":512,"temperature":0.5}}"#;

/// Real request bodies: (operation index, model index, body). Operation and model indices are
/// those of `fuzzing::OPERATIONS` and `fuzzing::MODELS`.
fn request_bodies() -> Vec<(u8, u8, Vec<u8>)> {
    let b = |s: &str| s.as_bytes().to_vec();
    vec![
        (2, 1, CONVERSE.to_vec()),
        (3, 6, b(r#"{"messages":[{"role":"user","content":[{"text":"Hi"},{"image":{"format":"png","source":{"bytes":"iVBORw0KGgo="}}}]},{"role":"assistant","content":[{"toolUse":{"toolUseId":"t1","name":"get","input":{"q":"x"}}}]},{"role":"user","content":[{"toolResult":{"toolUseId":"t1","content":[{"json":{"a":1}}]}}]}],"toolConfig":{"tools":[{"toolSpec":{"name":"get","description":"Get","inputSchema":{"json":{"type":"object"}}}}]}}"#)),
        (2, 13, b(r#"{"messages":[{"role":"user","content":[{"text":"No max tokens: the model maximum is reserved"}]}]}"#)),
        (0, 0, b(r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":1024,"system":"You are terse.","messages":[{"role":"user","content":"Hello"},{"role":"assistant","content":[{"type":"text","text":"Hi"}]},{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}},{"type":"text","text":"What is this?"}]}]}"#)),
        (1, 1, b(r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":200,"messages":[{"role":"user","content":[{"type":"text","text":"Stream me a story"}]}]}"#)),
        (0, 2, b(r#"{"prompt":"\n\nHuman: Hello\n\nAssistant:","max_tokens_to_sample":300}"#)),
        (0, 3, b(r#"{"inputText":"Summarise this.","textGenerationConfig":{"maxTokenCount":512,"temperature":0.2}}"#)),
        (0, 4, b(r#"{"inputText":"embed me","dimensions":256,"normalize":true}"#)),
        (0, 5, b(r#"{"texts":["one","two"],"input_type":"search_document","max_tokens":128}"#)),
        (0, 6, b(r#"{"schemaVersion":"messages-v1","system":[{"text":"Be kind."}],"messages":[{"role":"user","content":[{"text":"Hello"}]}],"inferenceConfig":{"maxTokens":300,"max_new_tokens":200}}"#)),
        (0, 7, b(r#"{"prompt":"<|begin_of_text|>Hello","max_gen_len":512,"temperature":0.5}"#)),
        (0, 8, b(r#"{"prompt":"Hello","maxTokens":200,"temperature":0.7}"#)),
        (0, 9, b(r#"{"prompt":"<s>[INST] Hello [/INST]","max_tokens":400}"#)),
        (0, 10, b(r#"{"messages":[{"role":"user","content":"Hello"}],"max_tokens":100}"#)),
        (0, 12, b(r#"{"messages":[{"role":"system","content":"Be brief"},{"role":"user","content":"Hello"}],"max_completion_tokens":100,"max_tokens":50}"#)),
        (0, 14, b(r#"{"max_tokens":10,"inferenceConfig":{"maxTokens":20},"max_gen_len":30,"textGenerationConfig":{"maxTokenCount":40},"maxTokens":50}"#)),
        (4, 0, b(r#"{"input":{"converse":{"messages":[{"role":"user","content":[{"text":"count me"}]}]}}}"#)),
        (4, 0, format!(r#"{{"input":{{"invokeModel":{{"body":"{}"}}}}}}"#, base64::engine::general_purpose::STANDARD.encode(br#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":10,"messages":[{"role":"user","content":"Hi"}]}"#)).into_bytes()),
        (2, 1, b(r#"{"messages":{"role":"user"},"inferenceConfig":{"maxTokens":"10"}}"#)),
        (0, 0, b(r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":10,"stream":true,"messages":[{"role":"user","content":"Hi"}]}"#)),
        (0, 1, b("not json")),
    ]
}

/// The validation target's operation byte for an estimator operation index.
fn validate_op(op: u8) -> u8 {
    match op {
        0 | 1 => 0,
        2 | 3 => 1,
        _ => 2,
    }
}

fn http(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nhost: bedrock-runtime.us-east-1.amazonaws.com\r\ncontent-type: application/json\r\nauthorization: Bearer x\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Frame inputs: ConverseStream, InvokeModelWithResponseStream (Anthropic chunks with metrics),
/// first-frame exceptions, an error frame, a stream cut short, a JSON body.
fn frame_inputs() -> Vec<Vec<u8>> {
    // tags: 0x00 chunk (base64-wrapped), 0x02 messageStart, 0x03 contentBlockStart,
    // 0x04 contentBlockDelta, 0x05 contentBlockStop, 0x06 messageStop, 0x07 metadata,
    // 0x38.. exceptions (type 3), 0x48 error frame, 0x80 raw bytes.
    let r = |tag: u8, payload: &[u8], split: u8| (tag, payload.to_vec(), split);
    let converse_stream = vec![
        r(0x02, br#"{"role":"assistant","p":"abcdefgh"}"#, 0),
        r(0x03, br#"{"contentBlockIndex":0,"start":{"toolUse":{"toolUseId":"t","name":"n"}}}"#, 7),
        r(0x04, br#"{"contentBlockIndex":0,"delta":{"text":"Hello there, general"},"p":"abc"}"#, 40),
        r(0x04, br#"{"contentBlockIndex":0,"delta":{"toolUse":{"input":"{\"a\":1}"}}}"#, 3),
        r(0x04, br#"{"contentBlockIndex":0,"delta":{"reasoningContent":{"text":"hmm","signature":"s"}}}"#, 200),
        r(0x05, br#"{"contentBlockIndex":0}"#, 1),
        r(0x06, br#"{"stopReason":"end_turn"}"#, 0),
        r(0x07, br#"{"usage":{"inputTokens":1000,"outputTokens":100,"totalTokens":1100,"cacheReadInputTokens":10,"cacheWriteInputTokens":20},"metrics":{"latencyMs":123},"p":"ab"}"#, 99),
    ];
    let invoke_stream = vec![
        r(0x00, br#"{"type":"message_start","message":{"id":"m","usage":{"input_tokens":1000,"output_tokens":1}}}"#, 5),
        r(0x00, br#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#, 0),
        r(0x00, br#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":100}}"#, 50),
        r(0x00, br#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":1000,"outputTokenCount":100,"invocationLatency":500,"firstByteLatency":100}}"#, 1),
    ];
    let other_chunks = vec![
        r(0x00, br#"{"outputText":"Titan says hi","index":0,"totalOutputTextTokenCount":4,"completionReason":"FINISH","inputTextTokenCount":3}"#, 0),
        r(0x00, br#"{"generation":"Llama says hi","prompt_token_count":null,"generation_token_count":5,"stop_reason":null}"#, 0),
        r(0x00, br#"{"completion":" legacy Claude","stop_reason":null}"#, 0),
        r(0x00, br#"{"contentBlockDelta":{"delta":{"text":"Nova"},"contentBlockIndex":0}}"#, 0),
        r(0x01, br#"{"bytes":"not base64!"}"#, 0),
    ];
    let mut out = Vec::new();
    let build = |flags: u8, reserved: u16, records: &[(u8, Vec<u8>, u8)]| {
        let records: Vec<Record<'_>> = records
            .iter()
            .map(|(tag, payload, split)| Record {
                tag: *tag,
                payload,
                split: *split,
            })
            .collect();
        frames_input(flags, reserved, &records)
    };
    for flags in [0b0011, 0b1011, 0b0101, 0b0111, 0b0001] {
        out.push(build(flags, 5_000, &converse_stream));
        out.push(build(flags, 5_000, &invoke_stream));
        out.push(build(flags, 300, &other_chunks));
        out.push(build(flags, 5_000, &converse_stream[..4]));
    }
    for (tag, message) in [
        (
            0x38u8,
            &br#"{"message":"Too many tokens, please wait before trying again."}"#[..],
        ),
        (
            0x39,
            br#"{"message":"Bedrock is unable to process your request."}"#,
        ),
        (
            0x3b,
            br#"{"message":"The model errored","originalStatusCode":500,"originalMessage":"x"}"#,
        ),
        (
            0x3d,
            br#"{"Message":"Model has timed out in processing the request."}"#,
        ),
        (0x3f, br#"{"errorMessage":"new kind"}"#),
        (0x48, br#"{"message":"protocol error"}"#),
    ] {
        out.push(build(0b0011, 1_000, &[r(tag, message, 10)]));
        out.push(build(
            0b0011,
            1_000,
            &[converse_stream[0].clone(), r(tag, message, 0)],
        ));
    }
    let converse_json = br#"{"output":{"message":{"role":"assistant","content":[{"text":"Hi"}]}},"stopReason":"end_turn","usage":{"inputTokens":12,"outputTokens":100,"totalTokens":112},"metrics":{"latencyMs":5}}"#;
    out.push(build(0b0110, 2_000, &[r(0x80, converse_json, 30)]));
    out.push(build(0b0000, 2_000, &[r(0x80, converse_json, 0)]));
    out.push(build(
        0b10011,
        2_000,
        &[r(0x80, br#"{"message":"Too many requests"}"#, 3)],
    ));
    out.push(build(
        0b0011,
        2_000,
        &[r(0x80, b"\x00\x00\x00\x10garbage-not-a-frame", 2)],
    ));
    out
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (op, model, body) in request_bodies() {
        let mut input = vec![op, model];
        input.extend_from_slice(&body);
        seeds.push(("estimate", input.clone()));
        seeds.push(("estimate_vs_emulator", input));
        let mut input = vec![validate_op(op), model];
        input.extend_from_slice(&body);
        seeds.push(("emulator_validate", input));
        let path = format!(
            "/model/{}/{}",
            fuzzing::MODELS[usize::from(model)]
                .replace(':', "%3A")
                .replace('/', "%2F"),
            fuzzing::OPERATIONS[usize::from(op)]
        );
        seeds.push(("emulator_http", http("POST", &path, &body)));
    }
    for extra in [
        &b"GET /_emulator/stats HTTP/1.1\r\nhost: x\r\n\r\n"[..],
        b"POST /_emulator/reset HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n",
        b"POST /model/x/converse HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{\"mes\r\n0\r\n\r\n",
        b"POST /model/x/converse HTTP/1.1\r\nhost: x\r\ncontent-length: 99999999\r\n\r\n{}",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
        b"POST /guardrail/g/version/1/apply HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}",
    ] {
        seeds.push(("emulator_http", extra.to_vec()));
    }
    for body in [
        &br#"{"output":{"message":{"role":"assistant","content":[{"text":"Hi"}]}},"stopReason":"end_turn","usage":{"inputTokens":12,"outputTokens":100,"totalTokens":112,"cacheReadInputTokens":5,"cacheWriteInputTokens":7},"metrics":{"latencyMs":5}}"#[..],
        br#"{"usage":{"inputTokens":18446744073709551615,"outputTokens":18446744073709551615}}"#,
        br#"{"id":"msg","type":"message","usage":{"input_tokens":10,"output_tokens":20,"cache_read_input_tokens":1,"cache_creation_input_tokens":2}}"#,
        br#"{"amazon-bedrock-invocationMetrics":{"inputTokenCount":1,"outputTokenCount":2}}"#,
        b"1000\n100\n20\n30",
        b" 7 \n\n\n",
        b"18446744073709551615\n18446744073709551615\n0\n18446744073709551615",
    ] {
        seeds.push(("usage", body.to_vec()));
    }
    // classify: [status index] error-type \n x-amz-retry-after \n retry-after \n body
    for (status, rest) in [
        (6u8, &b"ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/\n\n\n{\"message\":\"Too many tokens, please wait before trying again.\"}"[..]),
        (6, b"ThrottlingException\n250\n\n{\"message\":\"Too many tokens per day, please wait before trying again.\"}"),
        (6, b"\n\n2\n{\"__type\":\"com.amazon.bedrock#ThrottlingException\",\"Message\":\"Your request rate is too high.\"}"),
        (6, b"ModelNotReadyException:x\n\n\n{\"message\":\"Model is not ready\"}"),
        (8, b"ServiceUnavailableException:x\n\n\n{\"message\":\"Too many connections, please wait before trying again.\",\"exceptionMetadata\":{}}"),
        (7, b"InternalServerException\n\n\n{}"),
        (4, b"ModelTimeoutException\n\n\n{\"message\":\"Model has timed out in processing the request.\"}"),
        (1, b"ValidationException:x\n\n\n{\"message\":\"Malformed input request\"}"),
        (1, b"\n\n\n{\"code\":\"ServiceQuotaExceededException\",\"errorMessage\":\"quota\"}"),
        (2, b"AccessDeniedException\n\n\n{\"message\":\"denied\"}"),
        (6, b"\n18446744073709551615\nWed, 21 Oct 2015 07:28:00 GMT\n"),
        (0, b"\n\n\n{\"usage\":{}}"),
    ] {
        let mut input = vec![status];
        input.extend_from_slice(rest);
        seeds.push(("classify", input));
    }
    for input in frame_inputs() {
        seeds.push(("settle", input.clone()));
        seeds.push(("first_frame", input));
    }
    // extremes: [quota: 3 × (selector, value)] [window] [day] [margin] [max wait] [windows]
    // then operations (see `fuzzing::extremes`). Value selectors: 9 = u64::MAX, 7 = 2^63,
    // 3 = 1,000; duration selectors: 4 = 60 s, 5 = a day, 7 = u64::MAX seconds.
    for input in [
        // Every limit u64::MAX: u64::MAX costs, reservations and settlements, then a report.
        &[
            1u8, 9, 1, 9, 1, 9, 4, 5, 1, 7, 60, 0x00, 9, 0x05, 9, 0, 0, 0x05, 9, 0, 1, 0x09, 9, 9,
            0x01, 9, 0x0a,
        ][..],
        // A small quota, throttle feedback, quota changes to the edges, refusals, waits of
        // u64::MAX seconds.
        &[
            1, 3, 1, 3, 0, 0, 3, 5, 0, 3, 2, 0x00, 3, 0x03, 1, 0x04, 1, 9, 1, 7, 0, 0x06, 7, 0x07,
            7, 0x08, 2, 0x0b, 0x0a,
        ],
        // A window of one nanosecond and raw values.
        &[
            1, 0x80, 255, 255, 255, 255, 255, 255, 255, 127, 0, 0, 1, 1, 0, 0, 1, 0x10, 9, 0x15, 9,
            0x80, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0x25, 9, 7, 1, 0x0a,
        ],
        // Keys past the recorder's cap fold into `other`.
        &[
            1, 3, 0, 0, 0, 4, 5, 0, 0, 3, 0x05, 3, 0, 0, 0x15, 3, 0, 0, 0x25, 3, 0, 0, 0x35, 3, 0,
            0, 0x49, 9, 9, 0x0a,
        ],
    ] {
        seeds.push(("extremes", input.to_vec()));
    }
    seeds
}

#[test]
#[ignore = "writes fuzz/seeds; run by hand when the seed bodies change"]
fn write_seeds() {
    let dir = fuzz_dir().join("seeds");
    let _ = std::fs::remove_dir_all(&dir);
    for (i, (target, data)) in seeds().into_iter().enumerate() {
        let target_dir = dir.join(target);
        std::fs::create_dir_all(&target_dir).expect("creates the seed directory");
        std::fs::write(target_dir.join(format!("seed-{i:03}")), data).expect("writes a seed");
    }
}

/// The seeds in the code and on disk agree (or a seed body was changed without rewriting).
#[test]
fn seeds_are_current() {
    let on_disk: usize = TARGETS
        .iter()
        .map(|(t, _)| files(&fuzz_dir().join("seeds").join(t)).len())
        .sum();
    assert_eq!(
        on_disk,
        seeds().len(),
        "run the write_seeds test to refresh fuzz/seeds"
    );
}
