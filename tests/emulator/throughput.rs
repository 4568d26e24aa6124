//! How many requests per second the emulator serves on this machine. Ignored by default; run:
//! `cargo test --release --all-features --test emulator throughput -- --ignored --nocapture`.
//! It prints figures and asserts nothing about speed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bedrock_throttle::budget::Quota;
use bedrock_throttle::emulator::{Emulator, OutputLength};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::common::*;

/// Sends requests back to back on one keep-alive connection until `deadline`; returns how many
/// got a complete response.
async fn client_loop(addr: SocketAddr, request: Vec<u8>, deadline: Instant) -> u64 {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut done = 0;
    let mut line = String::new();
    while Instant::now() < deadline {
        write.write_all(&request).await.unwrap();
        let (mut length, mut chunked) = (0usize, false);
        loop {
            line.clear();
            read.read_line(&mut line).await.unwrap();
            let l = line.trim_end().to_ascii_lowercase();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            chunked |= l == "transfer-encoding: chunked";
        }
        if chunked {
            loop {
                line.clear();
                read.read_line(&mut line).await.unwrap();
                let size = usize::from_str_radix(line.trim(), 16).unwrap();
                let mut skip = vec![0; size + 2];
                read.read_exact(&mut skip).await.unwrap();
                if size == 0 {
                    break;
                }
            }
        } else {
            let mut body = vec![0; length];
            read.read_exact(&mut body).await.unwrap();
        }
        done += 1;
    }
    done
}

async fn measure(addr: SocketAddr, op: &str, connections: usize) -> f64 {
    let body = converse_body("Hello, how are you today?", Some(100));
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        path(SONNET4, op),
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(3);
    let tasks: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(client_loop(addr, request.clone(), deadline)))
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a test: run with --ignored --nocapture in release mode"]
async fn throughput() {
    let e = Emulator::builder()
        .default_quota(
            Quota::unlimited()
                .with_requests(u64::MAX / 2)
                .with_tokens(u64::MAX / 2)
                .with_tokens_per_day(u64::MAX / 2),
        )
        .output_length(OutputLength::Fixed(32))
        .start()
        .await
        .unwrap();
    for op in ["converse", "converse-stream"] {
        let rps = measure(e.addr(), op, 32).await;
        println!(
            "{op}: {rps:.0} requests/s (32 keep-alive connections, client in the same process)"
        );
    }
    let s = e.stats().model(SONNET4);
    println!(
        "admitted {}, throttled {}",
        s.counters.admitted,
        s.counters.throttled_requests + s.counters.throttled_tokens
    );
}
