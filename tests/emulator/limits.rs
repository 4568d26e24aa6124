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
