//! The response future of [`Admission`](super::Admission).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::error::{LeftQueue, LostPlace};
use super::observe::{Event, Observe};
use super::park::{Admission, KEEP_FOR, NotAdmitted, ParkingLot};
use super::plan::{ArrivalId, Plan, Protocol};
use crate::BoxError;
use crate::budget::{AdmissionError, Permit, QuotaStore};

/// How an attempt waits for its admission: its own waiter, or a place kept for its arrival by
/// an earlier attempt of the same request.
pub(crate) enum Waiter<A> {
    Fresh(A),
    Kept(oneshot::Receiver<Admission>),
}

impl<A> Future for Waiter<A>
where
    A: Future<Output = Result<Permit, AdmissionError>> + Unpin,
{
    type Output = Result<Permit, NotAdmitted>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Waiter::Fresh(acquire) => Pin::new(acquire)
                .poll(cx)
                .map(|result| result.map_err(NotAdmitted::Refused)),
            Waiter::Kept(rx) => Pin::new(rx).poll(cx).map(|result| match result {
                Ok(admitted) => admitted,
                // The kept waiter's task ended without a result: its place was given up.
                Err(_) => Err(NotAdmitted::LostPlace),
            }),
        }
    }
}

impl<A> Unpin for Waiter<A> {}

/// What an attempt that waits must do when its time to leave comes.
pub(crate) struct Leaving {
    pub(crate) by: Instant,
    pub(crate) arrival: Option<ArrivalId>,
    pub(crate) lot: Arc<ParkingLot>,
    pub(crate) arrived: Instant,
    /// Allocated only once the attempt has to wait.
    pub(crate) sleep: Option<Pin<Box<Sleep>>>,
}

/// What an observed attempt carries: its key and its arrival, for the events.
pub(crate) struct Observed<K, O> {
    pub(crate) key: K,
    pub(crate) observer: Arc<O>,
    pub(crate) arrived: Instant,
}

impl<K, O: Observe<K>> Observed<K, O> {
    fn tell(&self, event: Event<'_>) {
        self.observer.observe(&self.key, event);
    }

    fn waited(&self) -> std::time::Duration {
        Instant::now().saturating_duration_since(self.arrived)
    }
}

pin_project! {
    /// The response future of [`Admission`](super::Admission): waits for admission on every
    /// dimension of the key, calls the inner service, classifies the result once (feeding a
    /// throttle back to the store by cause), and settles from the plan's memo.
    pub struct ResponseFuture<S, Req, St, P, O = ()>
    where
        S: Service<Req>,
        St: QuotaStore<P::Key>,
        P: Protocol<Req, S::Response, S::Error>,
    {
        #[pin]
        state: State<S, S::Future, Req, St::Acquire, P::Memo>,
        protocol: Arc<P>,
        observed: Option<Observed<P::Key, O>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, F, Req, A, M> {
        Admitting {
            waiter: Waiter<A>,
            inner: Option<S>,
            request: Option<Req>,
            memo: Option<M>,
            if_unknown: u64,
            expected_debt: u64,
            leaving: Option<Box<Leaving>>,
            // From the first poll that had to wait: told to a retry layer around (waiting is
            // not retrying).
            waiting_since: Option<Instant>,
        },
        Calling {
            #[pin]
            future: F,
            // Dropped with the future if the call is cancelled: it settles its `if_unknown`.
            permit: Option<Permit>,
            memo: Option<M>,
        },
        Done,
    }
}

impl<S, Req, St, P, O> ResponseFuture<S, Req, St, P, O>
where
    S: Service<Req>,
    St: QuotaStore<P::Key>,
    P: Protocol<Req, S::Response, S::Error>,
{
    pub(crate) fn new(
        waiter: Waiter<St::Acquire>,
        inner: S,
        request: Req,
        plan: Plan<(), P::Memo>,
        leaving: Option<Box<Leaving>>,
        observed: Option<Observed<P::Key, O>>,
        protocol: Arc<P>,
    ) -> Self {
        ResponseFuture {
            state: State::Admitting {
                waiter,
                inner: Some(inner),
                request: Some(request),
                memo: Some(plan.memo),
                if_unknown: plan.if_unknown,
                expected_debt: plan.expected_debt,
                leaving,
                waiting_since: None,
            },
            protocol,
            observed,
        }
    }
}

/// How an attempt ended without a response: the admission layer's own failures, apart from
/// the inner service's error, so that each public future can present them its way.
pub(crate) enum Failure<E> {
    Refused(AdmissionError),
    Left(LeftQueue),
    Lost(LostPlace),
    Inner(E),
}

impl<E: Into<BoxError>> Failure<E> {
    fn into_box(self) -> BoxError {
        match self {
            Failure::Refused(error) => error.into(),
            Failure::Left(error) => error.into(),
            Failure::Lost(error) => error.into(),
            Failure::Inner(error) => error.into(),
        }
    }
}

impl<S, Req, St, P, O> Future for ResponseFuture<S, Req, St, P, O>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    St: QuotaStore<P::Key>,
    P: Protocol<Req, S::Response, S::Error>,
    O: Observe<P::Key>,
{
    type Output = Result<P::Output, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.poll_attempt(cx).map_err(Failure::into_box)
    }
}

impl<S, Req, St, P, O> ResponseFuture<S, Req, St, P, O>
where
    S: Service<Req>,
    St: QuotaStore<P::Key>,
    P: Protocol<Req, S::Response, S::Error>,
    O: Observe<P::Key>,
{
    /// Admission, the call, classification and settlement, with the failures kept apart.
    pub(crate) fn poll_attempt(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<P::Output, Failure<S::Error>>> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Admitting {
                    waiter,
                    inner,
                    request,
                    memo,
                    if_unknown,
                    expected_debt,
                    leaving,
                    waiting_since,
                } => {
                    let admitted = match Pin::new(&mut *waiter).poll(cx) {
                        Poll::Ready(admitted) => {
                            if let Some(since) = waiting_since.take() {
                                crate::retry::admission_waited(
                                    Instant::now().saturating_duration_since(since),
                                );
                            }
                            admitted
                        }
                        Poll::Pending => {
                            waiting_since.get_or_insert_with(Instant::now);
                            let Some(leave) = leaving.as_deref_mut() else {
                                return Poll::Pending;
                            };
                            let sleep = leave.sleep.get_or_insert_with(|| {
                                Box::pin(tokio::time::sleep_until(leave.by))
                            });
                            ready!(sleep.as_mut().poll(cx));
                            // Time to leave: keep the place for the re-sent attempt.
                            let waited = Instant::now().saturating_duration_since(leave.arrived);
                            if let Some(since) = waiting_since.take() {
                                crate::retry::admission_waited(
                                    Instant::now().saturating_duration_since(since),
                                );
                            }
                            let kept = leave.arrival.is_some();
                            let Some(leave) = leaving.take() else {
                                unreachable!("leaving was just borrowed")
                            };
                            let waiter =
                                std::mem::replace(waiter, Waiter::Kept(oneshot::channel().1));
                            if let Some(arrival) = leave.arrival {
                                leave.lot.keep(arrival, waiter);
                            }
                            tracing::debug!(
                                ?waited,
                                kept,
                                "attempt leaves the queue before its signature expires"
                            );
                            if let Some(observed) = this.observed.as_ref() {
                                observed.tell(Event::LeftQueue { waited });
                            }
                            this.state.set(State::Done);
                            return Poll::Ready(Err(Failure::Left(LeftQueue::new(waited, kept))));
                        }
                    };
                    let permit = match admitted {
                        Ok(permit) => permit
                            .with_if_unknown(*if_unknown)
                            .expect_debt(*expected_debt),
                        Err(NotAdmitted::LostPlace) => {
                            let waited = this.observed.as_ref().map(Observed::waited);
                            tracing::debug!(
                                ?waited,
                                "the place kept for this request was given up"
                            );
                            this.state.set(State::Done);
                            return Poll::Ready(Err(Failure::Lost(LostPlace::new(KEEP_FOR))));
                        }
                        Err(NotAdmitted::Refused(error)) => {
                            if let Some(observed) = this.observed.as_ref() {
                                let waited = observed.waited();
                                observed.tell(Event::Refused {
                                    error: &error,
                                    waited,
                                });
                            }
                            this.state.set(State::Done);
                            return Poll::Ready(Err(Failure::Refused(error)));
                        }
                    };
                    let permit = match this.observed.as_ref() {
                        Some(observed) => {
                            let tokens = permit.reserved();
                            let waited = observed.waited();
                            let waited_on = permit.waited_on();
                            observed.tell(Event::Admitted {
                                tokens,
                                waited,
                                waited_on,
                            });
                            let (key, observer) =
                                (observed.key.clone(), Arc::clone(&observed.observer));
                            permit.on_settle(move |reserved, settled| {
                                observer.observe(&key, Event::Settled { reserved, settled });
                            })
                        }
                        None => permit,
                    };
                    let (Some(mut inner), Some(request)) = (inner.take(), request.take()) else {
                        unreachable!("the service and request are taken once");
                    };
                    let memo = memo.take();
                    let future = inner.call(request);
                    this.state.set(State::Calling {
                        future,
                        permit: Some(permit),
                        memo,
                    });
                }
                StateProj::Calling {
                    future,
                    permit,
                    memo,
                } => {
                    let result = ready!(future.poll(cx));
                    let (Some(permit), Some(memo)) = (permit.take(), memo.take()) else {
                        unreachable!("the permit and memo are taken once");
                    };
                    this.state.set(State::Done);
                    let protocol = &**this.protocol;
                    let classification = protocol.classify(result.as_ref());
                    if let Some(observed) = this.observed.as_ref() {
                        observed.tell(Event::Completed { classification });
                    }
                    if let Some(cause) = classification.throttle_cause() {
                        tracing::debug!(?cause, "admission: throttle feedback");
                        permit.throttled(cause);
                    }
                    return Poll::Ready(match result {
                        Ok(response) => Ok(protocol.settle(response, permit, memo)),
                        // The usage of a failed call is unknown: the permit settles its
                        // `if_unknown` as it drops.
                        Err(error) => Err(Failure::Inner(error)),
                    });
                }
                StateProj::Done => panic!("`ResponseFuture` polled after completion"),
            }
        }
    }
}

pin_project! {
    /// The response future of an [`Admission`](super::Admission) that answers refusals with an
    /// HTTP response ([`respond_to_refusals`](super::AdmissionLayer::respond_to_refusals)):
    /// 429 with `Retry-After` for a wait, 413 for a request larger than the whole quota, 503
    /// for an attempt that had to leave the queue. The inner service's errors pass unchanged.
    pub struct RespondFuture<S, Req, St, P, O = ()>
    where
        S: Service<Req>,
        St: QuotaStore<P::Key>,
        P: Protocol<Req, S::Response, S::Error>,
    {
        #[pin]
        attempt: ResponseFuture<S, Req, St, P, O>,
    }
}

impl<S, Req, St, P, O> RespondFuture<S, Req, St, P, O>
where
    S: Service<Req>,
    St: QuotaStore<P::Key>,
    P: Protocol<Req, S::Response, S::Error>,
{
    pub(crate) fn new(attempt: ResponseFuture<S, Req, St, P, O>) -> Self {
        RespondFuture { attempt }
    }
}

impl<S, Req, St, P, O, RB> Future for RespondFuture<S, Req, St, P, O>
where
    S: Service<Req>,
    St: QuotaStore<P::Key>,
    P: Protocol<Req, S::Response, S::Error, Output = http::Response<RB>>,
    O: Observe<P::Key>,
    RB: From<String>,
{
    type Output = Result<http::Response<RB>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(match ready!(self.project().attempt.poll_attempt(cx)) {
            Ok(response) => Ok(response),
            Err(Failure::Refused(error)) => Ok(super::respond::refused(&error)),
            Err(Failure::Left(error)) => Ok(super::respond::unavailable(&error)),
            Err(Failure::Lost(error)) => Ok(super::respond::unavailable(&error)),
            Err(Failure::Inner(error)) => Err(error),
        })
    }
}

impl<S, Req, St, P, O> fmt::Debug for RespondFuture<S, Req, St, P, O>
where
    S: Service<Req>,
    St: QuotaStore<P::Key>,
    P: Protocol<Req, S::Response, S::Error>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RespondFuture")
            .field("attempt", &self.attempt)
            .finish()
    }
}

impl<S, Req, St, P, O> fmt::Debug for ResponseFuture<S, Req, St, P, O>
where
    S: Service<Req>,
    St: QuotaStore<P::Key>,
    P: Protocol<Req, S::Response, S::Error>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Admitting { .. } => "admitting",
            State::Calling { .. } => "calling",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A place whose keeping task ended without a result (its runtime shut down, its task was
    /// aborted) is a lost place, with its own error, not a full queue.
    #[tokio::test]
    async fn a_place_whose_keeper_went_away_is_lost() {
        let (tx, rx) = oneshot::channel();
        drop(tx);
        let waiter: Waiter<std::future::Ready<Result<Permit, AdmissionError>>> = Waiter::Kept(rx);
        assert!(matches!(waiter.await, Err(NotAdmitted::LostPlace)));
        let error: BoxError = LostPlace::new(KEEP_FOR).into();
        assert!(!error.is::<AdmissionError>());
        let message = error.to_string();
        assert!(message.contains("send it again"), "{message}");
        assert!(!message.contains("deeper"), "{message}");
    }
}
