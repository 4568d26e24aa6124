//! The quickstart: the same burst of Converse calls, at twice the quota for three windows, sent
//! through three clients against an emulated Bedrock that enforces the quota with the real wire
//! format.
//!
//! ```text
//! cargo run --release --features emulator --example quickstart            # embedded emulator, no AWS account
//! cargo run --release --features emulator --example quickstart -- --json  # one JSON object per client
//! cargo run --release --features emulator --example quickstart -- --endpoint-url http://127.0.0.1:8080 --tpm 100000 --window-secs 2
//! cargo run --release --features emulator --example quickstart -- --live --model us.anthropic.claude-sonnet-4-20250514-v1:0 --region us-east-1 --tpm 200000
//! ```
//!
//! (a) the plain SDK client with its default retries, (b) the SDK in adaptive retry mode,
//! (c) the SDK configured by `bedrock_throttle::sdk::BedrockThrottle`. Between clients it waits
//! out one window so each starts on a fresh quota.

#[path = "support/load.rs"]
mod load;

use std::time::Duration;

use aws_credential_types::Credentials;
use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::{BehaviorVersion, Region};
use aws_smithy_types::retry::RetryConfig;
use bedrock_throttle::bedrock::Bedrock;
use bedrock_throttle::budget::Quota;
use bedrock_throttle::emulator::{Emulator, EmulatorHandle, Enforcement, OutputLength};
use bedrock_throttle::sdk::{BedrockThrottle, default_https_client};

const DEFAULT_MODEL: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";

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
}

fn usage() -> ! {
    eprintln!(
        "usage: quickstart [--json] [--requests N]\n\
         \x20      [--endpoint-url URL --tpm N [--rpm N] [--window-secs S] [--model ID]]\n\
         \x20      [--live --model ID --region R --tpm N [--rpm N]]"
    );
    std::process::exit(2)
}

fn parse_args() -> Options {
    let mut o = Options {
        json: false,
        endpoint_url: None,
        live: false,
        model: DEFAULT_MODEL.to_owned(),
        region: "us-east-1".to_owned(),
        rpm: None,
        tpm: 100_000,
        window: Duration::from_secs(2),
        requests: None,
    };
    let mut args = std::env::args().skip(1);
    let mut window_given = false;
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        let num = |s: String| s.parse::<u64>().unwrap_or_else(|_| usage());
        match arg.as_str() {
            "--json" => o.json = true,
            "--live" => o.live = true,
            "--endpoint-url" => o.endpoint_url = Some(value()),
            "--model" => o.model = value(),
            "--region" => o.region = value(),
            "--rpm" => o.rpm = Some(num(value())),
            "--tpm" => o.tpm = num(value()),
            "--requests" => o.requests = Some(num(value()) as usize),
            "--window-secs" => {
                let secs: f64 = value().parse().unwrap_or_else(|_| usage());
                if !(secs.is_finite() && secs > 0.0) {
                    usage()
                }
                o.window = Duration::from_secs_f64(secs);
                window_given = true;
            }
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    if o.tpm == 0 {
        usage()
    }
    if o.live && !window_given {
        o.window = Duration::from_secs(60);
    }
    o
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let o = parse_args();
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
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
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(o.region.clone()))
            .http_client(default_https_client())
            .load()
            .await;
        sdk.credentials_provider()
    } else {
        None
    };
    let with_credentials = |b: aws_sdk_bedrockruntime::config::Builder| match &live_credentials {
        Some(c) => b.credentials_provider(c.clone()),
        None => b,
    };

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
                let throttle = BedrockThrottle::builder()
                    .bedrock(bedrock.clone())
                    .quota(o.model.clone(), quota)
                    .window(o.window)
                    .http_client(wire)
                    .build()?;
                throttle.configure(config(default_https_client()))
            }
        };
        let client = Client::from_conf(with_credentials(builder).build());
        let outcomes = load::run(&client, &o.model, &calls).await;
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
    if let Some(e) = emulator {
        e.shutdown().await;
    }
    Ok(())
}
