//! A backlog longer than a signature's validity: the request is re-signed and keeps its place.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_bedrockruntime::config::{ConfigBag, Intercept, RuntimeComponents};
use bedrock_throttle::budget::Quota as Limits;
use bedrock_throttle::budget::Quota;
use bedrock_throttle::emulator::Emulator;
use tokio::time::Instant;

use crate::support::{SONNET4, converse, key, sdk_config, settings, throttle_with};

/// Counts the SDK's attempts (each one is signed afresh).
#[derive(Debug, Clone, Default)]
struct Attempts(Arc<AtomicUsize>);

impl Intercept for Attempts {
    fn name(&self) -> &'static str {
        "count attempts"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), bedrock_throttle::BoxError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Waits (real time, bounded) until `ready` holds: the test orders itself on the state it
/// reads, never on how fast the machine is.
async fn until(what: &str, mut ready: impl FnMut() -> bool) {
    for _ in 0..6_000 {
        if ready() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never happened: {what}");
}

/// Four requests, one admitted per 2 s window, and a signature that must be used within a
/// second or two: each waiting request leaves the queue before its signature expires, the SDK
/// re-signs it, and it takes back its place. They complete in arrival order, a window apart,
/// and the server throttles none. (Without the kept place, a re-signed request would queue
/// again behind those that arrived after it.)
///
/// The arrival order is the test's own: request `i + 1` is sent only once request `i` is in
/// the queue (admitted, or counted among the key's waiters), so a slow first SDK attempt
/// cannot reorder them. The capacity report then tells what happened: no give-up (no call
/// failed), and one re-sign per extra attempt the SDK made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_longer_than_the_signature_keeps_its_place() {
    let window = Duration::from_secs(2);
    let emulator = Emulator::builder()
        .model_quota(SONNET4, Quota::requests(1))
        .window(window)
        .start()
        .await
        .unwrap();
    // The delay from our admission to the server's booking, counted beyond the window, as
    // a loaded machine running a debug build needs it: the default (a sixtieth of the
    // window, 33 ms here) is sized for a 60 s window. A request admitted while its place
    // was kept leaves only when its re-signed attempt comes back for it, a few
    // milliseconds later.
    let throttle = throttle_with(settings(window).expiry_margin(Duration::from_millis(500)))
        .quota(SONNET4, Limits::requests(1))
        // Leave 1 to 3 s after signing: the SigV4 date has a one-second resolution, and the
        // SDK corrects its signing clock by the skew it reads from the server's `Date` header
        // (another second of resolution).
        .signature_margin(Duration::from_secs(297))
        .retry_deadline(Duration::from_millis(500))
        .build()
        .unwrap();
    let attempts = Attempts::default();
    let client = Client::from_conf(
        throttle
            .configure(sdk_config(&emulator))
            .interceptor(attempts.clone())
            .build(),
    );
    let start = Instant::now();
    let completed = Arc::new(Mutex::new(Vec::new()));
    let mut calls = Vec::new();
    for i in 0..4u32 {
        let client = client.clone();
        let completed = Arc::clone(&completed);
        calls.push(tokio::spawn(async move {
            let result = converse(&client, &format!("request {i}"), 10).await;
            completed.lock().unwrap().push(i);
            (i, result, start.elapsed())
        }));
        // Request i is in: it reached the server (admitted), or it waits in the key's queue
        // (its place kept across re-signs).
        let arrived = || {
            let waiters = throttle.budget().stats(&key()).map_or(0, |s| s.waiters);
            emulator.stats().model(SONNET4).counters.requests as usize + waiters
        };
        until(&format!("request {i} queued"), || arrived() > i as usize).await;
    }
    let mut last = Duration::ZERO;
    for call in calls {
        let (i, result, at) = call.await.unwrap();
        result.unwrap_or_else(|e| panic!("request {i}: {e}"));
        last = last.max(at);
    }
    // Admitted a window apart, one per window: each completes before the next is admitted.
    let order = completed.lock().unwrap().clone();
    assert_eq!(order, [0, 1, 2, 3], "completed in arrival order");
    assert!(
        last >= window * 3,
        "the last waited three windows: {last:?}"
    );
    let stats = emulator.stats().model(SONNET4).counters;
    assert_eq!(stats.throttled_requests, 0);
    assert_eq!(stats.requests, 4, "each request reached the server once");
    let attempts = attempts.0.load(Ordering::SeqCst) as u64;
    assert!(
        attempts > 4,
        "the waiting requests were re-signed ({attempts} attempts for 4 requests)"
    );
    // The figures tell what happened: four calls, none failed; every attempt beyond the first
    // of each call was a re-sign handed back to the SDK, and none of them is a give-up.
    let report = throttle.report();
    assert_eq!(report.give_ups, 0, "no call failed: {report}");
    assert_eq!(
        report.resigns,
        attempts - 4,
        "one re-sign per extra SDK attempt: {report}"
    );
    assert_eq!(report.retries, 0, "the stack retried nothing: {report}");
}
