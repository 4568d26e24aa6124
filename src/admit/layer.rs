//! [`AdmissionLayer`] and the two layers built on it, [`RateLimitLayer`] and
//! [`TokenBudgetLayer`].

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use tower_layer::Layer;

use super::park::ParkingLot;
use super::plan::{Closures, KeepReservation, NoClass, NoTokens};
use super::respond::{AsError, AsResponse};
use super::service::Admission;
use crate::classify::OkIsSuccess;

/// Applies [`Admission`] to a service: each attempt is planned once by the protocol `P`,
/// admitted on every dimension of its key's quota in the store `St` (the in-process
/// [`Budget`](crate::budget::Budget), a shared store, anything that implements
/// [`QuotaStore`](crate::budget::QuotaStore)), and settled from its plan. `O` observes the
/// events; `R` says whether refusals are errors ([`AsError`], the default) or HTTP responses
/// ([`AsResponse`]).
///
/// Clones of the layer, and of the services it builds, share the store, the observer and the
/// places kept for re-sent attempts.
pub struct AdmissionLayer<St, P, O = (), R = AsError> {
    store: St,
    protocol: Arc<P>,
    observer: Arc<O>,
    lot: Arc<ParkingLot>,
    refusals: PhantomData<fn() -> R>,
}

impl<St, P> AdmissionLayer<St, P> {
    /// Admits on `store` what `protocol` plans.
    pub fn new(store: St, protocol: P) -> Self {
        AdmissionLayer {
            store,
            protocol: Arc::new(protocol),
            observer: Arc::new(()),
            lot: Arc::default(),
            refusals: PhantomData,
        }
    }
}

impl<St, P, O, R> AdmissionLayer<St, P, O, R> {
    /// Tells `observer` every admission event (see [`Observe`](super::Observe)).
    pub fn observe<O2>(self, observer: O2) -> AdmissionLayer<St, P, O2, R> {
        AdmissionLayer {
            store: self.store,
            protocol: self.protocol,
            observer: Arc::new(observer),
            lot: self.lot,
            refusals: PhantomData,
        }
    }

    /// Answers refusals with an HTTP response instead of an error, for a service of
    /// `http::Request`s whose protocol's output is an `http::Response` (see [`AsResponse`]
    /// for the statuses and headers). The service then keeps its inner error type: in an
    /// axum app, the layer goes on a route as it is, without a `HandleErrorLayer`.
    pub fn respond_to_refusals(self) -> AdmissionLayer<St, P, O, AsResponse> {
        AdmissionLayer {
            store: self.store,
            protocol: self.protocol,
            observer: self.observer,
            lot: self.lot,
            refusals: PhantomData,
        }
    }

    /// The observer.
    pub fn observer(&self) -> &O {
        &self.observer
    }

    /// The shared store.
    pub fn store(&self) -> &St {
        &self.store
    }

    /// The protocol.
    pub fn protocol(&self) -> &P {
        &self.protocol
    }

    /// The same layer with the protocol `f` makes of this one's.
    fn map_protocol<P2>(self, f: impl FnOnce(P) -> P2) -> AdmissionLayer<St, P2, O, R>
    where
        P: Clone,
    {
        AdmissionLayer {
            store: self.store,
            protocol: Arc::new(f(Arc::unwrap_or_clone(self.protocol))),
            observer: self.observer,
            lot: self.lot,
            refusals: PhantomData,
        }
    }
}

impl<St: Clone, P, O, R> Clone for AdmissionLayer<St, P, O, R> {
    fn clone(&self) -> Self {
        AdmissionLayer {
            store: self.store.clone(),
            protocol: Arc::clone(&self.protocol),
            observer: Arc::clone(&self.observer),
            lot: Arc::clone(&self.lot),
            refusals: PhantomData,
        }
    }
}

impl<St: fmt::Debug, P, O, R> fmt::Debug for AdmissionLayer<St, P, O, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdmissionLayer")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl<S, St: Clone, P, O, R> Layer<S> for AdmissionLayer<St, P, O, R> {
    type Service = Admission<S, St, P, O, R>;

    fn layer(&self, inner: S) -> Self::Service {
        Admission::from_parts(
            inner,
            self.store.clone(),
            Arc::clone(&self.protocol),
            Arc::clone(&self.observer),
            Arc::clone(&self.lot),
        )
    }
}

/// The protocol of a [`RateLimitLayer`].
type RequestsOnly<KF, C, CL> = Closures<KF, NoTokens, KeepReservation, C, CL>;

/// Limits requests per window on each quota key: every request counts one on its key in the
/// store `St` (a [`Budget`](crate::budget::Budget) with a requests limit,
/// [`BudgetBuilder::requests`](crate::budget::BudgetBuilder::requests), or a shared store).
/// An [`AdmissionLayer`] with a protocol of closures; see the [module documentation](super).
///
/// The key comes from `KF`, the classification of results (for throttle feedback) from `C`,
/// the request's tenant and lane (for a store with [`Fairness`](crate::budget::Fairness)) from
/// `CL`; `O` observes, `R` says how refusals come back.
pub struct RateLimitLayer<St, KF, C = OkIsSuccess, CL = NoClass, O = (), R = AsError> {
    layer: AdmissionLayer<St, RequestsOnly<KF, C, CL>, O, R>,
}

impl<St, KF> RateLimitLayer<St, KF> {
    /// A layer that admits every request on the key `key` gives it, waiting in line when the
    /// key's window is full. With the default classifier ([`OkIsSuccess`]) it gets no throttle
    /// feedback; see [`classify`](Self::classify).
    pub fn new(store: St, key: KF) -> Self {
        RateLimitLayer {
            layer: AdmissionLayer::new(store, Closures::new(key)),
        }
    }
}

/// The protocol of a [`TokenBudgetLayer`].
type WithTokens<KF, E, ST, C, CL> = Closures<KF, E, ST, C, CL>;

/// Keeps tokens per window inside each key's quota: each request reserves its token estimate on
/// its key in the store `St` (and one request, if the key limits requests), and settles the
/// real usage from the response. An [`AdmissionLayer`] with a protocol of closures; see the
/// [module documentation](super).
///
/// The key comes from `KF`, the estimate from `E`, the settlement from `ST`, the
/// classification from `C`, the tenant and lane from `CL`; `O` observes, `R` says how refusals
/// come back.
pub struct TokenBudgetLayer<St, KF, E, ST, C = OkIsSuccess, CL = NoClass, O = (), R = AsError> {
    layer: AdmissionLayer<St, WithTokens<KF, E, ST, C, CL>, O, R>,
}

impl<St, KF, E, ST> TokenBudgetLayer<St, KF, E, ST> {
    /// A layer that reserves `estimate` tokens for each request on the key `key` gives it,
    /// waiting in line when the key's window is full, and settles the reservation with `settle`
    /// when the response arrives. With the default classifier ([`OkIsSuccess`]) it gets no
    /// throttle feedback; see [`classify`](Self::classify).
    pub fn new(store: St, key: KF, estimate: E, settle: ST) -> Self {
        TokenBudgetLayer {
            layer: AdmissionLayer::new(store, Closures::new(key).tokens(estimate, settle)),
        }
    }
}

/// What both named layers offer: the builder methods and accessors, written once.
macro_rules! named_layer {
    ($name:ident<$($p:ident),*>, $protocol:ty) => {
        impl<St, $($p,)* C: Clone, CL: Clone, O, R> $name<St, $($p,)* C, CL, O, R>
        where
            $($p: Clone,)*
        {
            /// Classifies results: a throttle feeds back to the dimensions its cause names (see
            /// [`Dimension::of_cause`](crate::budget::Dimension::of_cause)).
            pub fn classify<C2>(self, classify: C2) -> $name<St, $($p,)* C2, CL, O, R> {
                $name {
                    layer: self.layer.map_protocol(|p| p.classify(classify)),
                }
            }

            /// Gives each request the class `class` returns (its tenant and lane), for a store
            /// with [`Fairness`](crate::budget::Fairness).
            pub fn class<CL2>(self, class: CL2) -> $name<St, $($p,)* C, CL2, O, R> {
                $name {
                    layer: self.layer.map_protocol(|p| p.class(class)),
                }
            }
        }

        impl<St, $($p,)* C, CL, O, R> $name<St, $($p,)* C, CL, O, R> {
            /// Tells `observer` every admission event (see [`Observe`](super::Observe)): a
            /// [`CapacityRecorder`](crate::report::CapacityRecorder), metrics, a closure.
            pub fn observe<O2>(self, observer: O2) -> $name<St, $($p,)* C, CL, O2, R> {
                $name {
                    layer: self.layer.observe(observer),
                }
            }

            /// Answers refusals with an HTTP response (429 or 413 with `Retry-After`) instead
            /// of an error; see [`AdmissionLayer::respond_to_refusals`].
            pub fn respond_to_refusals(self) -> $name<St, $($p,)* C, CL, O, AsResponse> {
                $name {
                    layer: self.layer.respond_to_refusals(),
                }
            }

            /// The shared store.
            pub fn store(&self) -> &St {
                self.layer.store()
            }

            /// The observer.
            pub fn observer(&self) -> &O {
                self.layer.observer()
            }
        }

        impl<St: Clone, $($p,)* C, CL, O, R> Clone for $name<St, $($p,)* C, CL, O, R> {
            fn clone(&self) -> Self {
                $name {
                    layer: self.layer.clone(),
                }
            }
        }

        impl<St: fmt::Debug, $($p,)* C, CL, O, R> fmt::Debug for $name<St, $($p,)* C, CL, O, R> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("store", self.layer.store())
                    .finish_non_exhaustive()
            }
        }

        impl<S, St: Clone, $($p,)* C, CL, O, R> Layer<S> for $name<St, $($p,)* C, CL, O, R> {
            type Service = Admission<S, St, $protocol, O, R>;

            fn layer(&self, inner: S) -> Self::Service {
                self.layer.layer(inner)
            }
        }
    };
}

named_layer!(RateLimitLayer<KF>, RequestsOnly<KF, C, CL>);
named_layer!(TokenBudgetLayer<KF, E, ST>, WithTokens<KF, E, ST, C, CL>);
