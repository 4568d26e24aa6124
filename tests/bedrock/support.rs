//! Builders shared by the Bedrock tests: requests, plans, bodies and a settlement probe.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bedrock_throttle::admit::Plan;
use bedrock_throttle::bedrock::{Bedrock, BedrockKey, Memo, Reservation};
use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};

use crate::eventstream;

pub const HOST: &str = "https://bedrock-runtime.us-east-1.amazonaws.com";
pub const SONNET_4: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";
pub const SONNET_4_ENCODED: &str = "us.anthropic.claude-sonnet-4-20250514-v1%3A0";
pub const NOVA_LITE_ENCODED: &str = "amazon.nova-lite-v1%3A0";

pub fn request(uri: &str, body: &'static str) -> http::Request<Bytes> {
    http::Request::post(uri)
        .body(Bytes::from_static(body.as_bytes()))
        .unwrap()
}

/// The plan `bedrock` makes for a request of `op` (the path suffix) on the encoded `model`.
pub fn plan_for(
    bedrock: &Bedrock,
    model: &str,
    op: &str,
    body: &'static str,
) -> Plan<BedrockKey, Memo> {
    bedrock.plan_of(&request(&format!("{HOST}/model/{model}/{op}"), body))
}

/// The memo of a request of `op` on `model` whose body sets no max output: the settlement's
/// burndown is the model's, its reserved output the model's maximum.
pub fn memo(bedrock: &Bedrock, model: &str, op: &str) -> Memo {
    plan_for(bedrock, model, op, "{}").memo
}

/// A reservation that records what it settled (and Bedrock's own reservation, when told).
#[derive(Debug, Clone)]
pub struct Probe {
    reserved: u64,
    if_unknown: u64,
    settled: Arc<Mutex<Vec<u64>>>,
    server_reserved: Arc<Mutex<Vec<u64>>>,
}

impl Probe {
    pub fn new(reserved: u64) -> Self {
        Self {
            reserved,
            if_unknown: reserved,
            settled: Arc::default(),
            server_reserved: Arc::default(),
        }
    }
    /// A probe for `plan`, as admission would issue its permit.
    pub fn of<K, M>(plan: &Plan<K, M>) -> Self {
        Self::new(0).planned(plan)
    }
    /// The same probe (recording into the same lists), reserving what `plan` says.
    pub fn planned<K, M>(mut self, plan: &Plan<K, M>) -> Self {
        self.reserved = plan.tokens;
        self.if_unknown = plan.if_unknown;
        self
    }
    pub fn with_if_unknown(mut self, if_unknown: u64) -> Self {
        self.if_unknown = if_unknown.max(self.reserved);
        self
    }
    pub fn settled(&self) -> Vec<u64> {
        self.settled.lock().unwrap().clone()
    }
    pub fn server_reserved(&self) -> Vec<u64> {
        self.server_reserved.lock().unwrap().clone()
    }
}

impl Reservation for Probe {
    fn reserved(&self) -> u64 {
        self.reserved
    }
    fn if_unknown(&self) -> u64 {
        self.if_unknown
    }
    fn settle(self, actual: u64) {
        self.settled.lock().unwrap().push(actual);
    }
    fn settle_against(self, actual: u64, server_reserved: u64) {
        self.server_reserved.lock().unwrap().push(server_reserved);
        self.settle(actual);
    }
}

pub type ChunkStream =
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

/// A body that yields `bytes` in chunks of `size`.
pub fn chunked(bytes: &[u8], size: usize) -> ChunkStream {
    let frames: Vec<_> = bytes
        .chunks(size.max(1))
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    StreamBody::new(futures_util::stream::iter(frames))
}

pub fn event_stream_response<B>(body: B) -> http::Response<B> {
    http::Response::builder()
        .status(200)
        .header("content-type", eventstream::CONTENT_TYPE)
        .body(body)
        .unwrap()
}

pub async fn drain<B: http_body::Body<Data = Bytes> + Unpin>(mut body: B) -> Vec<u8>
where
    B::Error: std::fmt::Debug,
{
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            out.extend_from_slice(&data);
        }
    }
    out
}
