//! A backlog longer than a signature's validity: the request is re-signed and keeps its place.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_bedrockruntime::config::{ConfigBag, Intercept, RuntimeComponents};
use bedrock_throttle::budget::Quota as Limits;
use bedrock_throttle::budget::Quota;
use bedrock_throttle::emulator::Emulator;
use tokio::time::Instant;

use crate::support::{SONNET4, converse, sdk_config, throttle};

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

/// Four requests, one admitted per 2 s window, and a signature that must be used within a
/// second or two: each waiting request leaves the queue before its signature expires, the SDK
/// re-signs it, and it takes back its place. They complete in arrival order, a window apart,
/// and the server throttles none. (Without the kept place, a re-signed request would queue
/// again behind those that arrived after it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_longer_than_the_signature_keeps_its_place() {
    let window = Duration::from_secs(2);
    let emulator = Emulator::builder()
        .model_quota(SONNET4, Quota::requests(1))
        .window(window)
        .start()
        .await
        .unwrap();
    let throttle = throttle(window)
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
    let mut calls = Vec::new();
    for i in 0..4u32 {
        let client = client.clone();
        calls.push(tokio::spawn(async move {
            let result = converse(&client, &format!("request {i}"), 10).await;
            (i, result, start.elapsed())
        }));
        // Arrive in a known order.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut done = Vec::new();
    for call in calls {
        let (i, result, at) = call.await.unwrap();
        result.unwrap_or_else(|e| panic!("request {i}: {e}"));
        done.push((at, i));
    }
    done.sort();
    let order: Vec<u32> = done.iter().map(|&(_, i)| i).collect();
    assert_eq!(order, [0, 1, 2, 3], "completed in arrival order: {done:?}");
    let last = done.last().unwrap().0;
    assert!(
        last >= window * 3,
        "the last waited three windows: {last:?}"
    );
    let stats = emulator.stats().model(SONNET4).counters;
    assert_eq!(stats.throttled_requests, 0);
    assert_eq!(stats.requests, 4, "each request reached the server once");
    let attempts = attempts.0.load(Ordering::SeqCst);
    assert!(
        attempts > 4,
        "the waiting requests were re-signed ({attempts} attempts for 4 requests)"
    );
}
