use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower_service::Service;

use super::ThrottleRetryLayer;
use super::future::ResponseFuture;
use super::policy::{Config, Policy};
use crate::classify::{Classify, CloneByClone, CloneRequest};
use crate::macros::define_inner_service_accessors;

/// Retries throttled and transient results of the inner service; see [`ThrottleRetryLayer`] for
/// the settings and the [module documentation](super) for the guarantees.
///
/// The response and error types are the inner service's: when the layer gives up, the caller
/// gets the last attempt's response or error as it came.
///
/// Clones share the settings and the retry budget; each call takes one clone of the inner
/// service, which serves all attempts of that call.
pub struct ThrottleRetry<S, C, R = CloneByClone> {
    inner: S,
    policy: Arc<Policy<C, R>>,
}

impl<S, C> ThrottleRetry<S, C> {
    /// Wraps `inner` with default settings, classifying results with `classifier` and cloning
    /// requests with `Clone`. Use [`ThrottleRetryLayer`] to change the settings.
    pub fn new(inner: S, classifier: C) -> Self {
        Self::from_policy(
            inner,
            Arc::new(Policy {
                classifier,
                cloner: CloneByClone,
                config: Config::default(),
            }),
        )
    }

    /// A [`ThrottleRetryLayer`] with default settings; the same as [`ThrottleRetryLayer::new`].
    pub fn layer(classifier: C) -> ThrottleRetryLayer<C> {
        ThrottleRetryLayer::new(classifier)
    }
}

impl<S, C, R> ThrottleRetry<S, C, R> {
    pub(crate) fn from_policy(inner: S, policy: Arc<Policy<C, R>>) -> Self {
        Self { inner, policy }
    }

    define_inner_service_accessors!();
}

impl<S, C, R, Req> Service<Req> for ThrottleRetry<S, C, R>
where
    S: Service<Req> + Clone,
    C: Classify<S::Response, S::Error>,
    R: CloneRequest<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, C, R, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        // The ready service makes this call; the clone left behind waits for its own poll_ready.
        let clone = self.inner.clone();
        let mut service = std::mem::replace(&mut self.inner, clone);

        let config = &self.policy.config;
        config.budget.deposit();
        let spare = if config.most_attempts() > 1 {
            self.policy.cloner.clone_request(&request)
        } else {
            None
        };
        let start = Instant::now();
        let future = service.call(request);
        ResponseFuture::new(future, service, Arc::clone(&self.policy), spare, start)
    }
}

impl<S: Clone, C, R> Clone for ThrottleRetry<S, C, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            policy: Arc::clone(&self.policy),
        }
    }
}

impl<S: fmt::Debug, C, R> fmt::Debug for ThrottleRetry<S, C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThrottleRetry")
            .field("inner", &self.inner)
            .field("config", &self.policy.config)
            .finish_non_exhaustive()
    }
}
