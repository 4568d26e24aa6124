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

use super::error::LeftQueue;
use super::observe::{Event, Observe};
use super::park::ParkingLot;
use super::plan::{ArrivalId, Plan, Protocol};
use crate::BoxError;
use crate::budget::{AdmissionError, Permit, QuotaStore};

/// How an attempt waits for its admission: its own waiter, or a place kept for its arrival by
/// an earlier attempt of the same request.
pub(crate) enum Waiter<A> {
    Fresh(A),
    Kept(oneshot::Receiver<Result<Permit, AdmissionError>>),
}

impl<A> Future for Waiter<A>
where
    A: Future<Output = Result<Permit, AdmissionError>> + Unpin,
{
    type Output = Result<Permit, AdmissionError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Waiter::Fresh(acquire) => Pin::new(acquire).poll(cx),
            Waiter::Kept(rx) => Pin::new(rx).poll(cx).map(|result| {
                // The kept waiter's task ended without a result: its place was given up.
                result.unwrap_or(Err(AdmissionError::QueueFull {
                    depth: 0,
                    would_wait: None,
                }))
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
                leaving,
                waiting_since: None,
            },
            protocol,
            observed,
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
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Admitting {
                    waiter,
                    inner,
                    request,
                    memo,
                    if_unknown,
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
                            this.state.set(State::Done);
                            return Poll::Ready(Err(LeftQueue::new(waited, kept).into()));
                        }
                    };
                    let permit = match admitted {
                        Ok(permit) => permit.with_if_unknown(*if_unknown),
                        Err(error) => {
                            if let Some(observed) = this.observed.as_ref() {
                                let waited = observed.waited();
                                observed.tell(Event::Refused {
                                    error: &error,
                                    waited,
                                });
                            }
                            this.state.set(State::Done);
                            return Poll::Ready(Err(error.into()));
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
                        Err(error) => Err(error.into()),
                    });
                }
                StateProj::Done => panic!("`ResponseFuture` polled after completion"),
            }
        }
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
