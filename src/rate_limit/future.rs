//! The response future of [`RateLimit`](super::RateLimit).

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
use crate::classify::Classify;

pin_project! {
    /// The response future of [`RateLimit`](super::RateLimit): waits for admission, then calls
    /// the inner service and reports throttles back to the budget.
    pub struct ResponseFuture<S, Req, K, C>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, S::Future, Req, K>,
        handlers: Arc<Handlers<C>>,
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
            permit: Option<Permit>,
        },
        Done,
    }
}

impl<S, Req, K, C> ResponseFuture<S, Req, K, C>
where
    S: Service<Req>,
{
    pub(crate) fn new(
        acquire: Acquire<K>,
        inner: S,
        request: Req,
        handlers: Arc<Handlers<C>>,
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

impl<S, Req, K, C> Future for ResponseFuture<S, Req, K, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: Clone + Eq + std::hash::Hash + Send + Sync + 'static,
    C: Classify<S::Response, S::Error>,
{
    type Output = Result<S::Response, BoxError>;

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
                    let permit = permit.take();
                    this.state.set(State::Done);
                    let handlers = &**this.handlers;
                    let classification = handlers.classify.classify(result.as_ref());
                    if let (Some(cause), Some(permit)) = (classification.throttle_cause(), &permit)
                        && (handlers.feedback)(cause)
                    {
                        tracing::debug!(?cause, "rate limit: throttle feedback");
                        permit.throttled();
                    }
                    // Cost 1 was charged at admission; nothing to settle.
                    drop(permit);
                    return Poll::Ready(result.map_err(Into::into));
                }
                StateProj::Done => panic!("`ResponseFuture` polled after completion"),
            }
        }
    }
}

impl<S, Req, K, C> fmt::Debug for ResponseFuture<S, Req, K, C>
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
