//! The future of [`ThrottleRetry`](super::ThrottleRetry).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::policy::Policy;
use crate::classify::{Classify, CloneRequest};

pin_project! {
    /// The future returned by [`ThrottleRetry`](super::ThrottleRetry): runs the attempts of one
    /// call and resolves to the last attempt's result, unchanged.
    ///
    /// It allocates nothing: the backoff timer lives inline in the future.
    pub struct ResponseFuture<S, C, R, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S::Future>,
        // The service clone that makes every attempt of this call.
        service: S,
        policy: Arc<Policy<C, R>>,
        // A copy of the request for the next attempt, if one is possible.
        spare: Option<Req>,
        // Attempts started so far (1 during the first).
        attempt: u32,
        first_start: Instant,
        attempt_start: Instant,
        // Time waited for admission: by every attempt so far, and by the current one.
        waited: Duration,
        attempt_waited: Duration,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // An attempt is in flight.
        Calling {
            #[pin]
            future: F,
        },
        // Backing off before the next attempt; once the sleep is over, waiting for the service
        // to be ready.
        Waiting {
            #[pin]
            sleep: Sleep,
        },
    }
}

impl<S, C, R, Req> ResponseFuture<S, C, R, Req>
where
    S: Service<Req>,
{
    pub(crate) fn new(
        future: S::Future,
        service: S,
        policy: Arc<Policy<C, R>>,
        spare: Option<Req>,
        start: Instant,
    ) -> Self {
        Self {
            state: State::Calling { future },
            service,
            policy,
            spare,
            attempt: 1,
            first_start: start,
            attempt_start: start,
            waited: Duration::ZERO,
            attempt_waited: Duration::ZERO,
        }
    }
}

impl<S, C, R, Req> Future for ResponseFuture<S, C, R, Req>
where
    S: Service<Req>,
    C: Classify<S::Response, S::Error>,
    R: CloneRequest<Req>,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    let (polled, waited) = super::waited::metered(|| future.poll(cx));
                    *this.waited += waited;
                    *this.attempt_waited += waited;
                    let result = ready!(polled);
                    let config = &this.policy.config;
                    let classification = this.policy.classifier.classify(result.as_ref());
                    // Waiting for admission is not retrying: the deadline sees the calls and
                    // the backoffs only.
                    let shifted = |at: Instant, by: Duration| at.checked_add(by).unwrap_or(at);
                    let delay = config.retry_delay(
                        classification,
                        *this.attempt,
                        this.spare.is_some(),
                        shifted(*this.first_start, *this.waited),
                        shifted(*this.attempt_start, *this.attempt_waited),
                    );
                    match delay {
                        // The result goes back as it came.
                        None => return Poll::Ready(result),
                        Some(delay) => {
                            // Dropped now, not after the backoff: a response may hold a
                            // connection or a token reservation.
                            drop(result);
                            this.state.set(State::Waiting {
                                sleep: tokio::time::sleep(delay),
                            });
                        }
                    }
                }
                StateProj::Waiting { sleep } => {
                    ready!(sleep.poll(cx));
                    // An elapsed `Sleep` stays ready, so a pending poll_ready comes back here.
                    ready!(this.service.poll_ready(cx))?;
                    let request = this
                        .spare
                        .take()
                        .expect("a retry is only scheduled when a spare request exists");
                    *this.attempt += 1;
                    // Copy the request again only if yet another attempt is possible.
                    if *this.attempt < this.policy.config.most_attempts() {
                        *this.spare = this.policy.cloner.clone_request(&request);
                    }
                    *this.attempt_start = Instant::now();
                    *this.attempt_waited = Duration::ZERO;
                    tracing::trace!(attempt = *this.attempt, "starting a retry");
                    this.state.set(State::Calling {
                        future: this.service.call(request),
                    });
                }
            }
        }
    }
}

impl<S, C, R, Req> fmt::Debug for ResponseFuture<S, C, R, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Calling { .. } => "Calling",
            State::Waiting { .. } => "Waiting",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}
