//! Metrics, hermetic: `metrics-util`'s debugging recorder as the local recorder, a paused
//! clock, and each metric checked to move as documented.

#![cfg(feature = "metrics")]

mod scrape;

use std::time::Duration;

use bedrock_throttle::admit::{AdmissionLayer, Closures};
use bedrock_throttle::budget::Budget;
use bedrock_throttle::classify::{Classification, ThrottleCause};
use bedrock_throttle::metrics::Metrics;
use bedrock_throttle::retry::{Backoff, ThrottleRetryLayer};
use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tower::{Service, ServiceBuilder, ServiceExt};

/// Running totals over snapshots (the debugging recorder hands out counter and histogram
/// deltas at each snapshot; gauges are their last value).
#[derive(Default)]
pub(crate) struct Totals {
    series: Vec<Series>,
}

/// Name, labels, kind, value.
type Series = (String, Vec<(String, String)>, MetricKind, f64);

impl Totals {
    fn refresh(&mut self, snap: &Snapshotter) {
        for (key, _, _, v) in snap.snapshot().into_vec() {
            let name = key.key().name().to_owned();
            let labels: Vec<(String, String)> = key
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            let (kind, delta) = match v {
                DebugValue::Counter(n) => (MetricKind::Counter, n as f64),
                DebugValue::Gauge(g) => (MetricKind::Gauge, g.into_inner()),
                DebugValue::Histogram(h) => (MetricKind::Histogram, h.len() as f64),
            };
            match self
                .series
                .iter_mut()
                .find(|(n, l, k, _)| *n == name && *l == labels && *k == kind)
            {
                Some(entry) if kind == MetricKind::Gauge => entry.3 = delta,
                Some(entry) => entry.3 += delta,
                None => self.series.push((name, labels, kind, delta)),
            }
        }
    }

    /// The value of `name` summed over the series whose labels include all of `labels`
    /// (counters: the count; gauges: the value; histograms: the number of samples).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.series
            .iter()
            .filter(|(n, l, _, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.3)
            .sum()
    }
}

#[derive(Clone, Copy)]
struct Answer {
    used: u64,
    throttled: Option<ThrottleCause>,
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn each_metric_moves_as_documented() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let budget = Budget::builder()
        .requests(3)
        .tokens(1_000)
        .window(Duration::from_secs(60))
        .max_wait(Duration::from_secs(90))
        .without_aimd()
        .build()
        .unwrap();
    let metrics =
        Metrics::new(|k: &&'static str| vec![("model", (*k).to_owned())]).budget(budget.clone());
    let protocol = Closures::new(|_: &u64| "m")
        .tokens(|t: &u64| *t, |a: &Answer| Some(a.used))
        .classify(|r: Result<&Answer, &std::io::Error>| match r {
            Ok(Answer {
                throttled: Some(c), ..
            }) => Classification::throttled(*c),
            _ => Classification::success(),
        });
    let retry =
        ThrottleRetryLayer::new(|r: Result<&Answer, &bedrock_throttle::BoxError>| match r {
            Ok(Answer {
                throttled: Some(c), ..
            }) => Classification::throttled(*c),
            _ => Classification::success(),
        })
        .backoff(Backoff::new(Duration::from_millis(10), 2.0, Duration::from_millis(10)).unwrap())
        .on_decision(Metrics::<&'static str>::retry_observer());
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = calls.clone();
    let mut svc = ServiceBuilder::new()
        .layer(retry)
        .layer(AdmissionLayer::new(budget.clone(), protocol).observe(metrics))
        .service_fn(move |tokens: u64| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                // The second attempt ever is throttled on tokens, then answered.
                let throttled = match n {
                    1 => Some(ThrottleCause::Tokens),
                    4 => Some(ThrottleCause::TokensPerDay),
                    _ => None,
                };
                Ok::<_, std::io::Error>(Answer {
                    used: tokens / 2,
                    throttled,
                })
            }
        });

    let mut t = Totals::default();
    // 1: admitted at once, 400 reserved, 200 settled.
    svc.ready().await.unwrap().call(400).await.unwrap();
    t.refresh(&snap);
    assert_eq!(
        t.get(
            "bedrock_throttle.admissions",
            &[("outcome", "immediate"), ("model", "m")]
        ),
        1.0
    );
    assert_eq!(t.get("bedrock_throttle.tokens.reserved", &[]), 400.0);
    assert_eq!(t.get("bedrock_throttle.tokens.settled", &[]), 200.0);
    assert_eq!(t.get("bedrock_throttle.estimate.ratio", &[]), 1.0);
    assert_eq!(
        t.get(
            "bedrock_throttle.limit.configured",
            &[("dimension", "tokens")]
        ),
        1_000.0
    );
    assert_eq!(
        t.get(
            "bedrock_throttle.limit.effective",
            &[("dimension", "requests")]
        ),
        3.0
    );
    assert_eq!(
        t.get("bedrock_throttle.outcomes", &[("outcome", "success")]),
        1.0
    );

    // 2: throttled on tokens (one server throttle, one retry), then admitted and answered.
    svc.ready().await.unwrap().call(100).await.unwrap();
    t.refresh(&snap);
    assert_eq!(
        t.get("bedrock_throttle.server.throttles", &[("cause", "tokens")]),
        1.0
    );
    assert_eq!(
        t.get(
            "bedrock_throttle.server.throttles",
            &[("cause", "requests")]
        ),
        0.0
    );
    assert_eq!(
        t.get("bedrock_throttle.retries", &[("outcome", "throttled")]),
        1.0
    );
    assert_eq!(
        t.get("bedrock_throttle.outcomes", &[("outcome", "throttled")]),
        1.0
    );

    // 3: a cost above the whole limit: refused locally, never sent.
    let err = svc.ready().await.unwrap().call(5_000).await;
    assert!(err.is_err());
    t.refresh(&snap);
    assert_eq!(
        t.get(
            "bedrock_throttle.refusals",
            &[("reason", "cost-above-limit")]
        ),
        1.0
    );

    // 4: the requests window (3) is full after three attempts, and the tokens throttle of
    // call 2 exhausted the tokens window: the next waits, on tokens (the window the server
    // named, full for the rest of the window).
    svc.ready().await.unwrap().call(10).await.unwrap();
    t.refresh(&snap);
    assert_eq!(
        t.get("bedrock_throttle.admissions", &[("outcome", "waited")]),
        1.0
    );
    assert_eq!(
        t.get("bedrock_throttle.queue.wait", &[("dimension", "tokens")]),
        1.0
    );
    // Every admission recorded a wait sample (zero for the immediate ones).
    assert_eq!(t.get("bedrock_throttle.queue.wait", &[]), 4.0);
    assert_eq!(t.get("bedrock_throttle.queue.depth", &[]), 0.0);
    assert_eq!(t.get("bedrock_throttle.tokens.debt", &[]), 0.0);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 4);

    // 5: the daily quota is spent: not retried, one give-up.
    svc.ready().await.unwrap().call(10).await.unwrap();
    t.refresh(&snap);
    assert_eq!(
        t.get(
            "bedrock_throttle.server.throttles",
            &[("cause", "tokens-per-day")]
        ),
        1.0
    );
    assert_eq!(
        t.get("bedrock_throttle.give_ups", &[("reason", "not-retryable")]),
        1.0
    );
    assert_eq!(t.get("bedrock_throttle.retries", &[]), 1.0);
}
