//! The store seam: what the admission layer needs from the budgets of a quota key.
//!
//! The in-process [`Budget`] is the default store. A store shared by several processes (a fleet
//! behind one quota) implements the same trait, so the layers, the SDK setup and the guarantees
//! they document do not change with the store: admit on every dimension at once (or say when it
//! will fit), settle, settle mirroring the server's reservation, throttle feedback, quota
//! changes, stats.

use std::fmt;
use std::future::Future;
use std::hash::Hash;

use tokio::time::Instant;

use super::{
    AdmissionError, Budget, Class, ConfigError, Dimension, KeyStats, Permit, Quota, Scopes,
};
use crate::classify::ThrottleCause;

/// The budgets of quota keys, as the admission layer uses them. Clones share their state.
///
/// Implemented by the in-process [`Budget`]. Another store returns its own permits through
/// [`Permit::from_store`], with a [`StorePermit`] that settles there.
pub trait QuotaStore<K>: Clone + Send + Sync + 'static {
    /// The future of an admission: resolves once the request fits on every dimension of its
    /// key's quota (in the store's queue order), or fails. Dropping it before it resolves leaves
    /// no trace.
    type Acquire: Future<Output = Result<Permit, AdmissionError>> + Send + Unpin + 'static;

    /// Admits a request of `tokens` (and one request) on `key`, waiting as the store's queue
    /// discipline says.
    fn acquire(&self, key: K, tokens: u64) -> Self::Acquire;

    /// Admits a request of `tokens` on `key` for `class` (its tenant and lane). A store that
    /// shares keys fairly serves it by its class; the default ignores the class (FIFO).
    fn acquire_as(&self, key: K, tokens: u64, class: Class) -> Self::Acquire {
        let _ = class;
        self.acquire(key, tokens)
    }

    /// Admits a request of `tokens` on every one of its `scopes` at once, for `class` (see
    /// [scopes](super#scopes)).
    ///
    /// The default charges the FIRST scope only: a store that does not implement scopes
    /// enforces only the first scope's quota (the in-process [`Budget`] implements them).
    fn acquire_scopes(&self, scopes: Scopes<K>, tokens: u64, class: Class) -> Self::Acquire
    where
        K: Clone,
    {
        self.acquire_as(scopes.first().clone(), tokens, class)
    }

    /// Feedback that the server throttled `key` for `cause`, without a permit (a throttle seen
    /// elsewhere). Feedback with the throttled request's permit goes through
    /// [`Permit::throttled`].
    fn throttled(&self, key: &K, cause: ThrottleCause);

    /// Changes the quota of `key` at run time.
    ///
    /// # Errors
    ///
    /// A quota that limits nothing or has a zero limit.
    fn set_quota(&self, key: &K, quota: Quota) -> Result<(), ConfigError>;

    /// A snapshot of `key`, if the store keeps state for it.
    fn stats(&self, key: &K) -> Option<KeyStats>;
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static> QuotaStore<K> for Budget<K> {
    type Acquire = super::Acquire<K>;

    #[inline]
    fn acquire(&self, key: K, tokens: u64) -> Self::Acquire {
        Budget::acquire(self, key, tokens)
    }

    #[inline]
    fn acquire_as(&self, key: K, tokens: u64, class: Class) -> Self::Acquire {
        Budget::acquire_as(self, key, tokens, class)
    }

    fn acquire_scopes(&self, scopes: Scopes<K>, tokens: u64, class: Class) -> Self::Acquire {
        Budget::acquire_scopes_as(self, scopes, tokens, class)
    }

    fn throttled(&self, key: &K, cause: ThrottleCause) {
        Budget::throttled(self, key, cause);
    }

    fn set_quota(&self, key: &K, quota: Quota) -> Result<(), ConfigError> {
        Budget::set_quota(self, key, quota)
    }

    fn stats(&self, key: &K) -> Option<KeyStats> {
        Budget::stats(self, key)
    }
}

/// The charge behind a [`Permit`] of a store other than the in-process one.
pub trait StorePermit: Send + Sync + fmt::Debug + 'static {
    /// When the charge was admitted (tokio's clock).
    fn admitted_at(&self) -> Instant;

    /// Settles the charge of `reserved` tokens: `refund` comes off the admission entry, `debt`
    /// is booked at the settle instant. Called once, when the permit settles or is dropped.
    fn settle(self: Box<Self>, reserved: u64, refund: u64, debt: u64);

    /// Throttle feedback on `dims`, with this permit's reservation (see
    /// [`Permit::throttled`]).
    fn throttled(&self, dims: &[Dimension], reserved: u64);
}
