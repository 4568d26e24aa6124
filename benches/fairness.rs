//! Fair shares against plain FIFO, on the same traffic in the same run: the four
//! figures. Scenarios (1) to (3) run under tokio's paused clock (minutes of traffic in
//! milliseconds, exact and repeatable); (4) times the no-wait admission on the real clock.
//!
//! Run with `cargo bench --bench fairness`; the results are in `BENCHMARKS.md`.

#[path = "../tests/fairness/scenarios.rs"]
mod scenarios;

use std::hint::black_box;
use std::time::{Duration, Instant};

use bedrock_throttle::budget::{Budget, Class, Fairness, Lane};

use scenarios::{W, paused};

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

/// Nanoseconds per admission of each of `ops`, the best of seven rounds of `n` admissions; the
/// rounds alternate between the variants, so a machine shared with other work slows them alike.
fn ns_per_op<const V: usize>(n: u32, ops: &mut [&mut dyn FnMut(u32); V]) -> [f64; V] {
    let mut best = [f64::INFINITY; V];
    for _ in 0..7 {
        for (op, best) in ops.iter_mut().zip(&mut best) {
            let start = Instant::now();
            for i in 0..n {
                op(i);
            }
            *best = best.min(start.elapsed().as_nanos() as f64 / f64::from(n));
        }
    }
    best
}

fn admission_cost() -> (f64, f64, f64) {
    let build = |fairness: Option<Fairness>| {
        let b = Budget::<u32>::builder()
            .tokens(u64::MAX / 4)
            .window(Duration::from_millis(1));
        match fairness {
            Some(f) => b.fairness(f),
            None => b,
        }
        .build()
        .unwrap()
    };
    let fifo = build(None);
    let fair = build(Some(Fairness::new()));
    let lanes = build(Some(
        Fairness::new()
            .lane(Lane::new("priority").priority(2))
            .lane(Lane::new("default").priority(1))
            .lane(Lane::new("flex").minimum(0.1)),
    ));
    let classes: Vec<Class> = (0..1_000)
        .map(|i| {
            Class::tenant(format!("tenant-{i}")).with_lane(["priority", "default", "flex"][i % 3])
        })
        .collect();
    const N: u32 = 1_000_000;
    let [f, one, three] = ns_per_op(
        N,
        &mut [
            &mut |_| fifo.try_acquire(black_box(7), 1).unwrap().settle(1),
            &mut |i| {
                fair.try_acquire_as(black_box(7), 1, &classes[i as usize % 1_000])
                    .unwrap()
                    .settle(1)
            },
            &mut |i| {
                lanes
                    .try_acquire_as(black_box(7), 1, &classes[i as usize % 1_000])
                    .unwrap()
                    .settle(1)
            },
        ],
    );
    (f, one, three)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: run only when benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    println!(
        "fair shares vs FIFO: one key, {} tokens per {} s window, requests of 256 to 4,096 tokens; paused clock",
        scenarios::LIMIT,
        W.as_secs()
    );
    println!("| scenario | figure | FIFO | fair | target |");
    println!("|---|---|---:|---:|---|");

    let (fifo_p50, fifo_p99) = paused(scenarios::flood(false));
    let (fair_p50, fair_p99) = paused(scenarios::flood(true));
    println!(
        "| (1) A floods at 5x, B sends at 20%, 10 windows | B's p50 wait | {} | {} | |",
        secs(fifo_p50),
        secs(fair_p50)
    );
    println!(
        "| | B's p99 wait | {} | {} | ≤ 60 s (1 window) |",
        secs(fifo_p99),
        secs(fair_p99)
    );

    let fifo = paused(scenarios::weighted(false));
    let fair = paused(scenarios::weighted(true));
    for (i, want) in ["1/6 = 16.7%", "2/6 = 33.3%", "3/6 = 50.0%"]
        .iter()
        .enumerate()
    {
        let target = [1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0][i];
        let off = (fair[i] - target) / target;
        println!(
            "| {} | weight {} tenant's share of tokens (off by {:+.1}% relative) | {} | {} | {want} ± 5% |",
            if i == 0 {
                "(2) weights 1:2:3, 128 closed loops each, 10 windows"
            } else {
                ""
            },
            i + 1,
            100.0 * off,
            pct(fifo[i]),
            pct(fair[i]),
        );
    }

    let (fifo_p99, fifo_batch) = paused(scenarios::priority(false, 0.3, None));
    let (fair_p99, fair_batch) = paused(scenarios::priority(true, 0.3, None));
    println!(
        "| (3a) interactive lane (priority) at 30% while batch (128 closed loops) saturates | interactive p99 wait | {} | {} | ≤ 60 s |",
        secs(fifo_p99),
        secs(fair_p99)
    );
    println!(
        "| | batch share of tokens (work-conserving) | {} | {} | the rest |",
        pct(fifo_batch),
        pct(fair_batch)
    );
    let (_, starved) = paused(scenarios::priority(true, 1.5, None));
    let (fifo_p99, fifo_batch) = paused(scenarios::priority(false, 1.5, Some(0.25)));
    let (fair_p99, fair_batch) = paused(scenarios::priority(true, 1.5, Some(0.25)));
    println!(
        "| (3b) interactive floods at 150%, batch minimum 25% | batch share of tokens | {} | {} (without the minimum: {}) | ≥ 25% |",
        pct(fifo_batch),
        pct(fair_batch),
        pct(starved)
    );
    println!(
        "| | interactive p99 wait (it asks 1.5x the quota: it queues) | {} | {} | |",
        secs(fifo_p99),
        secs(fair_p99)
    );

    let (fifo, one, three) = admission_cost();
    println!(
        "| (4) no-wait admission (try_acquire + settle, one key; best of 7 alternating rounds of 1M) | ns per admission | {fifo:.1} | {one:.1} (x{:.2}); 3 lanes + a minimum: {three:.1} (x{:.2}) | ≤ 1.5x |",
        one / fifo,
        three / fifo
    );
}
