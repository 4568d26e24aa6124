//! The cost of the stack per request, against the bare service.
//!
//! Stack (outermost first): `ThrottleRetryLayer` → admission (one budget with a requests and a
//! tokens limit, admitted together) → a no-op `tower::service_fn` that answers at once. Limits
//! are far above the load, so nothing ever waits: what is measured is the bookkeeping (one plan:
//! key and estimate; admission on both dimensions; settlement; one classification per layer;
//! retry budget deposit; request copy for a possible retry).
//!
//! Every sample is one loop of `ready().await` + `call().await` on a current-thread tokio runtime,
//! so each case pays the same async plumbing; overhead = stack − bare.
//!
//! Two flavours:
//! - **closures**: `u64` requests (the request is its own estimate), closures for key, estimate,
//!   settle and classify ([`TokenBudgetLayer`]);
//! - **Bedrock**: the [`Bedrock`] protocol ([`AdmissionLayer`]) on a small `http::Request<Bytes>`
//!   Converse body (key from the URI, estimate from the body, settlement from the JSON response
//!   body's `usage`, classification from the status). The response body is drained in both the
//!   bare and the stacked case, since settlement happens when it ends.
//!
//! A third group times the Bedrock pieces alone (`plan_of`, `clone_request`, `Usage::from_json`
//! on the same request and response), to show where the Bedrock overhead goes.
//!
//! The budgets use a 1 ms window, so each key's ledger stays short however many iterations
//! criterion runs (with a 60 s window every admission would stay in the ledger for a minute).
//!
//! Run: `cargo bench --all-features --bench stack`.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bedrock_throttle::admit::{AdmissionLayer, TokenBudgetLayer};
use bedrock_throttle::bedrock::{Bedrock, Usage};
use bedrock_throttle::budget::Budget;
use bedrock_throttle::classify::{Classification, CloneRequest};
use bedrock_throttle::retry::ThrottleRetryLayer;
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::{BodyExt, Full};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

const BIG: u64 = u64::MAX / 4;
const WINDOW: Duration = Duration::from_millis(1);

const URI: &str = "https://bedrock-runtime.us-east-1.amazonaws.com/model/us.anthropic.claude-sonnet-4-20250514-v1%3A0/converse";
const REQUEST_BODY: &str = r#"{"system":[{"text":"You are a concise assistant."}],"messages":[{"role":"user","content":[{"text":"Summarise the plot of Hamlet in two sentences."}]}],"inferenceConfig":{"maxTokens":256,"temperature":0.2}}"#;
const RESPONSE_BODY: &str = r#"{"output":{"message":{"role":"assistant","content":[{"text":"Prince Hamlet feigns madness to avenge his father's murder by his uncle Claudius. His hesitation leads to a cascade of deaths, including his own."}]}},"stopReason":"end_turn","usage":{"inputTokens":31,"outputTokens":38,"totalTokens":69},"metrics":{"latencyMs":812}}"#;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
}

fn budget<K: Clone + Eq + std::hash::Hash + Send + Sync + 'static>() -> Budget<K> {
    Budget::builder()
        .requests(BIG)
        .tokens(BIG)
        .window(WINDOW)
        .build()
        .expect("valid budget")
}

/// Times `iters` requests through `service`, each made by `request()`, with `drain` applied to
/// every response.
async fn run<S, Req, F, D, Fut>(
    mut service: S,
    iters: u64,
    mut request: F,
    mut drain: D,
) -> Duration
where
    S: Service<Req>,
    S::Error: std::fmt::Debug,
    F: FnMut() -> Req,
    D: FnMut(S::Response) -> Fut,
    Fut: Future<Output = ()>,
{
    let start = Instant::now();
    for _ in 0..iters {
        let response = service
            .ready()
            .await
            .expect("ready")
            .call(request())
            .await
            .expect("response");
        drain(response).await;
    }
    start.elapsed()
}

fn closures(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("stack/closures");
    g.throughput(Throughput::Elements(1));

    let bare = service_fn(|tokens: u64| async move { Ok::<u64, Infallible>(tokens / 2) });

    g.bench_function("bare service", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| run(bare, iters, || 100u64, |_| async {}))
    });

    let classify = |result: Result<&u64, &bedrock_throttle::BoxError>| match result {
        Ok(_) => Classification::success(),
        Err(_) => Classification::transient(),
    };
    let stack = ServiceBuilder::new()
        .layer(ThrottleRetryLayer::new(classify))
        .layer(TokenBudgetLayer::new(
            budget::<u32>(),
            |_: &u64| 7u32,
            |tokens: &u64| *tokens,
            |used: &u64| Some(*used),
        ))
        .service(bare);

    g.bench_function("retry + admission", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| run(stack.clone(), iters, || 100u64, |_| async {}))
    });
    g.finish();
}

fn bedrock(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("stack/bedrock");
    g.throughput(Throughput::Elements(1));

    let request = http::Request::post(URI)
        .body(Bytes::from_static(REQUEST_BODY.as_bytes()))
        .expect("a valid request");
    let bare = service_fn(|_request: http::Request<Bytes>| async {
        Ok::<_, Infallible>(
            http::Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(RESPONSE_BODY.as_bytes())))
                .expect("a valid response"),
        )
    });

    g.bench_function("bare service", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            run(
                bare,
                iters,
                || request.clone(),
                |response| async move {
                    response.into_body().collect().await.expect("body");
                },
            )
        })
    });

    let bedrock = Bedrock::new();
    let stack = ServiceBuilder::new()
        .layer(ThrottleRetryLayer::new(bedrock.clone()).clone_with(bedrock.clone()))
        .layer(AdmissionLayer::new(budget(), bedrock.clone()))
        .service(bare);

    g.bench_function("retry + admission (Bedrock)", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            run(
                stack.clone(),
                iters,
                || request.clone(),
                |response| async move {
                    response.into_body().collect().await.expect("body");
                },
            )
        })
    });

    // The same stack observed as `BedrockThrottle` observes it: the capacity report's recorder
    // and, with feature `metrics`, the metrics into an installed Prometheus recorder.
    let budget = budget();
    let recorder = bedrock_throttle::report::CapacityRecorder::new(WINDOW, 60);
    #[cfg(feature = "metrics")]
    let metrics = {
        let _ = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets(bedrock_throttle::metrics::WAIT_BUCKETS)
            .expect("buckets")
            .install_recorder();
        bedrock_throttle::metrics::Metrics::bedrock().budget(budget.clone())
    };
    let observer = move |key: &bedrock_throttle::bedrock::BedrockKey,
                         event: bedrock_throttle::admit::Event<'_>| {
        use bedrock_throttle::admit::Observe;
        recorder.observe(key, event);
        #[cfg(feature = "metrics")]
        metrics.observe(key, event);
    };
    let observed = ServiceBuilder::new()
        .layer(ThrottleRetryLayer::new(bedrock.clone()).clone_with(bedrock.clone()))
        .layer(AdmissionLayer::new(budget, bedrock.clone()).observe(observer))
        .service(bare);
    let name = if cfg!(feature = "metrics") {
        "retry + admission (Bedrock) + report + metrics"
    } else {
        "retry + admission (Bedrock) + report"
    };
    g.bench_function(name, |b| {
        b.to_async(&rt).iter_custom(|iters| {
            run(
                observed.clone(),
                iters,
                || request.clone(),
                |response| async move {
                    response.into_body().collect().await.expect("body");
                },
            )
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

/// The Bedrock work of one request through the stack, piece by piece (one plan per attempt).
fn bedrock_pieces(c: &mut Criterion) {
    let mut g = c.benchmark_group("stack/bedrock pieces");
    g.throughput(Throughput::Elements(1));
    let bedrock = Bedrock::new();
    let request = http::Request::post(URI)
        .body(Bytes::from_static(REQUEST_BODY.as_bytes()))
        .expect("a valid request");
    g.bench_function("plan_of", |b| {
        b.iter(|| bedrock.plan_of(std::hint::black_box(&request)))
    });
    g.bench_function("clone_request", |b| {
        b.iter(|| bedrock.clone_request(std::hint::black_box(&request)))
    });
    g.bench_function("Usage::from_json", |b| {
        b.iter(|| Usage::from_json(std::hint::black_box(RESPONSE_BODY.as_bytes())))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = closures, bedrock, bedrock_pieces
}
criterion_main!(benches);
