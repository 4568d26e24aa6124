//! The observer of admission events: metrics and the capacity report are observers.
//!
//! With no observer (the default, `()`), nothing is paid: the layer reads no extra clock and
//! clones no key. An observer sees each attempt's admission (and how long it waited), its
//! refusal, its leaving the queue, its classified result and its settlement, with the attempt's
//! quota key.

use std::time::Duration;

use crate::budget::{AdmissionError, Dimension};
use crate::classify::Classification;

/// What happened to one attempt, as admission saw it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Event<'a> {
    /// Admitted on every dimension, after waiting `waited` (zero when it did not wait).
    Admitted {
        /// The tokens reserved.
        tokens: u64,
        /// How long it waited in line.
        waited: Duration,
        /// The dimension that made it wait (whose window was full for the head of the queue
        /// when it arrived), if it waited.
        waited_on: Option<Dimension>,
    },
    /// Refused by the store.
    Refused {
        /// Why.
        error: &'a AdmissionError,
        /// How long it waited before the refusal.
        waited: Duration,
    },
    /// Left the queue before admission (its signature was about to expire).
    LeftQueue {
        /// How long it waited.
        waited: Duration,
    },
    /// The call's result, classified (once per attempt).
    Completed {
        /// The classification.
        classification: Classification,
    },
    /// The permit settled (with the usage, or with its worst case when the usage never
    /// arrived).
    Settled {
        /// The tokens reserved at admission.
        reserved: u64,
        /// The tokens the settlement booked.
        settled: u64,
    },
}

/// Receives the admission events of a layer. Implemented by `()` (no observer: nothing is
/// paid) and by any `Fn(&K, Event<'_>)`.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use bedrock_throttle::admit::{Event, Observe};
///
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let observer = {
///     let seen = seen.clone();
///     move |key: &&str, event: Event<'_>| seen.lock().unwrap().push(format!("{key}: {event:?}"))
/// };
/// observer.observe(&"claude", Event::Settled { reserved: 10, settled: 8 });
/// assert_eq!(seen.lock().unwrap().len(), 1);
/// ```
pub trait Observe<K>: Send + Sync + 'static {
    /// Whether this observer wants events at all (`false` for `()`: the layer then skips the
    /// work of producing them).
    const ENABLED: bool = true;

    /// One event of an attempt on `key`.
    fn observe(&self, key: &K, event: Event<'_>);
}

impl<K> Observe<K> for () {
    const ENABLED: bool = false;

    #[inline]
    fn observe(&self, _key: &K, _event: Event<'_>) {}
}

impl<K, F> Observe<K> for F
where
    F: Fn(&K, Event<'_>) + Send + Sync + 'static,
{
    fn observe(&self, key: &K, event: Event<'_>) {
        self(key, event)
    }
}
