//! Malformed requests get Bedrock-style errors, and the server keeps serving.

use bedrock_throttle::emulator::{Emulator, Stats};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common::*;

fn assert_validation(r: &RawResponse, contains: &str) {
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.error_code(), "ValidationException");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.header("x-amzn-RequestId").is_some());
    let v = r.json();
    assert_eq!(v.as_object().unwrap().len(), 1, "only `message`: {v}");
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains(contains),
        "{message:?} should contain {contains:?}"
    );
}

#[tokio::test]
async fn malformed_bodies_get_validation_exception() {
    let e = Emulator::builder().start().await.unwrap();
    let addr = e.addr();
    let claude = path(SONNET4, "invoke");
    let converse = path(SONNET4, "converse");
    let cases: Vec<(String, Vec<u8>, &str)> = vec![
        (claude.clone(), b"{\"anthropic_version\": ".to_vec(), "not valid JSON"),
        (converse.clone(), b"not json at all".to_vec(), "not valid JSON"),
        (claude.clone(), vec![b'{', b'"', 0xff, 0xfe, b'"', b'}'], "UTF-8"),
        (claude.clone(), b"[]".to_vec(), "expected type: JSONObject"),
        (
            claude.clone(),
            json!({"anthropic_version": "bedrock-2023-05-31", "messages": []}).to_string().into_bytes(),
            "required key [max_tokens] not found",
        ),
        (
            claude.clone(),
            json!({"max_tokens": 5, "messages": []}).to_string().into_bytes(),
            "required key [anthropic_version] not found",
        ),
        (
            claude.clone(),
            json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": "5", "messages": []}).to_string().into_bytes(),
            "#/max_tokens: expected type: Integer, found: String",
        ),
        (
            claude.clone(),
            json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 100000, "messages": []}).to_string().into_bytes(),
            "exceeds the model limit of 64000",
        ),
        (converse.clone(), b"{}".to_vec(), "Value null at 'messages'"),
        (converse.clone(), json!({"messages": {"role": "user"}}).to_string().into_bytes(), "Member must be a list"),
        (
            converse.clone(),
            json!({"messages": [{"role": "user", "content": [{"text": 42}]}]}).to_string().into_bytes(),
            "content block",
        ),
        (
            converse.clone(),
            json!({"messages": [{"role": "user", "content": []}], "inferenceConfig": {"maxTokens": -1}}).to_string().into_bytes(),
            "inferenceConfig.maxTokens",
        ),
        (path(TITAN_TEXT, "invoke"), json!({"inputText": ["a"]}).to_string().into_bytes(), "#/inputText: expected type: String"),
        (path(LLAMA, "invoke"), json!({"max_gen_len": 5}).to_string().into_bytes(), "required key [prompt]"),
        (path(SONNET4_BASE, "count-tokens"), json!({"input": {}}).to_string().into_bytes(), "exactly one of"),
        (path(TITAN_EMBED, "converse"), converse_body("x", None), "doesn't support the model"),
        (path(TITAN_EMBED, "invoke-with-response-stream"), json!({"inputText": "x"}).to_string().into_bytes(), "streaming"),
        ("/model/%FF%FE/converse".to_owned(), converse_body("x", None), "modelId"),
    ];
    for (p, body, contains) in &cases {
        let r = send(addr, "POST", p, body).await;
        assert_validation(&r, contains);
    }
    // Still serving.
    let ok = send(addr, "POST", &converse, &converse_body("hello", Some(10))).await;
    assert_eq!(ok.status, 200);
    let c = e.stats().totals;
    assert_eq!(
        c.rejected as usize,
        cases.len() - 1,
        "the bad model id has no model to count under"
    );
    assert_eq!(c.admitted, 1);
    assert_eq!(c.tokens_reserved, 2 + 3 + 10);
}

#[tokio::test]
async fn oversized_bodies_are_refused_without_buffering() {
    let e = Emulator::builder().start().await.unwrap();
    let addr = e.addr();

    // Declared too long: refused before a byte of the body is read.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: 25000001\r\nConnection: close\r\n\r\n",
        path(SONNET4, "invoke")
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let r = read_response(stream).await;
    assert_validation(&r, "less than or equal to 25000000");

    // Chunked, no length declared: refused once 25,000,000 bytes have been read.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        path(SONNET4, "invoke")
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk_size = 1 << 20;
    let mut chunk = format!("{chunk_size:x}\r\n").into_bytes();
    chunk.extend(std::iter::repeat_n(b' ', chunk_size));
    chunk.extend_from_slice(b"\r\n");
    let (mut reader, mut writer) = stream.into_split();
    let write = tokio::spawn(async move {
        for _ in 0..(25_000_000 / chunk_size) {
            writer.write_all(&chunk).await?;
        }
        // The byte over the limit, and the end of the body.
        writer
            .write_all(&format!("{:x}\r\n", 25_000_001 % chunk_size).into_bytes())
            .await?;
        writer
            .write_all(&vec![b' '; 25_000_001 % chunk_size])
            .await?;
        writer.write_all(b"\r\n0\r\n\r\n").await?;
        std::io::Result::Ok(writer)
    });
    let mut raw = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut raw).await;
    let _ = write.await;
    let r = parse_response(&raw);
    assert_validation(&r, "less than or equal to 25000000");

    // Still serving.
    let ok = send(
        addr,
        "POST",
        &path(SONNET4, "converse"),
        &converse_body("hello", Some(10)),
    )
    .await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn unknown_paths_and_the_stats_endpoint() {
    let e = Emulator::builder().start().await.unwrap();
    let addr = e.addr();
    for (method, p) in [
        ("POST", "/nothing".to_owned()),
        ("POST", path(SONNET4, "explode")),
        ("GET", path(SONNET4, "converse")),
        ("GET", "/model/".to_owned()),
    ] {
        let r = send(addr, method, &p, b"").await;
        assert_eq!(r.status, 404, "{method} {p}");
        assert_eq!(r.error_code(), "UnknownOperationException");
    }
    send(
        addr,
        "POST",
        &path(SONNET4, "converse"),
        &converse_body("hello", Some(10)),
    )
    .await;
    let r = send(addr, "GET", "/_emulator/stats", b"").await;
    assert_eq!(r.status, 200);
    let stats: Stats = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(stats, e.stats());
    let model = &r.json()["models"][SONNET4];
    for key in [
        "requests",
        "admitted",
        "throttled_requests",
        "throttled_tokens",
        "throttled_tokens_per_day",
        "faults",
        "tokens_reserved",
        "tokens_settled",
        "window",
        "peak_window",
    ] {
        assert!(model.get(key).is_some(), "{key} in {model}");
    }
    assert_eq!(model["requests"], 1);
    assert_eq!(model["tokens_settled"], 5 + 10 * 5);
    assert_eq!(model["window"]["tokens"], 55);
    // Reserved 15, then the settlement overshot it: the peak is the settled 55.
    assert_eq!(model["peak_window"]["tokens"], 55);

    let r = send(addr, "POST", "/_emulator/reset", b"").await;
    assert_eq!(r.status, 200);
    let after = e.stats().model(SONNET4);
    assert_eq!(after.counters.requests, 0);
    assert_eq!(after.window.tokens, 55, "reset keeps the quota state");
    assert_eq!(after.peak_window.tokens, 55);
}

#[tokio::test]
async fn random_bodies_never_break_the_server() {
    let e = Emulator::builder()
        .fault_probability(bedrock_throttle::emulator::Fault::InternalServer, 0.1)
        .start()
        .await
        .unwrap();
    let mut rng = fastrand::Rng::with_seed(42);
    let ops = [
        "invoke",
        "converse",
        "converse-stream",
        "invoke-with-response-stream",
        "count-tokens",
    ];
    let models = [SONNET4, TITAN_TEXT, TITAN_EMBED, NOVA, LLAMA, "x.y"];
    let fragments: [&[u8]; 12] = [
        b"{",
        b"}",
        b"[",
        b"]",
        b"\"messages\":",
        b"\"content\":",
        b"\"text\":\"a\"",
        b"\"max_tokens\":",
        b"99999999999999999999999",
        b",",
        b"null",
        b"\xf0\x9f",
    ];
    for _ in 0..300 {
        let mut body = Vec::new();
        for _ in 0..rng.usize(0..20) {
            body.extend_from_slice(fragments[rng.usize(..fragments.len())]);
        }
        let p = path(
            models[rng.usize(..models.len())],
            ops[rng.usize(..ops.len())],
        );
        let r = send(e.addr(), "POST", &p, &body).await;
        assert!(
            [200, 400, 500].contains(&r.status),
            "{} for {:?}",
            r.status,
            String::from_utf8_lossy(&body)
        );
    }
    let ok = send(e.addr(), "GET", "/_emulator/stats", b"").await;
    assert_eq!(ok.status, 200);
}
