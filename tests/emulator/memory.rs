//! Memory per request: a 24 MB body must not cost the emulator more than 100 MB.
//!
//! Peak memory is read from the process itself (`VmHWM` in `/proc/self/status`, Linux only,
//! reset between measurements). Other tests of this binary run in parallel threads and would
//! raise the peak too, so the measurement runs in a child process: this test binary run again
//! with one ignored test selected. The figures are reported in BENCHMARKS.md; the only
//! assertion is the 100 MB bound, far above what the emulator needs, so it cannot flake.
#![cfg(target_os = "linux")]

use std::process::Command;

use bedrock_throttle::emulator::Emulator;
use serde_json::Value;

use crate::common::*;

/// Peak resident memory of this process so far, in KiB.
fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// Resets the peak to the current resident size (`5` to `clear_refs`, Linux 4.0 and later),
/// so that one process can measure several things one after the other.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
}

/// A body of about `bytes` bytes: many small messages (the case a JSON tree is worst at).
fn small_messages(bytes: usize, claude: bool) -> Vec<u8> {
    let message: &[u8] = if claude {
        br#"{"role":"user","content":"hi"},"#
    } else {
        br#"{"role":"user","content":[{"text":"hi"}]},"#
    };
    let mut body = if claude {
        br#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":5,"messages":["#.to_vec()
    } else {
        br#"{"inferenceConfig":{"maxTokens":5},"messages":["#.to_vec()
    };
    while body.len() + message.len() < bytes {
        body.extend_from_slice(message);
    }
    body.pop();
    body.extend_from_slice(b"]}");
    body
}

const BODY_BYTES: usize = 24_000_000;

/// Runs the ignored test `name` in a child process and returns the `KEY=VALUE` lines it printed.
fn child(name: &str) -> Vec<(String, u64)> {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .expect("run the child test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| l.split_once("MEASURED ").map(|(_, m)| m))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.parse().unwrap()))
        .collect()
}

#[test]
fn a_24_mb_body_adds_less_than_100_mb() {
    for name in ["memory::measure_converse", "memory::measure_invoke_claude"] {
        let figures = child(name);
        assert_eq!(figures.len(), 1, "{figures:?}");
        for (what, kib) in &figures {
            eprintln!("{what}: {} MB added", kib / 1024);
            assert!(*kib < 100 * 1024, "{what}: {kib} KiB");
        }
    }
}

/// Sends one 24 MB body of small messages to an in-process emulator and prints how much it
/// raised the process's peak memory (the body's own buffer included).
async fn measure(what: &str, op: &str, claude: bool) {
    let e = Emulator::builder().start().await.unwrap();
    let body = small_messages(BODY_BYTES, claude);
    // Warm up the connection path with a small request, then measure the large one.
    let small = send(
        e.addr(),
        "POST",
        &path(SONNET4, op),
        &small_messages(1000, claude),
    )
    .await;
    assert_eq!(
        small.status,
        200,
        "{}",
        String::from_utf8_lossy(&small.body)
    );
    reset_peak();
    let before = peak_kib();
    let r = send(e.addr(), "POST", &path(SONNET4, op), &body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    println!("MEASURED {what}={}", peak_kib().saturating_sub(before));
}

#[tokio::test]
#[ignore = "a measurement: run by a_24_mb_body_adds_less_than_100_mb in its own process"]
async fn measure_converse() {
    measure("converse", "converse", false).await;
}

#[tokio::test]
#[ignore = "a measurement: run by a_24_mb_body_adds_less_than_100_mb in its own process"]
async fn measure_invoke_claude() {
    measure("invoke_claude", "invoke", true).await;
}

/// For comparison (not asserted): what parsing the same body into a `serde_json::Value`, as
/// the emulator did before, adds.
#[test]
#[ignore = "a measurement: prints figures for BENCHMARKS.md"]
fn measure_value_tree() {
    let body = small_messages(BODY_BYTES, false);
    reset_peak();
    let before = peak_kib();
    let v: Value = serde_json::from_slice(&body).unwrap();
    println!("MEASURED value_tree={}", peak_kib().saturating_sub(before));
    drop(v);
}
