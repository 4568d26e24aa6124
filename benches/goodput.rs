//! The scenario benchmark "goodput under quota": how much of a token quota each client turns
//! into answered calls, and what it costs in throttles, failures and latency.
//!
//! ```text
//! cargo bench --all-features --bench goodput                            # every case, ~6 min
//! GOODPUT_QUICK=1 cargo bench --all-features --bench goodput            # 3x, single + over
//! cargo bench --all-features --bench goodput -- token-bucket crate      # labels with every term
//! GOODPUT_FILTER=sliding/3x cargo bench --all-features --bench goodput  # the same, by env
//! ```
//!
//! Every case starts a fresh in-process emulator enforcing a tokens-per-window quota on a Claude 4
//! model (output burndown 5) with a scaled window, realistic output lengths (40 to 400 tokens,
//! capped by `maxTokens`) and speed (time to first token, 2,000 tokens/s). It then sends a
//! reproducible mix of Converse calls (`examples/support/load.rs`) arriving evenly over
//! `GOODPUT_WINDOWS` windows at 1.5x or 3x the quota, through one of three clients:
//!
//! - **sdk-standard**: the plain SDK client, default (standard) retries;
//! - **sdk-adaptive**: the SDK in adaptive retry mode (client-side rate limiter);
//! - **crate**: the SDK configured by `BedrockThrottle` (the crate's stack, SDK retries off);
//! - **crate-no-learning** (single and over scenarios): the same without what the crate learns
//!   from the server (`DebtInFlight::Off`, `Aimd::plain()`), as the previous release behaved;
//! - **crate-one** (shared scenario only): the four SDK clients configured by ONE
//!   `BedrockThrottle` told the whole quota, what the crate recommends for clients in one process.
//!
//! Scenarios:
//! - **single**: one client instance; also on the late-2026 burndown tiers (**single-opus-4.8**,
//!   15x; **single-sonnet-5**, 10x), the rate taken from the crate's model table by both the
//!   emulator and the crate (utilisation then counts output at that rate);
//! - **shared**: four client instances in one process (four SDK clients; for the crate, four
//!   `BedrockThrottle`s each told a quarter of the quota) share the emulator's one quota, the calls
//!   dealt round-robin between them;
//! - **over**: the crate is told a quota 20% above the emulator's real one, so only throttle
//!   feedback keeps it inside (crate only: the SDK clients are told nothing).
//! - **fleet** (feature `redis`, 3x, crate only): 4 separate OS processes (this executable
//!   again), each with its own SDK client configured by `BedrockThrottle::builder()...redis(url)`
//!   and told the WHOLE quota, share one emulator quota through one `redis-server` that the case
//!   starts on loopback; the calls dealt evenly (**fleet**) or 70% to one process
//!   (**fleet-uneven**). **fleet-static** and **fleet-static-uneven**: the same 4 processes
//!   without Redis, each told a quarter of the quota (the static split, for comparison).
//!   Utilisation and latency are over the fleet's calls merged (`load::utilization`).
//!
//! Columns: quota utilisation is settled quota tokens (input + output × 5) of successful calls
//! per window, divided by the REAL quota, over the saturated windows (calls bucketed by the time
//! they ended; the first window and the last partial one left out, see `load::utilization`; in
//! the shared scenario the run counts as saturated until the first of the four clients has
//! answered all its calls, `load::utilization_split`: after that the others' demand is below
//! the quota, and "elapsed" shows what the imbalance cost).
//! Throttled % is throttled attempts over every inference attempt the emulator saw (its own
//! counters). Attempts are the emulator's count. Latency is per call, from its scheduled send to
//! its answer, including every wait and retry.
//!
//! Each SDK case gets its own retry partition, so the SDK's process-global retry quota and
//! adaptive rate limiter start fresh in every case (the four clients of a shared case share
//! theirs, as they would in one process).
//!
//! Settings (environment): `GOODPUT_WINDOW_MS` (default 2000), `GOODPUT_WINDOWS` (demand
//! duration in windows, default 5, quick 3), `GOODPUT_TPM` (default 100000), `GOODPUT_TTFT_MS`
//! (default 120), `GOODPUT_MARGIN_MS` (the crate's expiry margin; default: the crate's own,
//! `max(window / 60, 25 ms)`), `GOODPUT_JOBS` (window algorithms run side by side in child
//! processes, default 3; 1 runs everything in this process), `GOODPUT_JSON=1` (one JSON object
//! per case on stdout as well).

#[cfg(feature = "redis")]
#[path = "../examples/support/fleet.rs"]
mod fleet;
#[path = "../examples/support/load.rs"]
mod load;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::retry::RetryPartition;
use aws_sdk_bedrockruntime::config::{BehaviorVersion, Region};
use aws_smithy_types::retry::RetryConfig;
use bedrock_throttle::bedrock::{Bedrock, DebtInFlight};
use bedrock_throttle::budget::{Aimd, Quota};
use bedrock_throttle::emulator::{Emulator, Enforcement, OutputLength};
use bedrock_throttle::sdk::{BedrockThrottle, default_https_client};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const MODEL: &str = MODELS[0].1;
/// Claude 4 output burndown.
const BURNDOWN: u64 = 5;
/// The workload's mean settled cost of one call: about 415 input tokens and 210 output tokens
/// (40..400 capped by a `maxTokens` of 256, 512 or 1,024), output counted 5x.
const MEAN_CALL_TOKENS: u64 = 415 + 210 * BURNDOWN;
/// The models of the single scenario, with their label: Claude Sonnet 4 (5x) everywhere, and
/// the late-2026 tiers Claude Opus 4.8 (15x) and Claude Sonnet 5 (10x), whose burndown the
/// emulator and the crate both take from the crate's model table.
const MODELS: [(&str, &str); 3] = [
    ("", "us.anthropic.claude-sonnet-4-20250514-v1:0"),
    ("-opus-4.8", "us.anthropic.claude-opus-4-8-20261015-v1:0"),
    ("-sonnet-5", "us.anthropic.claude-sonnet-5-20260917-v1:0"),
];
/// The crate's instances in the shared scenario.
const SHARED_INSTANCES: usize = 4;
/// How far above the real quota the over-configured crate is told the quota is.
const OVER_FACTOR: f64 = 1.2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientKind {
    Standard,
    Adaptive,
    Crate,
    /// The crate without what it learns from the server (debt in flight off): the previous
    /// release's behaviour, beside `Crate` in the single and over scenarios.
    CrateUnlearned,
    /// The shared scenario's four SDK clients configured by one `BedrockThrottle`.
    CrateOne,
}

impl ClientKind {
    fn label(self) -> &'static str {
        match self {
            ClientKind::Standard => "sdk-standard",
            ClientKind::Adaptive => "sdk-adaptive",
            ClientKind::Crate => "crate",
            ClientKind::CrateUnlearned => "crate-no-learning",
            ClientKind::CrateOne => "crate-one",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Single,
    Shared,
    Over,
    /// 4 OS processes sharing the quota through Redis, even load.
    Fleet,
    /// The same, one process sending 70% of the calls.
    FleetUneven,
    /// 4 OS processes each told a quarter of the quota, even load.
    FleetStatic,
    /// The same, one process sending 70% of the calls.
    FleetStaticUneven,
}

impl Scenario {
    fn label(self) -> &'static str {
        match self {
            Scenario::Single => "single",
            Scenario::Shared => "shared",
            Scenario::Over => "over",
            Scenario::Fleet => "fleet",
            Scenario::FleetUneven => "fleet-uneven",
            Scenario::FleetStatic => "fleet-static",
            Scenario::FleetStaticUneven => "fleet-static-uneven",
        }
    }

    fn is_fleet(self) -> bool {
        matches!(
            self,
            Scenario::Fleet
                | Scenario::FleetUneven
                | Scenario::FleetStatic
                | Scenario::FleetStaticUneven
        )
    }
}

#[derive(Debug, Clone, Copy)]
struct Case {
    enforcement: Enforcement,
    demand: f64,
    scenario: Scenario,
    client: ClientKind,
    /// Index into [`MODELS`].
    model: usize,
}

impl Case {
    fn label(&self) -> String {
        format!(
            "{}/{}x/{}{}/{}",
            self.enforcement,
            self.demand,
            self.scenario.label(),
            MODELS[self.model].0,
            self.client.label()
        )
    }

    fn model(&self) -> &'static str {
        MODELS[self.model].1
    }

    /// The model's output burndown, from the crate's model table.
    fn burndown(&self) -> u64 {
        bedrock_throttle::bedrock::Bedrock::new().output_burndown(self.model())
    }

    /// The workload's mean settled cost of one call on this model.
    fn mean_call_tokens(&self) -> u64 {
        415 + 210 * self.burndown()
    }
}

#[derive(Debug)]
struct Settings {
    window: Duration,
    windows: u32,
    tpm: u64,
    ttft: Duration,
    /// The crate's expiry margin, when not its default.
    margin: Option<Duration>,
    quick: bool,
    json: bool,
    filter: Vec<String>,
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match value.trim().parse() {
        Ok(v) if v > 0 => Some(v),
        _ => {
            eprintln!("goodput: ignoring {name}={value:?} (expected a positive integer)");
            None
        }
    }
}

fn settings() -> Settings {
    let on = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0");
    let quick = on("GOODPUT_QUICK");
    let mut filter: Vec<String> = std::env::var("GOODPUT_FILTER")
        .unwrap_or_default()
        .split([',', ' '])
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    // `cargo bench` passes `--bench`; everything else not starting with `-` is a filter term.
    filter.extend(std::env::args().skip(1).filter(|a| !a.starts_with('-')));
    Settings {
        window: Duration::from_millis(env_u64("GOODPUT_WINDOW_MS").unwrap_or(2_000)),
        windows: env_u64("GOODPUT_WINDOWS").unwrap_or(if quick { 3 } else { 5 }) as u32,
        tpm: env_u64("GOODPUT_TPM").unwrap_or(100_000),
        ttft: Duration::from_millis(env_u64("GOODPUT_TTFT_MS").unwrap_or(120)),
        margin: env_u64("GOODPUT_MARGIN_MS").map(Duration::from_millis),
        quick,
        json: on("GOODPUT_JSON"),
        filter,
    }
}

/// The cases to run, with their position in the full list.
fn cases(s: &Settings) -> Vec<(usize, Case)> {
    let demands: &[f64] = if s.quick { &[3.0] } else { &[1.5, 3.0] };
    let scenarios: &[Scenario] = if s.quick {
        &[Scenario::Single, Scenario::Over]
    } else if cfg!(feature = "redis") {
        &[
            Scenario::Single,
            Scenario::Shared,
            Scenario::Over,
            Scenario::Fleet,
            Scenario::FleetUneven,
            Scenario::FleetStatic,
            Scenario::FleetStaticUneven,
        ]
    } else {
        &[Scenario::Single, Scenario::Shared, Scenario::Over]
    };
    let mut out = Vec::new();
    for enforcement in [
        Enforcement::SlidingWindow,
        Enforcement::TokenBucket,
        Enforcement::FixedWindow,
    ] {
        for &demand in demands {
            for &scenario in scenarios {
                for client in [
                    ClientKind::Standard,
                    ClientKind::Adaptive,
                    ClientKind::Crate,
                    ClientKind::CrateUnlearned,
                    ClientKind::CrateOne,
                ] {
                    if scenario == Scenario::Over
                        && !matches!(client, ClientKind::Crate | ClientKind::CrateUnlearned)
                    {
                        continue;
                    }
                    if scenario.is_fleet() && client != ClientKind::Crate {
                        continue;
                    }
                    if client == ClientKind::CrateUnlearned
                        && !matches!(scenario, Scenario::Single | Scenario::Over)
                    {
                        continue;
                    }
                    if scenario.is_fleet() && demand < 3.0 {
                        continue;
                    }
                    if client == ClientKind::CrateOne && scenario != Scenario::Shared {
                        continue;
                    }
                    let models = if scenario == Scenario::Single {
                        MODELS.len()
                    } else {
                        1
                    };
                    for model in 0..models {
                        out.push(Case {
                            enforcement,
                            demand,
                            scenario,
                            client,
                            model,
                        });
                    }
                }
            }
        }
    }
    out.into_iter()
        .enumerate()
        .filter(|(_, c)| {
            let label = c.label();
            s.filter.iter().all(|t| label.contains(t.as_str()))
        })
        .collect()
}

/// The figures of one case.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Row {
    /// The position of the case in the full list (for the table's order).
    index: usize,
    case: String,
    enforcement: String,
    demand: f64,
    scenario: String,
    client: String,
    report: load::Report,
    /// Inference attempts the emulator saw.
    emulator_attempts: u64,
    /// Attempts counted on the wire (should equal the emulator's).
    wire_attempts: u64,
    /// The highest token-window usage the emulator saw, ÷ the quota.
    peak_window: f64,
}

impl Row {
    fn throttled_pct(&self) -> f64 {
        if self.emulator_attempts == 0 {
            0.0
        } else {
            100.0 * self.report.throttled_attempts as f64 / self.emulator_attempts as f64
        }
    }

    /// The issue's targets, for the crate's rows: `None` where no target applies.
    fn targets(&self) -> Option<bool> {
        if self.client != ClientKind::Crate.label() && self.client != ClientKind::CrateOne.label() {
            return None;
        }
        if self.scenario == Scenario::Over.label() {
            return Some(self.throttled_pct() <= 2.0);
        }
        if self.scenario.starts_with("fleet-static") {
            return None;
        }
        if self.demand >= 3.0 {
            return Some(
                self.report.quota_utilization >= 0.95
                    && self.throttled_pct() <= 0.1
                    && self.report.failed == 0,
            );
        }
        None
    }
}

async fn run_case(s: &Settings, case: &Case, index: usize) -> Result<Row, BoxError> {
    #[cfg(feature = "redis")]
    if case.scenario.is_fleet() {
        return run_fleet_case(s, case, index).await;
    }
    let emulator = Emulator::builder()
        .model_quota(case.model(), bedrock_throttle::budget::Quota::tokens(s.tpm))
        .window(s.window)
        .enforcement(case.enforcement)
        .output_length(OutputLength::Uniform { min: 40, max: 400 })
        .time_to_first_token(s.ttft)
        .tokens_per_second(2_000.0)
        .seed(7)
        .start()
        .await?;

    let instances = if case.scenario == Scenario::Shared {
        SHARED_INSTANCES
    } else {
        1
    };
    // A fresh retry partition per case: the SDK's retry quota and adaptive rate limiter are
    // process-global per partition, and must not carry over from one case to the next.
    let partition = RetryPartition::new(format!("goodput-{index}"));
    let told = match case.scenario {
        Scenario::Over => (s.tpm as f64 * OVER_FACTOR) as u64,
        _ => s.tpm,
    } / instances as u64;
    // The demand lasts `windows` windows; at 3x the quota the last call waits about
    // 2 × windows windows for its turn. The bound leaves room for that (and stays far below the
    // signature window: the emulator's windows are scaled).
    let max_wait = (s.window * 4 * s.windows).min(Duration::from_secs(240));

    let debt = if case.client == ClientKind::CrateUnlearned {
        DebtInFlight::Off
    } else {
        DebtInFlight::default()
    };
    let throttle = |told: u64, wire| {
        let mut settings = bedrock_throttle::budget::Settings::new()
            .window(s.window)
            .max_wait(max_wait);
        if let Some(margin) = s.margin {
            settings = settings.expiry_margin(margin);
        }
        if case.client == ClientKind::CrateUnlearned {
            settings = settings.aimd(Aimd::plain());
        }
        BedrockThrottle::builder()
            .bedrock(Bedrock::new().with_debt_in_flight(debt))
            .quota(case.model(), Quota::tokens(told))
            .settings(settings)
            .http_client(wire)
            .build()
    };
    // crate-one: one throttle, told the whole quota, configures every client.
    let (one, one_wire) = if case.client == ClientKind::CrateOne {
        let (wire, counts) = load::counting_client(default_https_client());
        (Some(throttle(s.tpm, wire)?), Some(counts))
    } else {
        (None, None)
    };

    let mut clients = Vec::with_capacity(instances);
    let mut wires = Vec::with_capacity(instances);
    wires.extend(one_wire);
    for _ in 0..instances {
        let base = aws_sdk_bedrockruntime::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(emulator.endpoint_url())
            .credentials_provider(Credentials::new("AK", "SK", None, None, "goodput"))
            .retry_partition(partition.clone());
        let builder = match (&one, case.client) {
            (Some(one), _) => one.configure(base),
            (None, client) => {
                let (wire, counts) = load::counting_client(default_https_client());
                wires.push(counts);
                match client {
                    ClientKind::Standard => base.http_client(wire),
                    ClientKind::Adaptive => {
                        base.http_client(wire).retry_config(RetryConfig::adaptive())
                    }
                    ClientKind::Crate | ClientKind::CrateUnlearned | ClientKind::CrateOne => {
                        throttle(told, wire)?.configure(base)
                    }
                }
            }
        };
        clients.push(Client::from_conf(builder.build()));
    }

    let count = ((case.demand * (s.tpm * u64::from(s.windows)) as f64)
        / case.mean_call_tokens() as f64)
        .round()
        .max(1.0) as usize;
    let calls = load::mixed_calls(42, count, s.window * s.windows);
    let outcomes = load::run_split(&clients, case.model(), &calls).await;

    let counters = emulator.stats().model(case.model());
    let c = counters.counters;
    let throttled = c.throttled_requests + c.throttled_tokens + c.throttled_tokens_per_day;
    let report = load::report_split(
        case.client.label(),
        &outcomes,
        instances,
        throttled,
        c.requests,
        case.burndown(),
        s.tpm,
        s.window,
    );
    let row = Row {
        index,
        case: case.label(),
        enforcement: case.enforcement.to_string(),
        demand: case.demand,
        scenario: format!("{}{}", case.scenario.label(), MODELS[case.model].0),
        client: case.client.label().to_owned(),
        report,
        emulator_attempts: c.requests,
        wire_attempts: wires.iter().map(|w| w.attempts()).sum(),
        peak_window: counters.peak_window.tokens as f64 / s.tpm as f64,
    };
    drop(clients);
    emulator.shutdown().await;
    Ok(row)
}

/// A fleet case: 4 worker processes (this executable again), through one Redis or each told
/// a quarter.
#[cfg(feature = "redis")]
async fn run_fleet_case(s: &Settings, case: &Case, index: usize) -> Result<Row, BoxError> {
    let emulator = Emulator::builder()
        .model_quota(MODEL, bedrock_throttle::budget::Quota::tokens(s.tpm))
        .window(s.window)
        .enforcement(case.enforcement)
        .output_length(OutputLength::Uniform { min: 40, max: 400 })
        .time_to_first_token(s.ttft)
        .tokens_per_second(2_000.0)
        .seed(7)
        .start()
        .await?;
    let shared = matches!(case.scenario, Scenario::Fleet | Scenario::FleetUneven);
    let redis = if shared {
        Some(fleet::Redis::start()?)
    } else {
        None
    };
    let template = fleet::Worker {
        endpoint: emulator.endpoint_url(),
        redis: redis.as_ref().map(|r| r.url.clone()),
        model: MODEL.to_owned(),
        tpm: s.tpm,
        window: s.window,
        windows: s.windows,
        demand: case.demand,
        mean_call_tokens: MEAN_CALL_TOKENS,
        index: 0,
        workers: SHARED_INSTANCES,
        heavy_pct: match case.scenario {
            Scenario::FleetUneven | Scenario::FleetStaticUneven => 70,
            _ => 0,
        },
        margin: s.margin,
        start_ms: 0,
    };
    let outcomes = tokio::task::spawn_blocking(move || {
        fleet::run_workers(&template, &[], Duration::from_millis(1_500))
    })
    .await??;
    let outcomes: Vec<load::CallOutcome> = outcomes.into_iter().map(|(_, o)| o).collect();
    let counters = emulator.stats().model(MODEL);
    let c = counters.counters;
    let throttled = c.throttled_requests + c.throttled_tokens + c.throttled_tokens_per_day;
    let report = load::report(
        case.client.label(),
        &outcomes,
        throttled,
        c.requests,
        BURNDOWN,
        s.tpm,
        s.window,
    );
    let row = Row {
        index,
        case: case.label(),
        enforcement: case.enforcement.to_string(),
        demand: case.demand,
        scenario: format!("{}{}", case.scenario.label(), MODELS[case.model].0),
        client: case.client.label().to_owned(),
        report,
        emulator_attempts: c.requests,
        wire_attempts: c.requests,
        peak_window: counters.peak_window.tokens as f64 / s.tpm as f64,
    };
    emulator.shutdown().await;
    drop(redis);
    Ok(row)
}

fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str(
        "| window | demand | scenario | client | calls | failed | attempts | throttled | \
         throttled % | utilisation | peak window | p50 ms | p99 ms | elapsed s | targets |\n",
    );
    out.push_str("|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|:-:|\n");
    for r in rows {
        let targets = match r.targets() {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "",
        };
        let _ = writeln!(
            out,
            "| {} | {}x | {} | {} | {} | {} | {} | {} | {:.2}% | {:.1}% | {:.0}% | {:.0} | {:.0} | {:.1} | {} |",
            r.enforcement,
            r.demand,
            r.scenario,
            r.client,
            r.report.requests,
            r.report.failed,
            r.emulator_attempts,
            r.report.throttled_attempts,
            r.throttled_pct(),
            r.report.quota_utilization * 100.0,
            r.peak_window * 100.0,
            r.report.p50_ms,
            r.report.p99_ms,
            r.report.elapsed_s,
            targets,
        );
    }
    out
}

/// Runs `cases` in this process, one after the other; prints each row as a `ROW {json}` line
/// when `child`, and returns them.
fn run_here(s: &Settings, cases: &[(usize, Case)], child: bool) -> Result<Vec<Row>, BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut rows = Vec::with_capacity(cases.len());
    for (index, case) in cases {
        let t = Instant::now();
        let row = runtime.block_on(run_case(s, case, *index))?;
        eprintln!(
            "  {:<38} util {:>5.1}%  throttled {:>5.2}%  failed {:>4}  ({:.1}s)",
            row.case,
            row.report.quota_utilization * 100.0,
            row.throttled_pct(),
            row.report.failed,
            t.elapsed().as_secs_f64()
        );
        if row.wire_attempts != row.emulator_attempts {
            eprintln!(
                "    note: {} attempts on the wire, {} seen by the emulator",
                row.wire_attempts, row.emulator_attempts
            );
        }
        if child {
            println!("ROW {}", serde_json::to_string(&row)?);
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Runs the cases of each window algorithm in its own child process (this executable again,
/// with `GOODPUT_CHILD=1` and the algorithm as a filter term), `jobs` at a time, and collects
/// their rows. The cases spend nearly all their time waiting on the quota, so separate
/// processes barely compete for the CPU, and each keeps its own runtime and emulator.
fn run_children(s: &Settings, cases: &[(usize, Case)], jobs: usize) -> Result<Vec<Row>, BoxError> {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let mut groups: Vec<String> = Vec::new();
    for (_, case) in cases {
        let name = case.enforcement.to_string();
        if !groups.contains(&name) {
            groups.push(name);
        }
    }
    let exe = std::env::current_exe()?;
    let mut rows = Vec::new();
    for batch in groups.chunks(jobs.max(1)) {
        let mut children = Vec::new();
        for group in batch {
            // The group name as a whole `/`-delimited label segment.
            let mut args: Vec<String> = s.filter.clone();
            args.push(format!("{group}/"));
            let child = Command::new(&exe)
                .args(&args)
                .env("GOODPUT_CHILD", "1")
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()?;
            children.push(child);
        }
        for mut child in children {
            let stdout = child.stdout.take().ok_or("child without stdout")?;
            for line in BufReader::new(stdout).lines() {
                let line = line?;
                if let Some(json) = line.strip_prefix("ROW ") {
                    rows.push(serde_json::from_str::<Row>(json)?);
                }
            }
            let status = child.wait()?;
            if !status.success() {
                return Err(format!("a benchmark process failed: {status}").into());
            }
        }
    }
    rows.sort_by_key(|r| r.index);
    Ok(rows)
}

fn main() -> Result<(), BoxError> {
    #[cfg(feature = "redis")]
    if let Some(worker) = fleet::Worker::from_env() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return runtime.block_on(worker.run());
    }
    let s = settings();
    let cases = cases(&s);
    if cases.is_empty() {
        eprintln!("goodput: no case matches the filter {:?}", s.filter);
        return Ok(());
    }
    if std::env::var_os("GOODPUT_CHILD").is_some() {
        run_here(&s, &cases, true)?;
        return Ok(());
    }
    let jobs = env_u64("GOODPUT_JOBS").unwrap_or(3) as usize;
    eprintln!(
        "goodput: {} cases, quota {} tokens per {:?} window, demand over {} windows, \
         ttft {:?}, 2000 tokens/s, {} process(es) at a time{}",
        cases.len(),
        s.tpm,
        s.window,
        s.windows,
        s.ttft,
        jobs,
        if s.quick { " (quick)" } else { "" }
    );
    let started = Instant::now();
    let rows = if jobs > 1 {
        run_children(&s, &cases, jobs)?
    } else {
        run_here(&s, &cases, false)?
    };
    if s.json {
        for row in &rows {
            println!("{}", serde_json::to_string(row)?);
        }
    }
    println!(
        "\nQuota {} tokens per {:?} window (Claude Sonnet 4, burndown {BURNDOWN}, unless the \
         scenario names Opus 4.8 at 15x or Sonnet 5 at 10x), demand over {} windows, \
         {:.0} s in all.\n",
        s.tpm,
        s.window,
        s.windows,
        started.elapsed().as_secs_f64()
    );
    print!("{}", table(&rows));
    let failures: Vec<String> = rows
        .iter()
        .filter(|r| !r.report.errors.is_empty())
        .map(|r| {
            let errors: Vec<String> = r
                .report
                .errors
                .iter()
                .map(|(code, n)| format!("{code} ×{n}"))
                .collect();
            format!("- {}: {}", r.case, errors.join(", "))
        })
        .collect();
    if !failures.is_empty() {
        println!("\nErrors returned to callers:\n{}", failures.join("\n"));
    }
    Ok(())
}
