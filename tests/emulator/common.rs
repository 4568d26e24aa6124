//! Shared helpers: an SDK client for an emulator, and a minimal raw HTTP/1.1 client (no timers,
//! so it works under a paused Tokio clock).

use std::net::SocketAddr;

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::retry::RetryConfig;
use aws_sdk_bedrockruntime::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_eventstream::frame::read_message_from;
use aws_smithy_types::event_stream::Message;
use bedrock_throttle::emulator::EmulatorHandle;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const SONNET4: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";
/// Sonnet 4's base id: CountTokens refuses inference-profile ids.
pub const SONNET4_BASE: &str = "anthropic.claude-sonnet-4-20250514-v1:0";
pub const HAIKU3: &str = "anthropic.claude-3-haiku-20240307-v1:0";
pub const TITAN_TEXT: &str = "amazon.titan-text-express-v1";
pub const TITAN_EMBED: &str = "amazon.titan-embed-text-v2:0";
pub const NOVA: &str = "us.amazon.nova-pro-v1:0";
pub const LLAMA: &str = "meta.llama3-8b-instruct-v1:0";

/// The real SDK client against `handle`, retries disabled.
pub fn client(handle: &EmulatorHandle) -> Client {
    let config = aws_sdk_bedrockruntime::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AK", "SK", None, None, "test"))
        .endpoint_url(handle.endpoint_url())
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .retry_config(RetryConfig::disabled())
        .build();
    Client::from_conf(config)
}

/// A response read by [`send`].
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The error code from `x-amzn-ErrorType`, checking the coral suffix.
    pub fn error_code(&self) -> &str {
        let header = self.header("x-amzn-ErrorType").expect("x-amzn-ErrorType");
        let (code, suffix) = header.split_once(':').expect("code:suffix");
        assert_eq!(
            suffix,
            "http://internal.amazon.com/coral/com.amazon.bedrock/"
        );
        code
    }

    /// Event-stream frames of the body.
    pub fn frames(&self) -> Vec<Message> {
        let mut buf = &self.body[..];
        let mut out = Vec::new();
        while !buf.is_empty() {
            let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
            out.push(read_message_from(&buf[..len]).expect("valid frame"));
            buf = &buf[len..];
        }
        out
    }
}

/// One request on a fresh connection (`Connection: close`), read to the end.
pub async fn send(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Authorization: Bearer test-key\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(body).await.expect("write body");
    read_response(stream).await
}

/// Reads a whole HTTP/1.1 response (content-length, chunked, or until close).
pub async fn read_response(mut stream: TcpStream) -> RawResponse {
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read response");
    parse_response(&raw)
}

pub fn parse_response(raw: &[u8]) -> RawResponse {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..end]).expect("ascii head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    RawResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_str = std::str::from_utf8(&data[..line_end]).unwrap();
        let size = usize::from_str_radix(size_str.split(';').next().unwrap().trim(), 16).unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

pub fn path(model: &str, op: &str) -> String {
    let encoded: String = model
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("/model/{encoded}/{op}")
}

/// A Converse body with one user message of `text` and an optional max tokens.
pub fn converse_body(text: &str, max_tokens: Option<u64>) -> Vec<u8> {
    let mut v = serde_json::json!({"messages": [{"role": "user", "content": [{"text": text}]}]});
    if let Some(m) = max_tokens {
        v["inferenceConfig"] = serde_json::json!({ "maxTokens": m });
    }
    v.to_string().into_bytes()
}

/// The string value of an event-stream header.
pub fn frame_header(m: &Message, name: &str) -> Option<String> {
    m.headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| h.value().as_string().ok())
        .map(|s| s.as_str().to_owned())
}
