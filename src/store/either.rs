//! [`Store`]: the in-process store or the shared one, behind one type.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::StoreKey;
#[cfg(feature = "redis")]
use super::{RedisAcquire, RedisStore};
use crate::budget::{
    AdmissionError, Budget, Class, ConfigError, KeyStats, Permit, Quota, QuotaStore, Scopes,
};
use crate::classify::ThrottleCause;

/// One of the stores: the in-process [`Budget`] or, with the `redis` feature, a
/// [`RedisStore`] shared by a fleet. The SDK setup's stack is built on it, so a configuration
/// switch (not a type change) picks the store. Clones share their state.
#[non_exhaustive]
pub enum Store<K> {
    /// The in-process engine.
    Local(Budget<K>),
    /// The fleet-wide store.
    #[cfg(feature = "redis")]
    Redis(RedisStore<K>),
}

impl<K: Eq + Hash> fmt::Debug for Store<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Store::Local(b) => f.debug_tuple("Local").field(b).finish(),
            #[cfg(feature = "redis")]
            Store::Redis(r) => f.debug_tuple("Redis").field(r).finish(),
        }
    }
}

impl<K> Clone for Store<K> {
    fn clone(&self) -> Self {
        match self {
            Store::Local(b) => Store::Local(b.clone()),
            #[cfg(feature = "redis")]
            Store::Redis(r) => Store::Redis(r.clone()),
        }
    }
}

impl<K> From<Budget<K>> for Store<K> {
    fn from(b: Budget<K>) -> Self {
        Store::Local(b)
    }
}

#[cfg(feature = "redis")]
impl<K> From<RedisStore<K>> for Store<K> {
    fn from(r: RedisStore<K>) -> Self {
        Store::Redis(r)
    }
}

/// The admission future of a [`Store`].
#[must_use = "futures do nothing unless polled"]
pub enum StoreAcquire<K> {
    /// Of the in-process store.
    Local(crate::budget::Acquire<K>),
    /// Of the Redis store.
    #[cfg(feature = "redis")]
    Redis(RedisAcquire),
}

impl<K> fmt::Debug for StoreAcquire<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreAcquire::Local(_) => f.write_str("StoreAcquire::Local"),
            #[cfg(feature = "redis")]
            StoreAcquire::Redis(_) => f.write_str("StoreAcquire::Redis"),
        }
    }
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static> Future for StoreAcquire<K>
where
    crate::budget::Acquire<K>: Future<Output = Result<Permit, AdmissionError>> + Unpin,
{
    type Output = Result<Permit, AdmissionError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            StoreAcquire::Local(a) => Pin::new(a).poll(cx),
            #[cfg(feature = "redis")]
            StoreAcquire::Redis(a) => Pin::new(a).poll(cx),
        }
    }
}

impl<K: Clone + Eq + Hash + StoreKey + Send + Sync + 'static> QuotaStore<K> for Store<K> {
    type Acquire = StoreAcquire<K>;

    #[inline]
    fn acquire(&self, key: K, tokens: u64) -> Self::Acquire {
        match self {
            Store::Local(b) => StoreAcquire::Local(b.acquire(key, tokens)),
            #[cfg(feature = "redis")]
            Store::Redis(r) => StoreAcquire::Redis(QuotaStore::acquire(r, key, tokens)),
        }
    }

    fn acquire_as(&self, key: K, tokens: u64, class: Class) -> Self::Acquire {
        match self {
            Store::Local(b) => StoreAcquire::Local(b.acquire_as(key, tokens, class)),
            #[cfg(feature = "redis")]
            Store::Redis(r) => StoreAcquire::Redis(QuotaStore::acquire_as(r, key, tokens, class)),
        }
    }

    fn acquire_scopes(&self, scopes: Scopes<K>, tokens: u64, class: Class) -> Self::Acquire {
        match self {
            Store::Local(b) => StoreAcquire::Local(b.acquire_scopes_as(scopes, tokens, class)),
            #[cfg(feature = "redis")]
            Store::Redis(r) => {
                StoreAcquire::Redis(QuotaStore::acquire_scopes(r, scopes, tokens, class))
            }
        }
    }

    fn throttled(&self, key: &K, cause: ThrottleCause) {
        match self {
            Store::Local(b) => b.throttled(key, cause),
            #[cfg(feature = "redis")]
            Store::Redis(r) => QuotaStore::throttled(r, key, cause),
        }
    }

    fn set_quota(&self, key: &K, quota: Quota) -> Result<(), ConfigError> {
        match self {
            Store::Local(b) => b.set_quota(key, quota),
            #[cfg(feature = "redis")]
            Store::Redis(r) => QuotaStore::set_quota(r, key, quota),
        }
    }

    fn stats(&self, key: &K) -> Option<KeyStats> {
        match self {
            Store::Local(b) => b.stats(key),
            #[cfg(feature = "redis")]
            Store::Redis(r) => QuotaStore::stats(r, key),
        }
    }
}

impl<K> fmt::Display for Store<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Store::Local(_) => f.write_str("in-process store"),
            #[cfg(feature = "redis")]
            Store::Redis(_) => f.write_str("redis store"),
        }
    }
}
