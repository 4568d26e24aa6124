//! The traffic scenarios, under a paused clock, shared by the tests (which check the
//! guarantees) and `benches/fairness.rs` (which prints the figures next to FIFO). Each runs the
//! same traffic on a FIFO budget or a fair one.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bedrock_throttle::budget::{Budget, Class, Fairness, Lane};
use tokio::time::{Instant, sleep};

pub const W: Duration = Duration::from_secs(60);
pub const LIMIT: u64 = 100_000;
pub const KEY: &str = "model";

/// A small deterministic generator (xorshift64*): the same traffic in every run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// A request size from 256 to 4,096 tokens.
    pub fn size(&mut self) -> u64 {
        256 + self.next() % (4096 - 256 + 1)
    }
}

pub fn budget(fairness: Option<Fairness>) -> Budget<&'static str> {
    let builder = Budget::builder().tokens(LIMIT).window(W);
    match fairness {
        Some(f) => builder.fairness(f),
        None => builder,
    }
    .build()
    .unwrap()
}

#[derive(Debug, Default)]
pub struct Log {
    /// Queue waits per name.
    pub waits: HashMap<&'static str, Vec<Duration>>,
    /// Tokens admitted per name inside the measured span.
    pub tokens: HashMap<&'static str, u64>,
}

pub type Shared = Arc<Mutex<Log>>;

/// The `q` quantile of `waits` (nearest rank).
pub fn quantile(waits: &[Duration], q: f64) -> Duration {
    if waits.is_empty() {
        return Duration::ZERO;
    }
    let mut w = waits.to_vec();
    w.sort();
    let rank = ((q * w.len() as f64).ceil() as usize).clamp(1, w.len());
    w[rank - 1]
}

/// Sends requests of random sizes for `name` at `share` of the limit per window, from now to
/// `end` (open loop: the arrival of each does not wait for the others), and waits for all.
pub async fn open_loop(
    budget: Budget<&'static str>,
    name: &'static str,
    class: Class,
    share: f64,
    end: Instant,
    log: Shared,
    seed: u64,
) {
    let mut rng = Rng::new(seed);
    let mut tasks = Vec::new();
    let per_token = W.as_secs_f64() / (share * LIMIT as f64);
    while Instant::now() < end {
        let size = rng.size();
        let (budget, class, log) = (budget.clone(), class.clone(), log.clone());
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            let permit = budget.acquire_as(KEY, size, class).await.unwrap();
            let mut log = log.lock().unwrap();
            log.waits.entry(name).or_default().push(start.elapsed());
            if permit.admitted_at() < end {
                *log.tokens.entry(name).or_default() += size;
            }
            drop(log);
            permit.settle(size);
        }));
        sleep(Duration::from_secs_f64(per_token * size as f64)).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// `workers` closed loops for `name` (each asks again as soon as it is admitted: the tenant is
/// always backlogged), counting the tokens admitted in `[from, end)`.
#[allow(clippy::too_many_arguments)]
pub async fn closed_loop(
    budget: Budget<&'static str>,
    name: &'static str,
    class: Class,
    workers: usize,
    from: Instant,
    end: Instant,
    log: Shared,
    seed: u64,
) {
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (budget, class, log) = (budget.clone(), class.clone(), log.clone());
        let mut rng = Rng::new(seed * 1_000 + w as u64);
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let size = rng.size();
                let start = Instant::now();
                let permit = budget.acquire_as(KEY, size, class.clone()).await.unwrap();
                let at = permit.admitted_at();
                let mut log = log.lock().unwrap();
                log.waits.entry(name).or_default().push(start.elapsed());
                if at >= from && at < end {
                    *log.tokens.entry(name).or_default() += size;
                }
                drop(log);
                permit.settle(size);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// (1) Tenant A floods at 5x the quota, tenant B sends at 20%, for 10 windows: B's waits.
pub async fn flood(fair: bool) -> (Duration, Duration) {
    let budget = budget(fair.then(Fairness::new));
    let log = Shared::default();
    let end = Instant::now() + 10 * W;
    let a = open_loop(
        budget.clone(),
        "A",
        Class::tenant("A"),
        5.0,
        end,
        log.clone(),
        1,
    );
    let b = open_loop(budget, "B", Class::tenant("B"), 0.2, end, log.clone(), 2);
    tokio::join!(a, b);
    let log = log.lock().unwrap();
    let b = &log.waits["B"];
    (quantile(b, 0.5), quantile(b, 0.99))
}

/// (2) Three tenants always backlogged, weights 1:2:3, mixed sizes: each one's share of the
/// tokens admitted over 10 windows (after a first window of warm-up, whose admissions did not
/// wait and so were not shared).
pub async fn weighted(fair: bool) -> [f64; 3] {
    let fairness = Fairness::new()
        .weight("w1", 1.0)
        .weight("w2", 2.0)
        .weight("w3", 3.0);
    let budget = budget(fair.then_some(fairness));
    let log = Shared::default();
    let from = Instant::now() + W;
    let end = from + 10 * W;
    let names = ["w1", "w2", "w3"];
    let runs = names.map(|name| {
        closed_loop(
            budget.clone(),
            name,
            Class::tenant(name),
            128,
            from,
            end,
            log.clone(),
            name.len() as u64 + name.as_bytes()[1] as u64,
        )
    });
    let [r1, r2, r3] = runs;
    tokio::join!(r1, r2, r3);
    let log = log.lock().unwrap();
    let total: u64 = names.iter().map(|n| log.tokens[n]).sum();
    names.map(|n| log.tokens[n] as f64 / total as f64)
}

/// (3) An interactive lane (priority) sending at `interactive_share` of the quota while a batch
/// lane saturates it, for 10 windows; the batch lane with an optional minimum share. Returns
/// the interactive lane's p99 wait and the batch lane's share of the admitted tokens.
pub async fn priority(
    fair: bool,
    interactive_share: f64,
    batch_minimum: Option<f64>,
) -> (Duration, f64) {
    let fairness = Fairness::new()
        .lane(Lane::new("interactive").priority(1))
        .lane(Lane::new("batch").minimum(batch_minimum.unwrap_or(0.0)))
        .default_lane("batch");
    let budget = budget(fair.then_some(fairness));
    let log = Shared::default();
    let from = Instant::now() + W;
    let end = from + 10 * W;
    let interactive = async {
        open_loop(
            budget.clone(),
            "interactive",
            Class::lane("interactive"),
            interactive_share,
            end,
            log.clone(),
            3,
        )
        .await
    };
    let batch = closed_loop(
        budget.clone(),
        "batch",
        Class::lane("batch"),
        128,
        from,
        end,
        log.clone(),
        4,
    );
    tokio::join!(interactive, batch);
    let log = log.lock().unwrap();
    let p99 = quantile(&log.waits["interactive"], 0.99);
    let i = log.tokens.get("interactive").copied().unwrap_or(0);
    let b = log.tokens.get("batch").copied().unwrap_or(0);
    (p99, b as f64 / (i + b) as f64)
}

/// Runs `f` on a current-thread runtime with a paused clock.
pub fn paused<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(f)
}
