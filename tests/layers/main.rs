//! The admission layers (rate limit, token budget, joint) on plain services, under
//! `tokio::time::pause()`.

mod resign;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bedrock_throttle::BoxError;
use bedrock_throttle::admit::{RateLimitLayer, TokenBudgetLayer};
use bedrock_throttle::budget::{AdmissionError, Aimd, Budget};
use bedrock_throttle::budget::{Dimension, DimensionStats, Quota};
use bedrock_throttle::classify::{Classification, SingleKey, ThrottleCause};
use tokio::time::{Instant, advance};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

const SECOND: Duration = Duration::from_secs(1);

fn per_second<K: Clone + Eq + std::hash::Hash + Send + Sync + 'static>(limit: u64) -> Budget<K> {
    Budget::builder()
        .requests(limit)
        .window(SECOND)
        .build()
        .unwrap()
}

/// The requests dimension of the single key.
fn requests(budget: &Budget<()>) -> DimensionStats {
    budget.stats(&()).unwrap().requests.unwrap()
}

/// The tokens dimension of the single key.
fn tokens_of(budget: &Budget<()>) -> DimensionStats {
    budget.stats(&()).unwrap().tokens.unwrap()
}

fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(Waker::noop()))
}

/// A response "status code" classifier.
fn status(result: Result<&u16, &BoxError>) -> Classification {
    match result {
        Ok(429) => Classification::throttled(ThrottleCause::Requests),
        Ok(430) => Classification::throttled(ThrottleCause::Tokens),
        Ok(503) => Classification::throttled(ThrottleCause::Capacity),
        Ok(_) => Classification::success(),
        Err(_) => Classification::transient(),
    }
}

// ---------------------------------------------------------------- rate limit

#[tokio::test(start_paused = true)]
async fn rate_limit_waits_instead_of_failing() {
    let budget = per_second(2);
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = {
        let calls = calls.clone();
        ServiceBuilder::new()
            .layer(RateLimitLayer::new(budget.clone(), SingleKey))
            .service_fn(move |n: u32| {
                calls.fetch_add(1, Ordering::SeqCst);
                // A concrete error type: with `BoxError` here, spawning the call hits
                // rust-lang/rust#64552, as with tower's own layers.
                async move { Ok::<u32, std::io::Error>(n * 2) }
            })
    };
    let start = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..7 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            let out = svc.oneshot(n).await.unwrap();
            (out, start.elapsed())
        }));
    }
    let mut done = Vec::new();
    for t in tasks {
        done.push(t.await.unwrap());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 7, "every request got through");
    // Two per second, in arrival order: 0,0,1,1,2,2,3 seconds.
    for (i, (out, at)) in done.iter().enumerate() {
        assert_eq!(*out, i as u32 * 2);
        assert_eq!(*at, SECOND * (i as u32 / 2));
    }
}

#[tokio::test(start_paused = true)]
async fn rate_limit_keys_are_independent() {
    let budget = per_second(1);
    let mut svc = ServiceBuilder::new()
        .layer(RateLimitLayer::new(budget, |req: &&'static str| *req))
        .service_fn(|_req: &'static str| async { Ok::<(), BoxError>(()) });
    let start = Instant::now();
    for key in ["a", "b", "c", "d"] {
        svc.ready().await.unwrap().call(key).await.unwrap();
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
    svc.ready().await.unwrap().call("a").await.unwrap();
    assert_eq!(start.elapsed(), SECOND);
}

#[tokio::test(start_paused = true)]
async fn admission_errors_downcast_and_inner_errors_pass_unchanged() {
    let budget: Budget<()> = Budget::builder()
        .requests(1)
        .window(SECOND)
        .max_queue(0)
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(RateLimitLayer::new(budget, SingleKey))
        .service_fn(|fail: bool| async move {
            if fail {
                Err(std::io::Error::other("boom"))
            } else {
                Ok(())
            }
        });
    let err = svc.ready().await.unwrap().call(true).await.unwrap_err();
    let io = err
        .downcast_ref::<std::io::Error>()
        .expect("the inner error, unwrapped");
    assert_eq!(io.to_string(), "boom");
    // The window is full: with no queue allowed, the next request is refused.
    let err = svc.ready().await.unwrap().call(false).await.unwrap_err();
    assert!(matches!(
        err.downcast_ref::<AdmissionError>(),
        Some(AdmissionError::QueueFull { depth: 0, would_wait: Some(w) }) if *w == SECOND
    ));
}

#[tokio::test(start_paused = true)]
async fn rate_limit_feedback_on_request_throttles_only() {
    let budget = per_second(10);
    let mut svc = ServiceBuilder::new()
        .layer(RateLimitLayer::new(budget.clone(), SingleKey).classify(status))
        .service_fn(|code: u16| async move { Ok::<u16, BoxError>(code) });
    // Throttles for other dimensions do not touch the request budget.
    for code in [200, 430, 503] {
        svc.ready().await.unwrap().call(code).await.unwrap();
    }
    let s = requests(&budget);
    assert_eq!((s.used, s.effective_limit), (3, 10));
    // A request throttle lowers the effective limit and exhausts the window up to it, not
    // counting the throttled request itself (which this layer, unlike the server, keeps
    // charged: one over).
    assert_eq!(svc.ready().await.unwrap().call(429).await.unwrap(), 429);
    let s = requests(&budget);
    assert_eq!((s.used, s.effective_limit), (8, 7));
    // The next request waits for the window to slide.
    let start = Instant::now();
    svc.ready().await.unwrap().call(200).await.unwrap();
    assert_eq!(start.elapsed(), SECOND);
}

#[tokio::test(start_paused = true)]
async fn feedback_goes_to_the_dimension_the_cause_names() {
    // Plain AIMD: its numbers are simple to state (the routing is the same learned).
    let budget: Budget<()> = Budget::builder()
        .requests(10)
        .tokens(1_000)
        .window(SECOND)
        .aimd(Aimd::plain())
        .build()
        .unwrap();
    let classify = |result: Result<&u16, &BoxError>| match result {
        Ok(429) => Classification::throttled(ThrottleCause::Requests),
        Ok(430) => Classification::throttled(ThrottleCause::Tokens),
        Ok(503) => Classification::throttled(ThrottleCause::Capacity),
        Ok(599) => Classification::throttled(ThrottleCause::Unknown),
        _ => Classification::success(),
    };
    let mut svc = ServiceBuilder::new()
        .layer(
            TokenBudgetLayer::new(budget.clone(), SingleKey, |_: &u16| 10, |_: &u16| Some(10))
                .classify(classify),
        )
        .service_fn(|code: u16| async move { Ok::<u16, BoxError>(code) });
    let limits = |b: &Budget<()>| {
        let s = b.stats(&()).unwrap();
        (
            s.dimension(Dimension::Requests).unwrap().effective_limit,
            s.dimension(Dimension::Tokens).unwrap().effective_limit,
        )
    };
    // Capacity is no quota's business.
    svc.ready().await.unwrap().call(503).await.unwrap();
    assert_eq!(limits(&budget), (10, 1_000));
    // A token throttle lowers the tokens dimension only.
    svc.ready().await.unwrap().call(430).await.unwrap();
    assert_eq!(limits(&budget), (10, 700));
    // A requests throttle, the requests dimension only. (This call waited for the exhausted
    // token window, while the token limit recovered a little: it is not lowered again.)
    svc.ready().await.unwrap().call(429).await.unwrap();
    let (requests_limit, tokens_limit) = limits(&budget);
    assert_eq!(requests_limit, 7);
    assert!((700..1_000).contains(&tokens_limit), "{tokens_limit}");
    // Unknown: both, once recovered.
    advance(SECOND * 10).await;
    svc.ready().await.unwrap().call(599).await.unwrap();
    assert_eq!(limits(&budget), (7, 700));
}

#[tokio::test(start_paused = true)]
async fn clones_of_layers_and_services_share_the_budget() {
    let budget = per_second(3);
    let layer = RateLimitLayer::new(budget.clone(), SingleKey);
    let inner = service_fn(|_: ()| async { Ok::<(), BoxError>(()) });
    let mut a = layer.clone().layer(inner);
    let mut b = layer.layer(inner);
    let mut c = a.clone();
    a.ready().await.unwrap().call(()).await.unwrap();
    b.ready().await.unwrap().call(()).await.unwrap();
    c.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(requests(&budget).used, 3);
    let start = Instant::now();
    b.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(
        start.elapsed(),
        SECOND,
        "the fourth waited, whichever clone sent it"
    );
}

/// A service whose readiness the test controls.
#[derive(Clone)]
struct Gate {
    open: Arc<AtomicBool>,
}

impl Service<()> for Gate {
    type Response = ();
    type Error = BoxError;
    type Future = std::future::Ready<Result<(), BoxError>>;
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.open.load(Ordering::SeqCst) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
    fn call(&mut self, _req: ()) -> Self::Future {
        std::future::ready(Ok(()))
    }
}

#[tokio::test(start_paused = true)]
async fn poll_ready_forwards_and_accessors_reach_the_inner_service() {
    let open = Arc::new(AtomicBool::new(false));
    let mut svc = RateLimitLayer::new(per_second(5), SingleKey).layer(Gate { open: open.clone() });
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_pending());
    svc.get_mut().open.store(true, Ordering::SeqCst);
    assert!(svc.get_ref().open.load(Ordering::SeqCst));
    assert!(svc.poll_ready(&mut cx).is_ready());
    svc.call(()).await.unwrap();
    let inner: Gate = svc.into_inner();
    assert!(inner.open.load(Ordering::SeqCst));
}

// ---------------------------------------------------------------- token budget

/// A fake model call: the request is (reserve, use); the response is the usage, or `None`
/// when the response does not say.
type Call = (u64, Option<u64>);

fn model() -> impl Service<Call, Response = Option<u64>, Error = BoxError, Future: Send> + Clone {
    service_fn(|(_, used): Call| async move { Ok::<Option<u64>, BoxError>(used) })
}

type Estimate = fn(&Call) -> u64;
type Usage = fn(&Option<u64>) -> Option<u64>;

fn token_layer(budget: &Budget<()>) -> TokenBudgetLayer<Budget<()>, SingleKey, Estimate, Usage> {
    TokenBudgetLayer::new(
        budget.clone(),
        SingleKey,
        (|req: &Call| req.0) as Estimate,
        (|res: &Option<u64>| *res) as Usage,
    )
}

fn tokens(limit: u64) -> Budget<()> {
    Budget::builder()
        .tokens(limit)
        .window(SECOND)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn token_budget_settles_refunds_at_once() {
    let budget = tokens(1_000);
    let mut svc = token_layer(&budget).layer(model());
    assert_eq!(
        svc.ready()
            .await
            .unwrap()
            .call((900, Some(100)))
            .await
            .unwrap(),
        Some(100)
    );
    let s = budget.stats(&()).unwrap();
    assert_eq!((s.tokens.unwrap().used, s.outstanding), (100, 0));
    // 900 fits at once thanks to the refund.
    let start = Instant::now();
    svc.ready()
        .await
        .unwrap()
        .call((900, Some(900)))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn token_budget_books_debt_that_later_admissions_wait_out() {
    let budget = tokens(1_000);
    let mut svc = token_layer(&budget).layer(model());
    // Reserved 100, used 600: 500 of debt booked at settlement.
    svc.ready()
        .await
        .unwrap()
        .call((100, Some(600)))
        .await
        .unwrap();
    assert_eq!(tokens_of(&budget).used, 600);
    advance(SECOND / 2).await;
    let start = Instant::now();
    // 500 fits exactly.
    svc.ready()
        .await
        .unwrap()
        .call((400, Some(400)))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    // One more token waits until the first call's charge (t=0) expires at t=1 s.
    svc.ready().await.unwrap().call((1, Some(1))).await.unwrap();
    assert_eq!(start.elapsed(), SECOND / 2);
}

#[tokio::test(start_paused = true)]
async fn unknown_usage_errors_and_cancelled_calls_keep_the_reservation() {
    let budget = tokens(1_000);
    let mut svc = token_layer(&budget).layer(model());
    // Usage unknown: the reservation stands.
    svc.ready().await.unwrap().call((300, None)).await.unwrap();
    assert_eq!(tokens_of(&budget).used, 300);

    // Inner error: the reservation stands, the error passes through.
    let mut failing = token_layer(&budget).layer(service_fn(|_: Call| async {
        Err::<Option<u64>, BoxError>("upstream failed".into())
    }));
    let err = failing
        .ready()
        .await
        .unwrap()
        .call((200, Some(1)))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "upstream failed");
    assert_eq!(tokens_of(&budget).used, 500);

    // Dropped mid-flight: the reservation stands, nothing is left outstanding.
    let mut hanging = token_layer(&budget).layer(service_fn(|_: Call| {
        std::future::pending::<Result<Option<u64>, BoxError>>()
    }));
    let mut call = hanging.ready().await.unwrap().call((250, Some(1)));
    assert!(poll_once(&mut Box::pin(&mut call)).is_pending());
    assert_eq!(budget.stats(&()).unwrap().outstanding, 1);
    drop(call);
    let s = budget.stats(&()).unwrap();
    assert_eq!((s.tokens.unwrap().used, s.outstanding), (750, 0));
}

#[tokio::test(start_paused = true)]
async fn token_budget_cost_above_limit_is_a_typed_error() {
    let budget = tokens(1_000);
    let mut svc = token_layer(&budget).layer(model());
    let err = svc
        .ready()
        .await
        .unwrap()
        .call((1_001, None))
        .await
        .unwrap_err();
    assert_eq!(
        err.downcast_ref::<AdmissionError>(),
        Some(&AdmissionError::CostAboveLimit {
            dimension: Dimension::Tokens,
            cost: 1_001,
            limit: 1_000
        })
    );
}

#[tokio::test(start_paused = true)]
async fn token_budget_feedback_on_token_throttles() {
    let budget = tokens(1_000);
    let classify = |result: Result<&Option<u64>, &BoxError>| match result {
        Ok(Some(0)) => Classification::throttled(ThrottleCause::Tokens),
        Ok(None) => Classification::throttled(ThrottleCause::Requests),
        _ => Classification::success(),
    };
    let mut svc = ServiceBuilder::new()
        .layer(token_layer(&budget).classify(classify))
        .service(model());
    // A request throttle is not this layer's business.
    svc.ready().await.unwrap().call((100, None)).await.unwrap();
    assert_eq!(tokens_of(&budget).effective_limit, 1_000);
    // A token throttle: the effective limit is lowered and the window exhausted up to it (the
    // throttled call's own 100 not counted), then the call settles at 0 (nothing was consumed)
    // and its 100 come back without reopening the window.
    svc.ready()
        .await
        .unwrap()
        .call((100, Some(0)))
        .await
        .unwrap();
    let s = tokens_of(&budget);
    assert_eq!((s.used, s.effective_limit), (700, 700));
    let start = Instant::now();
    svc.ready()
        .await
        .unwrap()
        .call((100, Some(100)))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), SECOND);
}

#[tokio::test(start_paused = true)]
async fn token_budget_waits_in_fifo_order_across_clones() {
    let budget = tokens(1_000);
    let svc = token_layer(&budget).layer(model());
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (i, reserve) in [800u64, 900, 100, 100].into_iter().enumerate() {
        let (svc, order) = (svc.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            svc.oneshot((reserve, Some(reserve))).await.unwrap();
            order.lock().unwrap().push((i, Instant::now()));
        }));
        tokio::task::yield_now().await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    let order = order.lock().unwrap().clone();
    let ids: Vec<usize> = order.iter().map(|(i, _)| *i).collect();
    // The 100s behind the 900 do not overtake it, although they would have fitted earlier.
    assert_eq!(ids, [0, 1, 2, 3]);
    assert_eq!(order[1].1, order[2].1);
}

// ---------------------------------------------------------------- joint admission

/// A call that takes time: (tokens reserved, tokens used, how long the model takes).
type Timed = (u64, u64, Duration);

/// Sends the four calls of the overrun scenario through `svc`, all arriving at once, and returns
/// the instants the model saw them, from the start. With 2 requests and 100 tokens per 60 s:
/// the first call reserves the whole token window for 50 s and refunds most of it; the others
/// are small.
async fn four_calls<S>(svc: S, sent: Arc<std::sync::Mutex<Vec<Instant>>>) -> Vec<Duration>
where
    S: Service<Timed, Response = u64, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    let start = Instant::now();
    let long = Duration::from_secs(50);
    let calls: [Timed; 4] = [
        (100, 10, long),
        (10, 10, Duration::ZERO),
        (10, 10, Duration::ZERO),
        (10, 10, Duration::ZERO),
    ];
    let mut tasks = Vec::new();
    for call in calls {
        let svc = svc.clone();
        tasks.push(tokio::spawn(
            async move { svc.oneshot(call).await.unwrap() },
        ));
        tokio::task::yield_now().await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    sent.lock().unwrap().iter().map(|t| *t - start).collect()
}

/// The most requests in any window of length `w` among `sent`.
fn most_in_a_window(sent: &[Duration], w: Duration) -> usize {
    sent.iter()
        .map(|&a| sent.iter().filter(|&&b| b >= a && b < a + w).count())
        .max()
        .unwrap_or(0)
}

/// A recording model: notes when each call arrives, takes its time, answers its usage.
fn recording(
    sent: Arc<std::sync::Mutex<Vec<Instant>>>,
) -> impl Service<Timed, Response = u64, Error = std::io::Error, Future: Send> + Clone {
    service_fn(move |(_, used, takes): Timed| {
        sent.lock().unwrap().push(Instant::now());
        async move {
            tokio::time::sleep(takes).await;
            Ok::<u64, std::io::Error>(used)
        }
    })
}

/// The scenario of the stacked limiters' overrun. Stacked, a request is charged its request
/// slot when the rate limiter admits it, then waits in the token budget: the second call's slot
/// is dated at 0 s but it leaves at 50 s (when the first refunds), and at 60 s two more slots
/// open: the model sees three requests in the window from 50 s. Admitted together (one budget
/// with both limits), no window of 60 s at the model holds more than 2.
#[tokio::test(start_paused = true)]
async fn joint_admission_never_puts_more_requests_than_the_limit_into_a_window() {
    const W: Duration = Duration::from_secs(60);
    let build =
        |quota: Quota| -> Budget<()> { Budget::builder().quota(quota).window(W).build().unwrap() };
    let estimate = |c: &Timed| c.0;
    let settle = |used: &u64| Some(*used);

    // Two limiters stacked, one budget each: the overrun.
    let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stacked = ServiceBuilder::new()
        .layer(RateLimitLayer::new(build(Quota::requests(2)), SingleKey))
        .layer(TokenBudgetLayer::new(
            build(Quota::tokens(100)),
            SingleKey,
            estimate,
            settle,
        ))
        .service(recording(sent.clone()));
    let seen = four_calls(stacked, sent).await;
    let secs = |s: &[Duration]| s.iter().map(Duration::as_secs).collect::<Vec<_>>();
    assert_eq!(secs(&seen), [0, 50, 60, 60], "stacked");
    assert_eq!(most_in_a_window(&seen, W), 3);

    // One budget, both limits, admitted together.
    let budget = build(Quota::tokens(100).with_requests(2));
    let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
    let joint = ServiceBuilder::new()
        .layer(TokenBudgetLayer::new(
            budget.clone(),
            SingleKey,
            estimate,
            settle,
        ))
        .service(recording(sent.clone()));
    let seen = four_calls(joint, sent).await;
    assert_eq!(secs(&seen), [0, 50, 60, 110], "joint");
    assert_eq!(most_in_a_window(&seen, W), 2);
    assert_eq!(budget.stats(&()).unwrap().outstanding, 0);
}

#[tokio::test(start_paused = true)]
async fn a_zero_token_request_still_counts_one_request() {
    let budget: Budget<()> = Budget::builder()
        .requests(1)
        .tokens(100)
        .window(SECOND)
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(TokenBudgetLayer::new(
            budget.clone(),
            SingleKey,
            |_: &()| 0,
            |_: &()| Some(0),
        ))
        .service_fn(|_: ()| async { Ok::<(), std::io::Error>(()) });
    let start = Instant::now();
    svc.ready().await.unwrap().call(()).await.unwrap();
    svc.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(
        start.elapsed(),
        SECOND,
        "the second request waited for the request slot"
    );
    assert_eq!(requests(&budget).used, 1);
    assert_eq!(tokens_of(&budget).used, 0);
}

// ---------------------------------------------------------------- observer

#[tokio::test(start_paused = true)]
async fn the_observer_sees_every_admission_event() {
    use bedrock_throttle::admit::{AdmissionLayer, Closures, Event};
    let budget: Budget<()> = Budget::builder()
        .tokens(100)
        .window(SECOND)
        .max_wait(SECOND * 5)
        .build()
        .unwrap();
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let observer = {
        let events = events.clone();
        move |_: &(), event: Event<'_>| {
            let line = match event {
                Event::Admitted {
                    tokens,
                    waited,
                    waited_on,
                } => format!("admitted {tokens} after {waited:?} on {waited_on:?}"),
                Event::Refused { .. } => "refused".to_owned(),
                Event::Completed { classification } => {
                    format!("completed {:?}", classification.throttle_cause())
                }
                Event::Settled { reserved, settled } => format!("settled {reserved} -> {settled}"),
                _ => "other".to_owned(),
            };
            events.lock().unwrap().push(line);
        }
    };
    let protocol = Closures::new(SingleKey)
        .tokens(|c: &Call| c.0, |used: &Option<u64>| *used)
        .classify(|r: Result<&Option<u64>, &BoxError>| match r {
            Ok(None) => Classification::throttled(ThrottleCause::Tokens),
            _ => Classification::success(),
        });
    let mut svc = AdmissionLayer::new(budget.clone(), protocol)
        .observe(observer)
        .layer(model());
    svc.ready()
        .await
        .unwrap()
        .call((80, Some(30)))
        .await
        .unwrap();
    // 90 more do not fit until the 30 expire.
    svc.ready()
        .await
        .unwrap()
        .call((90, Some(90)))
        .await
        .unwrap();
    // A cost above the whole limit is refused at once.
    assert!(
        svc.ready()
            .await
            .unwrap()
            .call((101, Some(1)))
            .await
            .is_err()
    );
    assert_eq!(
        *events.lock().unwrap(),
        [
            "admitted 80 after 0ns on None",
            "completed None",
            "settled 80 -> 30",
            "admitted 90 after 1s on Some(Tokens)",
            "completed None",
            "settled 90 -> 90",
            "refused",
        ]
    );
}
