use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::backoff::Jitter;
use super::policy::{Config, OnDecision, Policy, RetryEvent};
use super::{Backoff, RetryBudget, ThrottleRetry};
use crate::classify::{CloneByClone, ThrottleCause};

/// Applies [`ThrottleRetry`] to a service: retries throttled and transient results with
/// full-jitter exponential backoff, within an attempt cap, a shared retry budget and an optional
/// deadline.
///
/// `C` classifies results ([`Classify`](crate::classify::Classify)); `R` copies requests for
/// another attempt ([`CloneRequest`](crate::classify::CloneRequest), by default
/// [`CloneByClone`]). Every setting has a default:
///
/// | setting | default |
/// |---|---|
/// | [`max_attempts`](Self::max_attempts) | 3 (first attempt included) |
/// | [`attempts_for`](Self::attempts_for) | [`ThrottleCause::ModelNotReady`] → 5 |
/// | [`backoff`](Self::backoff) | [`Backoff::default`]: 1 s, ×2, capped at 20 s, full jitter |
/// | [`budget`](Self::budget) | [`RetryBudget::default`]: 10 per 10 s + 20 % of first attempts |
/// | [`deadline`](Self::deadline) | none |
///
/// The layer is a cheap config holder. Every service it builds, and every clone of those, shares
/// the same [`RetryBudget`] (and the same seeded generator, if [`seed`](Self::seed) is used).
#[derive(Clone)]
pub struct ThrottleRetryLayer<C, R = CloneByClone> {
    classifier: C,
    cloner: R,
    config: Config,
}

impl<C> ThrottleRetryLayer<C> {
    /// A retry layer with default settings that classifies results with `classifier` and clones
    /// requests with their `Clone` implementation.
    pub fn new(classifier: C) -> Self {
        Self {
            classifier,
            cloner: CloneByClone,
            config: Config::default(),
        }
    }
}

impl<C, R> ThrottleRetryLayer<C, R> {
    /// Copies requests for another attempt with `cloner` instead of `Clone`. A cloner that
    /// returns `None` for a request makes that request go out once, whatever the result.
    pub fn clone_with<R2>(self, cloner: R2) -> ThrottleRetryLayer<C, R2> {
        ThrottleRetryLayer {
            classifier: self.classifier,
            cloner,
            config: self.config,
        }
    }

    /// At most `attempts` attempts per call, the first one included, for every cause that has no
    /// cap of its own (see [`attempts_for`](Self::attempts_for)). `1` disables retries except for
    /// those causes.
    pub fn max_attempts(mut self, attempts: NonZeroU32) -> Self {
        self.config.max_attempts = attempts;
        self
    }

    /// At most `attempts` attempts when the last result was throttled with `cause`. This replaces
    /// [`max_attempts`](Self::max_attempts) for that cause, in both directions; the attempts are
    /// counted from the first, whatever their causes were.
    ///
    /// [`ThrottleCause::ModelNotReady`] is set to 5 by default, as Bedrock documents. A cap for
    /// [`ThrottleCause::TokensPerDay`] has no effect: that cause is never retried.
    pub fn attempts_for(mut self, cause: ThrottleCause, attempts: NonZeroU32) -> Self {
        self.config.set_attempts_for(cause, attempts);
        self
    }

    /// The backoff between attempts.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// The retry budget. Its clones share their counts, so passing clones of one budget to
    /// several layers bounds their retries together.
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.config.budget = budget;
        self
    }

    /// A bound on the whole call, measured from the start of the first attempt: a retry is
    /// started only if `now + its delay + the duration of the previous attempt` (the best estimate
    /// of the next attempt's) stays within it. An attempt already running is not cut short; put
    /// a timeout layer (`tower::timeout::TimeoutLayer`) under this one for that.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.config.deadline = Some(deadline);
        self
    }

    /// Draws the jitter from one generator seeded with `seed`, shared by every service this layer
    /// builds, instead of the thread-local generator. The delays are then reproducible when the
    /// retries happen in a reproducible order (a test with a paused clock); it costs a lock per
    /// retry.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.jitter = Jitter::seeded(seed);
        self
    }

    /// Tells `observer` every decision after an attempt that did not succeed: a retry and its
    /// delay, or giving up and why (for metrics and the capacity report). Called on the
    /// request's task, inline: keep it cheap.
    pub fn on_decision(mut self, observer: impl Fn(&RetryEvent) + Send + Sync + 'static) -> Self {
        self.config.on_decision = Some(OnDecision(Arc::new(observer)));
        self
    }
}

impl<S, C: Clone, R: Clone> Layer<S> for ThrottleRetryLayer<C, R> {
    type Service = ThrottleRetry<S, C, R>;

    fn layer(&self, inner: S) -> Self::Service {
        ThrottleRetry::from_policy(
            inner,
            Arc::new(Policy {
                classifier: self.classifier.clone(),
                cloner: self.cloner.clone(),
                config: self.config.clone(),
            }),
        )
    }
}

impl<C, R> fmt::Debug for ThrottleRetryLayer<C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Classifiers and cloners are often closures, which are not `Debug`.
        f.debug_struct("ThrottleRetryLayer")
            .field("classifier", &std::any::type_name::<C>())
            .field("cloner", &std::any::type_name::<R>())
            .field("config", &self.config)
            .finish()
    }
}
