//! The [`TokenBudget`] service.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::future::ResponseFuture;
use super::layer::tokens_feedback;
use crate::BoxError;
use crate::budget::Budget;
use crate::classify::{Classify, EstimateTokens, OkIsSuccess, QuotaKey, Settle, ThrottleCause};

/// What the response path needs, shared by every call through one `Arc`.
#[derive(Debug)]
pub(crate) struct Handlers<C, ST> {
    pub(crate) classify: C,
    pub(crate) settle: ST,
    pub(crate) feedback: fn(ThrottleCause) -> bool,
}

/// Reserves each request's token estimate on its key's [`Budget`] before calling the inner
/// service, and settles the reservation from the response.
///
/// Built by [`TokenBudgetLayer`](super::TokenBudgetLayer). On success the response is
/// classified (feedback), then handed with its permit to the [`Settle`] implementation, whose
/// output is the response the caller gets. On an inner error, or if the call is dropped
/// mid-flight, the permit drops unsettled and the reservation stands. Inner errors pass through
/// unchanged, boxed; admission failures are [`AdmissionError`](crate::budget::AdmissionError)s.
pub struct TokenBudget<S, K, KF, E, ST, C = OkIsSuccess> {
    inner: S,
    budget: Budget<K>,
    key: KF,
    estimate: E,
    handlers: Arc<Handlers<C, ST>>,
}

impl<S, K, KF, E, ST> TokenBudget<S, K, KF, E, ST> {
    /// Wraps `inner`. No throttle feedback (use the layer's
    /// [`classify`](super::TokenBudgetLayer::classify) for that).
    pub fn new(inner: S, budget: Budget<K>, key: KF, estimate: E, settle: ST) -> Self {
        Self::from_parts(
            inner,
            budget,
            key,
            estimate,
            Arc::new(Handlers {
                classify: OkIsSuccess,
                settle,
                feedback: tokens_feedback,
            }),
        )
    }
}

impl<S, K, KF, E, ST, C> TokenBudget<S, K, KF, E, ST, C> {
    pub(crate) fn from_parts(
        inner: S,
        budget: Budget<K>,
        key: KF,
        estimate: E,
        handlers: Arc<Handlers<C, ST>>,
    ) -> Self {
        TokenBudget {
            inner,
            budget,
            key,
            estimate,
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

impl<S: Clone, K, KF: Clone, E: Clone, ST, C> Clone for TokenBudget<S, K, KF, E, ST, C> {
    fn clone(&self) -> Self {
        TokenBudget {
            inner: self.inner.clone(),
            budget: self.budget.clone(),
            key: self.key.clone(),
            estimate: self.estimate.clone(),
            handlers: Arc::clone(&self.handlers),
        }
    }
}

impl<S: fmt::Debug, K: Eq + Hash, KF, E, ST, C> fmt::Debug for TokenBudget<S, K, KF, E, ST, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenBudget")
            .field("inner", &self.inner)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl<S, Req, K, KF, E, ST, C> Service<Req> for TokenBudget<S, K, KF, E, ST, C>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    K: Clone + Eq + Hash + Send + Sync + 'static,
    KF: QuotaKey<Req, Key = K>,
    E: EstimateTokens<Req>,
    ST: Settle<S::Response>,
    C: Classify<S::Response, S::Error>,
{
    type Response = ST::Output;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, K, C, ST>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Req) -> Self::Future {
        let key = self.key.quota_key(&request);
        let cost = self.estimate.estimate_tokens_mut(&mut request);
        let acquire = self.budget.acquire(key, cost);
        // Take the service that was driven to readiness, leave a clone in its place.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::new(acquire, inner, request, Arc::clone(&self.handlers))
    }
}
