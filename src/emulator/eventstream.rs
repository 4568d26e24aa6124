//! Event-stream frames (`application/vnd.amazon.eventstream`: prelude, headers, payload, CRCs) and the
//! response body that sends a planned sequence of them at their scheduled times.
//!
//! The body settles the request's quota when it produces its last frame, before handing it
//! to the connection: a client that has read the whole stream always sees the settled quota.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use bytes::Bytes;
use http_body::{Body, Frame};
use serde_json::{Map, Value};
use tokio::time::{Instant, Sleep};

use super::ledger::Admission;

const PADDING: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// The random `"p"` padding field real Bedrock adds to every event payload.
pub(crate) fn padding(rng: &mut fastrand::Rng) -> &'static str {
    &PADDING[..rng.usize(1..=PADDING.len())]
}

fn encode(headers: Vec<Header>, payload: Vec<u8>) -> Bytes {
    let message = Message::new_from_parts(headers, payload);
    let mut out = Vec::with_capacity(message.payload().len().saturating_add(128));
    // Encoding only fails for oversized headers or payloads, which the emulator never builds.
    match write_message_to(&message, &mut out) {
        Ok(()) => Bytes::from(out),
        Err(_) => Bytes::new(),
    }
}

fn string(name: &'static str, value: &'static str) -> Header {
    Header::new(name, HeaderValue::String(value.into()))
}

/// An event frame: `:message-type=event`, `:event-type`, `:content-type=application/json`; the
/// payload is `fields` plus the `"p"` padding.
pub(crate) fn event(event_type: &'static str, mut fields: Map<String, Value>, pad: &str) -> Bytes {
    fields.insert("p".to_owned(), Value::String(pad.to_owned()));
    let payload = serde_json::to_vec(&Value::Object(fields)).unwrap_or_default();
    encode(
        vec![
            string(":event-type", event_type),
            string(":content-type", "application/json"),
            string(":message-type", "event"),
        ],
        payload,
    )
}

/// An exception frame: `:message-type=exception`, `:exception-type`, payload: the exception's
/// members (`message`, and e.g. `originalStatusCode` for `modelStreamErrorException`).
pub(crate) fn exception(exception_type: &'static str, members: Map<String, Value>) -> Bytes {
    let payload = serde_json::to_vec(&Value::Object(members)).unwrap_or_default();
    encode(
        vec![
            string(":exception-type", exception_type),
            string(":content-type", "application/json"),
            string(":message-type", "exception"),
        ],
        payload,
    )
}

/// One frame of a planned stream.
#[derive(Debug)]
pub(crate) struct PlannedFrame {
    /// When to send it, from the start of the request.
    pub(crate) at: Duration,
    pub(crate) bytes: Bytes,
    /// `(quota tokens, output tokens)` to settle if the client goes away after this frame.
    pub(crate) on_drop: (u64, u64),
}

/// A response body that sends planned frames on time and settles at the last one.
#[derive(Debug)]
pub(crate) struct FrameBody {
    frames: VecDeque<PlannedFrame>,
    start: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
    admission: Option<Admission>,
    settle: (u64, u64),
}

impl FrameBody {
    /// `settle` is what the admission settles when the last frame is produced.
    pub(crate) fn new(
        frames: Vec<PlannedFrame>,
        start: Instant,
        admission: Admission,
        settle: (u64, u64),
    ) -> Self {
        Self {
            frames: frames.into(),
            start,
            sleep: None,
            admission: Some(admission),
            settle,
        }
    }
}

impl Body for FrameBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let Some(next) = this.frames.front() else {
            return Poll::Ready(None);
        };
        let deadline = this.start.checked_add(next.at).unwrap_or(this.start);
        if deadline > Instant::now() {
            let sleep = this
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if sleep.deadline() != deadline {
                sleep.as_mut().reset(deadline);
            }
            ready!(sleep.as_mut().poll(cx));
        }
        let Some(frame) = this.frames.pop_front() else {
            return Poll::Ready(None);
        };
        if this.frames.is_empty() {
            if let Some(admission) = this.admission.take() {
                admission.settle(this.settle.0, this.settle.1);
            }
        } else if let Some(admission) = this.admission.as_mut() {
            admission.set_on_drop(frame.on_drop.0, frame.on_drop.1);
        }
        Poll::Ready(Some(Ok(Frame::data(frame.bytes))))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_eventstream::frame::read_message_from;

    #[tokio::test(start_paused = true)]
    async fn dropping_the_body_mid_stream_settles_what_was_sent() {
        use crate::budget::Quota;
        use crate::emulator::config::Enforcement;
        use crate::emulator::ledger::{Ledgers, lock};
        use http_body_util::BodyExt as _;

        let ledgers = Ledgers::new(
            Enforcement::SlidingWindow,
            Duration::from_secs(60),
            Quota::unlimited(),
            Default::default(),
        );
        let ledger = ledgers.get("m");
        let r = lock(&ledger).admit(Instant::now(), 1_000).unwrap();
        let admission = Admission::new(std::sync::Arc::clone(&ledger), r, 4);
        let frame = |ms, produced: u64| PlannedFrame {
            at: Duration::from_millis(ms),
            bytes: Bytes::from_static(b"x"),
            on_drop: (4 + produced * 5, produced),
        };
        let frames = vec![frame(0, 0), frame(100, 8), frame(200, 16)];
        let start = Instant::now();
        let mut body = FrameBody::new(frames, start, admission, (84, 16));
        assert!(body.frame().await.is_some());
        assert!(body.frame().await.is_some());
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(100),
            "sent on schedule"
        );
        drop(body);
        let stats = ledgers.snapshot().model("m");
        assert_eq!(
            (stats.counters.tokens_settled, stats.counters.output_tokens),
            (44, 8)
        );
        assert_eq!(stats.window.tokens, 44);
    }

    #[test]
    fn frames_decode_with_headers_and_padding() {
        let mut rng = fastrand::Rng::with_seed(1);
        let mut fields = Map::new();
        fields.insert("role".into(), "assistant".into());
        let bytes = event("messageStart", fields, padding(&mut rng));
        let msg = read_message_from(bytes).unwrap();
        let header = |n: &str| {
            msg.headers()
                .iter()
                .find(|h| h.name().as_str() == n)
                .and_then(|h| h.value().as_string().ok())
                .map(|s| s.as_str().to_owned())
        };
        assert_eq!(header(":event-type").as_deref(), Some("messageStart"));
        assert_eq!(header(":message-type").as_deref(), Some("event"));
        let v: Value = serde_json::from_slice(msg.payload()).unwrap();
        assert_eq!(v["role"], "assistant");
        assert!(!v["p"].as_str().unwrap().is_empty());

        let mut members = Map::new();
        members.insert("message".into(), "slow down".into());
        let msg = read_message_from(exception("throttlingException", members)).unwrap();
        let v: Value = serde_json::from_slice(msg.payload()).unwrap();
        assert_eq!(v, serde_json::json!({"message": "slow down"}));
    }
}
