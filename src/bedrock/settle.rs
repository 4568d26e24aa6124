//! Settling a reservation from the response, even when the usage only arrives at the end of a
//! stream: the permit travels with the response body and settles when the body ends or is
//! dropped.

// Numbers here come from requests, responses and settings: no arithmetic may panic or wrap
// on them (issue 21). Each exception is an `#[allow]` that says why it cannot.
#![warn(clippy::arithmetic_side_effects)]

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::debt::OutputShare;
use super::usage::{StreamUsage, Usage};
use crate::budget::Permit;

/// Where a settlement goes: the engine's [`Permit`], or anything else that wants to know what a
/// call cost (a test probe, a metrics sink).
///
/// Dropping an unsettled reservation must charge its [`if_unknown`](Self::if_unknown) amount,
/// as [`Permit`] does.
pub trait Reservation: Send + 'static {
    /// The amount reserved.
    fn reserved(&self) -> u64;
    /// The amount to settle when the usage never arrives (at least the reservation).
    fn if_unknown(&self) -> u64 {
        self.reserved()
    }
    /// Settles with the amount really used.
    fn settle(self, actual: u64);
    /// Counts `extra` more tokens of debt the call will most likely settle above its
    /// reservation, until it settles ([`Permit::expect_debt`]). The default ignores it.
    fn expect_debt(&mut self, extra: u64) {
        let _ = extra;
    }
    /// Settles with the amount really used, knowing that Bedrock's own reservation for the call
    /// was `server_reserved` (see [`Permit::settle_against`]). The default ignores it.
    fn settle_against(self, actual: u64, server_reserved: u64)
    where
        Self: Sized,
    {
        let _ = server_reserved;
        self.settle(actual);
    }
}

impl Reservation for Permit {
    fn reserved(&self) -> u64 {
        Permit::reserved(self)
    }
    fn if_unknown(&self) -> u64 {
        Permit::if_unknown(self)
    }
    fn settle(self, actual: u64) {
        Permit::settle(self, actual);
    }
    fn expect_debt(&mut self, extra: u64) {
        self.count_expected_debt(extra);
    }
    fn settle_against(self, actual: u64, server_reserved: u64) {
        Permit::settle_against(self, actual, server_reserved);
    }
}

/// What a call is settled with: the amount, and Bedrock's own reservation when the usage and the
/// reserved output tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Amount {
    pub(crate) actual: u64,
    pub(crate) server_reserved: Option<u64>,
    /// The output tokens of the usage it came from, if any (to learn the model's output share).
    pub(crate) output: Option<u64>,
}

impl Amount {
    /// An amount without knowledge of Bedrock's reservation.
    pub(crate) fn plain(actual: u64) -> Self {
        Self {
            actual,
            server_reserved: None,
            output: None,
        }
    }

    /// The amount of `usage`. Bedrock reserved `input + cache_read + cache_write + max output`
    /// at the start, with its exact input count: with the max output known, that is
    /// `server_reserved`.
    pub(crate) fn of_usage(usage: &Usage, burndown: u64, reserved_output: Option<u64>) -> Self {
        Self {
            actual: usage.quota_tokens(burndown),
            server_reserved: reserved_output.map(|output| {
                usage
                    .input_tokens
                    .saturating_add(usage.cache_read_input_tokens)
                    .saturating_add(usage.cache_write_input_tokens)
                    .saturating_add(output)
            }),
            output: Some(usage.output_tokens),
        }
    }

    pub(crate) fn settle<R: Reservation>(self, reservation: R) {
        match self.server_reserved {
            Some(server_reserved) => reservation.settle_against(self.actual, server_reserved),
            None => reservation.settle(self.actual),
        }
    }
}

/// The most bytes of a non-stream body kept to read its usage at the end.
pub(crate) const JSON_USAGE_LIMIT: usize = 4 << 20;
/// The most bytes of one incomplete event-stream frame kept while observing a stream.
pub(crate) use super::stream::FRAME_LIMIT;

/// How a body is observed until it settles.
pub(crate) enum Observer {
    /// A copy of the body (shared `Bytes`), parsed for `usage` at the end.
    Json {
        chunks: Vec<Bytes>,
        len: usize,
        overflow: bool,
    },
    /// An event stream, decoded frame by frame.
    Events(Box<EventObserver>),
}

impl Observer {
    pub(crate) fn json() -> Self {
        Observer::Json {
            chunks: Vec::new(),
            len: 0,
            overflow: false,
        }
    }

    pub(crate) fn events(bytes_per_token: u64) -> Self {
        Observer::Events(Box::new(EventObserver {
            decoder: MessageFrameDecoder::new(),
            pending: BytesMut::new(),
            usage: StreamUsage::default(),
            broken: false,
            bytes_per_token,
        }))
    }

    /// What a stream has cost so far as the quota counts it (`None` for a JSON body, whose
    /// usage is read at its end).
    fn seen_so_far(&self, burndown: u64) -> Option<u64> {
        match self {
            Observer::Json { .. } => None,
            Observer::Events(events) => Some(events.usage.seen_quota_tokens(burndown)),
        }
    }

    pub(crate) fn observe(&mut self, data: &Bytes) {
        match self {
            Observer::Json {
                chunks,
                len,
                overflow,
            } => {
                if *overflow || data.is_empty() {
                    return;
                }
                *len = len.saturating_add(data.len());
                if *len > JSON_USAGE_LIMIT {
                    *overflow = true;
                    chunks.clear();
                } else {
                    chunks.push(data.clone());
                }
            }
            Observer::Events(events) => events.observe(data),
        }
    }

    /// The amount to settle once the body has ended (`end = true`) or stopped early;
    /// `unknown` if the body did not tell. `reserved_output` is the max output the reservation
    /// included, if known.
    pub(crate) fn amount(
        &self,
        unknown: u64,
        burndown: u64,
        end: bool,
        reserved_output: Option<u64>,
    ) -> Amount {
        match self {
            Observer::Json {
                chunks, overflow, ..
            } => {
                if !end || *overflow {
                    return Amount::plain(unknown);
                }
                let usage = match chunks.as_slice() {
                    [] => None,
                    [one] => Usage::from_json(one),
                    many => {
                        let mut all = Vec::with_capacity(many.iter().map(Bytes::len).sum());
                        many.iter().for_each(|c| all.extend_from_slice(c));
                        Usage::from_json(&all)
                    }
                };
                usage.map_or(Amount::plain(unknown), |u| {
                    Amount::of_usage(&u, burndown, reserved_output)
                })
            }
            Observer::Events(events) => match events.usage.final_usage {
                Some(usage) => Amount::of_usage(&usage, burndown, reserved_output),
                None => Amount::plain(unknown.max(events.usage.seen_quota_tokens(burndown))),
            },
        }
    }
}

/// Decodes an event stream incrementally, without copying whole frames when they arrive whole.
pub(crate) struct EventObserver {
    decoder: MessageFrameDecoder,
    /// Bytes of a frame that is not complete yet.
    pending: BytesMut,
    usage: StreamUsage,
    /// The stream could not be decoded: stop looking (the usage seen so far still counts).
    broken: bool,
    bytes_per_token: u64,
}

impl EventObserver {
    fn observe(&mut self, data: &Bytes) {
        if self.broken {
            return;
        }
        if self.pending.is_empty() {
            let mut cursor = data.clone();
            self.decode(&mut cursor);
            if !self.broken && cursor.has_remaining() {
                self.pending.extend_from_slice(&cursor);
            }
        } else {
            self.pending.extend_from_slice(data);
            let mut pending = std::mem::take(&mut self.pending);
            self.decode(&mut pending);
            self.pending = pending;
        }
        if self.pending.len() > FRAME_LIMIT {
            self.broken = true;
        }
        if self.broken {
            self.pending = BytesMut::new();
        }
    }

    fn decode<B: Buf>(&mut self, buf: &mut B) {
        loop {
            match self.decoder.decode_frame(&mut *buf) {
                Ok(DecodedFrame::Complete(message)) => {
                    self.usage.observe(&message, self.bytes_per_token);
                }
                Ok(DecodedFrame::Incomplete) => return,
                Err(_) => {
                    self.broken = true;
                    return;
                }
            }
        }
    }
}

/// A reservation on its way to settlement, with what is needed to compute the amount.
pub(crate) struct Settlement<R: Reservation> {
    reservation: Option<R>,
    burndown: u64,
    reserved_output: Option<u64>,
    observer: Option<Observer>,
    /// Where the model's share of output is learned (see `bedrock::debt`).
    share: Option<Arc<OutputShare>>,
    /// Whether the debt a stream has run up so far is counted on the reservation as it grows
    /// (see [`SettlingBody::counting_debt`]), and how much is counted.
    count_running_debt: bool,
    counted_debt: u64,
}

impl<R: Reservation> Settlement<R> {
    /// Counts the debt the stream has run up so far above the reservation, as it grows.
    fn count_running_debt(&mut self) {
        let (Some(reservation), Some(observer)) = (self.reservation.as_mut(), &self.observer)
        else {
            return;
        };
        let Some(seen) = observer.seen_so_far(self.burndown) else {
            return;
        };
        let debt = seen.saturating_sub(reservation.reserved());
        if debt > self.counted_debt {
            reservation.expect_debt(debt.saturating_sub(self.counted_debt));
            self.counted_debt = debt;
        }
    }

    fn finish(&mut self, end: bool) {
        if let Some(reservation) = self.reservation.take() {
            let unknown = reservation.if_unknown();
            let amount = self.observer.take().map_or(Amount::plain(unknown), |o| {
                o.amount(unknown, self.burndown, end, self.reserved_output)
            });
            if let (Some(share), Some(output), Some(max_output)) =
                (&self.share, amount.output, self.reserved_output)
            {
                share.observe(output, max_output);
            }
            amount.settle(reservation);
        }
        self.observer = None;
    }
}

impl<R: Reservation> Drop for Settlement<R> {
    fn drop(&mut self) {
        self.finish(false);
    }
}

pin_project! {
    /// A response body that settles a reservation from what flows through it.
    ///
    /// Every frame passes through unchanged. The reservation settles when the body ends (with
    /// the usage it carried), when it fails or is dropped early (with
    /// `max(worst case, usage seen so far)` for streams, the worst case otherwise), or at
    /// once when the response head already said everything. See the [type docs](Self).
    ///
    /// # Settling a reservation from the response, even when the usage only arrives at the end of a
    /// streamed body.
    ///
    /// The usage of a Converse call is in its JSON body, and that of a stream in its last event, so
    /// settlement cannot happen when the response head arrives. The reservation therefore travels
    /// with the body: [`SettlingBody`] passes every frame through unchanged while observing it, and
    /// settles when the body ends, fails, or is dropped.
    ///
    /// | response | settles |
    /// |---|---|
    /// | not 2xx | 0, at once: Bedrock rejects before it reserves (the classifier feeds the throttle back to the limiter) |
    /// | CountTokens, ApplyGuardrail, unknown paths | 0, at once: they draw on no token quota |
    /// | usage headers (InvokeModel) | the usage, at once |
    /// | event stream | the final usage at the end; if the stream ends or is dropped without it, `max(worst case, usage seen so far)` with output counted from the deltas |
    /// | any other body (Converse JSON) | the body's `usage` at the end (read from a copy of at most 4 MiB); the worst case if there is none or the body is dropped early |
    ///
    /// The output burndown is that of the request's model, from the plan's [`Memo`](super::Memo).
    /// The worst case is what the server can have booked at most when the usage never arrives:
    /// `input + cache + burndown × max output` (the permit's
    /// [`if_unknown`](crate::budget::Permit::if_unknown)). Not the reservation: a call whose caller
    /// left can have produced its whole output, which Bedrock books at five times its count on
    /// recent Claude models.
    ///
    /// Where the settled amount is booked matters as much as how much it is. Bedrock keeps at most
    /// its own reservation (`input + cache reads + cache writes + max output`, with its exact input
    /// count) at the start of the call and books the rest as debt when the call ends. This crate's
    /// reservation is larger (the input estimate is conservative), so a plain refund would keep more
    /// at the start than Bedrock does, and free it a call's duration before Bedrock's debt expires.
    /// From the max output the plan reserved, the settlement computes Bedrock's reservation from the
    /// reported usage and settles with [`Reservation::settle_against`], which the engine's [`Permit`]
    /// implements by mirroring Bedrock's split
    /// ([`Permit::settle_against`](crate::budget::Permit::settle_against)).
    pub struct SettlingBody<B, R: Reservation = Permit> {
        #[pin]
        inner: B,
        settlement: Settlement<R>,
    }
}

impl<B, R: Reservation> SettlingBody<B, R> {
    /// A body that settles `reservation` at the end of `inner`, observed by `observer`.
    pub(crate) fn observing(
        inner: B,
        reservation: R,
        burndown: u64,
        reserved_output: Option<u64>,
        observer: Observer,
    ) -> Self {
        Self {
            inner,
            settlement: Settlement {
                reservation: Some(reservation),
                burndown,
                reserved_output,
                observer: Some(observer),
                share: None,
                count_running_debt: false,
                counted_debt: 0,
            },
        }
    }

    /// The same body, counting debt in flight on its reservation: `expected` tokens at once
    /// (a JSON body: the server has generated the whole answer, and booked it, before it
    /// sends it, so its debt is owed from now until the body's usage is read), and for an
    /// event stream, the debt it runs up above the reservation as its output arrives (the
    /// server books it when the stream ends, before the client reads that end).
    pub(crate) fn counting_debt(mut self, expected: u64) -> Self {
        let streaming = self
            .settlement
            .observer
            .as_ref()
            .is_some_and(|o| matches!(o, Observer::Events(_)));
        if streaming {
            self.settlement.count_running_debt = true;
        } else if expected > 0
            && let Some(reservation) = self.settlement.reservation.as_mut()
        {
            reservation.expect_debt(expected);
            self.settlement.counted_debt = expected;
        }
        self
    }

    /// The same body, teaching `share` the call's output when its usage arrives.
    pub(crate) fn learning(mut self, share: Option<Arc<OutputShare>>) -> Self {
        self.settlement.share = share;
        self
    }

    /// A body with nothing left to settle.
    pub(crate) fn settled(inner: B) -> Self {
        Self {
            inner,
            settlement: Settlement {
                reservation: None,
                burndown: 0,
                reserved_output: None,
                observer: None,
                share: None,
                count_running_debt: false,
                counted_debt: 0,
            },
        }
    }

    /// Whether the reservation is still waiting for the end of the body.
    pub fn is_pending(&self) -> bool {
        self.settlement.reservation.is_some()
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// The wrapped body, mutably. Reading from it directly bypasses the observation.
    pub fn get_mut(&mut self) -> &mut B {
        &mut self.inner
    }

    /// Settles now, as if the body were dropped, and returns the inner body.
    pub fn into_inner(self) -> B {
        let SettlingBody {
            inner,
            mut settlement,
        } = self;
        settlement.finish(false);
        inner
    }
}

impl<B, R> Body for SettlingBody<B, R>
where
    B: Body<Data = Bytes>,
    R: Reservation,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let polled = ready!(this.inner.as_mut().poll_frame(cx));
        let settlement = this.settlement;
        match &polled {
            Some(Ok(frame)) => {
                if settlement.reservation.is_some() {
                    if let (Some(data), Some(observer)) =
                        (frame.data_ref(), settlement.observer.as_mut())
                    {
                        observer.observe(data);
                        if settlement.count_running_debt {
                            settlement.count_running_debt();
                        }
                    }
                    if this.inner.is_end_stream() {
                        settlement.finish(true);
                    }
                }
            }
            Some(Err(_)) => settlement.finish(false),
            None => settlement.finish(true),
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: fmt::Debug, R: Reservation> fmt::Debug for SettlingBody<B, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SettlingBody")
            .field("inner", &self.inner)
            .field("pending", &self.settlement.reservation.is_some())
            .finish()
    }
}
