//! [`AdmissionLayer`] and the two layers built on it, [`RateLimitLayer`] and
//! [`TokenBudgetLayer`].

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::park::ParkingLot;
use super::plan::{Closures, KeepReservation, NoTokens};
use super::service::Admission;
use crate::budget::Budget;
use crate::classify::OkIsSuccess;

/// Applies [`Admission`] to a service: each attempt is planned once by the protocol `P`,
/// admitted on every dimension of its key's quota in the store `St`, and settled from its plan.
///
/// Clones of the layer, and of the services it builds, share the store, the observer and the
/// places kept for re-sent attempts.
pub struct AdmissionLayer<St, P, O = ()> {
    store: St,
    protocol: Arc<P>,
    observer: Arc<O>,
    lot: Arc<ParkingLot>,
}

impl<St, P> AdmissionLayer<St, P> {
    /// Admits on `store` what `protocol` plans.
    pub fn new(store: St, protocol: P) -> Self {
        AdmissionLayer {
            store,
            protocol: Arc::new(protocol),
            observer: Arc::new(()),
            lot: Arc::default(),
        }
    }
}

impl<St, P, O> AdmissionLayer<St, P, O> {
    /// Tells `observer` every admission event (see [`Observe`](super::Observe)).
    pub fn observe<O2>(self, observer: O2) -> AdmissionLayer<St, P, O2> {
        AdmissionLayer {
            store: self.store,
            protocol: self.protocol,
            observer: Arc::new(observer),
            lot: self.lot,
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
}

impl<St: Clone, P, O> Clone for AdmissionLayer<St, P, O> {
    fn clone(&self) -> Self {
        AdmissionLayer {
            store: self.store.clone(),
            protocol: Arc::clone(&self.protocol),
            observer: Arc::clone(&self.observer),
            lot: Arc::clone(&self.lot),
        }
    }
}

impl<St: fmt::Debug, P, O> fmt::Debug for AdmissionLayer<St, P, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdmissionLayer")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl<S, St: Clone, P, O> Layer<S> for AdmissionLayer<St, P, O> {
    type Service = Admission<S, St, P, O>;

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

/// Limits requests per window on each quota key: every request counts one on its key's
/// [`Budget`] (give it a requests limit, [`BudgetBuilder::requests`](crate::budget::BudgetBuilder::requests)).
/// An [`AdmissionLayer`] with a protocol of closures; see the [module documentation](super).
pub struct RateLimitLayer<K, KF, C = OkIsSuccess> {
    layer: AdmissionLayer<Budget<K>, Closures<KF, NoTokens, KeepReservation, C>>,
}

impl<K, KF> RateLimitLayer<K, KF> {
    /// A layer that admits every request on the key `key` gives it, waiting in line when the
    /// key's window is full. With the default classifier ([`OkIsSuccess`]) it gets no throttle
    /// feedback; see [`classify`](Self::classify).
    pub fn new(budget: Budget<K>, key: KF) -> Self {
        RateLimitLayer {
            layer: AdmissionLayer::new(budget, Closures::new(key)),
        }
    }
}

impl<K, KF: Clone, C: Clone> RateLimitLayer<K, KF, C> {
    /// Classifies results: a throttle feeds back to the dimensions its cause names (see
    /// [`Dimension::of_cause`](crate::budget::Dimension::of_cause)).
    pub fn classify<C2>(self, classify: C2) -> RateLimitLayer<K, KF, C2> {
        let protocol = Arc::unwrap_or_clone(self.layer.protocol).classify(classify);
        RateLimitLayer {
            layer: AdmissionLayer {
                store: self.layer.store,
                protocol: Arc::new(protocol),
                observer: self.layer.observer,
                lot: self.layer.lot,
            },
        }
    }

    /// The shared budget.
    pub fn budget(&self) -> &Budget<K> {
        &self.layer.store
    }
}

/// Keeps tokens per window inside each key's quota: each request reserves its token estimate on
/// its key's [`Budget`] (and one request, if the key limits requests), and settles the real
/// usage from the response. An [`AdmissionLayer`] with a protocol of closures; see the
/// [module documentation](super).
pub struct TokenBudgetLayer<K, KF, E, ST, C = OkIsSuccess> {
    layer: AdmissionLayer<Budget<K>, Closures<KF, E, ST, C>>,
}

impl<K, KF, E, ST> TokenBudgetLayer<K, KF, E, ST> {
    /// A layer that reserves `estimate` tokens for each request on the key `key` gives it,
    /// waiting in line when the key's window is full, and settles the reservation with `settle`
    /// when the response arrives. With the default classifier ([`OkIsSuccess`]) it gets no
    /// throttle feedback; see [`classify`](Self::classify).
    pub fn new(budget: Budget<K>, key: KF, estimate: E, settle: ST) -> Self {
        TokenBudgetLayer {
            layer: AdmissionLayer::new(budget, Closures::new(key).tokens(estimate, settle)),
        }
    }
}

impl<K, KF: Clone, E: Clone, ST: Clone, C: Clone> TokenBudgetLayer<K, KF, E, ST, C> {
    /// Classifies results: a throttle feeds back to the dimensions its cause names (see
    /// [`Dimension::of_cause`](crate::budget::Dimension::of_cause)).
    pub fn classify<C2>(self, classify: C2) -> TokenBudgetLayer<K, KF, E, ST, C2> {
        let protocol = Arc::unwrap_or_clone(self.layer.protocol).classify(classify);
        TokenBudgetLayer {
            layer: AdmissionLayer {
                store: self.layer.store,
                protocol: Arc::new(protocol),
                observer: self.layer.observer,
                lot: self.layer.lot,
            },
        }
    }

    /// The shared budget.
    pub fn budget(&self) -> &Budget<K> {
        &self.layer.store
    }
}

macro_rules! delegate_layer {
    ($name:ident<$($p:ident),*>, $protocol:ty) => {
        impl<$($p),*> Clone for $name<$($p),*> {
            fn clone(&self) -> Self {
                $name { layer: self.layer.clone() }
            }
        }

        impl<$($p),*> fmt::Debug for $name<$($p),*>
        where
            K: Eq + std::hash::Hash,
        {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("budget", &self.layer.store)
                    .finish_non_exhaustive()
            }
        }

        impl<S, $($p),*> Layer<S> for $name<$($p),*> {
            type Service = Admission<S, Budget<K>, $protocol>;

            fn layer(&self, inner: S) -> Self::Service {
                self.layer.layer(inner)
            }
        }
    };
}

delegate_layer!(RateLimitLayer<K, KF, C>, Closures<KF, NoTokens, KeepReservation, C>);
delegate_layer!(TokenBudgetLayer<K, KF, E, ST, C>, Closures<KF, E, ST, C>);
