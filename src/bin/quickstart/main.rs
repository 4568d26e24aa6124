//! The quickstart: the same burst of Converse calls, at twice the quota for three windows, sent
//! through three clients against an emulated Bedrock that enforces the quota with the real wire
//! format.
//!
//! ```text
//! cargo run --release --features cli,service-quotas --bin quickstart            # embedded emulator, no AWS account
//! cargo run --release --features cli,service-quotas --bin quickstart -- --json  # one JSON object per client
//! cargo run --release --features cli,service-quotas --bin quickstart -- --endpoint-url http://127.0.0.1:8080 --tpm 100000 --window-secs 2
//! cargo run --release --features cli,service-quotas,aws-config --bin quickstart -- --live --model us.anthropic.claude-sonnet-4-20250514-v1:0 --region us-east-1 --tpm 200000
//! ```
//!
//! (a) the plain SDK client with its default retries, (b) the SDK in adaptive retry mode,
//! (c) the SDK configured by `bedrock_throttle::sdk::BedrockThrottle`, with the quotas applied
//! to the account read from Service Quotas (the emulator serves them; `--live` reads the real
//! ones). Between clients it waits out one window so each starts on a fresh quota.
//!
//! At the end it prints the capacity report of client (c) (`throttle.report()`: demand per
//! window, the limit that made requests wait, the quota to ask for) and writes an SVG chart
//! of tokens settled per window against the quota for the three clients, throttled attempts
//! marked (`--chart PATH`, default `quickstart.svg` in the system's temporary directory).
//!
//! A binary rather than an example, so that `cargo run` builds the library's dependencies and
//! none of its dev-dependencies.

#[path = "../../../examples/support/load.rs"]
mod load;

use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_types::retry::RetryConfig;
use bedrock_throttle::bedrock::Bedrock;
use bedrock_throttle::budget::{Quota, Settings};
use bedrock_throttle::emulator::{Emulator, EmulatorHandle, Enforcement, OutputLength};
use bedrock_throttle::quotas::{AppliedQuotas, ModelNames};
use bedrock_throttle::sdk::{BedrockThrottle, default_https_client};
use clap::{Arg, ArgAction, ArgMatches, Command, value_parser};

const DEFAULT_MODEL: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";

/// The command line: every option, its value's parser, and the help text.
fn command() -> Command {
    let value = |name: &'static str, value_name: &'static str, help: &'static str| {
        Arg::new(name)
            .long(name)
            .value_name(value_name)
            .help(help)
            .action(ArgAction::Set)
    };
    let flag = |name: &'static str, help: &'static str| {
        Arg::new(name)
            .long(name)
            .help(help)
            .action(ArgAction::SetTrue)
    };
    Command::new("quickstart")
        .version(env!("CARGO_PKG_VERSION"))
        .about(
            "The same burst of Converse calls through the plain SDK, the SDK in adaptive mode \
             and the SDK configured by bedrock-throttle, against the embedded Bedrock emulator \
             (or another endpoint, or real Bedrock with --live)",
        )
        .arg(flag(
            "json",
            "One JSON object per client and one for the report",
        ))
        .arg(
            value(
                "requests",
                "N",
                "Calls per client [default: twice the quota for 3 windows]",
            )
            .value_parser(value_parser!(u64).range(1..)),
        )
        .arg(
            value(
                "chart",
                "PATH",
                "Where to write the SVG chart [default: quickstart.svg in the temporary directory]",
            )
            .value_parser(value_parser!(PathBuf)),
        )
        .arg(value(
            "endpoint-url",
            "URL",
            "A Bedrock-compatible endpoint instead of the embedded emulator",
        ))
        .arg(
            flag(
                "live",
                "Real Bedrock, with the standard AWS credential chain",
            )
            .conflicts_with("endpoint-url"),
        )
        .arg(value("model", "ID", "The model id").default_value(DEFAULT_MODEL))
        .arg(value("region", "R", "The region").default_value("us-east-1"))
        .arg(
            value("rpm", "N", "Requests per window of the quota")
                .value_parser(value_parser!(u64).range(1..)),
        )
        .arg(
            value("tpm", "N", "Tokens per window of the quota")
                .default_value("100000")
                .value_parser(value_parser!(u64).range(1..)),
        )
        .arg(
            value(
                "window-secs",
                "S",
                "The quota's window in seconds [default: 2; 60 with --live]",
            )
            .value_parser(window_secs),
        )
}

fn window_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| "expected seconds".to_owned())?;
    if !(secs.is_finite() && secs > 0.0) {
        return Err("expected a positive number of seconds".to_owned());
    }
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

#[derive(Debug)]
struct Options {
    json: bool,
    endpoint_url: Option<String>,
    live: bool,
    model: String,
    region: String,
    rpm: Option<u64>,
    tpm: u64,
    window: Duration,
    requests: Option<usize>,
    chart: PathBuf,
}

impl Options {
    /// The options of a parsed command line (every value was checked by its parser).
    fn from(m: &ArgMatches) -> Self {
        let live = m.get_flag("live");
        let string = |name| m.get_one::<String>(name).cloned();
        Options {
            json: m.get_flag("json"),
            endpoint_url: string("endpoint-url"),
            live,
            model: string("model").unwrap_or_else(|| DEFAULT_MODEL.to_owned()),
            region: string("region").unwrap_or_else(|| "us-east-1".to_owned()),
            rpm: m.get_one::<u64>("rpm").copied(),
            tpm: m.get_one::<u64>("tpm").copied().unwrap_or(100_000),
            window: m
                .get_one::<Duration>("window-secs")
                .copied()
                .unwrap_or(if live {
                    Duration::from_secs(60)
                } else {
                    Duration::from_secs(2)
                }),
            requests: m
                .get_one::<u64>("requests")
                .map(|&n| usize::try_from(n).unwrap_or(usize::MAX)),
            chart: m
                .get_one::<PathBuf>("chart")
                .cloned()
                .unwrap_or_else(|| std::env::temp_dir().join("quickstart.svg")),
        }
    }
}

/// The standard AWS credential chain, for `--live`.
#[cfg(feature = "aws-config")]
async fn live_credentials(
    region: &str,
) -> Result<
    Option<aws_sdk_bedrockruntime::config::SharedCredentialsProvider>,
    Box<dyn std::error::Error>,
> {
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .http_client(default_https_client())
        .load()
        .await;
    Ok(sdk.credentials_provider())
}

#[cfg(not(feature = "aws-config"))]
async fn live_credentials(
    _region: &str,
) -> Result<
    Option<aws_sdk_bedrockruntime::config::SharedCredentialsProvider>,
    Box<dyn std::error::Error>,
> {
    Err("--live reads the standard AWS credential chain: build with `--features aws-config`".into())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Bad input: clap's message and exit status 2; `--help`, `--version`: status 0.
    let o = Options::from(&command().get_matches());
    let bedrock = Bedrock::new().with_region(o.region.clone());
    let burndown = bedrock.output_burndown(&o.model);

    // The embedded emulator: the quota, a scaled window, Claude-like speed and output lengths.
    let emulator: Option<EmulatorHandle> = if o.endpoint_url.is_none() && !o.live {
        let mut quota = Quota::tokens(o.tpm);
        if let Some(rpm) = o.rpm {
            quota = quota.with_requests(rpm);
        }
        Some(
            Emulator::builder()
                .model_quota(o.model.clone(), quota)
                .window(o.window)
                .enforcement(Enforcement::SlidingWindow)
                .output_length(OutputLength::Uniform { min: 40, max: 400 })
                .time_to_first_token(Duration::from_millis(150))
                .tokens_per_second(2_000.0)
                .seed(7)
                .start()
                .await?,
        )
    } else {
        None
    };
    let endpoint = match (&emulator, &o.endpoint_url) {
        (Some(e), _) => Some(e.endpoint_url()),
        (None, Some(url)) => Some(url.clone()),
        (None, None) => None,
    };

    // Demand at about twice the quota for SPREAD windows: the mean call settles about
    // 415 input + 5 × 210 output tokens with Claude 4's burndown, and calls arrive evenly.
    const SPREAD: u32 = 3;
    let per_call = 415 + 210 * burndown;
    let count = o
        .requests
        .unwrap_or(((2 * o.tpm * u64::from(SPREAD)) / per_call).max(1) as usize);
    let calls = load::mixed_calls(42, count, o.window * SPREAD);

    if !o.json {
        println!(
            "bedrock-throttle quickstart: {count} Converse calls to {} over {SPREAD} windows, ~2x a \
             quota of {} tokens per {:?} window{}",
            o.model,
            o.tpm,
            o.window,
            match &emulator {
                Some(e) => format!(" (embedded emulator at {})", e.endpoint_url()),
                None => String::new(),
            }
        );
    }

    let config = |http: aws_smithy_runtime_api::client::http::SharedHttpClient| {
        let mut b = aws_sdk_bedrockruntime::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(o.region.clone()))
            .http_client(http);
        if let Some(url) = &endpoint {
            b = b.endpoint_url(url).credentials_provider(Credentials::new(
                "AK",
                "SK",
                None,
                None,
                "quickstart",
            ));
        }
        b
    };
    let live_credentials = if o.live {
        live_credentials(&o.region).await?
    } else {
        None
    };
    let with_credentials = |b: aws_sdk_bedrockruntime::config::Builder| match &live_credentials {
        Some(c) => b.credentials_provider(c.clone()),
        None => b,
    };

    // The applied quotas, from Service Quotas (the emulator's in embedded mode, AWS's with
    // --live). Unreachable or denied: the configured quota stays in force.
    let applied = {
        let mut b = aws_sdk_servicequotas::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(o.region.clone()))
            .http_client(default_https_client());
        match (&endpoint, &live_credentials) {
            (Some(url), _) => {
                b = b.endpoint_url(url).credentials_provider(Credentials::new(
                    "AK",
                    "SK",
                    None,
                    None,
                    "quickstart",
                ))
            }
            (None, Some(c)) => b = b.credentials_provider(c.clone()),
            (None, None) => {}
        }
        let client = aws_sdk_servicequotas::Client::from_conf(b.build());
        match AppliedQuotas::fetch(&client, &ModelNames::new()).await {
            Ok(applied) => {
                if !o.json {
                    println!(
                        "Service Quotas ({}): {} model ids with an applied quota, {} entries not used; {}: {}",
                        applied.region(),
                        applied.quotas().count(),
                        applied.issues().len(),
                        o.model,
                        applied
                            .quota(&o.model)
                            .map_or_else(|| "no applied quota".to_owned(), |q| q.to_string()),
                    );
                }
                Some(applied)
            }
            Err(e) => {
                eprintln!("{e}");
                None
            }
        }
    };
    let mut throttle_kept: Option<BedrockThrottle> = None;
    let mut series: Vec<(String, Vec<u64>, Vec<u64>)> = Vec::new();

    let clients: [(&str, u8); 3] = [
        ("(a) plain SDK, standard retries", 0),
        ("(b) SDK, adaptive retries", 1),
        ("(c) SDK + bedrock-throttle", 2),
    ];
    let mut reports = Vec::new();
    for (i, (name, kind)) in clients.into_iter().enumerate() {
        if i > 0 {
            // Wait out one window (plus slack) so each client starts on a fresh quota.
            load::pause(o.window + o.window / 4).await;
        }
        if let Some(e) = &emulator {
            e.reset_stats();
        }
        let (wire, counts) = load::counting_client(default_https_client());
        let builder = match kind {
            0 => config(wire),
            1 => config(wire).retry_config(RetryConfig::adaptive()),
            _ => {
                let mut quota = bedrock_throttle::budget::Quota::tokens(o.tpm);
                if let Some(rpm) = o.rpm {
                    quota = quota.with_requests(rpm);
                }
                let mut builder = BedrockThrottle::builder()
                    .bedrock(bedrock.clone())
                    .quota(o.model.clone(), quota)
                    .settings(Settings::new().window(o.window))
                    .report_windows(8)
                    .http_client(wire);
                if let Some(applied) = applied.clone() {
                    builder = builder.applied_quotas(applied);
                }
                let throttle = builder.build()?;
                let configured = throttle.configure(config(default_https_client()));
                throttle_kept = Some(throttle);
                configured
            }
        };
        let client = Client::from_conf(with_credentials(builder).build());
        // Throttled attempts per window, sampled from the wire counts at each window's end.
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let (counts, done, window) = (counts.clone(), done.clone(), o.window);
            tokio::spawn(async move {
                let start = tokio::time::Instant::now();
                let (mut per_window, mut last) = (Vec::new(), 0);
                for n in 1u32.. {
                    tokio::time::sleep_until(start + window * n).await;
                    let now = counts.throttled();
                    per_window.push(now - last);
                    last = now;
                    if done.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                }
                per_window
            })
        };
        let outcomes = load::run(&client, &o.model, &calls).await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let throttles_per_window = sampler.await?;
        series.push((
            name.to_owned(),
            settled_per_window(&outcomes, burndown, o.window),
            throttles_per_window,
        ));
        let throttled = match &emulator {
            Some(e) => {
                let m = e.stats().model(&o.model).counters;
                m.throttled_requests + m.throttled_tokens + m.throttled_tokens_per_day
            }
            None => counts.throttled(),
        };
        let report = load::report(
            name,
            &outcomes,
            throttled,
            counts.attempts(),
            burndown,
            o.tpm,
            o.window,
        );
        if o.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print!("{report}");
        }
        reports.push(report);
    }
    if let Some(throttle) = &throttle_kept {
        let capacity = throttle.report();
        if o.json {
            println!(
                "{}",
                serde_json::json!({ "capacity_report_of": clients[2].0, "report": capacity })
            );
        } else {
            println!("\nclient (c) {capacity}");
        }
    }
    let svg = chart(&series, o.tpm, o.window, &o.model);
    std::fs::write(&o.chart, svg)?;
    if !o.json {
        println!("chart of tokens settled per window: {}", o.chart.display());
    }
    if let Some(e) = emulator {
        e.shutdown().await;
    }
    Ok(())
}

/// How many windows the run took.
fn windows_of(outcomes: &[load::CallOutcome], window: Duration) -> usize {
    let end = outcomes.iter().map(|o| o.ended).max().unwrap_or_default();
    (end.as_secs_f64() / window.as_secs_f64()).ceil().max(1.0) as usize
}

/// Quota tokens settled by successful calls, per window of the time they ended.
fn settled_per_window(outcomes: &[load::CallOutcome], burndown: u64, window: Duration) -> Vec<u64> {
    let mut per = vec![0; windows_of(outcomes, window)];
    for o in outcomes {
        if let Ok((input, output)) = &o.result {
            let i = ((o.ended.as_secs_f64() / window.as_secs_f64()) as usize).min(per.len() - 1);
            per[i] += input + output * burndown;
        }
    }
    per
}

/// The SVG chart: one panel per client, tokens settled per window as bars, the quota as a
/// dashed line, throttled attempts as red marks with their count. Hand-written SVG: no font
/// files or plotting crate needed.
fn chart(
    series: &[(String, Vec<u64>, Vec<u64>)],
    quota: u64,
    window: Duration,
    model: &str,
) -> String {
    use std::fmt::Write;
    let (w, panel_h, top, left, right) = (860.0, 220.0, 78.0, 80.0, 20.0);
    let h = top + panel_h * series.len() as f64 + 30.0;
    let windows = series
        .iter()
        .map(|s| s.1.len().max(s.2.len()))
        .max()
        .unwrap_or(1)
        .max(1);
    let ymax = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .chain([quota])
        .max()
        .unwrap_or(1) as f64
        * 1.15;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{left}" y="20" font-size="15" font-weight="bold">Tokens settled per {window:?} window vs the quota of {quota} tokens</text>
<text x="{left}" y="36" fill="#555">{model}</text>
<text x="{left}" y="51" fill="#555">bars: tokens settled by successful calls (orange: above the quota); dashed line: the quota</text>
<text x="{left}" y="66" fill="#555">red circles: attempts throttled (HTTP 429) in the window, with their number</text>
"##
    );
    let plot_w = w - left - right;
    let bar_w = plot_w / windows as f64;
    for (p, (name, settled, throttled)) in series.iter().enumerate() {
        let y0 = top + panel_h * p as f64 + 20.0;
        let ph = panel_h - 50.0;
        let y = |v: f64| y0 + ph - v / ymax * ph;
        let _ = write!(
            svg,
            r##"<text x="{left}" y="{}" font-weight="bold">{name}</text>
<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="#333"/>
<line x1="{left}" y1="{y0}" x2="{left}" y2="{}" stroke="#333"/>
<text x="{}" y="{}" text-anchor="end">{}</text><text x="{}" y="{}" text-anchor="end">0</text>
"##,
            y0 - 8.0,
            y0 + ph,
            w - right,
            y0 + ph,
            y0 + ph,
            left - 6.0,
            y(quota as f64) + 4.0,
            quota,
            left - 6.0,
            y0 + ph + 4.0,
        );
        for (i, v) in settled.iter().enumerate() {
            let x = left + bar_w * i as f64 + bar_w * 0.15;
            let over = *v > quota;
            let _ = write!(
                svg,
                r##"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"/>
<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#555">{}</text>
"##,
                y(*v as f64),
                bar_w * 0.7,
                y0 + ph - y(*v as f64),
                if over { "#e69f00" } else { "#4c78a8" },
                x + bar_w * 0.35,
                y0 + ph + 16.0,
                i + 1,
            );
        }
        let _ = write!(
            svg,
            r##"<line x1="{left}" y1="{:.1}" x2="{}" y2="{:.1}" stroke="#d62728" stroke-width="2" stroke-dasharray="6 4"/>{}"##,
            y(quota as f64),
            w - right,
            y(quota as f64),
            '\n'
        );
        for (i, n) in throttled.iter().enumerate().filter(|(_, n)| **n > 0) {
            let cx = left + bar_w * (i as f64 + 0.5);
            let cy = y0 + 20.0;
            let r = (bar_w * 0.3).clamp(6.0, 14.0);
            let _ = write!(
                svg,
                r##"<circle cx="{cx:.1}" cy="{cy:.1}" r="{r:.1}" fill="#d62728"/>
<text x="{cx:.1}" y="{:.1}" text-anchor="middle" fill="white" font-size="10" font-weight="bold">{n}</text>
"##,
                cy + 3.5
            );
        }
    }
    let _ = write!(
        svg,
        r##"<text x="{}" y="{}" text-anchor="middle" fill="#555">window</text>
</svg>
"##,
        left + plot_w / 2.0,
        h - 8.0
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, clap::Error> {
        command()
            .try_get_matches_from(std::iter::once("quickstart").chain(args.iter().copied()))
            .map(|m| Options::from(&m))
    }

    #[test]
    fn the_command_is_well_formed() {
        command().debug_assert();
    }

    #[test]
    fn options() {
        let o = parse(&[]).unwrap();
        assert_eq!(
            (o.tpm, o.window, o.live),
            (100_000, Duration::from_secs(2), false)
        );
        let o = parse(&["--live", "--tpm", "5", "--rpm=2", "--model", "m"]).unwrap();
        assert_eq!(
            (o.tpm, o.rpm, o.window),
            (5, Some(2), Duration::from_secs(60))
        );
        assert_eq!(o.model, "m");
        let o = parse(&["--window-secs", "0.5", "--json", "--requests", "3"]).unwrap();
        assert_eq!(
            (o.window, o.json, o.requests),
            (Duration::from_millis(500), true, Some(3))
        );
    }

    /// What the hand-written parser refused, clap refuses with exit status 2.
    #[test]
    fn bad_input_is_exit_status_2() {
        for args in [
            &["--tpm"][..],
            &["--tpm", "x"],
            &["--tpm", "0"],
            &["--rpm", "-1"],
            &["--requests", "0"],
            &["--window-secs", "0"],
            &["--window-secs", "inf"],
            &["--window-secs", "soon"],
            &["--bogus"],
            &["--live", "--endpoint-url", "http://127.0.0.1:1"],
        ] {
            let e = parse(args)
                .err()
                .unwrap_or_else(|| panic!("{args:?} parsed"));
            assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
        }
        for flag in ["--help", "--version"] {
            assert_eq!(parse(&[flag]).err().map(|e| e.exit_code()), Some(0));
        }
    }
}
