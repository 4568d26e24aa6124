//! A fleet: several OS processes share ONE emulator quota through ONE Redis, each with its own
//! SDK client configured by `BedrockThrottle::builder()...redis(url)` and told the whole quota.
//! Prints the fleet's combined figures.
//!
//! ```text
//! cargo run --release --features emulator,redis --example fleet
//! cargo run --release --features emulator,redis --example fleet -- --processes 4 --uneven
//! cargo run --release --features emulator,redis --example fleet -- --static   # quarter split
//! ```
//!
//! It starts its own `redis-server` on a free loopback port (`--redis URL` uses another), and
//! the emulator in-process: a Claude 4 model (output burndown 5), 100,000 tokens per 2-second
//! window, 3x demand over 4 windows.

#[path = "support/fleet.rs"]
mod fleet;
#[path = "support/load.rs"]
mod load;

use std::time::Duration;

use bedrock_throttle::budget::Quota;
use bedrock_throttle::emulator::{Emulator, Enforcement, OutputLength};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const MODEL: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";
const BURNDOWN: u64 = 5;
const MEAN_CALL_TOKENS: u64 = 415 + 210 * BURNDOWN;

fn main() -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Some(worker) = fleet::Worker::from_env() {
        return runtime.block_on(worker.run());
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().any(|a| a == name);
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let processes: usize = value("--processes")
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let (tpm, window, windows) = (100_000, Duration::from_secs(2), 4);
    let shared = !flag("--static");
    let own_redis = match (shared, value("--redis")) {
        (true, None) => Some(fleet::Redis::start()?),
        _ => None,
    };
    let redis_url = value("--redis").or_else(|| own_redis.as_ref().map(|r| r.url.clone()));
    runtime.block_on(async {
        let emulator = Emulator::builder()
            .model_quota(MODEL, Quota::tokens(tpm))
            .window(window)
            .enforcement(Enforcement::SlidingWindow)
            .output_length(OutputLength::Uniform { min: 40, max: 400 })
            .time_to_first_token(Duration::from_millis(120))
            .tokens_per_second(2_000.0)
            .seed(7)
            .start()
            .await?;
        let template = fleet::Worker {
            endpoint: emulator.endpoint_url(),
            redis: if shared { redis_url.clone() } else { None },
            model: MODEL.to_owned(),
            tpm,
            window,
            windows,
            demand: 3.0,
            mean_call_tokens: MEAN_CALL_TOKENS,
            index: 0,
            workers: processes,
            heavy_pct: if flag("--uneven") { 70 } else { 0 },
            margin: None,
            start_ms: 0,
        };
        println!(
            "{processes} processes, {}, one emulator quota of {tpm} tokens per {window:?}, 3x demand{}",
            if shared { "sharing it through Redis" } else { "each told a static share" },
            if flag("--uneven") { ", one process sending 70% of the calls" } else { "" }
        );
        let outcomes = tokio::task::spawn_blocking(move || {
            fleet::run_workers(&template, &[], Duration::from_millis(1_500))
        })
        .await??;
        let c = emulator.stats().model(MODEL).counters;
        let throttled = c.throttled_requests + c.throttled_tokens + c.throttled_tokens_per_day;
        let all: Vec<load::CallOutcome> = outcomes.into_iter().map(|(_, o)| o).collect();
        let report = load::report("fleet (combined)", &all, throttled, c.requests, BURNDOWN, tpm, window);
        print!("{report}");
        emulator.shutdown().await;
        Ok::<_, BoxError>(())
    })?;
    drop(own_redis);
    Ok(())
}
