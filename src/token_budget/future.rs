//! The response future of [`TokenBudget`](super::TokenBudget).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower_service::Service;

use super::service::Handlers;
use crate::BoxError;
use crate::budget::{Acquire, Permit};
use crate::classify::{Classify, Settle};

pin_project! {
    /// The response future of [`TokenBudget`](super::TokenBudget): waits for admission, calls
    /// the inner service, reports throttles back to the budget, and settles the reservation.
    pub struct ResponseFuture<S, Req, K, C, ST>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, S::Future, Req, K>,
        handlers: Arc<Handlers<C, ST>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, F, Req, K> {
        Admitting {
            acquire: Acquire<K>,
            inner: Option<S>,
            request: Option<Req>,
        },
        Calling {
            #[pin]
            future: F,
            // Dropped with the future if the call is cancelled: the reservation stands.
            permit: Option<Permit>,
        },
        Done,
    }
}

impl<S, Req, K, C, ST> ResponseFuture<S, Req, K, C, ST>
where
    S: Service<Req>,
{
    pub(crate) fn new(
        acquire: Acquire<K>,
        inner: S,
        request: Req,
        handlers: Arc<Handlers<C, ST>>,
    ) -> Self {
        ResponseFuture {
            state: State::Admitting {
                acquire,
                inner: Some(inner),
                request: Some(request),
            },
            handlers,
        }
    }
}

impl<S, Req, K, C, ST> Future for ResponseFuture<S, Req, K, C, ST>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: Clone + Eq + std::hash::Hash + Send + Sync + 'static,
    C: Classify<S::Response, S::Error>,
    ST: Settle<S::Response>,
{
    type Output = Result<ST::Output, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Admitting {
                    acquire,
                    inner,
                    request,
                } => {
                    let permit = match ready!(Pin::new(acquire).poll(cx)) {
                        Ok(permit) => permit,
                        Err(error) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(error.into()));
                        }
                    };
                    let (Some(mut inner), Some(request)) = (inner.take(), request.take()) else {
                        unreachable!("the service and request are taken once");
                    };
                    let future = inner.call(request);
                    this.state.set(State::Calling {
                        future,
                        permit: Some(permit),
                    });
                }
                StateProj::Calling { future, permit } => {
                    let result = ready!(future.poll(cx));
                    let Some(permit) = permit.take() else {
                        unreachable!("the permit is taken once");
                    };
                    this.state.set(State::Done);
                    let handlers = &**this.handlers;
                    let classification = handlers.classify.classify(result.as_ref());
                    if let Some(cause) = classification.throttle_cause()
                        && (handlers.feedback)(cause)
                    {
                        tracing::debug!(?cause, "token budget: throttle feedback");
                        permit.throttled();
                    }
                    return Poll::Ready(match result {
                        Ok(response) => Ok(handlers.settle.settle(response, permit)),
                        // The usage of a failed call is unknown: the reservation stands.
                        Err(error) => Err(error.into()),
                    });
                }
                StateProj::Done => panic!("`ResponseFuture` polled after completion"),
            }
        }
    }
}

impl<S, Req, K, C, ST> fmt::Debug for ResponseFuture<S, Req, K, C, ST>
where
    S: Service<Req>,
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
