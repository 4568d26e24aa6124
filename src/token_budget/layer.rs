//! The [`TokenBudgetLayer`].

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use tower_layer::Layer;

use super::service::{Handlers, TokenBudget};
use crate::budget::Budget;
use crate::classify::{OkIsSuccess, ThrottleCause};

/// Applies [`TokenBudget`] to a service: each request reserves its token estimate on its key's
/// [`Budget`], and the reservation is settled from the response's usage.
///
/// Clones of the layer, and of the services it builds, share the budget.
pub struct TokenBudgetLayer<K, KF, E, ST, C = OkIsSuccess> {
    budget: Budget<K>,
    key: KF,
    estimate: E,
    settle: ST,
    classify: C,
    feedback: fn(ThrottleCause) -> bool,
}

/// The default feedback causes of [`TokenBudgetLayer`]: the token quota, or an unnamed one.
pub(crate) fn tokens_feedback(cause: ThrottleCause) -> bool {
    matches!(cause, ThrottleCause::Tokens | ThrottleCause::Unknown)
}

impl<K, KF, E, ST> TokenBudgetLayer<K, KF, E, ST> {
    /// A layer that reserves `estimate` tokens for each request on the key `key` gives it,
    /// waiting in line when the key's window is full, and settles the reservation with `settle`
    /// when the response arrives. With the default classifier ([`OkIsSuccess`]) it gets no
    /// throttle feedback; see [`classify`](Self::classify).
    pub fn new(budget: Budget<K>, key: KF, estimate: E, settle: ST) -> Self {
        TokenBudgetLayer {
            budget,
            key,
            estimate,
            settle,
            classify: OkIsSuccess,
            feedback: tokens_feedback,
        }
    }
}

impl<K, KF, E, ST, C> TokenBudgetLayer<K, KF, E, ST, C> {
    /// Classifies results: a throttle whose cause is a feedback cause (by default
    /// [`ThrottleCause::Tokens`] and [`ThrottleCause::Unknown`]) calls
    /// [`Budget::throttled`] on the request's key.
    pub fn classify<C2>(self, classify: C2) -> TokenBudgetLayer<K, KF, E, ST, C2> {
        TokenBudgetLayer {
            budget: self.budget,
            key: self.key,
            estimate: self.estimate,
            settle: self.settle,
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

impl<K, KF: Clone, E: Clone, ST: Clone, C: Clone> Clone for TokenBudgetLayer<K, KF, E, ST, C> {
    fn clone(&self) -> Self {
        TokenBudgetLayer {
            budget: self.budget.clone(),
            key: self.key.clone(),
            estimate: self.estimate.clone(),
            settle: self.settle.clone(),
            classify: self.classify.clone(),
            feedback: self.feedback,
        }
    }
}

impl<K: Eq + Hash, KF, E, ST, C> fmt::Debug for TokenBudgetLayer<K, KF, E, ST, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenBudgetLayer")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl<S, K, KF: Clone, E: Clone, ST: Clone, C: Clone> Layer<S>
    for TokenBudgetLayer<K, KF, E, ST, C>
{
    type Service = TokenBudget<S, K, KF, E, ST, C>;

    fn layer(&self, inner: S) -> Self::Service {
        TokenBudget::from_parts(
            inner,
            self.budget.clone(),
            self.key.clone(),
            self.estimate.clone(),
            Arc::new(Handlers {
                classify: self.classify.clone(),
                settle: self.settle.clone(),
                feedback: self.feedback,
            }),
        )
    }
}
