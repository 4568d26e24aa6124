//! Connection and request limits, the header-read timeout, and start-up errors, on tokio's
//! paused clock (an idle runtime jumps to the next timer, so nothing waits in real time).

use std::time::Duration;

use bedrock_throttle::emulator::{Emulator, Error};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::common::*;

#[tokio::test(start_paused = true)]
async fn a_client_that_never_sends_its_headers_is_disconnected() {
    let e = Emulator::builder()
        .header_read_timeout(Duration::from_secs(5))
        .start()
        .await
        .unwrap();
    let mut idle = TcpStream::connect(e.addr()).await.unwrap();
    idle.write_all(b"POST /model/x/conv").await.unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    // Closed by the server (EOF or reset), not left open.
    let _ = idle.read_to_end(&mut buf).await;
    assert!(
        start.elapsed() >= Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "{:?}",
        start.elapsed()
    );
    // Still serving.
    let ok = send(
        e.addr(),
        "POST",
        &path(SONNET4, "converse"),
        &converse_body("hi", Some(5)),
    )
    .await;
    assert_eq!(ok.status, 200);
}

#[tokio::test(start_paused = true)]
async fn connections_over_the_limit_wait_for_a_free_one() {
    let e = Emulator::builder()
        .max_connections(1)
        .header_read_timeout(Duration::from_secs(10))
        .start()
        .await
        .unwrap();
    // Takes the only connection and sends nothing: the server closes it after 10 s.
    let _idle = TcpStream::connect(e.addr()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    let start = Instant::now();
    let r = send(
        e.addr(),
        "POST",
        &path(SONNET4, "converse"),
        &converse_body("hi", Some(5)),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        start.elapsed() >= Duration::from_secs(9),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn requests_over_the_in_flight_limit_wait_for_a_free_slot() {
    for (limit, waited) in [(1, true), (2, false)] {
        let e = Emulator::builder()
            .max_in_flight(limit)
            .time_to_first_token(Duration::from_secs(10))
            .start()
            .await
            .unwrap();
        let addr = e.addr();
        let start = Instant::now();
        let slow = async move {
            let body = converse_body("hi", Some(5));
            let r = send(addr, "POST", &path(SONNET4, "converse"), &body).await;
            assert_eq!(r.status, 200);
            start.elapsed()
        };
        // CountTokens answers at once, unless it has to wait for the slow call's slot.
        let quick = async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let body = br#"{"input":{"converse":{"messages":[{"role":"user","content":[{"text":"hi"}]}]}}}"#;
            let r = send(addr, "POST", &path(SONNET4_BASE, "count-tokens"), body).await;
            assert_eq!(r.status, 200);
            start.elapsed()
        };
        let (slow, quick) = tokio::join!(slow, quick);
        assert_eq!(slow, Duration::from_secs(10));
        if waited {
            assert!(quick >= slow, "limit {limit}: {quick:?}");
        } else {
            assert!(quick < Duration::from_secs(1), "limit {limit}: {quick:?}");
        }
    }
}

#[tokio::test]
async fn start_up_errors_are_typed_and_say_what_to_do() {
    for builder in [
        Emulator::builder().max_connections(0),
        Emulator::builder().max_in_flight(0),
        Emulator::builder().header_read_timeout(Duration::ZERO),
        Emulator::builder().body_read_timeout(Duration::ZERO),
        Emulator::builder().window(Duration::ZERO),
    ] {
        let err = builder.start().await.unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
        assert!(err.config_error().is_some() && err.addr().is_none());
        assert!(err.to_string().contains("fix the setting"), "{err}");
        assert!(std::error::Error::source(&err).is_some());
    }
    let taken = Emulator::builder().start().await.unwrap();
    let err = Emulator::builder()
        .listen(taken.addr())
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Bind { .. }), "{err}");
    assert_eq!(err.addr(), Some(taken.addr()));
    assert_eq!(
        err.io_error().map(std::io::Error::kind),
        Some(std::io::ErrorKind::AddrInUse)
    );
    assert!(err.to_string().contains("port 0"), "{err}");
}

/// Sends a request's head with `Expect: 100-continue` and a declared body of `len` bytes,
/// waits for the server's `100 Continue` (sent when the handler starts reading the body), and
/// sends only `sent` bytes of the body. The connection is then left stalled.
async fn stalled_body(addr: std::net::SocketAddr, len: usize, sent: usize) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {len}\r\nExpect: 100-continue\r\n\r\n",
        path(SONNET4, "converse")
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut buf = [0u8; 256];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before 100 Continue");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    stream.write_all(&vec![b' '; sent]).await.unwrap();
    stream
}

/// Issue 21: the in-flight permit was taken before the body was read, and the read had no
/// timeout, so eight clients stalled mid-body with `max_in_flight(8)` kept a ninth, complete
/// request waiting for ever. The 100 Continue each stalled client waits for proves its handler
/// is reading the body before the ninth request is sent.
#[tokio::test(start_paused = true)]
async fn stalled_bodies_do_not_block_a_complete_request() {
    let e = Emulator::builder()
        .max_in_flight(8)
        .body_read_timeout(Duration::from_secs(3600))
        .start()
        .await
        .unwrap();
    let mut stalled = Vec::new();
    for _ in 0..8 {
        stalled.push(stalled_body(e.addr(), 100, 10).await);
    }
    let start = Instant::now();
    let body = converse_body("hi", Some(5));
    // A guard, not a timing assertion: on the paused clock an idle runtime jumps to it at once
    // when the request is blocked (it would otherwise hang the test).
    let ninth = tokio::time::timeout(
        Duration::from_secs(600),
        send(e.addr(), "POST", &path(SONNET4, "converse"), &body),
    )
    .await
    .expect("the ninth request waited behind stalled bodies");
    assert_eq!(ninth.status, 200);
    assert!(start.elapsed() < Duration::from_secs(3600));
    // The stalled ones are still waiting for their bodies: nothing was answered to them.
    for s in &stalled {
        let mut buf = [0u8; 16];
        assert!(matches!(
            s.try_read(&mut buf),
            Err(ref err) if err.kind() == std::io::ErrorKind::WouldBlock
        ));
    }
}

/// A body that stops mid-way is answered 408 once the body-read timeout has passed, and the
/// emulator goes on serving.
#[tokio::test(start_paused = true)]
async fn a_stalled_body_is_answered_408_after_the_body_read_timeout() {
    let e = Emulator::builder()
        .max_in_flight(1)
        .body_read_timeout(Duration::from_secs(5))
        .start()
        .await
        .unwrap();
    let start = Instant::now();
    let stalled = stalled_body(e.addr(), 100, 10).await;
    let r = read_response(stalled).await;
    assert_eq!(r.status, 408);
    assert_eq!(r.error_code(), "RequestTimeoutException");
    assert!(
        start.elapsed() >= Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let ok = send(
        e.addr(),
        "POST",
        &path(SONNET4, "converse"),
        &converse_body("hi", Some(5)),
    )
    .await;
    assert_eq!(ok.status, 200);
}
