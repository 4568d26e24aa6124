//! Waiting is not retrying: the time an attempt waits for admission below the retry layer does
//! not use up the retry deadline (issue 17: a call that waited 120 s in the queue, met one
//! throttle and was not retried).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bedrock_throttle::BoxError;
use bedrock_throttle::admit::RateLimitLayer;
use bedrock_throttle::budget::Budget;
use bedrock_throttle::classify::{Classification, SingleKey, ThrottleCause};
use bedrock_throttle::retry::ThrottleRetryLayer;
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};

fn status(result: Result<&u16, &BoxError>) -> Classification {
    match result {
        Ok(429) => Classification::throttled(ThrottleCause::Requests),
        Ok(_) => Classification::success(),
        Err(_) => Classification::transient(),
    }
}

/// A call that waited 10 s for admission (its key's one request per 10 s was taken), then met
/// one throttle, is retried under a 5 s deadline, and succeeds.
#[tokio::test(start_paused = true)]
async fn a_call_that_waited_its_turn_is_retried() {
    const WINDOW: Duration = Duration::from_secs(10);
    let budget: Budget<()> = Budget::builder()
        .requests(1)
        .window(WINDOW)
        .without_aimd()
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let svc = ServiceBuilder::new()
        .layer(
            ThrottleRetryLayer::new(status as fn(Result<&u16, &BoxError>) -> Classification)
                .deadline(Duration::from_secs(5)),
        )
        .layer(RateLimitLayer::new(budget, SingleKey).classify(status))
        .service_fn(move |first_ok: bool| {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            // The first call takes the window; the second call's first attempt is throttled.
            async move { Ok::<u16, BoxError>(if first_ok || n != 1 { 200 } else { 429 }) }
        });
    assert_eq!(svc.clone().oneshot(true).await.unwrap(), 200);
    let start = Instant::now();
    let reply = svc.oneshot(false).await.unwrap();
    assert!(start.elapsed() >= WINDOW, "the call waited its turn");
    assert_eq!(reply, 200, "the throttled attempt was retried");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}
