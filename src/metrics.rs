//! Admission metrics through the [`metrics`](https://docs.rs/metrics) facade: the application
//! installs the exporter (Prometheus, OpenTelemetry, StatsD ...), the crate only records.
//!
//! # Why an observer
//!
//! The numbers a dashboard needs to tell "RPM-bound" from "TPM-bound", and a local queue from
//! a server throttle, are known at admission: who waited, on which limit, for how long, what
//! was reserved and settled, what the server refused and why. [`Metrics`] is an
//! [`Observe`]r of the admission layer (and, through [`Metrics::retry_observer`], of the retry
//! layer's decisions); with the feature off nothing of it is compiled, and with no observer
//! nothing is paid.
//!
//! # The names
//!
//! Every name, kind and unit is in [`METRICS`], one table. The OpenTelemetry GenAI client
//! metrics (`gen_ai.client.inference.usage.*`, `gen_ai.client.inference.duration`; status
//! "development", so not final) count input and output tokens and time per operation; the
//! admission events carry quota tokens (output with its burndown) and no call duration, so no
//! GenAI name applies to what is recorded here, and none is borrowed for a different quantity.
//! When the events carry the usage split and the duration, those names go in the same table.
//! Labels are bounded: `model`,
//! `region`, `scope` (on-demand, cross-region, global-cross-region) per key, plus `outcome`,
//! `reason`, `cause` or `dimension` from fixed sets; never a tenant or request id.
//!
//! # Bounded whatever callers send
//!
//! Keys come from requests: a gateway forwards the model id its users choose. So a key gets
//! labels of its own only when [`track`](Metrics::track) accepts it (the one-call setup tracks
//! the models with a configured or applied quota, and its
//! [allow-list](crate::sdk::BedrockThrottleBuilder::observe_models)), and only for the first
//! [`max_keys`](Metrics::max_keys) such keys at a time; every other key is recorded under one
//! series set whose labels all read `other`. A key unused for [`idle`](Metrics::idle) gives its
//! place back. The series a process records are then at most those of the tracked keys, plus
//! `other`: with a predicate that accepts a fixed set of keys, a fixed number.
//!
//! Histograms need explicit buckets in a Prometheus exporter (without them it renders
//! summaries): [`WAIT_BUCKETS`], [`RATIO_BUCKETS`].
//!
//! ```
//! use bedrock_throttle::admit::{Event, Observe};
//! use bedrock_throttle::metrics::Metrics;
//! use metrics_util::debugging::DebuggingRecorder;
//!
//! let recorder = DebuggingRecorder::new();
//! let snapshotter = recorder.snapshotter();
//! metrics::with_local_recorder(&recorder, || {
//!     let m = Metrics::new(|tenant: &&str| vec![("tenant", tenant.to_string())]);
//!     m.observe(&"acme", Event::Settled { reserved: 100, settled: 80 });
//! });
//! assert!(!snapshotter.snapshot().into_vec().is_empty());
//! ```

// Numbers here come from requests, responses and settings: no arithmetic may panic or wrap
// on them (issue 21). Each exception is an `#[allow]` that says why it cannot.
#![warn(clippy::arithmetic_side_effects)]

use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Label, Unit};

use crate::admit::{Event, Observe};
use crate::bounded::KeyMap;
use crate::budget::{AdmissionError, Budget, Dimension};
use crate::classify::{Outcome, ThrottleCause};
use crate::retry::RetryEvent;

/// The kind of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A counter.
    Counter,
    /// A gauge.
    Gauge,
    /// A histogram.
    Histogram,
}

/// One metric: its name, kind, unit and meaning.
#[derive(Debug, Clone, Copy)]
pub struct MetricDef {
    /// The name, as recorded (exporters may rewrite dots).
    pub name: &'static str,
    /// The kind.
    pub kind: Kind,
    /// The unit.
    pub unit: Unit,
    /// What it measures, and its labels beyond model/region/scope.
    pub help: &'static str,
}

macro_rules! table {
    ($($id:ident = $name:literal, $kind:ident, $unit:ident, $help:literal;)*) => {
        #[derive(Clone, Copy)]
        #[repr(usize)]
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        enum Id { $($id,)* }

        /// Every metric the crate records, in one table, the one place to rename them.
        pub const METRICS: &[MetricDef] = &[
            $(MetricDef { name: $name, kind: Kind::$kind, unit: Unit::$unit, help: $help },)*
        ];
    };
}

table! {
    ADMITTED = "bedrock_throttle.admissions", Counter, Count,
        "attempts admitted; outcome = immediate | waited";
    REFUSED = "bedrock_throttle.refusals", Counter, Count,
        "attempts refused locally; reason = cost-above-limit | wait-too-long | queue-full";
    RESIGNS = "bedrock_throttle.resigns", Counter, Count,
        "attempts that left the queue before their signature expired, handed back to be re-signed with their place kept (not refusals)";
    QUEUE_DEPTH = "bedrock_throttle.queue.depth", Gauge, Count,
        "attempts waiting on the key";
    QUEUE_WAIT = "bedrock_throttle.queue.wait", Histogram, Seconds,
        "time from arrival to admission of admitted attempts; dimension = the limit that made it wait, or none";
    RESERVED = "bedrock_throttle.tokens.reserved", Counter, Count,
        "tokens reserved at admission";
    SETTLED = "bedrock_throttle.tokens.settled", Counter, Count,
        "tokens booked at settlement (quota tokens: output counted with its burndown)";
    DEBT = "bedrock_throttle.tokens.debt", Gauge, Count,
        "tokens charged in the current window above the effective limit";
    ESTIMATE_ERROR = "bedrock_throttle.estimate.ratio", Histogram, Count,
        "settled / reserved at settlement (below 1: over-reserved; above 1: debt)";
    LIMIT_CONFIGURED = "bedrock_throttle.limit.configured", Gauge, Count,
        "configured limit per window; dimension = requests | tokens | tokens-per-day";
    LIMIT_EFFECTIVE = "bedrock_throttle.limit.effective", Gauge, Count,
        "limit in force after throttle feedback; dimension";
    THROTTLES = "bedrock_throttle.server.throttles", Counter, Count,
        "results the server throttled; cause = requests | tokens | tokens-per-day | capacity | model-not-ready | unknown";
    OUTCOMES = "bedrock_throttle.outcomes", Counter, Count,
        "attempt results; outcome = success | throttled | transient | fatal";
    RETRIES = "bedrock_throttle.retries", Counter, Count,
        "retries the retry layer started; outcome of the attempt retried (no per-key labels)";
    GIVE_UPS = "bedrock_throttle.give_ups", Counter, Count,
        "failed results the retry layer gave back to the caller; reason (no per-key labels)";
}

/// Buckets for wait histograms, in seconds: 0.01 × 2ⁿ up to 81.92 (OpenTelemetry's advice for
/// durations).
pub const WAIT_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/// Buckets for the settled / reserved ratio.
pub const RATIO_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0];

fn name(id: Id) -> &'static str {
    METRICS[id as usize].name
}

/// Registers every metric's unit and description with the installed recorder (optional:
/// exporters show them).
pub fn describe() {
    for m in METRICS {
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, m.unit, m.help),
            Kind::Gauge => metrics::describe_gauge!(m.name, m.unit, m.help),
            Kind::Histogram => metrics::describe_histogram!(m.name, m.unit, m.help),
        }
    }
}

const DIMS: [(Dimension, &str); 3] = [
    (Dimension::Requests, "requests"),
    (Dimension::Tokens, "tokens"),
    (Dimension::TokensPerDay, "tokens-per-day"),
];

const CAUSES: [(ThrottleCause, &str); 6] = [
    (ThrottleCause::Requests, "requests"),
    (ThrottleCause::Tokens, "tokens"),
    (ThrottleCause::TokensPerDay, "tokens-per-day"),
    (ThrottleCause::Capacity, "capacity"),
    (ThrottleCause::ModelNotReady, "model-not-ready"),
    (ThrottleCause::Unknown, "unknown"),
];

/// The handles of one key, registered once.
struct KeyHandles {
    admitted: [Counter; 2],
    refused: [Counter; 3],
    resigns: Counter,
    queue_depth: Gauge,
    wait: [Histogram; 4],
    reserved: Counter,
    settled: Counter,
    debt: Gauge,
    ratio: Histogram,
    configured: [Gauge; 3],
    effective: [Gauge; 3],
    throttles: [Counter; 6],
    outcomes: [Counter; 4],
}

impl KeyHandles {
    fn new(labels: &[Label]) -> Self {
        let with = |extra: Option<(&'static str, &'static str)>| {
            let mut l = labels.to_vec();
            if let Some((k, v)) = extra {
                l.push(Label::from_static_parts(k, v));
            }
            l
        };
        let counter = |id: Id, extra| metrics::counter!(name(id), with(extra));
        let gauge = |id: Id, extra| metrics::gauge!(name(id), with(extra));
        let histogram = |id: Id, extra| metrics::histogram!(name(id), with(extra));
        KeyHandles {
            admitted: ["immediate", "waited"].map(|o| counter(Id::ADMITTED, Some(("outcome", o)))),
            refused: ["cost-above-limit", "wait-too-long", "queue-full"]
                .map(|r| counter(Id::REFUSED, Some(("reason", r)))),
            resigns: counter(Id::RESIGNS, None),
            queue_depth: gauge(Id::QUEUE_DEPTH, None),
            wait: ["none", "requests", "tokens", "tokens-per-day"]
                .map(|d| histogram(Id::QUEUE_WAIT, Some(("dimension", d)))),
            reserved: counter(Id::RESERVED, None),
            settled: counter(Id::SETTLED, None),
            debt: gauge(Id::DEBT, None),
            ratio: histogram(Id::ESTIMATE_ERROR, None),
            configured: DIMS.map(|(_, d)| gauge(Id::LIMIT_CONFIGURED, Some(("dimension", d)))),
            effective: DIMS.map(|(_, d)| gauge(Id::LIMIT_EFFECTIVE, Some(("dimension", d)))),
            throttles: CAUSES.map(|(_, c)| counter(Id::THROTTLES, Some(("cause", c)))),
            outcomes: ["success", "throttled", "transient", "fatal"]
                .map(|o| counter(Id::OUTCOMES, Some(("outcome", o)))),
        }
    }
}

type LabelFn<K> = Arc<dyn Fn(&K) -> Vec<(&'static str, String)> + Send + Sync>;
type StatsFn<K> = Arc<dyn Fn(&K) -> Option<crate::budget::KeyStats> + Send + Sync>;

/// The label value of every label of the series that keys without labels of their own share.
pub const OTHER: &str = "other";

/// The most keys with labels of their own at a time, by default ([`Metrics::max_keys`]).
pub const DEFAULT_MAX_KEYS: usize = crate::bounded::DEFAULT_MAX_KEYS;

/// How long a key keeps its place unused, by default ([`Metrics::idle`]).
pub const DEFAULT_IDLE: Duration = Duration::from_secs(3600);

/// An [`Observe`]r that records admission metrics per key (see the [module docs](self)).
/// Clones share their handles and settings.
pub struct Metrics<K> {
    labels: LabelFn<K>,
    budget: Option<Budget<K>>,
    store: Option<StatsFn<K>>,
    keys: Arc<Mutex<KeyMap<K, Arc<KeyHandles>>>>,
}

impl<K> Clone for Metrics<K> {
    fn clone(&self) -> Self {
        Self {
            labels: Arc::clone(&self.labels),
            budget: self.budget.clone(),
            store: self.store.clone(),
            keys: Arc::clone(&self.keys),
        }
    }
}

impl<K> fmt::Debug for Metrics<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> Metrics<K> {
    /// Metrics labelled per key by `labels`: every key up to [`max_keys`](Self::max_keys),
    /// unless [`track`](Self::track) narrows it.
    pub fn new(labels: impl Fn(&K) -> Vec<(&'static str, String)> + Send + Sync + 'static) -> Self {
        Self {
            labels: Arc::new(labels),
            budget: None,
            store: None,
            keys: Arc::new(Mutex::new(KeyMap::new(DEFAULT_IDLE))),
        }
    }

    /// Labels of its own only for the keys `track` accepts; the others are recorded as
    /// `other` (see [bounded](self#bounded-whatever-callers-send)).
    pub fn track(self, track: impl Fn(&K) -> bool + Send + Sync + 'static) -> Self {
        self.lock().track = Some(Arc::new(track));
        self
    }

    /// At most `max` keys with labels of their own at a time (default
    /// [`DEFAULT_MAX_KEYS`]); further keys are recorded as `other` until one gives its place
    /// back.
    pub fn max_keys(self, max: usize) -> Self {
        self.lock().max = max;
        self
    }

    /// How long a key keeps its place unused (default [`DEFAULT_IDLE`]). When it comes back,
    /// it records into the same series again.
    pub fn idle(self, idle: Duration) -> Self {
        self.lock().idle = idle;
        self
    }

    /// How many keys have labels of their own now (`other` aside).
    pub fn key_count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeyMap<K, Arc<KeyHandles>>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Also sets the gauges (queue depth, debt, configured and effective limits) from
    /// `budget`'s state of the key at each admission and settlement.
    pub fn budget(mut self, budget: Budget<K>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// As [`budget`](Self::budget), from any store's view of the key (a shared store's
    /// figures are the fleet's as last read).
    pub fn store<St: crate::budget::QuotaStore<K>>(mut self, store: St) -> Self {
        self.store = Some(Arc::new(move |key: &K| store.stats(key)));
        self
    }

    /// The handles of `key`, or those of `other` (then `true`).
    fn handles(&self, key: &K) -> (Arc<KeyHandles>, bool) {
        let now = tokio::time::Instant::now();
        let mut keys = self.lock();
        let (h, other) = keys.entry(key, now, |key, other| {
            // `other` takes the label names of the first key folded into it.
            let labels: Vec<Label> = (self.labels)(key)
                .into_iter()
                .map(|(k, v)| {
                    if other {
                        Label::from_static_parts(k, OTHER)
                    } else {
                        Label::new(k, v)
                    }
                })
                .collect();
            Arc::new(KeyHandles::new(&labels))
        });
        (Arc::clone(h), other)
    }

    fn gauges(&self, key: &K, h: &KeyHandles) {
        let stats = match &self.store {
            Some(store) => store(key),
            None => self.budget.as_ref().and_then(|b| b.stats(key)),
        };
        let Some(stats) = stats else {
            return;
        };
        h.queue_depth.set(stats.waiters as f64);
        for (i, (d, _)) in DIMS.iter().enumerate() {
            if let Some(s) = stats.dimension(*d) {
                h.configured[i].set(s.limit as f64);
                h.effective[i].set(s.effective_limit as f64);
                if *d == Dimension::Tokens {
                    h.debt.set(s.used.saturating_sub(s.effective_limit) as f64);
                }
            }
        }
    }

    /// An observer for [`ThrottleRetryLayer::on_decision`](crate::retry::ThrottleRetryLayer::on_decision):
    /// counts retries by the outcome retried and give-ups by reason.
    pub fn retry_observer() -> impl Fn(&RetryEvent) + Send + Sync + 'static {
        |event: &RetryEvent| match event {
            RetryEvent::Retry { outcome, .. } => {
                metrics::counter!(name(Id::RETRIES), "outcome" => outcome_name(*outcome))
                    .increment(1)
            }
            RetryEvent::GiveUp { reason, .. } => {
                metrics::counter!(name(Id::GIVE_UPS), "reason" => reason.as_str()).increment(1)
            }
        }
    }
}

fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Success => "success",
        Outcome::Throttled(_) => "throttled",
        Outcome::Transient => "transient",
        Outcome::Fatal => "fatal",
    }
}

fn refusal(error: &AdmissionError) -> usize {
    match error {
        AdmissionError::CostAboveLimit { .. } => 0,
        AdmissionError::WaitTooLong { .. } => 1,
        _ => 2,
    }
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> Observe<K> for Metrics<K> {
    fn observe(&self, key: &K, event: Event<'_>) {
        let (h, other) = self.handles(key);
        // The gauges of a key's state mean nothing for keys taken together.
        let gauges = |key: &K, h: &KeyHandles| {
            if !other {
                self.gauges(key, h);
            }
        };
        match event {
            Event::Admitted {
                tokens,
                waited,
                waited_on,
            } => {
                // Waited: a full window held it (not the microseconds every admission takes).
                h.admitted[usize::from(waited_on.is_some())].increment(1);
                let dim = match waited_on {
                    None => 0,
                    Some(Dimension::Requests) => 1,
                    Some(Dimension::Tokens) => 2,
                    Some(Dimension::TokensPerDay) => 3,
                };
                h.wait[dim].record(waited.as_secs_f64());
                h.reserved.increment(tokens);
                gauges(key, &h);
            }
            Event::Refused { error, .. } => {
                h.refused[refusal(error)].increment(1);
                gauges(key, &h);
            }
            Event::LeftQueue { .. } => h.resigns.increment(1),
            Event::Completed { classification } => {
                let o = match classification.outcome {
                    Outcome::Success => 0,
                    Outcome::Throttled(cause) => {
                        let i = CAUSES.iter().position(|(c, _)| *c == cause).unwrap_or(5);
                        h.throttles[i].increment(1);
                        1
                    }
                    Outcome::Transient => 2,
                    Outcome::Fatal => 3,
                };
                h.outcomes[o].increment(1);
            }
            Event::Settled { reserved, settled } => {
                h.settled.increment(settled);
                if reserved > 0 {
                    h.ratio.record(settled as f64 / reserved as f64);
                }
                gauges(key, &h);
            }
        }
    }
}

#[cfg(feature = "bedrock")]
impl Metrics<crate::bedrock::BedrockKey> {
    /// Metrics for Bedrock keys, labelled `model`, `region` and `scope`.
    pub fn bedrock() -> Self {
        Self::new(|key: &crate::bedrock::BedrockKey| {
            vec![
                ("model", key.model().to_owned()),
                ("region", key.region().to_owned()),
                (
                    "scope",
                    crate::quotas::QuotaScope::of_model_id(key.model())
                        .as_str()
                        .to_owned(),
                ),
            ]
        })
    }
}
