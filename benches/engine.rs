//! The admission engine's no-wait path against governor's keyed limiter and tower's rate limit.
//!
//! Every case admits without waiting (limits far above the load), so this measures the cost of
//! the bookkeeping alone: a key lookup, a per-key lock, a ledger entry, a permit.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::task::{Context, Waker};
use std::time::Duration;

use bedrock_throttle::budget::Budget;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::FutureExt;
use governor::{Quota, RateLimiter};
use tower::{Service, ServiceExt};

const BIG: u64 = u64::MAX / 4;

fn engine(c: &mut Criterion) {
    let mut g = c.benchmark_group("no-wait admission");
    g.throughput(Throughput::Elements(1));

    // Entries expire after 1 ms of real time, so the ledger stays short.
    let budget: Budget<u32> = Budget::builder()
        .limit(BIG)
        .window(Duration::from_millis(1))
        .build()
        .unwrap();
    g.bench_function("budget try_acquire + settle, one key", |b| {
        b.iter(|| budget.try_acquire(black_box(7), 1).unwrap().settle(1))
    });
    g.bench_function("budget acquire future + drop, one key", |b| {
        b.iter(|| {
            drop(
                budget
                    .acquire(black_box(7), 1)
                    .now_or_never()
                    .unwrap()
                    .unwrap(),
            )
        })
    });
    let mut key = 0u32;
    g.bench_function("budget try_acquire + settle, 1,000 keys", |b| {
        b.iter(|| {
            key = (key + 1) % 1_000;
            budget.try_acquire(black_box(key), 1).unwrap().settle(1)
        })
    });
    g.bench_function("budget try_acquire + refund, one key", |b| {
        b.iter(|| budget.try_acquire(black_box(7), 10).unwrap().settle(3))
    });

    let governor = RateLimiter::keyed(Quota::per_second(NonZeroU32::MAX));
    g.bench_function("governor keyed check, one key", |b| {
        b.iter(|| governor.check_key(&black_box(7u32)).unwrap())
    });
    let mut key = 0u32;
    g.bench_function("governor keyed check, 1,000 keys", |b| {
        b.iter(|| {
            key = (key + 1) % 1_000;
            governor.check_key(&black_box(key)).unwrap()
        })
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut tower_limit = tower::limit::RateLimit::new(
        tower::service_fn(|_: ()| std::future::ready(Ok::<(), ()>(()))),
        tower::limit::rate::Rate::new(BIG, Duration::from_secs(1)),
    );
    let mut cx = Context::from_waker(Waker::noop());
    g.bench_function("tower RateLimit poll_ready + call (unkeyed)", |b| {
        b.iter(|| {
            assert!(tower_limit.poll_ready(&mut cx).is_ready());
            tower_limit.call(()).now_or_never().unwrap().unwrap()
        })
    });
    let mut svc = bedrock_throttle::rate_limit::RateLimit::new(
        tower::service_fn(|_: ()| std::future::ready(Ok::<(), std::io::Error>(()))),
        Budget::builder()
            .limit(BIG)
            .window(Duration::from_millis(1))
            .build()
            .unwrap(),
        bedrock_throttle::classify::SingleKey,
    );
    g.bench_function("bedrock-throttle RateLimit ready + call, one key", |b| {
        b.iter(|| {
            svc.ready().now_or_never().unwrap().unwrap();
            svc.call(()).now_or_never().unwrap().unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
