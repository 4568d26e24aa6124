//! The [`Admission`] service.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower_service::Service;

use super::future::{Leaving, Observed, RespondFuture, ResponseFuture, Waiter};
use super::observe::Observe;
use super::park::ParkingLot;
use super::plan::{Plan, Protocol};
use super::respond::{AsError, AsResponse};
use crate::BoxError;
use crate::budget::{QuotaStore, Scopes};
use crate::macros::define_inner_service_accessors;

/// Admits each attempt on its key's quota before calling the inner service, and settles it
/// from the response. Built by [`AdmissionLayer`](super::AdmissionLayer) (or
/// [`RateLimitLayer`](super::RateLimitLayer), [`TokenBudgetLayer`](super::TokenBudgetLayer));
/// see the [module documentation](super).
///
/// Inner errors pass through unchanged, boxed; admission failures are
/// [`AdmissionError`](crate::budget::AdmissionError)s, [`LeftQueue`](super::LeftQueue) and
/// [`LostPlace`](super::LostPlace). With `R` = [`AsResponse`] (an HTTP service, see
/// [`respond_to_refusals`](super::AdmissionLayer::respond_to_refusals)), refusals are
/// responses instead and the inner error type is kept.
pub struct Admission<S, St, P, O = (), R = AsError> {
    inner: S,
    store: St,
    protocol: Arc<P>,
    observer: Arc<O>,
    lot: Arc<ParkingLot>,
    refusals: PhantomData<fn() -> R>,
}

impl<S, St, P, O, R> Admission<S, St, P, O, R> {
    pub(crate) fn from_parts(
        inner: S,
        store: St,
        protocol: Arc<P>,
        observer: Arc<O>,
        lot: Arc<ParkingLot>,
    ) -> Self {
        Admission {
            inner,
            store,
            protocol,
            observer,
            lot,
            refusals: PhantomData,
        }
    }

    define_inner_service_accessors!();

    /// The shared store.
    pub fn store(&self) -> &St {
        &self.store
    }
}

impl<S: Clone, St: Clone, P, O, R> Clone for Admission<S, St, P, O, R> {
    fn clone(&self) -> Self {
        Admission {
            inner: self.inner.clone(),
            store: self.store.clone(),
            protocol: Arc::clone(&self.protocol),
            observer: Arc::clone(&self.observer),
            lot: Arc::clone(&self.lot),
            refusals: PhantomData,
        }
    }
}

impl<S: fmt::Debug, St: fmt::Debug, P, O, R> fmt::Debug for Admission<S, St, P, O, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("inner", &self.inner)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl<S, Req, St, P, O> Service<Req> for Admission<S, St, P, O>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    St: QuotaStore<P::Key>,
    P: Protocol<Req, S::Response, S::Error>,
    O: Observe<P::Key>,
{
    type Response = P::Output;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, St, P, O>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        self.start(request)
    }
}

/// An HTTP service whose refusals are responses (see [`AsResponse`]): its error is the inner
/// service's (`Infallible` for an axum route, so no `HandleErrorLayer` is needed).
impl<S, B, RB, St, P, O> Service<http::Request<B>> for Admission<S, St, P, O, AsResponse>
where
    S: Service<http::Request<B>> + Clone,
    St: QuotaStore<P::Key>,
    P: Protocol<http::Request<B>, S::Response, S::Error, Output = http::Response<RB>>,
    O: Observe<P::Key>,
    RB: From<String>,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = RespondFuture<S, http::Request<B>, St, P, O>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        RespondFuture::new(self.start(request))
    }
}

impl<S, St, P, O, R> Admission<S, St, P, O, R> {
    /// Plans the attempt and starts waiting for its admission.
    fn start<Req>(&mut self, request: Req) -> ResponseFuture<S, Req, St, P, O>
    where
        S: Service<Req> + Clone,
        St: QuotaStore<P::Key>,
        P: Protocol<Req, S::Response, S::Error>,
        O: Observe<P::Key>,
    {
        let Plan {
            key,
            tokens,
            if_unknown,
            expected_debt,
            memo,
            leave_by,
            arrival,
            class,
            also,
        } = self.protocol.plan(&request);
        let observed = O::ENABLED.then(|| Observed {
            key: key.clone(),
            observer: Arc::clone(&self.observer),
            arrived: Instant::now(),
        });
        // An earlier attempt of the same request may have kept its place in line.
        let kept = arrival.as_ref().and_then(|arrival| self.lot.take(arrival));
        let waiter = match kept {
            Some(rx) => Waiter::Kept(rx),
            // An empty class is the FIFO path, as fast as before fairness existed.
            None if !also.is_empty() => {
                let scopes = also
                    .into_iter()
                    .fold(Scopes::new(key), |scopes, scope| scopes.with(scope));
                Waiter::Fresh(self.store.acquire_scopes(scopes, tokens, class))
            }
            None if class.is_empty() => Waiter::Fresh(self.store.acquire(key, tokens)),
            None => Waiter::Fresh(self.store.acquire_as(key, tokens, class)),
        };
        let leaving = leave_by.map(|by| {
            Box::new(Leaving {
                by,
                arrival,
                lot: Arc::clone(&self.lot),
                arrived: Instant::now(),
                sleep: None,
            })
        });
        let plan = Plan::new((), tokens)
            .with_if_unknown(if_unknown)
            .with_expected_debt(expected_debt)
            .with_memo(memo);
        // Take the service that was driven to readiness, leave a clone in its place.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::new(
            waiter,
            inner,
            request,
            plan,
            leaving,
            observed,
            Arc::clone(&self.protocol),
        )
    }
}
