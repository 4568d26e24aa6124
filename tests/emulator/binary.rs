//! The `bedrock-emulator` binary: first line, serving, clean exit on SIGTERM.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use crate::common::*;

#[tokio::test]
async fn prints_address_serves_and_stops_on_sigterm() {
    let config =
        std::env::temp_dir().join(format!("bedrock-emulator-test-{}.json", std::process::id()));
    std::fs::write(
        &config,
        format!(r#"{{"model_quotas": {{"{SONNET4}": {{"rpm": 1}}}}}}"#),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bedrock-emulator"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--tpm",
            "100000",
            "--window-secs",
            "60",
            "--enforcement",
            "fixed",
        ])
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let _ = std::fs::remove_file(&config);
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("first line: {line:?}"))
        .parse()
        .unwrap();

    let ok = send(
        addr,
        "POST",
        &path(SONNET4, "converse"),
        &converse_body("hi", Some(10)),
    )
    .await;
    assert_eq!(ok.status, 200);
    // The config file's per-model quota applies.
    let throttled = send(
        addr,
        "POST",
        &path(SONNET4, "converse"),
        &converse_body("hi", Some(10)),
    )
    .await;
    assert_eq!(throttled.status, 429);
    assert_eq!(
        throttled.json()["message"],
        "Too many requests, please wait before trying again."
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("shutting down"), "{stderr}");
}

#[test]
fn help_and_bad_arguments() {
    let out = Command::new(env!("CARGO_BIN_EXE_bedrock-emulator"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for option in [
        "--listen",
        "--rpm",
        "--tpm",
        "--tpd",
        "--window-secs",
        "--enforcement",
        "--config",
    ] {
        assert!(help.contains(option), "{option}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_bedrock-emulator"))
        .args(["--enforcement", "leaky"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("leaky"));
}
