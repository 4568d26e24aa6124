//! The admission engine's no-wait path against governor's limiters and tower's rate limit, in one
//! run, with one thread and with two threads contending.
//!
//! Every case admits without waiting (limits far above the load), so this measures the cost of
//! the bookkeeping alone: a clock read, a key lookup, a per-key lock, a ledger entry, a permit and
//! its settlement. The budget's window is 1 ms of real time, so the ledger stays a few entries
//! long, as it would with a real quota whose window holds as many entries as it admits.
//!
//! Reading the two-thread group: one iteration is one admission on *each* of the two threads, run
//! at the same time, so its time is the wall-clock time for two admissions done in parallel (and
//! the throughput counts two elements). Without contention it would equal the one-thread time; the
//! excess is the price of the shared cache lines (the per-key lock, governor's atomic cell).
//!
//! Run with `cargo bench --bench engine`; the results are in `BENCHMARKS.md`.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use bedrock_throttle::budget::{Budget, Class, Fairness, Lane, Scopes};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::FutureExt;
use governor::{Quota, RateLimiter};
use tower::{Service, ServiceExt};

const BIG: u64 = u64::MAX / 4;
const KEYS: u32 = 1_000;

fn budget() -> Budget<u32> {
    Budget::builder()
        .tokens(BIG)
        .window(Duration::from_millis(1))
        .build()
        .unwrap()
}

/// A budget with fair shares: `lanes` adds Bedrock's three service tiers as lanes, one with a
/// minimum share (so admissions that do not wait are counted per lane too).
fn fair_budget(lanes: bool) -> Budget<u32> {
    let mut fairness = Fairness::new().weight("tenant-1", 2.0);
    if lanes {
        fairness = fairness
            .lane(Lane::new("priority").priority(2))
            .lane(Lane::new("default").priority(1))
            .lane(Lane::new("flex").minimum(0.1));
    }
    Budget::builder()
        .tokens(BIG)
        .window(Duration::from_millis(1))
        .fairness(fairness)
        .build()
        .unwrap()
}

fn ready_tower_rate_limit() -> tower::limit::RateLimit<
    impl Service<(), Response = (), Error = (), Future = std::future::Ready<Result<(), ()>>>,
> {
    tower::limit::RateLimit::new(
        tower::service_fn(|_: ()| std::future::ready(Ok::<(), ()>(()))),
        tower::limit::rate::Rate::new(BIG, Duration::from_secs(1)),
    )
}

/// Runs `op(thread, i)` for `i in 0..iters` on two threads started together, and returns the
/// wall-clock time until both are done.
fn two_threads(iters: u64, op: impl Fn(u32, u64) + Sync) -> Duration {
    let barrier = Barrier::new(3);
    std::thread::scope(|s| {
        for t in 0..2 {
            let (barrier, op) = (&barrier, &op);
            s.spawn(move || {
                barrier.wait();
                for i in 0..iters {
                    op(t, i);
                }
            });
        }
        barrier.wait();
        let start = Instant::now();
        // Leaving the scope joins both threads.
        start
    })
    .elapsed()
}

fn one_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("no-wait admission, one thread");
    g.throughput(Throughput::Elements(1));

    let b = budget();
    g.bench_function("budget try_acquire + settle, one key", |bn| {
        bn.iter(|| b.try_acquire(black_box(7), 1).unwrap().settle(1))
    });
    // Fairness on: the same admission, with a class (a tenant among 1,000, and a lane). With
    // nobody waiting, no tenant is tracked: the extra cost is the class's lane lookup and the
    // tenant reference the permit keeps for settlement's correction.
    let classes: Vec<Class> = (0..1_000)
        .map(|i| {
            Class::tenant(format!("tenant-{i}")).with_lane(["priority", "default", "flex"][i % 3])
        })
        .collect();
    for (name, lanes) in [
        (
            "fair budget (one lane) try_acquire_as + settle, one key, 1,000 tenants",
            false,
        ),
        (
            "fair budget (3 lanes, a minimum) try_acquire_as + settle, one key, 1,000 tenants",
            true,
        ),
    ] {
        let fair = fair_budget(lanes);
        let mut i = 0usize;
        g.bench_function(name, |bn| {
            bn.iter(|| {
                i = (i + 1) % classes.len();
                fair.try_acquire_as(black_box(7), 1, &classes[i])
                    .unwrap()
                    .settle(1)
            })
        });
    }
    let fair = fair_budget(true);
    let mut i = 0usize;
    g.bench_function(
        "fair budget (3 lanes) acquire_as future (now_or_never) + settle, one key",
        |bn| {
            bn.iter(|| {
                i = (i + 1) % classes.len();
                fair.acquire_as(black_box(7), 1, classes[i].clone())
                    .now_or_never()
                    .unwrap()
                    .unwrap()
                    .settle(1)
            })
        },
    );
    let mut key = 0u32;
    g.bench_function("budget try_acquire + settle, 1,000 keys", |bn| {
        bn.iter(|| {
            key = (key + 1) % KEYS;
            b.try_acquire(black_box(key), 1).unwrap().settle(1)
        })
    });
    g.bench_function("budget try_acquire_scopes + settle, two scopes", |bn| {
        bn.iter(|| {
            b.try_acquire_scopes(Scopes::new(black_box(7)).with(black_box(8)), 1)
                .unwrap()
                .settle(1)
        })
    });
    g.bench_function("budget try_acquire + refund, one key", |bn| {
        bn.iter(|| b.try_acquire(black_box(7), 10).unwrap().settle(3))
    });
    g.bench_function(
        "budget acquire future (now_or_never) + settle, one key",
        |bn| {
            bn.iter(|| {
                b.acquire(black_box(7), 1)
                    .now_or_never()
                    .unwrap()
                    .unwrap()
                    .settle(1)
            })
        },
    );

    // The fixed costs inside every admission above, for reading the numbers: tokio's clock (a
    // `clock_gettime` call; governor reads the TSC through quanta instead) and the hash of the
    // key (foldhash in the engine's key map; `RandomState`, SipHash, in governor's keyed map).
    g.bench_function("reference: tokio Instant::now alone", |bn| {
        bn.iter(tokio::time::Instant::now)
    });
    // The OS clock without tokio: the difference with the row above is what tokio's clock adds
    // (with `test-util`, which the dev-dependencies enable, a check whether the clock was ever
    // paused; without it, nothing).
    g.bench_function("reference: std Instant::now alone", |bn| {
        bn.iter(std::time::Instant::now)
    });
    // governor's clock: quanta reads the CPU's time-stamp counter and scales it, with no system
    // call. For comparison only: the engine cannot use it (see `budget`'s module docs).
    let quanta = governor::clock::DefaultClock::default();
    g.bench_function("reference: governor's clock (quanta) now alone", |bn| {
        bn.iter(|| governor::clock::Clock::now(&quanta))
    });
    let hasher = std::hash::RandomState::new();
    g.bench_function("reference: RandomState hash of a u32 key alone", |bn| {
        bn.iter(|| std::hash::BuildHasher::hash_one(&hasher, black_box(7u32)))
    });
    let hasher = foldhash::fast::RandomState::default();
    g.bench_function("reference: foldhash of a u32 key alone", |bn| {
        bn.iter(|| std::hash::BuildHasher::hash_one(&hasher, black_box(7u32)))
    });

    let direct = RateLimiter::direct(Quota::per_second(NonZeroU32::MAX));
    g.bench_function("governor direct check", |bn| {
        bn.iter(|| black_box(&direct).check().unwrap())
    });
    let keyed = RateLimiter::keyed(Quota::per_second(NonZeroU32::MAX));
    g.bench_function("governor keyed check, one key", |bn| {
        bn.iter(|| keyed.check_key(&black_box(7u32)).unwrap())
    });
    let mut key = 0u32;
    g.bench_function("governor keyed check, 1,000 keys", |bn| {
        bn.iter(|| {
            key = (key + 1) % KEYS;
            keyed.check_key(&black_box(key)).unwrap()
        })
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut tower_limit = ready_tower_rate_limit();
    g.bench_function("tower RateLimit oneshot (unkeyed)", |bn| {
        bn.iter(|| {
            (&mut tower_limit)
                .oneshot(())
                .now_or_never()
                .unwrap()
                .unwrap()
        })
    });
    let mut ours = tower::Layer::layer(
        &bedrock_throttle::admit::RateLimitLayer::new(
            Budget::builder()
                .requests(BIG)
                .window(Duration::from_millis(1))
                .build()
                .unwrap(),
            bedrock_throttle::classify::SingleKey,
        ),
        tower::service_fn(|_: ()| std::future::ready(Ok::<(), std::io::Error>(()))),
    );
    g.bench_function("bedrock-throttle RateLimit oneshot, one key", |bn| {
        bn.iter(|| (&mut ours).oneshot(()).now_or_never().unwrap().unwrap())
    });
    g.finish();
}

fn two_threads_contending(c: &mut Criterion) {
    let mut g = c.benchmark_group("no-wait admission, two threads");
    // One iteration: one admission on each thread.
    g.throughput(Throughput::Elements(2));

    let b = budget();
    g.bench_function("budget try_acquire + settle, one key", |bn| {
        bn.iter_custom(|iters| {
            two_threads(iters, |_, _| {
                b.try_acquire(black_box(7), 1).unwrap().settle(1)
            })
        })
    });
    g.bench_function("budget try_acquire + settle, 1,000 keys", |bn| {
        bn.iter_custom(|iters| {
            two_threads(iters, |t, i| {
                let key = ((i as u32) + t * KEYS / 2) % KEYS;
                b.try_acquire(black_box(key), 1).unwrap().settle(1)
            })
        })
    });

    let direct = RateLimiter::direct(Quota::per_second(NonZeroU32::MAX));
    g.bench_function("governor direct check", |bn| {
        bn.iter_custom(|iters| two_threads(iters, |_, _| black_box(&direct).check().unwrap()))
    });
    let keyed = RateLimiter::keyed(Quota::per_second(NonZeroU32::MAX));
    g.bench_function("governor keyed check, one key", |bn| {
        bn.iter_custom(|iters| {
            two_threads(iters, |_, _| keyed.check_key(&black_box(7u32)).unwrap())
        })
    });
    g.bench_function("governor keyed check, 1,000 keys", |bn| {
        bn.iter_custom(|iters| {
            two_threads(iters, |t, i| {
                let key = ((i as u32) + t * KEYS / 2) % KEYS;
                keyed.check_key(&black_box(key)).unwrap()
            })
        })
    });

    // tower's RateLimit takes `&mut self`: to share one limit, two threads need a lock around it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let shared = Mutex::new(ready_tower_rate_limit());
    g.bench_function("tower RateLimit oneshot behind a Mutex (unkeyed)", |bn| {
        bn.iter_custom(|iters| {
            two_threads(iters, |_, _| {
                let mut svc = shared.lock().unwrap();
                (&mut *svc).oneshot(()).now_or_never().unwrap().unwrap()
            })
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = one_thread, two_threads_contending
}
criterion_main!(benches);
