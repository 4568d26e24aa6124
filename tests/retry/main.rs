//! Integration tests of `ThrottleRetryLayer`, all on tokio's paused clock.
//!
//! The inner service is scripted: attempt `n` plays step `n` of its script (the last step
//! repeats), records when it started, and answers with a reply that carries its attempt number,
//! so a test can tell exactly which attempt's result reached the caller.

mod waiting;

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bedrock_throttle::classify::{Classification, ThrottleCause};
use bedrock_throttle::retry::{
    Backoff, ConfigError, RetryBudget, ThrottleRetry, ThrottleRetryLayer,
};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

// ----- the scripted service -----

/// What one attempt does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Ok,
    Throttle(ThrottleCause),
    /// Throttled, with a server-suggested delay.
    ThrottleFor(ThrottleCause, Duration),
    Fatal,
    /// An `Err`, classified transient.
    Fail,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Reply {
    step: Step,
    attempt: u32,
}

#[derive(Debug, PartialEq, Eq)]
struct Failure {
    attempt: u32,
}

fn classify(result: Result<&Reply, &Failure>) -> Classification {
    match result {
        Err(_) => Classification::transient(),
        Ok(reply) => match reply.step {
            Step::Ok => Classification::success(),
            Step::Throttle(cause) => Classification::throttled(cause),
            Step::ThrottleFor(cause, after) => {
                Classification::throttled(cause).with_retry_after(Some(after))
            }
            Step::Fatal => Classification::fatal(),
            Step::Fail => unreachable!("Fail is an Err"),
        },
    }
}

#[derive(Default)]
struct Log {
    starts: Mutex<Vec<Instant>>,
}

impl Log {
    fn attempts(&self) -> usize {
        self.starts.lock().unwrap().len()
    }
    fn starts(&self) -> Vec<Instant> {
        self.starts.lock().unwrap().clone()
    }
    fn clear(&self) {
        self.starts.lock().unwrap().clear();
    }
}

/// A service that plays `script`, each attempt taking `took` (on the paused clock).
fn scripted<Req: Send + 'static>(
    script: Vec<Step>,
    took: Duration,
) -> (
    impl Service<Req, Response = Reply, Error = Failure, Future: Send> + Clone + Send,
    Arc<Log>,
) {
    assert!(!script.is_empty());
    let log = Arc::new(Log::default());
    let log2 = log.clone();
    let script = Arc::new(script);
    let service = tower::service_fn(move |_request: Req| {
        let (log, script) = (log2.clone(), script.clone());
        async move {
            let attempt = {
                let mut starts = log.starts.lock().unwrap();
                starts.push(Instant::now());
                starts.len() as u32
            };
            let step = script[(attempt as usize - 1).min(script.len() - 1)];
            if !took.is_zero() {
                tokio::time::sleep(took).await;
            }
            match step {
                Step::Fail => Err(Failure { attempt }),
                step => Ok(Reply { step, attempt }),
            }
        }
    });
    (service, log)
}

fn always(step: Step) -> Vec<Step> {
    vec![step]
}

const fn nz(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(n) => n,
        None => panic!("zero"),
    }
}

/// A budget that never stops a retry, for tests about something else.
fn unlimited() -> RetryBudget {
    RetryBudget::new(Duration::from_secs(10), u32::MAX, 0.0).unwrap()
}

/// A near-zero backoff, for tests about something else.
fn quick() -> Backoff {
    Backoff::new(Duration::from_millis(1), 1.0, Duration::from_millis(1)).unwrap()
}

/// The classifier as a nameable type.
type Classifier = fn(Result<&Reply, &Failure>) -> Classification;

fn layer() -> ThrottleRetryLayer<Classifier> {
    ThrottleRetryLayer::new(classify as Classifier)
        .budget(unlimited())
        .backoff(quick())
}

async fn call<S, Req>(service: &mut S, request: Req) -> Result<S::Response, S::Error>
where
    S: Service<Req>,
{
    service.ready().await?.call(request).await
}

// ----- backoff -----

#[test]
fn backoff_samples_stay_within_full_jitter_bounds() {
    let backoff = Backoff::default();
    let mut rng = fastrand::Rng::with_seed(0xB0FF);
    for retry in 1..=8 {
        let cap = backoff.cap(retry);
        assert_eq!(
            cap,
            Duration::from_secs([1, 2, 4, 8, 16, 20, 20, 20][retry as usize - 1])
        );
        let samples: Vec<Duration> = (0..2000).map(|_| backoff.delay(retry, &mut rng)).collect();
        assert!(samples.iter().all(|d| *d <= cap), "a delay above {cap:?}");
        // Full jitter covers the whole range, not only its upper half ("equal jitter") and not
        // one value.
        assert!(
            samples.iter().any(|d| *d < cap / 10),
            "no small delay for retry {retry}"
        );
        assert!(
            samples.iter().any(|d| *d > cap * 9 / 10),
            "no large delay for retry {retry}"
        );
        let first = samples[0];
        assert!(samples.iter().any(|d| *d != first));
    }
}

#[tokio::test(start_paused = true)]
async fn observed_delays_stay_within_full_jitter_bounds() {
    let backoff = Backoff::default();
    let (inner, log) = scripted::<u8>(
        always(Step::Throttle(ThrottleCause::Tokens)),
        Duration::ZERO,
    );
    let mut service = layer()
        .backoff(backoff)
        .max_attempts(nz(7))
        .seed(1)
        .layer(inner);

    let mut gaps_by_retry: Vec<Vec<Duration>> = vec![Vec::new(); 6];
    for _ in 0..40 {
        log.clear();
        call(&mut service, 0).await.unwrap();
        let starts = log.starts();
        assert_eq!(starts.len(), 7);
        for (i, pair) in starts.windows(2).enumerate() {
            gaps_by_retry[i].push(pair[1] - pair[0]);
        }
    }
    for (i, gaps) in gaps_by_retry.iter().enumerate() {
        let cap = backoff.cap(i as u32 + 1);
        // tokio's timer has a 1 ms resolution: a sleep may end up to 1 ms late.
        assert!(
            gaps.iter().all(|g| *g <= cap + Duration::from_millis(1)),
            "retry {}: {gaps:?} above {cap:?}",
            i + 1
        );
        assert!(
            gaps.iter().any(|g| *g != gaps[0]),
            "retry {}: all equal",
            i + 1
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_gives_the_same_delays() {
    async fn timeline(seed: u64) -> Vec<Duration> {
        let (inner, log) = scripted::<u8>(always(Step::Fail), Duration::ZERO);
        let mut service = layer()
            .backoff(Backoff::default())
            .max_attempts(nz(5))
            .seed(seed)
            .layer(inner);
        call(&mut service, 0).await.unwrap_err();
        let starts = log.starts();
        starts.iter().map(|t| *t - starts[0]).collect()
    }
    assert_eq!(timeline(9).await, timeline(9).await);
    assert_ne!(timeline(9).await, timeline(10).await);
}

// ----- attempts -----

#[tokio::test(start_paused = true)]
async fn attempts_are_capped_per_cause() {
    use ThrottleCause::*;
    let cases: Vec<(&str, Step, ThrottleRetryLayer<_>, usize)> = vec![
        ("default, requests", Step::Throttle(Requests), layer(), 3),
        ("default, transient", Step::Fail, layer(), 3),
        ("default, capacity", Step::Throttle(Capacity), layer(), 3),
        (
            "default, model not ready",
            Step::Throttle(ModelNotReady),
            layer(),
            5,
        ),
        (
            "max 4",
            Step::Throttle(Requests),
            layer().max_attempts(nz(4)),
            4,
        ),
        (
            "max 1 keeps the model-not-ready override",
            Step::Throttle(ModelNotReady),
            layer().max_attempts(nz(1)),
            5,
        ),
        ("max 1", Step::Fail, layer().max_attempts(nz(1)), 1),
        (
            "tokens capped at 2",
            Step::Throttle(Tokens),
            layer().attempts_for(Tokens, nz(2)),
            2,
        ),
        (
            "model not ready lowered to 2",
            Step::Throttle(ModelNotReady),
            layer().attempts_for(ModelNotReady, nz(2)),
            2,
        ),
    ];
    for (name, step, layer, expected) in cases {
        let (inner, log) = scripted::<u8>(always(step), Duration::ZERO);
        let mut service = layer.layer(inner);
        let _ = call(&mut service, 0).await;
        assert_eq!(log.attempts(), expected, "{name}");
    }
}

#[tokio::test(start_paused = true)]
async fn attempts_are_counted_across_causes() {
    // Two transient failures, then model-not-ready (cap 5): 2 attempts already count, so three
    // more model-not-ready attempts follow, five in all.
    let (inner, log) = scripted::<u8>(
        vec![
            Step::Fail,
            Step::Fail,
            Step::Throttle(ThrottleCause::ModelNotReady),
        ],
        Duration::ZERO,
    );
    let mut service = layer().layer(inner);
    let reply = call(&mut service, 0).await.unwrap();
    assert_eq!(reply.attempt, 5);
    assert_eq!(log.attempts(), 5);
}

#[tokio::test(start_paused = true)]
async fn results_that_waiting_cannot_cure_are_returned_at_once() {
    for step in [
        Step::Ok,
        Step::Fatal,
        Step::Throttle(ThrottleCause::TokensPerDay),
        Step::ThrottleFor(ThrottleCause::TokensPerDay, Duration::from_secs(1)),
    ] {
        let (inner, log) = scripted::<u8>(always(step), Duration::ZERO);
        // Even with a generous cap for that cause.
        let mut service = layer()
            .attempts_for(ThrottleCause::TokensPerDay, nz(10))
            .layer(inner);
        let start = Instant::now();
        let reply = call(&mut service, 0).await.unwrap();
        assert_eq!(reply, Reply { step, attempt: 1 });
        assert_eq!(log.attempts(), 1, "{step:?}");
        assert_eq!(Instant::now(), start, "{step:?}: no wait");
    }
}

#[tokio::test(start_paused = true)]
async fn a_retry_that_succeeds_returns_the_success() {
    let (inner, log) = scripted::<String>(
        vec![
            Step::Throttle(ThrottleCause::Requests),
            Step::Fail,
            Step::Ok,
        ],
        Duration::ZERO,
    );
    let mut service = layer().layer(inner);
    let reply = call(&mut service, "hi".to_owned()).await.unwrap();
    assert_eq!(
        reply,
        Reply {
            step: Step::Ok,
            attempt: 3
        }
    );
    assert_eq!(log.attempts(), 3);
}

// ----- giving up -----

#[tokio::test(start_paused = true)]
async fn the_give_up_result_is_the_last_attempts_own() {
    // A response: the third attempt's, with its own attempt number.
    let (inner, _) = scripted::<u8>(
        always(Step::Throttle(ThrottleCause::Unknown)),
        Duration::ZERO,
    );
    let mut service = layer().layer(inner);
    let reply: Reply = call(&mut service, 0).await.unwrap();
    assert_eq!(
        reply,
        Reply {
            step: Step::Throttle(ThrottleCause::Unknown),
            attempt: 3
        }
    );

    // An error: the inner service's own error type and value, not wrapped.
    let (inner, _) = scripted::<u8>(always(Step::Fail), Duration::ZERO);
    let mut service = layer().layer(inner);
    let error: Failure = call(&mut service, 0).await.unwrap_err();
    assert_eq!(error, Failure { attempt: 3 });

    // Mixed: the last attempt decides, not the first.
    let (inner, _) = scripted::<u8>(
        vec![Step::Fail, Step::Throttle(ThrottleCause::Requests)],
        Duration::ZERO,
    );
    let mut service = layer().layer(inner);
    assert_eq!(call(&mut service, 0).await.unwrap().attempt, 3);
}

// ----- budget -----

#[tokio::test(start_paused = true)]
async fn an_exhausted_budget_stops_retries() {
    let budget = RetryBudget::new(Duration::from_secs(10), 2, 0.0).unwrap();
    let (inner, log) = scripted::<u8>(
        always(Step::Throttle(ThrottleCause::Requests)),
        Duration::ZERO,
    );
    let mut service = layer().budget(budget.clone()).layer(inner);

    call(&mut service, 0).await.unwrap();
    assert_eq!(log.attempts(), 3, "the floor pays for two retries");
    log.clear();

    let reply = call(&mut service, 0).await.unwrap();
    assert_eq!(log.attempts(), 1, "the budget is spent: no retry");
    assert_eq!(reply.attempt, 1);
    log.clear();

    // Once the window has passed, the floor is available again.
    tokio::time::advance(Duration::from_secs(11)).await;
    call(&mut service, 0).await.unwrap();
    assert_eq!(log.attempts(), 3);
}

#[tokio::test(start_paused = true)]
async fn the_budget_grows_with_first_attempts() {
    // No floor, one retry per two first attempts.
    let budget = RetryBudget::new(Duration::from_secs(10), 0, 0.5).unwrap();
    let (inner, log) = scripted::<u8>(always(Step::Fail), Duration::ZERO);
    let mut service = layer().budget(budget).layer(inner);

    call(&mut service, 0).await.unwrap_err();
    assert_eq!(log.attempts(), 1, "one first attempt pays for half a retry");
    call(&mut service, 0).await.unwrap_err();
    assert_eq!(log.attempts(), 3, "two first attempts pay for one retry");
}

#[tokio::test(start_paused = true)]
async fn a_throttle_storm_cannot_multiply_load() {
    // 100 concurrent calls, all throttled: without a budget they would make 300 attempts.
    let budget = RetryBudget::new(Duration::from_secs(60), 5, 0.1).unwrap();
    let (inner, log) = scripted::<u8>(
        always(Step::Throttle(ThrottleCause::Requests)),
        Duration::ZERO,
    );
    let mut service = ThrottleRetryLayer::new(classify)
        .budget(budget)
        .layer(inner);
    let mut calls = Vec::new();
    for _ in 0..100 {
        calls.push(service.ready().await.unwrap().call(0));
    }
    let replies = futures_util::future::join_all(calls).await;
    assert!(replies.iter().all(Result::is_ok));
    assert_eq!(log.attempts(), 100 + 5 + 10);
}

#[tokio::test(start_paused = true)]
async fn clones_share_the_budget() {
    let budget = RetryBudget::new(Duration::from_secs(10), 1, 0.0).unwrap();
    let retry = layer().budget(budget);
    let (inner_a, log_a) = scripted::<u8>(always(Step::Fail), Duration::ZERO);
    let (inner_c, log_c) = scripted::<u8>(always(Step::Fail), Duration::ZERO);

    let mut a = retry.layer(inner_a);
    let mut b = a.clone();
    let mut c = retry.clone().layer(inner_c);

    call(&mut a, 0).await.unwrap_err();
    assert_eq!(log_a.attempts(), 2, "the floor pays for one retry");
    call(&mut b, 0).await.unwrap_err();
    assert_eq!(log_a.attempts(), 3, "a clone of the service finds it spent");
    call(&mut c, 0).await.unwrap_err();
    assert_eq!(
        log_c.attempts(),
        1,
        "a service of a clone of the layer finds it spent"
    );
}

// ----- deadline -----

#[tokio::test(start_paused = true)]
async fn no_retry_starts_that_would_pass_the_deadline() {
    // Each attempt takes 1 s and the server asks for 2 s between attempts: attempts start at
    // 0 s, 3 s, 6 s, 9 s, ... and would end at 1 s, 4 s, 7 s, 10 s, ...
    let step = Step::ThrottleFor(ThrottleCause::Tokens, Duration::from_secs(2));
    let cases = [
        // The third attempt would end exactly at the deadline: allowed.
        (Duration::from_secs(7), 3),
        // 1 ms less: the third attempt is not started.
        (Duration::from_millis(6_999), 2),
        // A 9th attempt would still fit (it would end at 25 s), but the cap of 8 holds first.
        (Duration::from_secs(30), 8),
        // The first attempt always goes out, even if it alone is longer than the deadline.
        (Duration::from_millis(500), 1),
    ];
    for (deadline, expected) in cases {
        let (inner, log) = scripted::<u8>(always(step), Duration::from_secs(1));
        // A cap of 2 s lets the 2 s hint through whole (hints are bounded by the cap).
        let backoff = Backoff::new(Duration::from_millis(1), 1.0, Duration::from_secs(2)).unwrap();
        let mut service = layer()
            .backoff(backoff)
            .max_attempts(nz(8))
            .deadline(deadline)
            .layer(inner);
        let start = Instant::now();
        let reply = call(&mut service, 0).await.unwrap();
        assert_eq!(log.attempts(), expected, "deadline {deadline:?}");
        assert_eq!(reply.attempt as usize, expected);
        assert!(Instant::now() - start <= deadline.max(Duration::from_secs(1)));
    }
}

#[tokio::test(start_paused = true)]
async fn with_random_delays_every_attempt_ends_within_the_deadline() {
    let deadline = Duration::from_secs(10);
    let took = Duration::from_millis(700);
    let (inner, log) = scripted::<u8>(always(Step::Fail), took);
    let mut service = ThrottleRetryLayer::new(classify)
        .budget(unlimited())
        .max_attempts(nz(20))
        .deadline(deadline)
        .seed(5)
        .layer(inner);
    let mut attempts = 0;
    for _ in 0..50 {
        log.clear();
        let start = Instant::now();
        let error = call(&mut service, 0).await.unwrap_err();
        let starts = log.starts();
        assert_eq!(error.attempt as usize, starts.len());
        for t in &starts {
            // tokio's timer has a 1 ms resolution: a backoff sleep may end up to 1 ms late.
            assert!(
                *t + took <= start + deadline + Duration::from_millis(1),
                "an attempt ran past the deadline"
            );
        }
        attempts += starts.len();
    }
    assert!(attempts > 50, "some calls were retried");
}

// ----- server delay -----

#[tokio::test(start_paused = true)]
async fn a_suggested_delay_is_honoured_up_to_the_cap() {
    // Between the backoff and its cap (20 s): waited whole.
    let after = Duration::from_secs(15);
    let (inner, log) = scripted::<u8>(
        always(Step::ThrottleFor(ThrottleCause::Requests, after)),
        Duration::ZERO,
    );
    let mut service = ThrottleRetryLayer::new(classify)
        .budget(unlimited())
        .layer(inner);
    call(&mut service, 0).await.unwrap();
    let starts = log.starts();
    assert_eq!(starts.len(), 3);
    for pair in starts.windows(2) {
        assert!(pair[1] - pair[0] >= after, "{:?}", pair[1] - pair[0]);
        assert!(pair[1] - pair[0] <= Duration::from_secs(20));
    }

    // Longer than the cap: the cap wins, as in the AWS SDK.
    let cap = Duration::from_millis(10);
    let (inner, log) = scripted::<u8>(
        vec![
            Step::ThrottleFor(ThrottleCause::Capacity, Duration::from_millis(1500)),
            Step::Ok,
        ],
        Duration::ZERO,
    );
    let mut service = ThrottleRetryLayer::new(classify)
        .budget(unlimited())
        .backoff(Backoff::new(Duration::from_millis(10), 2.0, cap).unwrap())
        .layer(inner);
    call(&mut service, 0).await.unwrap();
    let starts = log.starts();
    assert_eq!(starts.len(), 2);
    assert_eq!(starts[1] - starts[0], cap);
}

#[tokio::test(start_paused = true)]
async fn an_absurd_hint_never_parks_a_call() {
    // 2^64 ms (u64::MAX ms, about 585 million years).
    let absurd = Duration::from_millis(u64::MAX);
    let step = Step::ThrottleFor(ThrottleCause::Tokens, absurd);

    // Without a deadline: bounded by the default cap, 20 s per retry.
    let (inner, log) = scripted::<u8>(always(step), Duration::ZERO);
    let mut service = ThrottleRetryLayer::new(classify)
        .budget(unlimited())
        .layer(inner);
    let start = Instant::now();
    let reply = call(&mut service, 0).await.unwrap();
    assert_eq!(reply.attempt, 3);
    assert_eq!(log.attempts(), 3);
    assert_eq!(Instant::now() - start, Duration::from_secs(40));

    // With a deadline shorter than the cap: no retry starts, the caller gets the throttle now.
    let (inner, log) = scripted::<u8>(always(step), Duration::from_millis(100));
    let mut service = ThrottleRetryLayer::new(classify)
        .budget(unlimited())
        .deadline(Duration::from_secs(5))
        .layer(inner);
    let start = Instant::now();
    let reply = call(&mut service, 0).await.unwrap();
    assert_eq!((reply.attempt, log.attempts()), (1, 1));
    assert_eq!(Instant::now() - start, Duration::from_millis(100));

    // With a deadline longer than the cap: retries wait the cap and end within the deadline.
    let (inner, log) = scripted::<u8>(always(step), Duration::from_millis(100));
    let deadline = Duration::from_secs(30);
    let mut service = ThrottleRetryLayer::new(classify)
        .budget(unlimited())
        .deadline(deadline)
        .layer(inner);
    let start = Instant::now();
    let reply = call(&mut service, 0).await.unwrap();
    assert_eq!((reply.attempt, log.attempts()), (2, 2));
    assert!(Instant::now() - start <= deadline);
}

// ----- cloning -----

/// A request type that cannot be cloned at all.
#[derive(Debug)]
struct Stream;

#[tokio::test(start_paused = true)]
async fn a_request_that_cannot_be_cloned_is_sent_once() {
    let (inner, log) = scripted::<Stream>(
        always(Step::Throttle(ThrottleCause::Requests)),
        Duration::ZERO,
    );
    let mut service = layer().clone_with(|_: &Stream| None::<Stream>).layer(inner);
    let reply = call(&mut service, Stream).await.unwrap();
    assert_eq!(log.attempts(), 1);
    assert_eq!(
        reply,
        Reply {
            step: Step::Throttle(ThrottleCause::Requests),
            attempt: 1
        }
    );
}

#[tokio::test(start_paused = true)]
async fn the_request_is_cloned_once_per_retry() {
    // A cloner that can copy the request once only: two attempts.
    let copies = Arc::new(AtomicU32::new(0));
    let counter = copies.clone();
    let once = move |request: &String| {
        (counter.fetch_add(1, Ordering::SeqCst) == 0).then(|| request.clone())
    };
    let (inner, log) = scripted::<String>(always(Step::Fail), Duration::ZERO);
    let mut service = layer().clone_with(once).layer(inner);
    call(&mut service, "x".to_owned()).await.unwrap_err();
    assert_eq!(log.attempts(), 2);
    assert_eq!(copies.load(Ordering::SeqCst), 2);

    // A cloner that always works is asked once per retry: no copy is made for an attempt that
    // could not be followed by another.
    let copies = Arc::new(AtomicU32::new(0));
    let counter = copies.clone();
    let counting = move |request: &String| {
        counter.fetch_add(1, Ordering::SeqCst);
        Some(request.clone())
    };
    let (inner, log) = scripted::<String>(always(Step::Fail), Duration::ZERO);
    // Every cause capped at 3 (model-not-ready defaults to 5 and would keep a spare copy).
    let mut service = layer()
        .attempts_for(ThrottleCause::ModelNotReady, nz(3))
        .clone_with(counting)
        .layer(inner);
    call(&mut service, "x".to_owned()).await.unwrap_err();
    assert_eq!(log.attempts(), 3);
    assert_eq!(copies.load(Ordering::SeqCst), 2);
}

// ----- tower conventions -----

#[tokio::test(start_paused = true)]
async fn each_retry_waits_for_the_inner_service_to_be_ready() {
    // `ConcurrencyLimit::call` panics unless `poll_ready` was called first.
    let (inner, log) = scripted::<u8>(
        vec![
            Step::Throttle(ThrottleCause::Requests),
            Step::Throttle(ThrottleCause::Requests),
            Step::Ok,
        ],
        Duration::from_millis(10),
    );
    let limited = tower::limit::ConcurrencyLimitLayer::new(1).layer(inner);
    let mut service = layer().layer(limited);
    let reply = call(&mut service, 0).await.unwrap();
    assert_eq!(reply.attempt, 3);
    assert_eq!(log.attempts(), 3);
}

#[tokio::test(start_paused = true)]
async fn the_service_exposes_its_inner_service() {
    let (inner, _) = scripted::<u8>(always(Step::Ok), Duration::ZERO);
    let mut service = ThrottleRetry::new(inner, classify);
    let _ = service.get_ref();
    let _ = service.get_mut();
    let mut inner = service.into_inner();
    assert_eq!(call(&mut inner, 0).await.unwrap().attempt, 1);
}

#[tokio::test(start_paused = true)]
async fn services_and_futures_can_cross_threads() {
    fn assert_send<T: Send>(_: &T) {}
    fn assert_sync_clone<T: Send + Sync + Clone>(_: &T) {}
    let (inner, _) = scripted::<u8>(always(Step::Ok), Duration::ZERO);
    let mut service = layer().layer(inner);
    assert_send(&service);
    let layer = layer();
    assert_sync_clone(&layer);
    let future = service.ready().await.unwrap().call(0);
    assert_send(&future);
    // Debug output names the settings, even with a closure classifier.
    let with_closure =
        ThrottleRetryLayer::new(|_: Result<&Reply, &Failure>| Classification::success());
    assert!(format!("{with_closure:?}").contains("max_attempts: 3"));
    assert!(format!("{future:?}").contains("Calling"));
    assert_eq!(future.await.unwrap().attempt, 1);
}

#[test]
fn bad_settings_are_typed_errors_with_clear_messages() {
    let errors: Vec<ConfigError> = vec![
        Backoff::new(Duration::ZERO, 2.0, Duration::from_secs(1)).unwrap_err(),
        Backoff::new(Duration::from_secs(2), 2.0, Duration::from_secs(1)).unwrap_err(),
        Backoff::new(Duration::from_secs(1), f64::NAN, Duration::from_secs(20)).unwrap_err(),
        Backoff::new(Duration::from_secs(1), -2.0, Duration::from_secs(20)).unwrap_err(),
        Backoff::new(Duration::from_secs(1), 0.0, Duration::from_secs(20)).unwrap_err(),
        RetryBudget::new(Duration::from_secs(10), 1, f64::NAN).unwrap_err(),
        RetryBudget::new(Duration::from_secs(10), 1, -0.5).unwrap_err(),
        RetryBudget::new(Duration::ZERO, 1, 0.2).unwrap_err(),
    ];
    for error in errors {
        let message = error.to_string();
        assert!(message.starts_with("retry "), "{message}");
        let boxed: bedrock_throttle::BoxError = Box::new(error);
        assert!(boxed.downcast_ref::<ConfigError>().is_some());
    }
}
