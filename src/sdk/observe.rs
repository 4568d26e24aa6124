//! What the one-call setup observes: the capacity report's recorder, the metrics if enabled,
//! and the retry layer's decisions.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

use crate::BoxError;
use crate::admit::{Event, LeftQueue, Observe};
use crate::bedrock::{Bedrock, BedrockKey};
use crate::classify::{Classification, Classify, ThrottleCause};
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
    pub(crate) counts: Arc<RetryCounts>,
    #[cfg(feature = "metrics")]
    pub(crate) metrics: Option<crate::metrics::Metrics<BedrockKey>>,
    pub(crate) burndown: Arc<BurndownCheck>,
}

/// Tells the user, once per model, that the server throttled on TOKENS although the limiter
/// admitted within its limit: the likeliest cause is a server that settles the model's
/// output at a higher burndown than the model table says (Bedrock changes rates before
/// tables do), the other one a consumer of the same quota outside this limiter.
#[derive(Debug)]
pub(crate) struct BurndownCheck {
    bedrock: Bedrock,
    warned: Mutex<HashSet<Arc<str>>>,
}

/// The most models warned about (model ids come from requests).
const MAX_WARNED: usize = 1024;

impl BurndownCheck {
    pub(crate) fn new(bedrock: Bedrock) -> Arc<Self> {
        Arc::new(Self {
            bedrock,
            warned: Mutex::new(HashSet::new()),
        })
    }

    /// The text of the warning for `key`.
    pub(crate) fn message(&self, key: &BedrockKey) -> String {
        let burndown = self.bedrock.output_burndown(key.model());
        let checked = match self.bedrock.models().row_of(key.model()) {
            Some(row) if !row.checked().is_empty() => row.checked(),
            Some(_) => "by you: an override",
            None => "never: no row",
        };
        format!(
            "the server throttled on tokens what the limiter admitted within its limit: Bedrock \
             may settle {}'s output above the {burndown}x of the model table (row checked \
             {checked}), or another client uses the same quota; compare with CloudWatch's \
             EstimatedTPMQuotaUsage and override the burndown (ModelTable::with_burndown) or \
             load a newer table",
            key.model()
        )
    }

    fn observe(&self, key: &BedrockKey, event: &Event<'_>) {
        let Event::Completed { classification } = event else {
            return;
        };
        if classification.throttle_cause() != Some(ThrottleCause::Tokens) || !key.has_model() {
            return;
        }
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        if warned.len() < MAX_WARNED && warned.insert(key.model.clone()) {
            drop(warned);
            tracing::warn!(
                model = key.model(),
                region = key.region(),
                burndown = self.bedrock.output_burndown(key.model()),
                "{}",
                self.message(key)
            );
        }
    }
}

impl Observe<BedrockKey> for ThrottleObserver {
    fn observe(&self, key: &BedrockKey, event: Event<'_>) {
        if let Event::LeftQueue { .. } = event {
            self.counts.resigns.fetch_add(1, Ordering::Relaxed);
        }
        self.burndown.observe(key, &event);
        self.recorder.observe(key, event);
        #[cfg(feature = "metrics")]
        if let Some(metrics) = &self.metrics {
            metrics.observe(key, event);
        }
    }
}

/// What a token limit in force below the configured one says (issue 19): the server's
/// throttles lowered it (to what the ledger held, with the learned policy). If the whole gap
/// came from the output's burndown, the rate that would fit is the table's scaled by
/// `configured / learned`.
fn learned_limit_message(model: &str, configured: u64, learned: u64, burndown: u64) -> String {
    // Rounded up: the smallest whole burndown at which the configured quota is what was held.
    let fitting =
        (u128::from(burndown) * u128::from(configured)).div_ceil(u128::from(learned.max(1)));
    format!(
        "configured {configured} tokens per window, and the server's throttles brought the limit \
         in force to {learned} (with `Aimd::learned`, what the ledger held when it refused): your \
         quota is lower than configured, another consumer shares it, or the burndown table is \
         low for {model} (it says {burndown}x; a server settling output at about {fitting}x \
         would explain it if the output is most of the cost)"
    )
}

/// Retries, re-sign hand-backs and give-ups of the stack, for the report.
#[derive(Debug, Default)]
pub(crate) struct RetryCounts {
    retries: AtomicU64,
    /// Attempts that left the queue to be re-signed (from the admission layer's events).
    resigns: AtomicU64,
    /// Calls the retry layer gave back to the caller with an error.
    give_ups: AtomicU64,
}

/// The classifier of the setup's retry layer: [`Bedrock`]'s, except for an attempt that left
/// the queue before its signature expired ([`LeftQueue`]). That one is no failure of the call:
/// the SDK re-signs it and it takes back its place in line. So the retry layer hands it back as
/// it came, neither retried (only a re-signed attempt can go on) nor counted as a give-up (the
/// caller never sees it); the report counts it among the re-signs.
#[derive(Debug, Clone)]
pub struct ResignHandBack(pub(crate) Bedrock);

impl Classify<HttpResponse, BoxError> for ResignHandBack {
    fn classify(&self, result: Result<&HttpResponse, &BoxError>) -> Classification {
        match result {
            // "Success" for the retry layer: give the result back unchanged, decide nothing.
            Err(error) if error.is::<LeftQueue>() => Classification::success(),
            _ => self.0.classify(result),
        }
    }
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
        for key in &mut report.keys {
            let (Some(model), Some(region)) = (&key.model, &key.region) else {
                continue;
            };
            if model.is_empty() {
                continue;
            }
            let burndown = self.observer.burndown.bedrock.output_burndown(model);
            key.burndown = Some(burndown);
            if let (Some(configured), Some(learned)) =
                (key.limits.configured.tokens, key.limits.effective.tokens)
                && learned < configured
            {
                key.warnings
                    .push(learned_limit_message(model, configured, learned, burndown));
            }
            if key.throttles.contains_key("tokens") {
                let bedrock_key = BedrockKey::new(region.as_str(), model.as_str());
                key.warnings
                    .push(self.observer.burndown.message(&bedrock_key));
            }
        }
        let counts = &self.observer.counts;
        report.retries = counts.retries.load(Ordering::Relaxed);
        report.resigns = counts.resigns.load(Ordering::Relaxed);
        report.give_ups = counts.give_ups.load(Ordering::Relaxed);
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
