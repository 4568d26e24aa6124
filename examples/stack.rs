//! The admission and retry layers on a plain `tower::Service`, no Bedrock involved.
//!
//! ```text
//! cargo run --example stack
//! ```
//!
//! The backend is a toy model server with a hard capacity of 6,000 tokens and 20 requests per
//! one-second window, shared by two tenants; above that it answers `Busy` (its "429"). A burst
//! of 60 jobs (about 3x its token capacity) goes through
//!
//! ```text
//! ThrottleRetryLayer ─► TokenBudgetLayer (per tenant: 10 requests and 3,000 tokens per second, admitted together) ─► backend
//! ```
//!
//! and every job completes without the backend refusing one, because admission lets in exactly
//! what the windows allow, on both dimensions at once, and queues the rest in FIFO order. Then
//! the same burst goes to the backend with the retry layer alone, for comparison.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bedrock_throttle::admit::TokenBudgetLayer;
use bedrock_throttle::budget::Budget;
use bedrock_throttle::classify::{Classification, ThrottleCause};
use bedrock_throttle::retry::{Backoff, ThrottleRetryLayer};
use tokio::time::Instant;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

const WINDOW: Duration = Duration::from_secs(1);

/// One job: which tenant, the worst case it may use, and what it really uses.
#[derive(Debug, Clone)]
struct Job {
    tenant: &'static str,
    max_tokens: u64,
    real_tokens: u64,
}

/// What the backend answers.
#[derive(Debug, Clone, Copy)]
struct Done {
    tokens: u64,
}

/// The backend's "429".
#[derive(Debug, Clone, Copy)]
struct Busy;

impl fmt::Display for Busy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("backend busy: capacity exceeded")
    }
}
impl std::error::Error for Busy {}

/// A backend that refuses work above 6,000 tokens or 20 requests in any one-second window.
#[derive(Debug, Clone, Default)]
struct Backend {
    log: Arc<Mutex<VecDeque<(Instant, u64)>>>,
    refused: Arc<AtomicU64>,
    served: Arc<AtomicU64>,
}

impl Service<Job> for Backend {
    type Response = Done;
    type Error = Busy;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Done, Busy>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Busy>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, job: Job) -> Self::Future {
        let now = Instant::now();
        let admitted = {
            let mut log = self.log.lock().unwrap();
            while log
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) >= WINDOW)
            {
                log.pop_front();
            }
            let tokens: u64 = log.iter().map(|(_, n)| n).sum();
            if log.len() < 20 && tokens + job.real_tokens <= 6_000 {
                log.push_back((now, job.real_tokens));
                true
            } else {
                false
            }
        };
        let (refused, served) = (self.refused.clone(), self.served.clone());
        Box::pin(async move {
            if !admitted {
                refused.fetch_add(1, Ordering::Relaxed);
                return Err(Busy);
            }
            tokio::time::sleep(Duration::from_millis(30)).await; // "inference"
            served.fetch_add(1, Ordering::Relaxed);
            Ok(Done {
                tokens: job.real_tokens,
            })
        })
    }
}

/// How the retry layer reads results (its inner errors are boxed): `Busy` is a token throttle,
/// other errors (an admission refusal) are fatal.
fn classify(result: Result<&Done, &BoxError>) -> Classification {
    match result {
        Ok(_) => Classification::success(),
        Err(e) if e.is::<Busy>() => Classification::throttled(ThrottleCause::Tokens),
        Err(_) => Classification::fatal(),
    }
}

/// How the admission layer reads the backend's own results.
fn classify_backend(result: Result<&Done, &Busy>) -> Classification {
    match result {
        Ok(_) => Classification::success(),
        Err(Busy) => Classification::throttled(ThrottleCause::Tokens),
    }
}

fn jobs() -> Vec<Job> {
    let mut rng = fastrand::Rng::with_seed(3);
    (0..60)
        .map(|i| {
            let max_tokens = rng.u64(200..=500);
            Job {
                tenant: if i % 2 == 0 { "alpha" } else { "beta" },
                max_tokens,
                real_tokens: max_tokens * rng.u64(50..=100) / 100,
            }
        })
        .collect()
}

async fn burst<S>(service: S, name: &str, backend: &Backend)
where
    S: Service<Job, Response = Done> + Clone + Send + 'static,
    S::Error: fmt::Display + Send,
    S::Future: Send,
{
    let start = Instant::now();
    let tasks: Vec<_> = jobs()
        .into_iter()
        .map(|job| tokio::spawn(service.clone().oneshot(job)))
        .collect();
    let (mut ok, mut failed, mut tokens) = (0, 0, 0);
    for task in tasks {
        match task.await.expect("task") {
            Ok(done) => {
                ok += 1;
                tokens += done.tokens;
            }
            Err(_) => failed += 1,
        }
    }
    println!(
        "{name:<28} completed {ok:>2}  failed {failed:>2}  backend refusals {:>3}  tokens {tokens:>5}  in {:.1}s",
        backend.refused.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64(),
    );
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // Per tenant: 10 requests and 3,000 tokens per window (half the backend each), admitted
    // together: a request leaves only when both fit.
    let budget = Budget::builder()
        .requests(10)
        .tokens(3_000)
        .window(WINDOW)
        .build()?;
    let backend = Backend::default();
    let tenant = |job: &Job| job.tenant;
    let stack = ServiceBuilder::new()
        // Outermost: every attempt passes the limiters again, as a real quota charges it.
        .layer(ThrottleRetryLayer::new(classify).backoff(Backoff::new(
            Duration::from_millis(50),
            2.0,
            Duration::from_secs(1),
        )?))
        .layer(
            TokenBudgetLayer::new(
                budget.clone(),
                tenant,
                |job: &Job| job.max_tokens,
                |done: &Done| Some(done.tokens),
            )
            .classify(classify_backend),
        )
        .service(backend.clone());
    burst(stack, "admission + retry", &backend).await;

    tokio::time::sleep(WINDOW).await;
    let plain = Backend::default();
    let retry_only = ServiceBuilder::new()
        .layer(ThrottleRetryLayer::new(classify).backoff(Backoff::new(
            Duration::from_millis(50),
            2.0,
            Duration::from_secs(1),
        )?))
        .map_err(|e: Busy| -> BoxError { e.into() })
        .service(plain.clone());
    burst(retry_only, "retry alone (3 attempts)", &plain).await;
    Ok(())
}
