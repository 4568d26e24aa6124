//! The [`RateLimit`] service.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::future::ResponseFuture;
use super::layer::requests_feedback;
use crate::BoxError;
use crate::budget::Budget;
use crate::classify::{Classify, OkIsSuccess, QuotaKey, ThrottleCause};

/// What the response path needs, shared by every call through one `Arc`.
#[derive(Debug)]
pub(crate) struct Handlers<C> {
    pub(crate) classify: C,
    pub(crate) feedback: fn(ThrottleCause) -> bool,
}

/// Admits each request at cost 1 on its key's [`Budget`] before calling the inner service.
///
/// Built by [`RateLimitLayer`](super::RateLimitLayer). Requests over the limit wait (FIFO per
/// key) instead of failing; they fail only with an
/// [`AdmissionError`](crate::budget::AdmissionError) the budget was configured to return
/// (cost above limit, wait or queue bounds). Inner errors pass through unchanged, boxed.
pub struct RateLimit<S, K, KF, C = OkIsSuccess> {
    inner: S,
    budget: Budget<K>,
    key: KF,
    handlers: Arc<Handlers<C>>,
}

impl<S, K, KF> RateLimit<S, K, KF> {
    /// Wraps `inner`: each request costs 1 on the key `key` gives it. No throttle feedback (use
    /// the layer's [`classify`](super::RateLimitLayer::classify) for that).
    pub fn new(inner: S, budget: Budget<K>, key: KF) -> Self {
        Self::from_parts(
            inner,
            budget,
            key,
            Arc::new(Handlers {
                classify: OkIsSuccess,
                feedback: requests_feedback,
            }),
        )
    }
}

impl<S, K, KF, C> RateLimit<S, K, KF, C> {
    pub(crate) fn from_parts(
        inner: S,
        budget: Budget<K>,
        key: KF,
        handlers: Arc<Handlers<C>>,
    ) -> Self {
        RateLimit {
            inner,
            budget,
            key,
            handlers,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The shared budget.
    pub fn budget(&self) -> &Budget<K> {
        &self.budget
    }
}

impl<S: Clone, K, KF: Clone, C> Clone for RateLimit<S, K, KF, C> {
    fn clone(&self) -> Self {
        RateLimit {
            inner: self.inner.clone(),
            budget: self.budget.clone(),
            key: self.key.clone(),
            handlers: Arc::clone(&self.handlers),
        }
    }
}

impl<S: fmt::Debug, K: Eq + Hash, KF, C> fmt::Debug for RateLimit<S, K, KF, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl<S, Req, K, KF, C> Service<Req> for RateLimit<S, K, KF, C>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    K: Clone + Eq + Hash + Send + Sync + 'static,
    KF: QuotaKey<Req, Key = K>,
    C: Classify<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, K, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let key = self.key.quota_key(&request);
        let acquire = self.budget.acquire(key, 1);
        // Take the service that was driven to readiness, leave a clone in its place.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::new(acquire, inner, request, Arc::clone(&self.handlers))
    }
}
