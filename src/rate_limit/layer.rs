//! The [`RateLimitLayer`].

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use tower_layer::Layer;

use super::service::{Handlers, RateLimit};
use crate::budget::Budget;
use crate::classify::{OkIsSuccess, ThrottleCause};

/// Applies [`RateLimit`] to a service: each request costs 1 on its key's [`Budget`].
///
/// Clones of the layer, and of the services it builds, share the budget.
pub struct RateLimitLayer<K, KF, C = OkIsSuccess> {
    budget: Budget<K>,
    key: KF,
    classify: C,
    feedback: fn(ThrottleCause) -> bool,
}

/// The default feedback causes of [`RateLimitLayer`]: the request quota, or an unnamed one.
pub(crate) fn requests_feedback(cause: ThrottleCause) -> bool {
    matches!(cause, ThrottleCause::Requests | ThrottleCause::Unknown)
}

impl<K, KF> RateLimitLayer<K, KF> {
    /// A layer that admits each request on the key `key` gives it, at cost 1, waiting in line
    /// when the key's window is full. With the default classifier ([`OkIsSuccess`]) it gets no
    /// throttle feedback; see [`classify`](Self::classify).
    pub fn new(budget: Budget<K>, key: KF) -> Self {
        RateLimitLayer {
            budget,
            key,
            classify: OkIsSuccess,
            feedback: requests_feedback,
        }
    }
}

impl<K, KF, C> RateLimitLayer<K, KF, C> {
    /// Classifies results: a throttle whose cause is a feedback cause (by default
    /// [`ThrottleCause::Requests`] and [`ThrottleCause::Unknown`]) calls
    /// [`Budget::throttled`] on the request's key.
    pub fn classify<C2>(self, classify: C2) -> RateLimitLayer<K, KF, C2> {
        RateLimitLayer {
            budget: self.budget,
            key: self.key,
            classify,
            feedback: self.feedback,
        }
    }

    /// Chooses which throttle causes feed back into the budget.
    pub fn feedback_on(mut self, causes: fn(ThrottleCause) -> bool) -> Self {
        self.feedback = causes;
        self
    }

    /// The shared budget.
    pub fn budget(&self) -> &Budget<K> {
        &self.budget
    }
}

impl<K, KF: Clone, C: Clone> Clone for RateLimitLayer<K, KF, C> {
    fn clone(&self) -> Self {
        RateLimitLayer {
            budget: self.budget.clone(),
            key: self.key.clone(),
            classify: self.classify.clone(),
            feedback: self.feedback,
        }
    }
}

impl<K: Eq + Hash, KF, C> fmt::Debug for RateLimitLayer<K, KF, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl<S, K, KF: Clone, C: Clone> Layer<S> for RateLimitLayer<K, KF, C> {
    type Service = RateLimit<S, K, KF, C>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::from_parts(
            inner,
            self.budget.clone(),
            self.key.clone(),
            Arc::new(Handlers {
                classify: self.classify.clone(),
                feedback: self.feedback,
            }),
        )
    }
}
