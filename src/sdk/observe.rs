//! What the one-call setup observes: the capacity report's recorder, the metrics if enabled,
//! and the retry layer's decisions.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::admit::{Event, Observe};
use crate::bedrock::BedrockKey;
use crate::quotas::AppliedQuotas;
use crate::report::{CapacityRecorder, CapacityReport, KeyInput};
use crate::retry::RetryEvent;

use super::BedrockThrottle;

/// The observer of a [`BedrockThrottle`]'s admission layer: the capacity recorder and, with
/// feature `metrics` and [`metrics(true)`](super::BedrockThrottleBuilder::metrics), the
/// metrics.
#[derive(Debug, Clone)]
pub struct ThrottleObserver {
    pub(crate) recorder: CapacityRecorder<BedrockKey>,
    #[cfg(feature = "metrics")]
    pub(crate) metrics: Option<crate::metrics::Metrics<BedrockKey>>,
}

impl Observe<BedrockKey> for ThrottleObserver {
    fn observe(&self, key: &BedrockKey, event: Event<'_>) {
        self.recorder.observe(key, event);
        #[cfg(feature = "metrics")]
        if let Some(metrics) = &self.metrics {
            metrics.observe(key, event);
        }
    }
}

/// Retries and give-ups of the stack, for the report.
#[derive(Debug, Default)]
pub(crate) struct RetryCounts {
    retries: AtomicU64,
    give_ups: AtomicU64,
}

impl RetryCounts {
    pub(crate) fn observer(
        self: &Arc<Self>,
        #[allow(unused_variables)] metrics: bool,
    ) -> impl Fn(&RetryEvent) + Send + Sync + 'static {
        let counts = Arc::clone(self);
        #[cfg(feature = "metrics")]
        let record = metrics.then(crate::metrics::Metrics::<BedrockKey>::retry_observer);
        move |event: &RetryEvent| {
            match event {
                RetryEvent::Retry { .. } => counts.retries.fetch_add(1, Ordering::Relaxed),
                _ => counts.give_ups.fetch_add(1, Ordering::Relaxed),
            };
            #[cfg(feature = "metrics")]
            if let Some(record) = &record {
                record(event);
            }
        }
    }
}

impl BedrockThrottle {
    /// The capacity report of every model this throttle has seen, over the last
    /// [`report_windows`](super::BedrockThrottleBuilder::report_windows) windows, with the
    /// applied quotas when the throttle was given them (see [`crate::report`]).
    pub fn report(&self) -> CapacityReport {
        let applied: Option<&AppliedQuotas> = self.applied.as_deref();
        let mut report = self.observer.recorder.report_with(|key| KeyInput {
            name: key.to_string(),
            model: Some(key.model().to_owned()),
            region: Some(key.region().to_owned()),
            // The store's figures: with a shared store, the fleet's as last read from Redis.
            stats: crate::budget::QuotaStore::stats(self.store(), key),
            applied: applied
                .filter(|a| a.region().is_empty() || a.region() == key.region())
                .and_then(|a| a.quota(key.model())),
            applied_known: applied.is_some(),
        });
        report.retries = self.retry_counts.retries.load(Ordering::Relaxed);
        report.give_ups = self.retry_counts.give_ups.load(Ordering::Relaxed);
        report
    }

    /// The recorder behind [`report`](Self::report).
    pub fn recorder(&self) -> &CapacityRecorder<BedrockKey> {
        &self.observer.recorder
    }

    /// The applied quotas the throttle was given, if any.
    pub fn applied_quotas(&self) -> Option<&AppliedQuotas> {
        self.applied.as_deref()
    }
}
